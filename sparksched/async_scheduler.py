"""Asynchronous top-K scheduler (the paper's production scheduler, section 5.2; docs/method.md).

Engines that overlap scheduling with the previous step (CUDA-graph replay, zero-overhead
scheduling) must fix a step's batch size before the step's confidences exist. The decision is
split in two:

1. `plan_capacity(stale_conf, curve)` -> K, the total number of draft tokens the step verifies.
   An unconstrained global search over K (no early stop, so a jagged step-time curve cannot trap it
   in a local optimum before a cliff): candidates in top-S order, K = the admitted count that
   maximises R = (n + sum of the top-K S) / step_time(extra + n + K), smallest K on ties.
   **K must be computed from confidences of two steps earlier** (or any information that does not
   depend on the current step's draft tokens). That is the causal barrier that keeps decoding
   lossless: the global search never sees the current x_k. The same holds for the step's
   *drafted counts* when drafting can stop early (at EOS, say): how many tokens a request drafted
   then tells which tokens it drafted, and a K that sees it is biased (target (0.7, 0.3), first
   token emitted with (0.55, 0.45); tests/test_async_scheduler.py). So the planner reads no drafted
   counts, only `max_drafted`: caps fixed before the step drafts (the block size, the tokens a
   request may still emit).
2. `admit_top_k(conf, K)` -> lengths: the current step admits the top-K candidates (i, k) by their
   current survival S_{i,k} = c_{i,1} * ... * c_{i,k} (ties: smaller k, then smaller i; only S > 0;
   fewer than K positive candidates admits them all). Because S is non-increasing along a block
   and ties favour smaller k, (i, k) is ranked before every (i, k') with k' > k, so [l_i >= k]
   depends only on c_{i,1..k}, the other requests' confidences and K: non-anticipating, lossless
   under the confidence contract of `sparksched.scheduler`.

Both use the scheduler's exact arithmetic (sequential float64 products, fixed-point sums,
float64 division), so the numpy and torch versions agree bit for bit.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from sparksched.curve import ThroughputCurve
from sparksched.scheduler import (
    SCALE,
    _base_time,
    _check_table,
    _is_torch,
    _prepare_curve,
    _range_times,
    check_conf,
    check_drafted,
    check_extra,
    check_torch_inputs,
    step_time_table,
)
from sparksched.survival import survival_flat, survival_torch

if TYPE_CHECKING:
    import torch

__all__ = ["admit_top_k", "plan_capacity"]


def _sorted_survival_np(arr: np.ndarray, dr: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(flat S in (k, i) index order [g * n], positive S sorted descending)."""
    flat = survival_flat(arr, dr)
    s = np.sort(flat)[::-1]
    return flat, s[s > 0.0]


def planning_caps(drafted: Any, max_drafted: Any) -> Any:
    """The caps a capacity planner may use: `max_drafted` (None: the full block).

    `drafted` is the planners' old third argument, this step's drafted counts. When drafting stops
    early those depend on the drafted tokens, and a K that sees them is not lossless, so it is
    ignored (with a DeprecationWarning): K never sees it. Caps fixed before the step drafts go in
    `max_drafted`.
    """
    if drafted is not None:
        warnings.warn("a capacity planner ignores `drafted` (this step's drafted counts can carry the "
                      "drafted tokens); pass caps fixed before the step drafts as max_drafted",
                      DeprecationWarning, stacklevel=3)
    return max_drafted


def plan_capacity(stale_conf: Any, curve: Any, drafted: Any = None, extra_tokens: int = 0, *,
                  context: float | None = None, max_drafted: Any = None, validate: bool = True) -> Any:
    """Capacity K (total draft tokens to verify next step) by global search on stale confidences.

    Args:
        stale_conf: [n, g] confidences in [0, 1] from two steps earlier (numpy, or a torch tensor:
            then the result is a 0-dim int64 tensor on its device, computed without host sync
            when `validate` is False).
        curve: ThroughputCurve or step-time table [>= extra + n * (g + 1) + 1] indexed by B
            (a tensor on the device for the torch path), or a `sparksched.cost.StepCost` /
            `StepPrice` (see `sparksched.schedule`).
        drafted: ignored, with a DeprecationWarning (see `planning_caps`); kept so old callers
            that pass this step's drafted counts keep running, without K seeing them.
        extra_tokens: non-speculative tokens in the step, int >= 0.
        context: the batch's mean context (tokens), for a StepCost or a curve with a context axis.
        max_drafted: [n] caps in [0, g] on each request's drafts, fixed before the step drafts
            (default g). Never the counts the step's drafter produced.
        validate: check values (NaN, ranges, the table) on the host; the torch path with False
            never synchronises. Shapes are always checked.

    Returns:
        K >= 0: argmax over K of R(K) with no early stop (smallest K among equal maxima).

    Example:
        >>> curve = ThroughputCurve.from_points([1, 2, 3], [1 / 1.0, 1 / 0.5, 1 / 0.45])
        >>> plan_capacity(np.array([[0.8, 0.9]]), curve)  # crosses the cliff the greedy stops at
        2
    """
    if _is_torch(stale_conf):
        if not _is_torch(curve):
            check_torch_inputs(stale_conf, None, False)  # shapes, before reading them
            n, g = stale_conf.shape
            curve = _prepare_curve(curve, check_extra(extra_tokens) + n * (g + 1) + 1, n, int(extra_tokens),
                                   context)
        return _plan_capacity_torch(stale_conf, curve, planning_caps(drafted, max_drafted), extra_tokens, validate)
    arr = check_conf(stale_conf)
    n, g = arr.shape
    dr = check_drafted(planning_caps(drafted, max_drafted), n, g)
    extra = check_extra(extra_tokens)
    if n == 0:
        return 0
    curve = _prepare_curve(curve, extra + n * (g + 1) + 1, n, extra, context)
    _base_time(curve, extra + n)
    _, s = _sorted_survival_np(arr, dr)
    rate = np.empty(s.size + 1)
    rate[0] = n * SCALE
    rate[1:] = np.cumsum(np.floor(s * float(SCALE)).astype(np.int64)) + n * SCALE
    rate /= _range_times(curve, extra + n, s.size + 1)
    return int(np.argmax(rate))  # first maximum: the smallest K on ties


