"""The hardware-aware, non-anticipating prefix scheduler (DSpark Algorithm 1, docs/method.md).

For a batch of n requests with drafted blocks of up to g tokens, the scheduler picks verify lengths
l_i in [0, drafted_i] that maximise the expected system token throughput

    R(l) = (sum_i E_i) / step_time(B),   E_i = 1 + S_{i,1} + ... + S_{i,l_i},
    B = extra_tokens + sum_i (1 + l_i),  S_{i,k} = c_{i,1} * ... * c_{i,k}

by the greedy with early stop: candidates (i, k) with S_{i,k} > 0, sorted by S descending (ties:
smaller k first, then smaller i), are admitted one at a time from l = 0 while admitting strictly
improves R; the scheduler **stops at the first candidate that does not improve R**.

Confidence contract (what keeps decoding lossless):
    c_{i,k} is the predicted probability that draft token x_k survives verification given that
    x_1..x_{k-1} survived. It may use the context, the target's and drafter's hidden states, the
    draft distribution q_k and the earlier draft tokens x_{<k} (the Markov head uses x_{k-1}); it
    must NEVER use x_k itself (e.g. the drawn token's own logit). With the early stop, [l_i >= k]
    is a function of c_{i,1..k} and of the other requests' confidences only, so the realisation of
    x_k never steers its own admission. A retrospective global search over all l, or a confidence
    that reads x_k, breaks this and biases the output (tests/test_lossless.py shows both).

Exact arithmetic (shared by all three implementations, so they agree bit for bit on CPU and CUDA):
    S_{i,k} is the sequential float64 product c_{i,1} * c_{i,2} * ... (left to right). The
    expected-token numerator is accumulated in fixed point: each admitted S contributes
    floor(S * 2**40) (an int64), the base is n * 2**40, so the running sum is exact and
    independent of summation order. R_j = float64(numerator_j) / step_time(B_j) (IEEE division),
    compared as R_j > R_{j-1}. The 2**-40 quantum (about 1e-12 tokens) is far below anything a
    throughput decision can see; it limits n * (g + 1) to fewer than 2**23 (the numerator reaches
    n * (g + 1) * 2**40, which must stay below 2**63).

Three implementations: `schedule_reference` (plain Python, the spec), `schedule_numpy` (vectorised,
partial selection of the top candidates), `schedule_torch` (on device, static shapes, no host
synchronisation, capturable in a CUDA graph). `schedule` dispatches on the input type.
"""

from __future__ import annotations

import math
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from sparksched.curve import ThroughputCurve
from sparksched.survival import survival_flat, survival_torch

if TYPE_CHECKING:
    import torch

__all__ = ["schedule", "schedule_numpy", "schedule_padded", "schedule_reference", "schedule_torch", "step_time_table"]

_SHIFT = 40
SCALE = 1 << _SHIFT  # fixed-point quantum of the expected-token numerator: 2**-40 tokens
_MAX_CANDIDATES = 1 << 23  # n * (g + 1) must stay below this: the numerator is at most n * (g + 1) * SCALE
_SMALL = 32  # schedule_numpy hands batches with at most this many candidates to the scalar loop


# ---------------------------------------------------------------------------------------- validation
def _is_torch(x: Any) -> bool:
    mod = type(x).__module__
    return mod.startswith("torch") and type(x).__name__ == "Tensor"


def check_conf(conf: Any) -> np.ndarray:
    """conf as a float64 [n, g] array; ValueError naming the first bad entry."""
    arr = np.asarray(conf, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"conf must be 2-D [n, g], got shape {arr.shape}")
    lo, hi = (arr.min(), arr.max()) if arr.size else (0.0, 0.0)
    if not (lo >= 0.0 and hi <= 1.0):  # NaN propagates through min/max and fails both
        bad = ~((arr >= 0.0) & (arr <= 1.0))
        i, k = np.argwhere(bad)[0]
        raise ValueError(f"conf[{i}, {k}] = {float(arr[i, k])!r}: confidences must be numbers in [0, 1]")
    check_size(*arr.shape)
    return arr


