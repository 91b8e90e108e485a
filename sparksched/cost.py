"""StepCost: the price of one engine step, by decoding requests n, batch tokens B and context L.

Covers: the one place where a step's seconds come from. The scheduler (the slice at the step's own n
and L), the simulator's clock, its compiled epoch planner, the two-phase budget, the exporters to the
engines' table formats, pareto / whatif and the fidelity harness all price a step through this module.

Why a surface and not a curve. A decode step's time depends on how many requests it serves (each
request's KV cache is read, the drafter runs per request), on how many tokens it verifies and on
how long the contexts are. On an H100 roofline of an 8B dense model, 64 requests at context 2048
cost 12.2 ms with one token each and 13.2 ms with eight each, while 512 single-token requests cost
far more: averaging the rows of equal B into one curve makes a draft look many times dearer at the
margin than it is, and a plain step cheaper than it is. Within one step, n and the contexts are
known before anything is drafted, so the scheduler optimises over the slice B -> T(n, B, L) at the
step's own n and L; the slice never looks at a draft token, so the non-anticipation argument of the
greedy (sparksched.scheduler) is unchanged.

The price of a step (seconds):

    verify  T(n, B, L)   n decoding requests, B = anchors + verified drafts, L = mean context
    drafter D(n, g, L)   the drafter's pass for n requests at block g (0 when the step does not draft)
    prefill P(chunks)    the prefill chunks riding in the same step

and a step costs T + D + P. Where the numbers come from:

* **A profile** (`from_profile`): the verify grid of (requests n, tokens per request t, context L)
  rows. Only rows that fit in memory (`"fits"` not false) are used. At fixed (n, L) the rows are
  made non-decreasing in t (isotonic least squares: medians are noisy). T is multilinear in (n, t, L)
  with t = B / n, so it equals the grid exactly at grid points.
* **An SGLang cost table** (`sparksched.sglang_tables`): whole steps (drafter inside) keyed on batch
  tokens, with or without a request axis; priced exactly as SGLang looks them up.
* **A bare ThroughputCurve** (`from_curve`): keyed on B only, the same at every n.

Outside the grid (the extrapolation rule, stated once):

* more requests, tokens or context than measured: the last segment of each axis is extended
  linearly (KV reads grow linearly in n and L, per-token work in B), never with a negative slope,
  and never below the grid's edge at the same tokens per request, past the last measured tokens per
  request included (the slice's last segment is never flatter there than the edge's);
* fewer requests or tokens per request than measured: the smallest measured value is held (fixed
  costs do not vanish); context below the smallest measured one: the first segment is extended;
* no price is ever below the cheapest fitting row of the grid, and at fixed (n, L) the price never
  decreases with B, so a bigger step is never cheaper than a smaller one;
* a step whose KV (n L + B tokens) exceeds what the device holds is infeasible: its price is inf
  and `why(n, B, L)` says why. The capacity comes from the profile's model and device facts when
  they agree with its `fits` flags, else from the largest fitting row.

Missing grid points (rows that do not fit, or were never measured) are filled from their fitting
neighbours by the same linear rule along n (then along L), so the interpolation never reads a row
that does not fit.

The prefill chunk. A profile's prefill rows give the time of one pass over a whole prompt of P
tokens; the pass's fixed part F0 is the cheapest grid row (weights read, launches), and F(P) =
prefill(P) - F0 the prompt's own work, interpolated in P and extended linearly past the last row. A
chunk of c tokens starting at offset o of its prompt costs F(o + c) - F(o) on top of the decode
pass (so the chunks of one prompt add up to its whole prefill), and a step with no decoding
request costs F0 plus its chunks. Batch-keyed tables (SGLang, bare curves) price prefill tokens as
batch tokens: T(n, n + P) - T(n, n).

The compiled kernels of `sparksched.cost_kernels` (numba when it is installed, plain Python
otherwise) are the only implementation of these rules: `StepCost`'s methods call them, and so does
the simulator's compiled epoch planner, which is why the clock, the planner and the library's
scheduler agree bit for bit. They load on first use, so importing this module stays light.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from sparksched.curve import ThroughputCurve, isotonic_non_decreasing

MODE_PER_REQUEST = 0  # knots are tokens per request t: the slice at n has its knots at B = n t
MODE_BATCH = 1  # knots are batch tokens B, the same at every n
PREFILL_ROWS = 0  # prefill chunks priced from the profile's prefill rows (F(o + c) - F(o))
PREFILL_BATCH = 1  # prefill tokens priced as batch tokens on the decode slice


class CostArrays(NamedTuple):
    """A StepCost as the compiled code takes it (all float64 unless said otherwise).

    mode: MODE_PER_REQUEST | MODE_BATCH; reqs [Nn] request counts; knots [Nk] tokens per request or
    batch tokens; ctxs [Nc] contexts; secs [Nc, Nn, Nk] verify seconds, complete and finite; extend:
    extrapolate linearly above each axis (else hold the end value); floor: no price is lower;
    kv_cap: KV tokens the device holds (inf: no limit known); prefill_mode: PREFILL_ROWS |
    PREFILL_BATCH; prefill_p [Np] prompt lengths starting at 0, prefill_f [Np] F(P) with F(0) = 0;
    b_max: the largest batch a step may verify beyond its anchors (a table's max_batch_tokens; inf).
    """

    mode: int
    reqs: np.ndarray
    knots: np.ndarray
    ctxs: np.ndarray
    secs: np.ndarray
    extend: bool
    floor: float
    kv_cap: float
    prefill_mode: int
    prefill_p: np.ndarray
    prefill_f: np.ndarray
    b_max: float = math.inf


def _k() -> Any:
    """The compiled kernels (sparksched.cost_kernels), loaded on first use."""
    from sparksched import cost_kernels

    return cost_kernels


# ------------------------------------------------------------------------------------------ the model
@dataclass(frozen=True)
class StepPrice:
    """One step's price as a scheduler sees it: the verify slice at the step's own n and context, plus
    the seconds that do not depend on how many drafts are verified.

    Attributes:
        curve: verify seconds by batch tokens B (anchors + verified drafts) at this n and context.
        fixed_seconds: the prefill chunks' price in this step (constant in B).
        draft_seconds: the drafter's seconds for this step (constant in B; 0 when it does not draft).
        max_tokens: the largest B whose KV fits (inf: no limit); larger B costs inf.

    Example:
        >>> price = StepPrice(ThroughputCurve.from_points([2, 8], [0.010, 0.016]), fixed_seconds=0.004,
        ...                   draft_seconds=0.001, max_tokens=5)
        >>> [round(float(x), 4) for x in price.table(6)]
        [0.015, 0.015, 0.015, 0.016, 0.017, 0.018, inf]
    """

    curve: ThroughputCurve
    fixed_seconds: float = 0.0
    draft_seconds: float = 0.0
    max_tokens: float = math.inf

    def table(self, max_tokens: int, draft: bool = True) -> np.ndarray:
        """Whole-step seconds at B = 0..max_tokens, float64 [max_tokens + 1]: the verify slice plus
        the prefill and (with `draft`) the drafter's seconds; inf past `max_tokens`. This is what the
        vectorised schedulers index."""
        const = self.fixed_seconds + self.draft_seconds if draft else self.fixed_seconds
        out = self.curve.table(int(max_tokens)) + const
        if math.isfinite(self.max_tokens):
            out[int(math.floor(self.max_tokens)) + 1:] = np.inf
        return out


@dataclass(frozen=True)
class StepCost:
    """The price of a step by requests, batch tokens and context (see the module docstring).

    Build one with `from_profile`, `from_curve` or `load` (a profile or an SGLang table); price with
    `verify_seconds`, `draft_seconds`, `prefill_seconds`, `step_seconds`; take the scheduler's view
    with `curve(n, context)` or `price(...)`.

    Example:
        >>> cost = StepCost.from_profile("h100-qwen3-8b-roofline")
        >>> [round(1e3 * float(cost.verify_seconds(64, b, 2048)), 1) for b in (64, 512)]
        [12.1, 16.1]
    """

    arrays: CostArrays
    draft_rows: tuple[dict[str, Any], ...] = ()
    drafter_layers: int = 1
    family_rows: tuple[dict[str, Any], ...] = ()  # drafter rows per family ("family" key), when profiled
    includes_drafter: bool = False  # the verify price is a whole step, drafter included (SGLang tables)
    capacity_source: str = "no limit known"
    source: str = ""
    notes: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_profile(cls, source: str | Path | dict[str, Any]) -> StepCost:
        """The cost model of a profile (path, bundled name or parsed dict; schema of sparksched.profile)."""
        from sparksched.profile import load_profile

        profile = load_profile(source)
        where = str(profile.get("_source", "profile"))
        rows = [r for r in profile["verify"] if r.get("fits", True) is not False]
        if not rows:
            raise ValueError(f"{where}: no verify row fits in memory (every row has fits: false)")
        reqs = np.asarray(sorted({float(r["requests"]) for r in rows}))
        # one request count says nothing about how a step's price grows with n: price by batch tokens
        mode = MODE_PER_REQUEST if reqs.size > 1 else MODE_BATCH

        def knot(r: dict[str, Any]) -> float:
            b = float(r["tokens"])
            return b / float(r["requests"]) if mode == MODE_PER_REQUEST else b

        per = np.asarray(sorted({knot(r) for r in rows}))
        ctxs = np.asarray(sorted({float(r["context"]) for r in rows}))
        total = np.zeros((ctxs.size, reqs.size, per.size))
        count = np.zeros_like(total)
        for r in rows:
            c = int(np.searchsorted(ctxs, float(r["context"])))
            j = int(np.searchsorted(reqs, float(r["requests"])))
            k = int(np.searchsorted(per, knot(r)))
            total[c, j, k] += float(r["median_s"])
            count[c, j, k] += 1
        secs = np.full_like(total, np.nan)
        have = count > 0
        secs[have] = total[have] / count[have]
        for c in range(ctxs.size):  # noisy medians: non-decreasing in B at each (n, L)
            for j in range(reqs.size):
                ks = np.flatnonzero(have[c, j])
                if ks.size:
                    secs[c, j, ks] = isotonic_non_decreasing(secs[c, j, ks], count[c, j, ks])
        filled, fill_notes = _fill(secs, reqs, per, ctxs, where)
        floor = float(np.nanmin(secs))
        cap, cap_source = _kv_capacity(profile, where)
        p_rows, f_rows, p_note = _prefill_rows(profile, floor)
        prefill_mode = PREFILL_ROWS if p_rows is not None else PREFILL_BATCH
        p_grid = p_rows if p_rows is not None else np.zeros(1)
        f_grid = f_rows if f_rows is not None else np.zeros(1)
        arrays = CostArrays(mode, reqs, per, ctxs, filled, True, floor, cap, prefill_mode, p_grid, f_grid)
        if mode == MODE_BATCH:
            fill_notes.append(f"the verify grid has one request count ({reqs[0]:g}): priced by batch tokens, "
                              "the same at every request count")
        meta: dict[str, Any] = {k: profile.get(k) for k in ("device", "model", "dtype", "kind", "created")
                                if k in profile}
        layers = int(((profile.get("drafter") or {}).get("layers", 1)) or 1)
        return cls(arrays, tuple(profile.get("draft") or ()), layers, tuple(profile.get("draft_families") or ()),
                   False, cap_source, where, tuple(fill_notes + [p_note]), meta)

    @classmethod
    def from_curve(cls, curve: ThroughputCurve, draft_rows: tuple[dict[str, Any], ...] = (),
                   drafter_layers: int = 1) -> StepCost:
        """A cost keyed on batch tokens only: `curve`'s price at every n (its context axis kept).

        Prefill tokens are priced as batch tokens. An extrapolate='error' curve is extended linearly
        (a simulated step is never refused a price)."""
        secs = np.asarray(curve.seconds, dtype=np.float64)[:, None, :].copy()
        extend = curve.extrapolate != "clamp"
        arrays = CostArrays(MODE_BATCH, np.ones(1), curve.tokens.copy(), curve.contexts.copy(), secs, extend,
                            float(secs.min()), math.inf, PREFILL_BATCH, np.zeros(1), np.zeros(1))
        return cls(arrays, tuple(draft_rows), drafter_layers, (), False, "no limit known", repr(curve),
                   ("a curve keyed on batch tokens only: the same price at every request count",),
                   dict(curve.meta))

    @classmethod
    def load(cls, source: str | Path | dict[str, Any]) -> StepCost:
        """A profile (path, bundled name, dict) or an SGLang cost table file (SpsCostTable or
        SpsAdditiveCostTable, told apart by their keys)."""
        from sparksched.sglang_tables import is_sglang_table, read_sglang_table

        if isinstance(source, StepCost):
            return source
        data = source
        if isinstance(source, (str, Path)) and Path(source).is_file():
            try:
                data = json.loads(Path(source).read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                data = source  # let the profile loader name the problem
        if isinstance(data, dict) and is_sglang_table(data):
            return read_sglang_table(source if isinstance(source, (str, Path)) else data)
        return cls.from_profile(source)

    # ------------------------------------------------------------------ the slice
    def knots(self, n: float, context: float) -> tuple[np.ndarray, np.ndarray]:
        """(xs [Nk] batch tokens, ys [Nk] seconds): the verify slice at (n, context) as knots."""
        a = self.arrays
        n, context = _check_nl(n, context)
        xs = np.empty(a.knots.size)
        ys = np.empty(a.knots.size)
        _k().slice_knots(a, float(n), float(context), xs, ys)
        return xs, ys

    def curve(self, n: float, context: float) -> ThroughputCurve:
        """The 1-D view: verify seconds by batch tokens B at n requests and mean context `context`
        (the paper's SPS(B) = 1 / step_time(B) for this step). Ignores the KV limit (see `price`)."""
        xs, ys = self.knots(n, context)
        return ThroughputCurve(xs, ys[None, :], np.zeros(1), "linear" if self.arrays.extend else "clamp",
                               {**self.meta, "requests": float(n), "context": float(context)})

    def price(self, n: int, context: float, *, block: int = 0, family: str = "dspark",
              prefill_tokens: int = 0, prefill_offset: int = 0) -> StepPrice:
        """Everything a scheduler needs for one step: the verify slice at (n, context), the drafter's
        seconds at `block` (0: no drafting), and a prefill chunk of `prefill_tokens` starting at
        `prefill_offset` of its prompt."""
        xs, ys = self.knots(n, context)
        fixed = self._prefill(np.asarray([prefill_tokens]), np.asarray([prefill_offset]), int(n), xs, ys)
        return StepPrice(self.curve(n, context), fixed, self.draft_seconds(int(n), block, context, family),
                         self.max_batch_tokens(n, context))

    def table(self, n: int, context: float, max_tokens: int, extra_tokens: int = 0,
              draft_seconds: float = 0.0) -> np.ndarray:
        """Step seconds at B = 0..max_tokens [max_tokens + 1], where B counts `extra_tokens` prefill
        tokens (one fresh prompt chunk) on top of the anchors and drafts: what `schedule` indexes
        when handed a StepCost. inf where the KV would not fit."""
        xs, ys = self.knots(n, context)
        b = np.arange(max_tokens + 1, dtype=np.float64) - extra_tokens
        out = np.empty(b.size)
        _k().knot_prices(xs, ys, self.arrays.extend, b, out)
        fixed = self._prefill(np.asarray([extra_tokens]), np.zeros(1, dtype=np.int64), int(n), xs, ys)
        out += fixed + draft_seconds
        cap = self.max_batch_tokens(n, context)
        if math.isfinite(cap):
            out[b > cap] = np.inf
        return out

    # ------------------------------------------------------------------ prices
    def verify_seconds(self, n: float, batch_tokens: float | np.ndarray, context: float) -> np.ndarray:
        """T(n, B, L): the verify pass of n requests, B batch tokens, mean context L; shape follows B;
        inf where the KV does not fit (`why` says why)."""
        xs, ys = self.knots(n, context)
        b = np.asarray(batch_tokens, dtype=np.float64)
        flat = np.ascontiguousarray(b.ravel())
        out = np.empty(flat.size)
        _k().knot_prices(xs, ys, self.arrays.extend, flat, out)
        out[flat > self.max_batch_tokens(n, context)] = np.inf
        if self.arrays.mode == MODE_PER_REQUEST and np.any(flat < n):
            bad = float(flat[flat < n][0])
            raise ValueError(f"batch tokens {bad:g} < requests {n:g}: every decoding request verifies at "
                             "least its anchor token")
        return out.reshape(b.shape)

    def draft_seconds(self, n: int, block: int, context: float | None = None, family: str = "dspark") -> float:
        """D(n, g, L): the drafter's seconds for n requests at block g (0 for g = 0, n = 0, or a whole-
        step table whose steps already include the drafter)."""
        if block <= 0 or n <= 0 or self.includes_drafter:
            return 0.0
        ctx, tab, _ = self.draft_table(family, block, int(n))
        return float(_k().draft_at(ctx, tab, int(n), float(ctx[0] if context is None else context)))

    def prefill_seconds(self, tokens: int | np.ndarray, offsets: int | np.ndarray = 0, n: int = 1,
                        context: float | None = None) -> float:
        """The seconds prefill chunks (`tokens` each, starting at `offsets` of their prompts) add to a
        step with n decoding requests at `context` (their marginal price: a step with n = 0 also pays
        the pass's fixed part, which `step_seconds` adds)."""
        chunks = np.atleast_1d(np.asarray(tokens, dtype=np.int64))
        offs = np.broadcast_to(np.asarray(offsets, dtype=np.int64), chunks.shape).copy()
        if np.any(chunks < 0) or np.any(offs < 0):
            raise ValueError(f"prefill chunks and offsets must be >= 0, got {chunks.tolist()} at {offs.tolist()}")
        ctx = float(self.arrays.ctxs[0]) if context is None else context
        xs, ys = self.knots(max(n, 1), ctx)
        return self._prefill(chunks, offs, int(n), xs, ys)

    def step_seconds(self, n: int, batch_tokens: float, context: float, *, block: int = 0,
                     family: str = "dspark", prefill_tokens: int = 0, prefill_offset: int = 0) -> float:
        """A whole step: verify (0 without decoding requests) + drafter + prefill chunk."""
        if n > 0:
            verify = float(self.verify_seconds(n, batch_tokens, context))
        else:
            xs, ys = self.knots(1, context)
            verify = float(_k().empty_pass(self.arrays, xs, ys))
        return (verify + self.draft_seconds(n, block, context, family)
                + self.prefill_seconds(prefill_tokens, prefill_offset, n, context))

    def _prefill(self, chunks: np.ndarray, offsets: np.ndarray, n: int, xs: np.ndarray, ys: np.ndarray) -> float:
        return float(_k().prefill_price(self.arrays, chunks.astype(np.int64), offsets.astype(np.int64), int(n), xs, ys))

    # ------------------------------------------------------------------ feasibility and facts
    def max_batch_tokens(self, n: float, context: float) -> float:
        """The largest B a step may verify at (n, context): its KV (n L + B tokens) must fit, and a
        table's max_batch_tokens bounds the drafts (inf: no limit known)."""
        return float(_k().batch_cap(self.arrays, float(n), float(context)))

    def why(self, n: float, batch_tokens: float, context: float) -> str | None:
        """Why T(n, B, L) is infinite, or None when it is finite."""
        need = float(n) * float(context) + float(batch_tokens)
        if need > self.arrays.kv_cap:
            return (f"{n:g} requests at mean context {context:g} with {batch_tokens:g} batch tokens need "
                    f"{need:,.0f} KV tokens; the device holds {self.arrays.kv_cap:,.0f} ({self.capacity_source})")
        if batch_tokens > max(self.arrays.b_max, float(n)):
            return f"{batch_tokens:g} batch tokens exceed the table's max_batch_tokens {self.arrays.b_max:g}"
        return None

    def outside(self, n: float, batch_tokens: float, context: float) -> list[str]:
        """The axes on which (n, B, L) lies outside the measured grid (priced by the extrapolation rule)."""
        a = self.arrays
        out = []
        if n > a.reqs[-1] and a.reqs.size > 1:
            out.append(f"requests {n:g} > {a.reqs[-1]:g}")
        per = batch_tokens / n if a.mode == MODE_PER_REQUEST else batch_tokens
        if per > a.knots[-1]:
            what = "tokens per request" if a.mode == MODE_PER_REQUEST else "batch tokens"
            out.append(f"{what} {per:g} > {a.knots[-1]:g}")
        if a.ctxs.size > 1 and not a.ctxs[0] <= context <= a.ctxs[-1]:
            out.append(f"context {context:g} outside [{a.ctxs[0]:g}, {a.ctxs[-1]:g}]")
        return out

    def draft_table(self, family: str, block: int, max_requests: int) -> tuple[np.ndarray, np.ndarray, str]:
        """(contexts [Cd], seconds [Cd, max_requests + 1] by n, where it came from): the drafter's
        price by requests at each measured drafter context, for `family` at `block`.

        A profile that priced each family (`draft_families` rows) gives that family's rows directly.
        Otherwise: dspark and dflash (parallel drafters) cost one pass at the block: the rows of that
        block, linear in the block between measured blocks (held outside them). mtp1 and eagle3 run
        one-layer drafters: one pass costs the profiled drafter at its smallest block divided by its
        layer count (an estimate: the LM head share is divided too); mtp1 makes one such pass, eagle3
        (autoregressive) `block` passes. Linear in n between measured n, extended linearly past the
        last; 0 at n = 0 and without drafter rows.
        """
        n = np.arange(max_requests + 1, dtype=np.float64)
        own = tuple(r for r in self.family_rows if r.get("family") == family)
        rows = own or self.draft_rows
        if block == 0 or not rows or self.includes_drafter:
            why = "inside the table's whole steps" if self.includes_drafter else (
                "none in profile (0 s)" if block else "no drafter")
            return np.zeros(1), np.zeros((1, max_requests + 1)), why
        by: dict[float, dict[int, dict[float, list[float]]]] = {}
        for r in rows:
            by.setdefault(float(r.get("context", 0)), {}).setdefault(int(r["block"]), {}).setdefault(
                float(r["requests"]), []).append(float(r["median_s"]))
        ctxs = sorted(by)
        tables = []
        note = ""
        for c in ctxs:
            lat, note = _draft_at_block(by[c], n, "dspark" if own else family, block, self.drafter_layers)
            if own:
                note = f"profile {family} drafter rows (block {block})"
            lat[0] = 0.0
            tables.append(lat)
        if len(ctxs) > 1:
            note += f", linear in context between {ctxs[0]:g} and {ctxs[-1]:g}"
        return np.asarray(ctxs), np.stack(tables), note

    def describe(self) -> str:
        """A few lines: what the model was built from, its grid, its capacity and notes."""
        a = self.arrays
        axis = "tokens per request" if a.mode == MODE_PER_REQUEST else "batch tokens"
        lines = [f"step cost from {self.source or 'a table'}",
                 f"  requests {_span(a.reqs)}; {axis} {_span(a.knots)}; contexts {_span(a.ctxs)}",
                 f"  KV capacity: {a.kv_cap:,.0f} tokens ({self.capacity_source})",
                 f"  prefill: {'profile rows' if a.prefill_mode == PREFILL_ROWS else 'as batch tokens'}"]
        lines += [f"  note: {x}" for x in self.notes if x]
        return "\n".join(lines)

    def __repr__(self) -> str:
        a = self.arrays
        return (f"StepCost({self.source or 'table'}: {a.reqs.size} request counts x {a.knots.size} "
                f"{'tokens/request' if a.mode == MODE_PER_REQUEST else 'batch sizes'} x {a.ctxs.size} contexts)")


# ------------------------------------------------------------------------------------------ helpers
def _span(x: np.ndarray) -> str:
    return f"{x[0]:g}" if x.size == 1 else f"{x[0]:g}..{x[-1]:g} ({x.size})"


def _check_nl(n: float, context: float) -> tuple[float, float]:
    if not (isinstance(n, (int, float, np.integer, np.floating)) and math.isfinite(n) and n >= 1):
        raise ValueError(f"requests must be a number >= 1, got {n!r}")
    if not (isinstance(context, (int, float, np.integer, np.floating)) and math.isfinite(context) and context >= 0):
        raise ValueError(f"context must be a finite length >= 0, got {context!r}")
    return float(n), float(context)


def _extend_line(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fill NaNs of y [m] over x [m]: interior gaps linearly, past the last value by the last segment
    (slope >= 0), before the first by holding it. Needs >= 1 value; with one, holds it."""
    have = np.flatnonzero(~np.isnan(y))
    out = y.copy()
    if have.size == 1:
        out[:] = y[have[0]]
        return out
    inside = np.arange(have[0], have[-1] + 1)
    out[inside] = np.interp(x[inside], x[have], y[have])
    slope = max((y[have[-1]] - y[have[-2]]) / (x[have[-1]] - x[have[-2]]), 0.0)
    after = np.arange(have[-1] + 1, y.size)
    out[after] = y[have[-1]] + slope * (x[after] - x[have[-1]])
    out[: have[0]] = y[have[0]]
    return out


def _fill(secs: np.ndarray, reqs: np.ndarray, per: np.ndarray, ctxs: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
    """Complete the grid [Nc, Nn, Nk] from its fitting entries: along n (two or more along n), then
    along context, then along t. One-line ValueError when a point cannot be reached."""
    out = secs.copy()
    missing = int(np.isnan(out).sum())
    if not missing:
        return out, []
    for c in range(ctxs.size):
        for k in range(per.size):
            col = out[c, :, k]
            if np.count_nonzero(~np.isnan(col)) >= 2:
                out[c, :, k] = _extend_line(reqs, col)
    for j in range(reqs.size):
        for k in range(per.size):
            col = out[:, j, k]
            if np.isnan(col).any() and (~np.isnan(col)).any():
                out[:, j, k] = _extend_line(ctxs, col)
    for c in range(ctxs.size):
        for j in range(reqs.size):
            col = out[c, j, :]
            if np.isnan(col).any() and (~np.isnan(col)).any():
                out[c, j, :] = _extend_line(per, col)
    if np.isnan(out).any():
        c, j, k = np.argwhere(np.isnan(out))[0]
        raise ValueError(f"{where}: too few fitting verify rows to price requests={reqs[j]:g}, "
                         f"tokens_per_request={per[k]:g}, context={ctxs[c]:g}")
    return out, [f"{missing} of {out.size} grid points do not fit or were not measured: filled from fitting "
                 "neighbours (linear in requests, then context)"]


DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "fp8": 1,
               "float8": 1, "int8": 1, "fp4": 0.5, "float4": 0.5}


def _kv_capacity(profile: dict[str, Any], where: str) -> tuple[float, str]:
    """KV tokens the device holds for the model: a stated capacity (kv_capacity_tokens, the
    deployment's, or the device and model facts) when it agrees with every row's `fits` flag, else
    the largest fitting row's n (L + t); inf when no row is marked as not fitting and nothing is
    stated."""
    rows = profile["verify"]
    need = [(float(r["requests"]) * (float(r["context"]) + float(r["tokens"]) / float(r["requests"])),
             r.get("fits", True) is not False) for r in rows]
    candidates: list[tuple[float, str]] = []
    for where_from, value in (("the profile's kv_capacity_tokens", profile.get("kv_capacity_tokens")),
                              ("the deployment's kv_capacity_tokens",
                               (profile.get("deployment") or {}).get("kv_capacity_tokens"))):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            candidates.append((float(value), where_from))
    facts = _capacity_from_facts(profile)
    if facts is not None:
        candidates.append(facts)
    for cap, why in candidates:  # the first stated capacity that classifies every row as its flag does
        if all((tokens <= cap) == fits for tokens, fits in need):
            return cap, why
    if all(fits for _, fits in need):
        return math.inf, "no row of the profile is marked as not fitting"
    largest = max(tokens for tokens, fits in need if fits)
    return largest, "the largest fitting row of the profile's grid"


def _capacity_from_facts(profile: dict[str, Any]) -> tuple[float, str] | None:
    try:
        model, device = profile["model"], profile["device"]
        s = DTYPE_BYTES[str(profile.get("dtype", "bfloat16")).replace("torch.", "")]
        per_token = model.get("kv_bytes_per_token") or (
            int(model["layers"]) * 2 * int(model["kv_heads"]) * int(model["head_dim"]) * s)
        free = float(device["memory_bytes"]) - float(model["parameters"]) * s
        if free <= 0 or per_token <= 0:
            return None
        return free / float(per_token), (f"device memory {float(device['memory_bytes']) / 1e9:g} GB - weights, "
                                         f"{float(per_token) / 1024:g} KiB per token")
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _prefill_rows(profile: dict[str, Any], floor: float) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """(P grid [Np] from 0, F(P) [Np] with F(0) = 0, note), or (None, None, note) without prefill rows."""
    rows = profile.get("prefill") or []
    if not rows:
        return None, None, "no prefill rows: prefill tokens priced as batch tokens on the decode slice"
    by: dict[float, list[float]] = {}
    for r in rows:
        by.setdefault(float(r["prompt_tokens"]), []).append(float(r["median_s"]))
    p = np.asarray(sorted(by))
    y = np.asarray([np.mean(by[x]) for x in p])
    f = np.maximum(isotonic_non_decreasing(y, np.asarray([len(by[x]) for x in p])) - floor, 0.0)
    return (np.concatenate([[0.0], p]), np.concatenate([[0.0], f]),
            f"prefill: prompt rows {p[0]:g}..{p[-1]:g} tokens, a chunk costs F(offset + chunk) - F(offset), "
            "extended linearly past the longest row")


def _draft_at_block(pts_by_block: dict[int, dict[float, list[float]]], n: np.ndarray, family: str, block: int,
                    layers: int) -> tuple[np.ndarray, str]:
    blocks = sorted(pts_by_block)

    def at_block(b: int) -> np.ndarray:
        pts = pts_by_block[b]
        xs = np.asarray(sorted(pts))
        ys = np.asarray([np.mean(pts[x]) for x in xs])
        out = np.interp(n, xs, ys)
        if xs.size >= 2:
            slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
            out = np.where(n > xs[-1], ys[-1] + slope * (n - xs[-1]), out)
        return out

    if family in ("mtp1", "eagle3"):
        one_pass = at_block(blocks[0]) / layers
        passes = block if family == "eagle3" else 1
        lat = passes * np.maximum(one_pass, 0.0)
        note = (f"profile draft rows (block {blocks[0]}) / {layers} layers"
                f"{f' x {passes} passes' if passes > 1 else ''}")
        return lat, note
    if block in pts_by_block:
        lat = at_block(block)
    elif block < blocks[0] or block > blocks[-1]:
        lat = at_block(blocks[0] if block < blocks[0] else blocks[-1])
    else:
        hi = next(b for b in blocks if b > block)
        lo = max(b for b in blocks if b < block)
        w = (block - lo) / (hi - lo)
        lat = (1 - w) * at_block(lo) + w * at_block(hi)
    return np.maximum(lat, 0.0), f"profile draft rows (block {block})"


def as_step_cost(source: Any) -> StepCost:
    """A StepCost from a StepCost, a ThroughputCurve, a profile or an SGLang table."""
    if isinstance(source, StepCost):
        return source
    if isinstance(source, ThroughputCurve):
        return StepCost.from_curve(source)
    return StepCost.load(source)