def _plan_capacity_torch(conf: torch.Tensor, table: Any, drafted: Any, extra_tokens: int,
                         validate: bool) -> torch.Tensor:
    import torch

    check_torch_inputs(conf, drafted, validate)
    n, g = conf.shape
    extra = check_extra(extra_tokens)
    dev = conf.device
    if isinstance(table, ThroughputCurve):
        table = torch.as_tensor(step_time_table(table, extra + n * (g + 1)), device=dev)
    s_sorted = _sorted_survival_torch(conf, drafted)
    total = s_sorted.shape[0]
    if table.dim() != 1 or table.shape[0] < extra + n + total + 1:
        raise ValueError(f"table must be 1-D with at least {extra + n + total + 1} entries, "
                         f"got shape {tuple(table.shape)}")
    if validate and n:
        host = table.detach().cpu().numpy()
        _check_table(host, extra + n + total + 1)
        _base_time(host, extra + n)
    quanta = torch.floor(s_sorted * float(SCALE)).to(torch.int64)
    numerator = torch.cat((torch.zeros(1, dtype=torch.int64, device=dev), torch.cumsum(quanta, 0))) + n * SCALE
    rate = numerator.to(torch.float64) / table.to(device=dev, dtype=torch.float64)[extra + n: extra + n + total + 1]
    # zero-S candidates never change the numerator and are sorted last: they cannot win strictly,
    # and argmax's first maximum keeps K on the positive ones
    return torch.argmax(rate)


def _sorted_survival_torch(conf: torch.Tensor, drafted: Any) -> torch.Tensor:
    import torch

    if conf.dim() != 2:
        raise ValueError(f"conf must be 2-D [n, g], got shape {tuple(conf.shape)}")
    s = survival_torch(conf, drafted)
    return torch.sort(s.t().reshape(-1), descending=True, stable=True)[0]


def _check_k(k_total: Any, validate: bool) -> Any:
    """K as an int >= 0, or a 0-dim integer tensor (its value checked only under `validate`)."""
    if _is_torch(k_total):
        import torch

        if k_total.dim() != 0 or k_total.dtype.is_floating_point or k_total.dtype.is_complex \
                or k_total.dtype == torch.bool:
            raise ValueError(f"k_total must be a 0-dim integer tensor, got {k_total.dtype} of shape "
                             f"{tuple(k_total.shape)}")
        if validate and int(k_total) < 0:
            raise ValueError(f"k_total must be >= 0, got {int(k_total)}")
        return k_total
    if isinstance(k_total, bool) or not isinstance(k_total, (int, np.integer)):
        raise ValueError(f"k_total must be an integer >= 0, got {k_total!r}")
    if k_total < 0:
        raise ValueError(f"k_total must be >= 0, got {k_total!r}")
    return int(k_total)


def admit_top_k(conf: Any, k_total: Any, drafted: Any = None, *, validate: bool = True) -> Any:
    """Verify lengths admitting the top-K candidates by current survival S (ties: smaller k, then i).

    Args:
        conf: [n, g] current confidences in [0, 1] (numpy, or torch on any device: then, with
            `validate` False, no host synchronisation, static shapes, CUDA-graph capturable).
        k_total: K >= 0, from `plan_capacity` on confidences of two steps earlier (an int, or a
            0-dim integer tensor on conf's device). It must not depend on the current draft tokens.
        drafted: [n] drafted counts in [0, g] (default g); this step's counts are fine here.
        validate: check values (NaN, ranges, K >= 0) on the host; shapes and types always.

    Returns:
        [n] int64 verify lengths, prefix-closed, summing to min(K, number of candidates with S > 0).

    Example:
        >>> admit_top_k(np.array([[0.9, 0.9, 0.5], [0.95, 0.1, 0.9]]), 3).tolist()
        [2, 1]
    """
    if _is_torch(conf):
        import torch

        check_torch_inputs(conf, drafted, validate)
        n, g = conf.shape
        kk = _check_k(k_total, validate)
        dev = conf.device
        s = survival_torch(conf, drafted)
        flat = s.t().reshape(-1)
        total = flat.shape[0]
        s_sorted, order = torch.sort(flat, descending=True, stable=True)
        kk = kk.to(dev) if _is_torch(kk) else torch.tensor(kk, device=dev)
        admitted = (torch.arange(total, device=dev) < kk) & (s_sorted > 0.0)
        mask = torch.zeros(total, dtype=torch.bool, device=dev).scatter(0, order, admitted)
        return mask.view(g, n).sum(dim=0, dtype=torch.int64)
    arr = check_conf(conf)
    n, g = arr.shape
    dr = check_drafted(drafted, n, g)
    k = _check_k(k_total, True)
    flat_np, s_np = _sorted_survival_np(arr, dr)
    k = min(k, s_np.size)
    if k == 0:
        return np.zeros(n, dtype=np.int64)
    v = s_np[k - 1]
    keep = flat_np > v
    keep[np.flatnonzero(flat_np == v)[:k - int(np.count_nonzero(keep))]] = True
    return keep.reshape(g, n).sum(axis=0, dtype=np.int64)