def check_size(n: int, g: int) -> None:
    """Refuse batches whose fixed-point numerator (up to n * (g + 1) * 2**40) would overflow int64."""
    if n * (g + 1) >= _MAX_CANDIDATES:
        raise ValueError(f"conf has shape ({n}, {g}): n * (g + 1) must be < {_MAX_CANDIDATES} (2**23; the "
                         "exact fixed-point sums would overflow int64)")


def check_drafted(drafted: Any, n: int, g: int) -> np.ndarray | None:
    """drafted as an int64 [n] array in [0, g] (None stays None: every request drafted g)."""
    if drafted is None:
        return None
    arr = np.asarray(drafted)
    if arr.shape != (n,):
        raise ValueError(f"drafted must have shape ({n},) to match conf, got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        as_int = arr.astype(np.int64) if np.all(np.isfinite(arr)) else None
        if as_int is None or np.any(as_int != arr):
            i = int(np.argmax(~np.isfinite(arr))) if as_int is None else int(np.argmax(as_int != arr))
            raise ValueError(f"drafted[{i}] = {arr[i].item()!r}: drafted counts must be integers")
        arr = as_int
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr > g)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"drafted[{i}] = {arr[i]}: must be in [0, g={g}]")
    return arr


def check_torch_inputs(conf: Any, drafted: Any, validate: bool) -> None:
    """The numpy paths' checks on tensors conf [n, g] and drafted [n] | None: shapes and sizes
    always; values (read on the host, a synchronisation) only under `validate`."""
    if conf.dim() != 2:
        raise ValueError(f"conf must be 2-D [n, g], got shape {tuple(conf.shape)}")
    n, g = conf.shape
    check_size(n, g)
    if drafted is not None and tuple(drafted.shape) != (n,):
        raise ValueError(f"drafted must have shape ({n},) to match conf, got {tuple(drafted.shape)}")
    if validate:
        check_conf(conf.detach().cpu().numpy())
        if drafted is not None:
            check_drafted(drafted.detach().cpu().numpy(), n, g)


def check_extra(extra_tokens: Any) -> int:
    """extra_tokens as a non-negative int."""
    if isinstance(extra_tokens, bool) or not isinstance(extra_tokens, (int, np.integer)) or extra_tokens < 0:
        raise ValueError(f"extra_tokens must be an integer >= 0, got {extra_tokens!r}")
    return int(extra_tokens)


def _check_table(table: np.ndarray, need: int) -> np.ndarray:
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"step-time table must be 1-D [max_B + 1], got shape {t.shape}")
    if t.size < need:
        raise ValueError(f"step-time table has {t.size} entries, this batch needs B up to {need - 1}")
    if np.any(np.isnan(t)) or np.any(t < 0):
        j = int(np.argmax(np.isnan(t) | (t < 0)))
        raise ValueError(f"step-time table[{j}] = {float(t[j])!r}: step times must be >= 0 (inf = infeasible)")
    finite = np.flatnonzero(np.isfinite(t))  # inf marks infeasible B (e.g. outside a measured range)
    down = t[finite[1:]] < t[finite[:-1]]
    if np.any(down):
        j, j1 = finite[int(np.argmax(down))], finite[int(np.argmax(down)) + 1]
        raise ValueError(f"step-time table decreases from {float(t[j])!r} at B={j} to {float(t[j1])!r} "
                         f"at B={j1}; a curve must be non-decreasing")
    return t


