"""The step-cost model's compiled kernels: the only implementation of a step's price.

`sparksched.cost.StepCost` calls them for every price it gives, and the simulator's compiled epoch
planner calls them from inside its own loop, so the library, the engine's clock and the planner
agree bit for bit. Each takes a `sparksched.cost.CostArrays` (a named tuple numba can read) where it
needs the model. Plain Python that numba compiles when it is installed (`cache=True`: once per
machine); without numba the same functions run interpreted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparksched.cost import MODE_PER_REQUEST, PREFILL_BATCH

_numba_njit: Any
try:
    from numba import njit as _numba_njit
except ImportError:  # pragma: no cover (numba is a dependency; a bare GPU box may lack it)
    _numba_njit = None


def njit(*args: Any, **kwargs: Any) -> Any:
    """numba.njit when numba is installed; otherwise the function itself (interpreted)."""
    if _numba_njit is not None:
        return _numba_njit(*args, **kwargs)
    if args and callable(args[0]):
        return args[0]
    return lambda f: f


@njit(cache=True)
def _bracket(grid, x, lo_linear, hi_linear):  # pragma: no cover (compiled)
    """(j, w): x = grid[j] + w (grid[j + 1] - grid[j]); w outside [0, 1] only where extending."""
    m = grid.shape[0]
    if m == 1:
        return 0, 0.0
    j = np.searchsorted(grid, x, side="right") - 1
    if j < 0:
        j = 0
    if j > m - 2:
        j = m - 2
    w = (x - grid[j]) / (grid[j + 1] - grid[j])
    if w < 0.0 and not lo_linear:
        w = 0.0
    if w > 1.0 and not hi_linear:
        w = 1.0
    return j, w


@njit(cache=True)
def _blend(secs, jc, wc, jn, wn, k):  # pragma: no cover (compiled)
    """secs [Nc, Nn, Nk] at knot k, multilinear in (n, context) with weights (jn, wn), (jc, wc)."""
    nn = secs.shape[1]
    if nn == 1:
        a = secs[jc, 0, k]
    else:
        a = (1.0 - wn) * secs[jc, jn, k] + wn * secs[jc, jn + 1, k]
    if secs.shape[0] == 1:
        return a
    if nn == 1:
        b = secs[jc + 1, 0, k]
    else:
        b = (1.0 - wn) * secs[jc + 1, jn, k] + wn * secs[jc + 1, jn + 1, k]
    return (1.0 - wc) * a + wc * b


@njit(cache=True)
def slice_knots(cost, n, context, xs, ys):  # pragma: no cover (compiled)
    """The verify slice of `cost` (CostArrays) at (n, context) as knots: xs [Nk] batch tokens, ys [Nk]
    seconds (filled in).

    ys is multilinear in (n, context) over the grid (exact at grid points); past the largest request
    count or context it extends the last segment but never falls below the grid's edge at the same
    tokens per request, and its last segment (extended past the last knot) is never flatter than the
    edge's (a bigger step is never cheaper); n below the grid holds the smallest row,
    context below it extends the first segment (when the cost extends); floored at the cheapest row
    and made non-decreasing along the knots.
    """
    secs, floor = cost.secs, cost.floor
    jn, wn = _bracket(cost.reqs, n, False, cost.extend)
    jc, wc = _bracket(cost.ctxs, context, cost.extend, cost.extend)
    wn1 = min(wn, 1.0)
    wc1 = min(wc, 1.0)
    prev = 0.0
    for k in range(cost.knots.shape[0]):
        y = _blend(secs, jc, wc, jn, wn, k)
        if wn > 1.0:
            y = max(y, _blend(secs, jc, wc, jn, wn1, k))
        if wc > 1.0:
            y = max(y, _blend(secs, jc, wc1, jn, wn, k))
            if wn > 1.0:
                y = max(y, _blend(secs, jc, wc1, jn, wn1, k))
        if y < floor:
            y = floor
        if k > 0 and y < prev:
            y = prev
        ys[k] = y
        prev = y
        xs[k] = n * cost.knots[k] if cost.mode == MODE_PER_REQUEST else cost.knots[k]
    last = cost.knots.shape[0] - 1
    if last >= 1 and (wn > 1.0 or wc > 1.0):
        # past the edge, the slice's last segment (what prices B beyond the last knot) is never
        # flatter than the edge's, in tokens per request: so the whole extended slice stays above it
        d = 0.0
        for cn in range(2):
            for cc in range(2):
                un = wn if cn == 0 else wn1
                uc = wc if cc == 0 else wc1
                d = max(d, _blend(secs, jc, uc, jn, un, last) - _blend(secs, jc, uc, jn, un, last - 1))
        if ys[last] < ys[last - 1] + d:
            ys[last] = ys[last - 1] + d


@njit(cache=True)
def batch_cap(cost, n, context):  # pragma: no cover (compiled)
    """The largest verify batch B a step of n requests at mean `context` may take: its KV (n context + B
    tokens) must fit, and a table's max_batch_tokens bounds the drafts (never the anchors)."""
    return min(cost.kv_cap - n * context, max(cost.b_max, float(n)))


