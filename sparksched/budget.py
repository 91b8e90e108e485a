"""Two-phase verify budget, the split vLLM's adaptive verification uses (plan on the host, assign on the device).

An engine that overlaps scheduling with the previous step (CUDA-graph replay, zero-overhead
scheduling) must fix how many tokens the next verify pass holds before that step's confidences
exist. The decision splits in two:

1. `plan_budget` (host, numpy, before the step): the total number K of draft tokens to verify,
   chosen by an unconstrained global search of R(K) = (n + top-K survival mass) /
   (drafter time + step_time(n + K)) over *stale* confidences (the step before's, or two steps
   before as in the DSpark paper's section 5.2). No early stop, so jagged step-time cliffs do not
   trap it. Nothing here touches a device tensor, so it never waits for the GPU.
2. `assign_budget` (device, torch, inside the step): admit the K candidates (request i, position k)
   with the highest *current* survival S_{i,k} = c_{i,1} ... c_{i,k} (ties: smaller k, then smaller
   i). Static shapes; with validate=False no host synchronisation, capturable in a CUDA graph; the
   budget may be a device tensor so a captured graph can be replayed with a new K.

Lossless: K is a function of stale confidences only, so it cannot depend on the current draft
tokens (nor on the step's drafted counts, which carry the tokens when drafting stops at EOS: the
planner takes only caps fixed before drafting, `max_drafted`); and since S is non-increasing
along a draft, admitting (i, k) by rank only compares S_{i,k} with other requests' candidates and
with S_{i,j<k}, never with anything computed from x_{i,k}. The admitted set is always a prefix of
each draft. (The same rule with K searched globally over the *current* confidences is not lossless;
`tests/test_engine_policies_lossless.py` shows it.)

This module is a thin engine-facing layer over `sparksched.async_scheduler` (the paper's
asynchronous scheduler), adding the drafter's cost, a cap on the budget and a plain-decoding
fallback.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sparksched.async_scheduler import _sorted_survival_np, admit_top_k, planning_caps
from sparksched.curve import ThroughputCurve
from sparksched.scheduler import (
    SCALE,
    _base_time,
    _prepare_curve,
    _range_times,
    check_conf,
    check_drafted,
    check_extra,
)


def _host_array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        if x.device.type != "cpu":
            raise ValueError(f"{name} is on {x.device}: plan_budget runs on the host and must not read a "
                             "device tensor (that would synchronise); pass a host copy of stale confidences")
        x = x.detach().numpy()
    return np.asarray(x, dtype=np.float64)


def _scaled_rates(stale_conf: np.ndarray | torch.Tensor, curve: ThroughputCurve | np.ndarray,
                  max_drafted: Any, extra_tokens: int, draft_seconds: float, max_budget: int | None,
                  context: float | None) -> np.ndarray:
    """R(K) * SCALE for K = 0..K_max, in `plan_capacity`'s exact arithmetic (fixed-point sums)."""
    arr = check_conf(_host_array(stale_conf, "stale_conf"))
    n, g = arr.shape
    dr = check_drafted(None if max_drafted is None else np.asarray(max_drafted), n, g)
    extra = check_extra(extra_tokens)
    if not (isinstance(draft_seconds, (int, float)) and np.isfinite(draft_seconds) and draft_seconds >= 0):
        raise ValueError(f"draft_seconds must be a finite number >= 0, got {draft_seconds!r}")
    if max_budget is not None and (isinstance(max_budget, bool) or not isinstance(max_budget, (int, np.integer))
                                   or max_budget < 0):
        raise ValueError(f"max_budget must be an int >= 0 or None, got {max_budget!r}")
    if n == 0:
        return np.ones(1)
    curve = _prepare_curve(curve, extra + n * (g + 1) + 1, n, extra, context)
    _base_time(curve, extra + n)
    _, s = _sorted_survival_np(arr, dr)
    if max_budget is not None:
        s = s[:max_budget]
    numerator = np.empty(s.size + 1)
    numerator[0] = n * SCALE
    numerator[1:] = np.cumsum(np.floor(s * float(SCALE)).astype(np.int64)) + n * SCALE
    return numerator / (float(draft_seconds) + _range_times(curve, extra + n, s.size + 1))


def budget_rates(stale_conf: np.ndarray | torch.Tensor, curve: ThroughputCurve | np.ndarray,
                 drafted: np.ndarray | None = None, extra_tokens: int = 0,
                 draft_seconds: float = 0.0, max_budget: int | None = None,
                 context: float | None = None, *, max_drafted: np.ndarray | None = None) -> np.ndarray:
    """Expected throughput R(K) (tokens/s) for every budget K = 0..K_max, on stale confidences.

    R(K) = (n + sum of the K largest stale survivals) / (draft_seconds + step_time(extra + n + K)),
    float64 [K_max + 1]. K_max = number of candidates with S > 0, capped by `max_budget`. Same
    exact arithmetic as `sparksched.async_scheduler.plan_capacity` (sums in fixed point).
    `drafted` and `max_drafted` as in `plan_budget`.

    Example:
        >>> c = ThroughputCurve.from_points([1, 2, 3], [1.0, 1.0, 2.0])
        >>> budget_rates(np.array([[0.9, 0.5]]), c).round(3).tolist()
        [1.0, 1.9, 1.175]
    """
    caps = planning_caps(drafted, max_drafted)
    return _scaled_rates(stale_conf, curve, caps, extra_tokens, draft_seconds, max_budget, context) / SCALE