def step_times(curve: ThroughputCurve | np.ndarray, batch_tokens: np.ndarray) -> np.ndarray:
    """Step time (s) at integer batch sizes [m] for the scheduler: inf where the curve forbids B.

    `curve` is a ThroughputCurve (with extrapolate="error", B outside the measured range is
    infeasible: inf) or a 1-D table indexed by B (e.g. `curve.table(max_B)`).
    """
    b = np.asarray(batch_tokens, dtype=np.int64)
    if isinstance(curve, ThroughputCurve):
        xs = curve.tokens
        x = b.astype(np.float64)
        if x.size and x.min() >= xs[0] and x.max() <= xs[-1]:
            return np.interp(x, xs, curve.seconds[0])  # inside the range: what step_time computes
        if curve.extrapolate == "error":
            lo, hi = curve.tokens[0], curve.tokens[-1]
            inside = (b >= lo) & (b <= hi)
            out = np.full(b.shape, np.inf)
            out[inside] = curve.step_time(b[inside].astype(np.float64))
            return out
        return np.asarray(curve.step_time(b.astype(np.float64)), dtype=np.float64)
    table = np.asarray(curve, dtype=np.float64)
    return table[b]


# id(curve) -> (weak reference, table, copies of the points the table was built from)
_TABLE_CACHE: dict[int, tuple[weakref.ref, np.ndarray, np.ndarray, np.ndarray]] = {}
_TABLE_CACHE_SIZE = 16


def _cached_table(curve: ThroughputCurve, max_b: int) -> np.ndarray:
    """step_times(curve, 0..>= max_b), kept per live curve object (the simulator reuses one curve
    for many steps). Element-wise equal to step_times at the same B.

    A hit is checked against copies of the curve's points (a few dozen numbers): a curve whose
    arrays were written in place gets a fresh table, never a stale one.
    """
    hit = _TABLE_CACHE.get(id(curve))
    same = (hit is not None and hit[0]() is curve and np.array_equal(hit[2], curve.tokens)
            and np.array_equal(hit[3], curve.seconds[0]))
    if same and hit[1].size > max_b:  # type: ignore[index]
        return hit[1]  # type: ignore[index]
    size = max(max_b + 1, 1024, 2 * hit[1].size if same else 0)  # type: ignore[index]
    table = step_times(curve, np.arange(size))
    table.setflags(write=False)
    _TABLE_CACHE.pop(id(curve), None)
    if len(_TABLE_CACHE) >= _TABLE_CACHE_SIZE:
        _TABLE_CACHE.pop(next(iter(_TABLE_CACHE)))
    _TABLE_CACHE[id(curve)] = (weakref.ref(curve), table, curve.tokens.copy(), curve.seconds[0].copy())
    return table


def _range_times(curve: ThroughputCurve | np.ndarray, start: int, count: int) -> np.ndarray:
    """step_times at B = start, start + 1, ..., start + count - 1 (fast path for the schedulers)."""
    if isinstance(curve, ThroughputCurve):
        return _cached_table(curve, start + count - 1)[start:start + count]
    return curve[start:start + count]


def step_time_table(curve: ThroughputCurve, max_tokens: int) -> np.ndarray:
    """[max_tokens + 1] float64 step times at B = 0..max_tokens, inf where infeasible.

    Same values as `step_times(curve, arange(max_tokens + 1))`; feed it (as a tensor on the
    engine's device) to `schedule_torch`.

    Example:
        >>> curve = ThroughputCurve.from_points([1, 3], [1.0, 2.0], extrapolate="error")
        >>> step_time_table(curve, 4).tolist()
        [inf, 1.0, 1.5, 2.0, inf]
    """
    return step_times(curve, np.arange(max_tokens + 1))