@njit(cache=True)
def knot_price(xs, ys, extend, x):  # pragma: no cover (compiled)
    """The slice's seconds at batch tokens x: `ThroughputCurve(xs, ys).step_time(x)` bit for bit
    (np.interp inside; the last segment extended above when `extend`, else held; held below)."""
    k = xs.shape[0]
    last = xs[k - 1]
    if x >= last:
        if x == last or not extend or k == 1:
            return ys[k - 1]
        slope = (ys[k - 1] - ys[k - 2]) / (last - xs[k - 2])
        return ys[k - 1] + slope * (x - last)
    if x <= xs[0]:
        return ys[0]
    j = np.searchsorted(xs, x, side="right") - 1
    if x == xs[j]:
        return ys[j]
    slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])
    return slope * (x - xs[j]) + ys[j]


@njit(cache=True)
def knot_prices(xs, ys, extend, x, out):  # pragma: no cover (compiled)
    """knot_price at every x [m] into out [m]."""
    for i in range(x.shape[0]):
        out[i] = knot_price(xs, ys, extend, x[i])


@njit(cache=True)
def _cumulative_prefill(p, f, tokens):  # pragma: no cover (compiled)
    """F(tokens): linear in the prompt length between rows, the last segment extended past them."""
    m = p.shape[0]
    if tokens <= 0.0:
        return 0.0
    if tokens >= p[m - 1]:
        if m == 1:
            return f[0]
        slope = (f[m - 1] - f[m - 2]) / (p[m - 1] - p[m - 2])
        return f[m - 1] + slope * (tokens - p[m - 1])
    j = np.searchsorted(p, tokens, side="right") - 1
    if tokens == p[j]:
        return f[j]
    slope = (f[j + 1] - f[j]) / (p[j + 1] - p[j])
    return slope * (tokens - p[j]) + f[j]


@njit(cache=True)
def prefill_price(cost, chunks, offsets, n, xs, ys):  # pragma: no cover (compiled)
    """Seconds the prefill chunks (tokens [c] int64, each starting at offsets [c] of its prompt) add to
    a pass with n decoding requests whose verify slice is (xs, ys): their marginal price (a pass with
    no decoding request costs `empty_pass` on top). 0 without chunks."""
    total = 0
    for i in range(chunks.shape[0]):
        total += chunks[i]
    if total == 0:
        return 0.0
    if cost.prefill_mode == PREFILL_BATCH:
        return knot_price(xs, ys, cost.extend, float(n + total)) - knot_price(xs, ys, cost.extend, float(n))
    s = 0.0
    for i in range(chunks.shape[0]):
        if chunks[i] > 0:
            o = float(offsets[i])
            s += (_cumulative_prefill(cost.prefill_p, cost.prefill_f, o + chunks[i])
                  - _cumulative_prefill(cost.prefill_p, cost.prefill_f, o))
    return s


@njit(cache=True)
def empty_pass(cost, xs, ys):  # pragma: no cover (compiled)
    """The fixed part of a pass with no decoding request (a prefill-only step): the cheapest grid row
    under profile prefill rows, else the slice's price at zero batch tokens."""
    if cost.prefill_mode == PREFILL_BATCH:
        return knot_price(xs, ys, cost.extend, 0.0)
    return cost.floor


@njit(cache=True)
def draft_at(dctx, dtab, n, context):  # pragma: no cover (compiled)
    """Drafter seconds for n requests at `context` from a table [Cd, N + 1] by n at contexts dctx [Cd]
    (linear in context between them, held outside)."""
    if n <= 0:
        return 0.0
    n = min(n, dtab.shape[1] - 1)
    if dctx.shape[0] == 1:
        return dtab[0, n]
    j, w = _bracket(dctx, context, False, False)
    return (1.0 - w) * dtab[j, n] + w * dtab[j + 1, n]
