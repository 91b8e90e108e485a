"""Batched verify-length policies: many decoding steps of one batch in one vectorised call.

Covers: the simulator's hot loop. A one-hour trace is ~500,000 engine steps; calling the library
scheduler once per step costs tens of microseconds in validation and dispatch alone. Between
arrivals and completions the batch composition does not change, so the engine evaluates up to a few
dozen steps at once on confidences [T, n, g] (see `Engine._epoch`).

Every function here returns exactly what the library returns step by step, bit for bit:
`dspark_lengths` equals `sparksched.schedule` (the greedy with early stop, with the library's
fixed-point expected-token sum and IEEE division, ties by smaller k then smaller i), the others equal
`sparksched.policies`' static / threshold / verify-all. tests/test_fastpath.py checks this with
Hypothesis against the library on random batches, with a deliberately wrong variant as a negative
control.
"""

from __future__ import annotations

import numpy as np

from sparksched.scheduler import SCALE

_SCALE_F = float(SCALE)


def survival(conf: np.ndarray, drafted: np.ndarray | None) -> np.ndarray:
    """S [T, n, g]: left-to-right cumulative product along g, zero past each request's drafted count
    (drafted None: every request drafted g)."""
    s = np.cumprod(conf, axis=2)
    g = conf.shape[2]
    if drafted is not None and drafted.size and drafted.min() < g:
        s = np.where(np.arange(g)[None, None, :] < drafted[None, :, None], s, 0.0)
    return s


def dspark_lengths(conf: np.ndarray, drafted: np.ndarray | None, table: np.ndarray,
                   extra_tokens: int = 0) -> np.ndarray:
    """Algorithm 1 (greedy, early stop) for each of T steps; lengths [T, n] int64.

    Args:
        conf: [T, n, g] float64 conditional confidences in [0, 1].
        drafted: [n] int64 drafted tokens per request (the same in every step); None: all g.
        table: [>= extra + n*(g+1) + 1] float64 step time (s) at B = 0, 1, ... (curve.table).
        extra_tokens: non-speculative tokens in each step (chunked prefill).
    """
    t_steps, n, g = conf.shape
    if n == 0 or g == 0:
        return np.zeros((t_steps, n), dtype=np.int64)
    m = n * g
    flat = survival(conf, drafted).transpose(0, 2, 1).reshape(t_steps, m)  # candidate (i, k) at k*n + i
    order = np.argsort(-flat, axis=1, kind="stable")  # S descending; ties keep (k, i) index order
    rows = np.arange(t_steps)[:, None]
    s = flat[rows, order]
    b0 = extra_tokens + n
    numer = np.cumsum((s * _SCALE_F).astype(np.int64), axis=1)  # s >= 0: truncation is the floor
    numer += n * SCALE
    rate = np.empty((t_steps, m + 1))
    rate[:, 0] = n * SCALE
    rate[:, 1:] = numer
    rate /= table[b0:b0 + m + 1][None, :]
    improves = np.zeros((t_steps, m + 1), dtype=bool)  # a False sentinel column: argmin = first stop
    np.logical_and(rate[:, 1:] > rate[:, :-1], s > 0.0, out=improves[:, :m])
    stop = improves.argmin(axis=1)
    # admitted: everything above the last admitted value v, then ties at v in (k, i) index order
    v = np.where(stop > 0, s[rows[:, 0], np.maximum(stop - 1, 0)], np.inf)[:, None]
    admitted = flat >= v
    if np.count_nonzero(admitted) != stop.sum():  # other candidates tie with v: take them in index order
        above = flat > v
        ties = flat == v
        need = (stop - above.sum(axis=1))[:, None]
        admitted = above | (ties & (np.cumsum(ties, axis=1) <= need))
    return admitted.reshape(t_steps, g, n).sum(axis=1, dtype=np.int64)


def static_lengths(k: int, t_steps: int, drafted: np.ndarray) -> np.ndarray:
    """static-k: min(k, drafted) in every step; [T, n] int64."""
    return np.broadcast_to(np.minimum(drafted, k), (t_steps, drafted.size)).astype(np.int64)


def threshold_lengths(tau: float, conf: np.ndarray, drafted: np.ndarray) -> np.ndarray:
    """threshold-tau: the longest drafted prefix with S_k >= tau (S non-increasing, so a count); [T, n]."""
    live = np.arange(conf.shape[2])[None, None, :] < drafted[None, :, None]
    return np.count_nonzero((np.cumprod(conf, axis=2) >= tau) & live, axis=2).astype(np.int64)


def batched_lengths(kind: str, param: float | None, conf: np.ndarray, drafted: np.ndarray,
                    table: np.ndarray, extra_tokens: int = 0) -> np.ndarray:
    """Lengths [T, n] for a stateless policy kind (dspark, mtp1, static, threshold, verify-all, none)."""
    t_steps = conf.shape[0]
    if kind == "dspark":
        return dspark_lengths(conf, drafted, table, extra_tokens)
    if kind == "static":
        return static_lengths(int(param or 0), t_steps, drafted)
    if kind == "mtp1":
        return static_lengths(1, t_steps, drafted)
    if kind == "verify-all":
        return static_lengths(conf.shape[2], t_steps, drafted)
    if kind == "threshold":
        return threshold_lengths(float(param or 0.0), conf, drafted)
    if kind == "none":
        return np.zeros((t_steps, drafted.size), dtype=np.int64)
    raise ValueError(f"policy kind {kind!r} has no batched form")


STATELESS = ("dspark", "mtp1", "static", "threshold", "verify-all", "none")