def _prepare_curve(curve: Any, need: int, n: int = 1, extra: int = 0,
                   context: float | None = None) -> ThroughputCurve | np.ndarray:
    """The step's price as a 1-D ThroughputCurve or table indexed by B (need = entries it must cover).

    A `sparksched.cost.StepCost` is sliced at this step's n requests and `context` (its table counts
    `extra` prefill tokens as a fresh prompt chunk); a `StepPrice` is already one step's price (its
    prefill is inside: extra must be 0); a curve with a context axis is read at `context`.
    """
    if isinstance(curve, ThroughputCurve):
        if curve.has_context:
            if context is None:
                raise ValueError(f"the curve has a context axis (contexts {curve.contexts.tolist()}): pass "
                                 "context= (the batch's mean context, tokens)")
            return curve.at_context(float(context))
        return curve
    if type(curve).__name__ in ("StepCost", "StepPrice"):
        from sparksched.cost import StepCost, StepPrice

        if isinstance(curve, StepPrice):
            if extra:
                raise ValueError("a StepPrice holds its step's prefill already: extra_tokens must be 0")
            return curve.table(need - 1)
        if isinstance(curve, StepCost):
            ctxs = curve.arrays.ctxs
            if context is None and ctxs.size > 1:
                raise ValueError(f"a StepCost prices by context (contexts {ctxs.tolist()}): pass context= (the "
                                 "batch's mean context, tokens)")
            return curve.table(max(n, 1), float(ctxs[0] if context is None else context), need - 1, extra)
    if _is_torch(curve):
        curve = curve.detach().cpu().numpy()
    if isinstance(curve, (np.ndarray, list, tuple)):
        return _check_table(np.asarray(curve), need)
    raise ValueError(f"curve must be a ThroughputCurve or a 1-D step-time table, got {type(curve).__name__}")


def _base_time(curve: ThroughputCurve | np.ndarray, b0: int) -> float:
    t0 = float(step_times(curve, np.asarray([b0]))[0])
    if not (math.isfinite(t0) and t0 > 0.0):
        raise ValueError(f"step time at the base batch B = {b0} (n + extra_tokens, no drafts) is {t0}: "
                         "the curve must give a finite time > 0 there")
    return t0


# ---------------------------------------------------------------------------------------- reference
def schedule_reference(conf: Any, curve: ThroughputCurve | np.ndarray, drafted: Any = None,
                       extra_tokens: int = 0, *, context: float | None = None) -> np.ndarray:
    """Plain-Python greedy with early stop: the specification the vectorised versions must match.

    Args:
        conf: [n, g] conditional survival probabilities c_{i,k} in [0, 1] (see module docstring
            for the confidence contract).
        curve: the step's price: a ThroughputCurve, a 1-D step-time table [max_B + 1] (seconds,
            indexed by B), a `sparksched.cost.StepCost` (sliced at this step's n and `context`) or
            a `StepPrice` (one step's price, prefill and drafter included).
        drafted: [n] ints in [0, g], drafted tokens per request (default g for all).
        extra_tokens: non-speculative tokens sharing the step (chunked prefill), >= 0.
        context: the batch's mean context (tokens), for a StepCost or a curve with a context axis.

    Returns:
        [n] int64 verify lengths l_i, prefix-closed, 0 <= l_i <= drafted_i.

    Example:
        >>> curve = ThroughputCurve.from_points([1, 2, 3], [1 / 1.0, 1 / 0.5, 1 / 0.45])
        >>> schedule_reference(np.array([[0.8, 0.9]]), curve).tolist()  # the paper's Appendix A
        [0]
    """
    arr = check_conf(conf)
    n, g = arr.shape
    dr = check_drafted(drafted, n, g)
    extra = check_extra(extra_tokens)
    rows = arr.tolist()
    counts = [g] * n if dr is None else dr.tolist()
    curve = _prepare_curve(curve, extra + n * (g + 1) + 1, n, extra, context)
    lengths = [0] * n
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    candidates = []
    for i in range(n):
        s = 1.0
        for k in range(counts[i]):
            s = rows[i][k] if k == 0 else s * rows[i][k]
            if s > 0.0:
                candidates.append((-s, k, i))
    candidates.sort()  # S descending, then smaller k, then smaller i
    batch = extra + n
    numerator = n * SCALE
    best = float(numerator) / _base_time(curve, batch)
    # step_time(B) for every B the loop can reach, looked up once
    times = step_times(curve, np.arange(batch, batch + len(candidates) + 1)).tolist()
    for neg_s, k, i in candidates:
        numerator += math.floor(-neg_s * 2.0 ** _SHIFT)
        batch += 1
        rate = float(numerator) / times[batch - extra - n]
        if rate > best:
            best = rate
            lengths[i] = k + 1
        else:
            break  # early stop: never look past a non-improving candidate
    return np.asarray(lengths, dtype=np.int64)