def plan_budget(stale_conf: np.ndarray | torch.Tensor, curve: ThroughputCurve,
                drafted: np.ndarray | None = None, *, extra_tokens: int = 0, draft_seconds: float = 0.0,
                max_budget: int | None = None, plain_fallback: bool = False,
                context: float | None = None, max_drafted: np.ndarray | None = None) -> int:
    """Total draft tokens K to verify next step, from stale confidences, on the host (no device sync).

    Global argmax of `budget_rates` (no early stop; ties: the smaller K).

    Args:
        stale_conf: [n, g] conditional confidences in [0, 1] of the *current* requests as known
            before the step (the previous step's or older; rows for new requests: 1.0 as vLLM
            does). numpy or a CPU tensor; a CUDA tensor is refused (reading it would sync).
        curve: the target's step time (s) against verify batch tokens: a ThroughputCurve, a table
            indexed by B, or a `sparksched.cost.StepCost` (sliced at this step's n and `context`).
        drafted: ignored, with a DeprecationWarning: this step's drafted counts depend on the
            drafted tokens when drafting stops early (EOS), and a budget that sees them is not
            lossless (`sparksched.async_scheduler.planning_caps`).
        extra_tokens: non-speculative tokens sharing the step (chunked prefill).
        draft_seconds: drafter time of the step (s), charged to every budget.
        max_budget: cap on K (e.g. the rejection sampler's logits buffer).
        plain_fallback: also return 0 when plain decoding (no drafter run: n tokens in
            step_time(extra + n)) is at least as fast as the best budget; an engine may then skip
            drafting for the step.
        context: the batch's mean context (tokens), for a StepCost or a curve with a context axis.
        max_drafted: [n] caps on each request's drafts fixed before the step drafts (the block,
            or the tokens a request may still emit); default g.

    Returns:
        K, a Python int in [0, K_max].

    Example:
        >>> jagged = ThroughputCurve.from_points([1, 2, 3, 4], [1.0, 1.9, 1.9, 1.9])
        >>> plan_budget(np.array([[0.9, 0.9, 0.9]]), jagged)  # past the cliff at B = 2
        3
        >>> plan_budget(np.array([[0.9, 0.9, 0.9]]), jagged, draft_seconds=2.0, plain_fallback=True)
        0
    """
    caps = planning_caps(drafted, max_drafted)
    rates = _scaled_rates(stale_conf, curve, caps, extra_tokens, draft_seconds, max_budget, context)
    k = int(np.argmax(rates))  # first maximum: the smallest K on ties (as plan_capacity)
    n = int(stale_conf.shape[0])
    if plain_fallback and n and draft_seconds > 0:
        plain = _scaled_rates(np.ones((n, 0)), curve, None, extra_tokens, 0.0, None, context)[0]
        if plain >= rates[k]:
            return 0
    return k


def assign_budget(conf: torch.Tensor, budget: int | torch.Tensor,
                  drafted: torch.Tensor | None = None, *, validate: bool = True) -> torch.Tensor:
    """Per-request verify lengths [n] int64 admitting the `budget` best current candidates, on device.

    Candidate (i, k) (1-based k <= drafted_i, S_{i,k} > 0) is ranked by S_{i,k} = c_{i,1}...c_{i,k}
    descending, ties by smaller k then smaller i; the first `budget` are admitted. Always a prefix
    of each draft. Static shapes; with `validate=False` no `.item()`/`.tolist()`/`nonzero()`: capturable
    in a CUDA graph.

    Args:
        conf: [n, g] float conditional confidences (current step), on the engine's device.
        budget: total drafts K to admit: a Python int or a 0-dim integer tensor on `conf`'s device
            (a CUDA graph can then be replayed with a new K written into it).
        drafted: [n] int drafts per request (default g), same device.
        validate: check values on the host (a sync); pass False inside a CUDA graph or a hot loop.

    Returns:
        lengths [n] int64 on `conf.device`, sum(lengths) = min(budget, #candidates).

    Example:
        >>> assign_budget(torch.tensor([[0.9, 0.5], [0.8, 0.8]]), 3).tolist()
        [1, 2]
    """
    if not isinstance(conf, torch.Tensor) or conf.ndim != 2:
        raise ValueError(f"conf must be a 2-D [n, g] tensor, got {getattr(conf, 'shape', type(conf).__name__)}")
    if drafted is not None and tuple(drafted.shape) != (conf.shape[0],):
        raise ValueError(f"drafted must be [n={conf.shape[0]}], got shape {tuple(drafted.shape)}")
    if isinstance(budget, torch.Tensor) and budget.ndim != 0:
        raise ValueError(f"budget must be an int or a 0-dim tensor, got shape {tuple(budget.shape)}")
    if not isinstance(budget, torch.Tensor) and (isinstance(budget, bool) or int(budget) != budget or budget < 0):
        raise ValueError(f"budget must be an int >= 0, got {budget!r}")
    return admit_top_k(conf, budget, drafted, validate=validate)