# ---------------------------------------------------------------------------------------- numpy
def _scan(pool: np.ndarray, numerator0: int, times: np.ndarray, m: int) -> tuple[int, float]:
    """Greedy early-stop scan over candidate values `pool` (any order) in descending order.

    numerator0: fixed-point numerator before the first of them; times[j]: step time after j of
    them. Sorts only the top m values, growing m until the stop falls inside. Returns (number
    admitted, value of the last admitted one).
    """
    total = pool.size
    if total == 0:
        return 0, 0.0
    best = pool.max()  # probe: often the very next candidate already fails to improve R
    if best <= 0.0 or not (float(numerator0 + math.floor(best * float(SCALE))) / times[1]
                           > float(numerator0) / times[0]):
        return 0, 0.0
    m = min(total, m)
    while True:
        if 2 * m < total:
            top = np.partition(pool, total - m)[total - m:]  # the m largest values, unordered
            top.sort()
            if top[0] <= 0.0:  # fewer than m positive candidates: take them all
                m = total
                continue
        else:
            top = np.sort(pool)
            top = top[top > 0.0]
        s = top[::-1]  # candidate values in admission order (ties are equal values)
        rate = np.empty(s.size + 1)
        rate[0] = numerator0
        rate[1:] = np.cumsum(np.floor(s * float(SCALE)).astype(np.int64)) + numerator0
        rate /= times[:s.size + 1]  # rate[j] = R after admitting j of them
        stop = 0
        if s.size:
            improves = rate[1:] > rate[:-1]
            stop = int(improves.argmin())
            if improves[stop]:
                stop = s.size
        if stop < s.size or m >= total:
            return stop, float(s[stop - 1]) if stop else 0.0
        m = min(total, 8 * m)


def schedule_numpy(conf: Any, curve: ThroughputCurve | np.ndarray, drafted: Any = None,
                   extra_tokens: int = 0, *, context: float | None = None) -> np.ndarray:
    """Vectorised greedy with early stop; equal to `schedule_reference` bit for bit.

    No Python loop over candidates: (1) a probe of the largest S_{i,1} returns at once when even
    it does not pay (heavy load); (2) on the flat stretch of the curve after the base batch every
    candidate with a non-negligible S improves R, so the top ones are admitted after one
    `np.partition`, unsorted; (3) beyond it, only the top-m remaining values are sorted (m grows
    8x until the stop falls inside) and the first non-improving one is found from a cumulative
    sum. Ties need no sort: the admitted set is every value above the last admitted one plus the
    first ties at it in (k, i) index order. Batches of at most 32 candidates use the scalar loop.
    Same arguments and result as the reference:
    conf [n, g] float in [0, 1], curve (ThroughputCurve, table [max_B + 1], StepCost or StepPrice),
    drafted [n] ints, extra_tokens int >= 0, context (tokens, for a StepCost or a context axis);
    returns [n] int64 lengths.

    Example:
        >>> curve = ThroughputCurve.from_points([1, 256, 8192], [0.02, 0.02, 0.64])
        >>> schedule_numpy(np.full((4, 3), 0.9), curve, drafted=[3, 1, 0, 2]).tolist()
        [3, 1, 0, 2]
    """
    arr = check_conf(conf)
    n, g = arr.shape
    if n * g <= _SMALL:  # tiny batches: the scalar loop has less overhead than array calls
        return schedule_reference(arr, curve, drafted, extra_tokens, context=context)
    return _schedule_vectorised(arr, curve, drafted, extra_tokens, context)


def _schedule_vectorised(arr: np.ndarray, curve: Any, drafted: Any, extra_tokens: int,
                         context: float | None = None) -> np.ndarray:
    """`schedule_numpy` without the small-batch hand-off (arr: a checked float64 [n, g])."""
    n, g = arr.shape
    dr = check_drafted(drafted, n, g)
    extra = check_extra(extra_tokens)
    curve = _prepare_curve(curve, extra + n * (g + 1) + 1, n, extra, context)
    lengths = np.zeros(n, dtype=np.int64)
    b0 = extra + n
    if g == 0:
        _base_time(curve, b0)
        return lengths
    t01 = _range_times(curve, b0, 2)  # step time with no drafts and with one
    if not (math.isfinite(t01[0]) and t01[0] > 0.0):
        _base_time(curve, b0)  # raises, naming the base batch
    # probe: the first candidate is the largest S_{i,1} = c_{i,1}; under heavy load it often fails
    # to improve R, and then nothing is admitted (no need to build every S)
    first = arr[:, 0] if dr is None else np.where(dr > 0, arr[:, 0], 0.0)
    top = first.max()
    if top <= 0.0 or not (float(n * SCALE + math.floor(top * float(SCALE))) / t01[1] > float(n * SCALE) / t01[0]):
        return lengths
    # S transposed: candidate (i, k) at flat index k * n + i, so index order is the tie order
    flat = survival_flat(arr, dr)
    total = flat.size
    ahead = _range_times(curve, b0, total + 1)  # ahead[j]: step time after admitting j candidates
    # leading stretch equal to the base time (a table may hold inf gaps, so it need not be sorted)
    rises = ahead != ahead[0]
    flat_len = int(rises.argmax()) - 1 if rises.any() else total
    done, numerator0, pool, last, m0 = 0, n * SCALE, flat, 0.0, max(64, flat_len + 64)
    if flat_len > 0:
        # phase 1: while the step time stays flat, a candidate whose quantum is big enough to move
        # R past float rounding (> (n + total) / 2048, see below) always improves it, so the top
        # `flat_len` candidates are admitted without sorting them. Bound: numerators stay below
        # (n + total) * 2**40, and two float64 roundings (int -> float, division) move R by less
        # than numerator * 2**-51.
        part = np.partition(flat, total - flat_len)
        v_flat = part[total - flat_len]  # the smallest value among the top flat_len
        if math.floor(v_flat * float(SCALE)) >= (n + total) // 2048 + 2:
            numerator0 += int(np.floor(part[total - flat_len:] * float(SCALE)).astype(np.int64).sum())
            done, pool, last, m0 = flat_len, part[:total - flat_len], v_flat, 64
    more, last_more = _scan(pool, numerator0, ahead[done:], m0)
    stop = done + more
    v = last_more if more else last
    if stop == 0:
        return np.zeros(n, dtype=np.int64)
    # the admitted set is the top `stop` candidates in (S desc, k asc, i asc) order: everything
    # above the last admitted value v, plus the first ties at v in flat index order (k, then i)
    mask = flat > v
    need = stop - int(np.count_nonzero(mask))
    if need:
        mask[np.flatnonzero(flat == v)[:need]] = True
    return np.count_nonzero(mask.reshape(g, n), axis=0).astype(np.int64)


# ---------------------------------------------------------------------------------------- torch
def schedule_torch(conf: torch.Tensor, table: torch.Tensor, drafted: torch.Tensor | None = None,
                   extra_tokens: int = 0, validate: bool = True) -> torch.Tensor:
    """On-device greedy with early stop; equal to `schedule_reference` bit for bit.

    Static shapes, no `.item()` / `.tolist()` / `nonzero()`: with `validate=False` it never
    synchronises with the host and can be captured in a CUDA graph (shapes fixed by n and g).

    Args:
        conf: [n, g] float tensor of conditional survival probabilities in [0, 1], any device.
        table: [>= extra_tokens + n * (g + 1) + 1] float64 step times (s) indexed by batch tokens B,
            on conf's device (e.g. `torch.as_tensor(step_time_table(curve, max_B), device=dev)`);
            inf marks infeasible B.
        drafted: [n] integer tensor in [0, g] (default: g for all).
        extra_tokens: int >= 0, non-speculative tokens in the step (a Python int: it sets B's base).
        validate: check values (NaN, range, monotone table): reads values on the host, so pass
            False inside a CUDA graph or a hot loop. Shapes are always checked.

    Returns:
        [n] int64 verify lengths on conf's device.

    Example:
        >>> import torch
        >>> curve = ThroughputCurve.from_points([1, 64, 512], [0.010, 0.010, 0.040])
        >>> table = torch.as_tensor(step_time_table(curve, 2 * 4))
        >>> schedule_torch(torch.tensor([[0.9, 0.8, 0.1], [0.5, 0.2, 0.2]]), table, validate=False).tolist()
        [3, 3]
    """
    import torch

    if conf.dim() != 2:
        raise ValueError(f"conf must be 2-D [n, g], got shape {tuple(conf.shape)}")
    n, g = conf.shape
    extra = check_extra(extra_tokens)
    total = n * g
    check_torch_inputs(conf, drafted, validate)
    if table.dim() != 1 or table.shape[0] < extra + n + total + 1:
        raise ValueError(f"table must be 1-D with at least {extra + n + total + 1} entries "
                         f"(B up to extra + n * (g + 1)), got shape {tuple(table.shape)}")
    if validate:
        _check_table(table.detach().cpu().numpy(), extra + n + total + 1)
        _base_time(table.detach().cpu().numpy(), extra + n)
    dev = conf.device
    if n == 0 or g == 0:
        return torch.zeros(n, dtype=torch.int64, device=dev)
    s = survival_torch(conf, drafted)
    flat = s.t().reshape(-1)  # candidate (i, k) at index k * n + i
    s_sorted, order = torch.sort(flat, descending=True, stable=True)
    quanta = torch.floor(s_sorted * float(SCALE)).to(torch.int64)
    numerator = torch.cumsum(quanta, dim=0) + n * SCALE
    tab = table.to(device=dev, dtype=torch.float64)
    b0 = extra + n
    rate = numerator.to(torch.float64) / tab[b0 + 1: b0 + 1 + total]
    r0 = float(n * SCALE) / tab[b0: b0 + 1]
    improves = (rate > torch.cat((r0, rate[:-1]))) & (s_sorted > 0.0)
    stop = torch.cumprod(improves.to(torch.int64), dim=0).sum()  # leading improvements
    admitted = torch.arange(total, device=dev) < stop
    mask = torch.zeros(total, dtype=torch.bool, device=dev).scatter(0, order, admitted)
    return mask.view(g, n).sum(dim=0, dtype=torch.int64)


# ---------------------------------------------------------------------------------------- dispatch
def schedule(conf: Any, curve: Any, drafted: Any = None, extra_tokens: int = 0, *,
             context: float | None = None) -> Any:
    """Verify lengths for one step by the non-anticipating greedy (DSpark Algorithm 1).

    Args:
        conf: [n, g] conditional survival probabilities c_{i,k} in [0, 1]: numpy array (or nested
            list) -> numpy path; torch tensor (any device) -> torch path on that device.
            Contract: c_{i,k} may use the context, hidden states, q_k and x_{<k}, never x_k.
        curve: the step's price: a ThroughputCurve (step time in seconds vs batch tokens B), a 1-D
            step-time table [max_B + 1] indexed by B (numpy array, or a tensor for the torch path),
            a `sparksched.cost.StepCost` (sliced at this step's n and `context`: the price of a
            step depends on the number of requests and the context, not on B alone) or a
            `StepPrice` (one step's price, prefill and drafter included).
        drafted: [n] drafted tokens per request, ints in [0, g] (default g).
        extra_tokens: non-speculative tokens in the same step (chunked prefill), int >= 0;
            B = extra_tokens + sum_i (1 + l_i).
        context: the batch's mean context in tokens, for a StepCost or a curve with a context axis.

    Returns:
        [n] int64 verify lengths l_i (numpy array, or tensor on conf's device).

    Example:
        >>> import numpy as np
        >>> from sparksched import ThroughputCurve, schedule
        >>> curve = ThroughputCurve.from_points([1, 64, 512], [0.010, 0.010, 0.040])
        >>> schedule(np.array([[0.9, 0.8, 0.1], [0.5, 0.2, 0.2]]), curve).tolist()
        [3, 3]
    """
    if _is_torch(conf):
        import torch

        if conf.dim() != 2:
            raise ValueError(f"conf must be 2-D [n, g], got shape {tuple(conf.shape)}")
        n, g = conf.shape
        need = check_extra(extra_tokens) + n * (g + 1)
        if not _is_torch(curve):
            curve = _prepare_curve(curve, need + 1, n, int(extra_tokens), context)
        if isinstance(curve, ThroughputCurve):
            table = torch.as_tensor(step_time_table(curve, need), device=conf.device)
        elif _is_torch(curve):
            table = curve
        else:
            table = torch.as_tensor(np.asarray(curve, dtype=np.float64), device=conf.device)
        dr = drafted if drafted is None or _is_torch(drafted) else torch.as_tensor(
            np.asarray(drafted), device=conf.device)
        return schedule_torch(conf, table, dr, extra_tokens)
    return schedule_numpy(conf, curve, drafted, extra_tokens, context=context)


def schedule_padded(conf: Any, curve: Any, drafted: Any = None, *, context: float | None = None) -> np.ndarray:
    """Verify lengths for an engine whose verify pass is one padded [n, 1 + m] block, m = max_i l_i.

    Such a pass costs T(n (1 + m)) whatever the rows' own lengths, so verifying fewer drafts for one
    request saves nothing unless the longest row shrinks; what is left to choose is the block width
    m. This picks the m in 0..max drafted that maximises the DSpark goodput
    Theta(m) = (n + sum_i sum_{k <= min(m, d_i)} S_{i,k}) / T(n (1 + m)) and verifies min(m, d_i)
    drafts per request (the smallest m on ties). Non-anticipating like `schedule`: the lengths are a
    function of the confidences only, so verification stays lossless.

    Args:
        conf: [n, g] conditional confidences c_{i,k} in [0, 1] (numpy array or nested list).
        curve: what `schedule` takes (ThroughputCurve, table by B, StepCost with `context`, StepPrice).
        drafted: [n] drafted tokens per request in [0, g] (default g).

    Returns:
        [n] int64 verify lengths.

    Example:
        >>> curve = ThroughputCurve.from_points([1, 4, 8], [0.010, 0.011, 0.040])
        >>> schedule_padded(np.array([[0.9, 0.9, 0.1], [0.8, 0.1, 0.1]]), curve).tolist()
        [1, 1]
    """
    from sparksched.survival import survival

    arr = check_conf(conf)
    n, g = arr.shape
    dr = check_drafted(drafted, n, g)
    d = np.full(n, g, dtype=np.int64) if dr is None else dr
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    top = int(d.max())
    s = survival(arr, d)  # [n, g], zero past each request's drafted count
    gain = n + np.concatenate([[0.0], np.cumsum(s.sum(axis=0))[:top]])  # [top + 1] expected tokens at m
    widths = n * (1 + np.arange(top + 1))
    times = step_times(_prepare_curve(curve, int(widths[-1]) + 1, n, 0, context), widths)
    m = int(np.argmax(gain / times))
    return np.minimum(d, m).astype(np.int64)
