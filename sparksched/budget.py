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
   i). Static shapes, no host synchronisation, capturable in a CUDA graph; the budget may be a
   device tensor so a captured graph can be replayed with a new K.

Lossless: K is a function of stale confidences only, so it cannot depend on the current draft
tokens; and since S is non-increasing along a draft, admitting (i, k) by rank only compares S_{i,k}
with other requests' candidates and with S_{i,j<k}, never with anything computed from x_{i,k}. The
admitted set is always a prefix of each draft. (The same rule with K searched globally over the
*current* confidences is not lossless; `tests/test_engine_policies_lossless.py` shows it.)

This module is a thin engine-facing layer over `sparksched.async_scheduler` (the paper's
asynchronous scheduler), adding the drafter's cost, a cap on the budget and a plain-decoding
fallback.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sparksched.curve import ThroughputCurve


def _host_array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        if x.device.type != "cpu":
            raise ValueError(f"{name} is on {x.device}: plan_budget runs on the host and must not read a "
                             "device tensor (that would synchronise); pass a host copy of stale confidences")
        x = x.detach().numpy()
    return np.asarray(x, dtype=np.float64)


def _survival_host(conf: np.ndarray, drafted: np.ndarray | None) -> np.ndarray:
    """S [n, g] with positions past `drafted` zeroed; validates ranges."""
    if conf.ndim != 2:
        raise ValueError(f"stale_conf must be [n, g], got shape {conf.shape}")
    if not np.all(np.isfinite(conf)) or np.any(conf < 0) or np.any(conf > 1):
        bad = conf[~(np.isfinite(conf) & (conf >= 0) & (conf <= 1))].ravel()[0]
        raise ValueError(f"stale_conf must be probabilities in [0, 1], got {bad}")
    n, g = conf.shape
    s = np.cumprod(conf, axis=1)
    if drafted is not None:
        d = np.asarray(drafted)
        if d.shape != (n,) or np.any(d < 0) or np.any(d > g):
            raise ValueError(f"drafted must be [n={n}] with values in [0, {g}], got {d.tolist()}")
        s = np.where(np.arange(g)[None, :] < d[:, None], s, 0.0)
    return s


def budget_rates(stale_conf: np.ndarray | torch.Tensor, curve: ThroughputCurve,
                 drafted: np.ndarray | None = None, extra_tokens: int = 0,
                 draft_seconds: float = 0.0, max_budget: int | None = None,
                 context: float | None = None) -> np.ndarray:
    """Expected throughput R(K) (tokens/s) for every budget K = 0..K_max, on stale confidences.

    R(K) = (n + sum of the K largest stale survivals) / (draft_seconds + step_time(extra + n + K)).
    K_max = number of candidates with S > 0, capped by `max_budget`.

    Example:
        >>> c = ThroughputCurve.from_points([1, 2, 3], [1.0, 1.0, 2.0])
        >>> budget_rates(np.array([[0.9, 0.5]]), c).round(3).tolist()
        [1.0, 1.9, 1.175]
    """
    s = _survival_host(_host_array(stale_conf, "stale_conf"), drafted)
    n = s.shape[0]
    scores = np.sort(s[s > 0])[::-1]
    if max_budget is not None:
        if max_budget < 0:
            raise ValueError(f"max_budget must be >= 0, got {max_budget}")
        scores = scores[:max_budget]
    if extra_tokens < 0 or draft_seconds < 0:
        raise ValueError(f"extra_tokens and draft_seconds must be >= 0, got {extra_tokens}, {draft_seconds}")
    gain = n + np.concatenate([[0.0], np.cumsum(scores)])
    batch = extra_tokens + n + np.arange(scores.size + 1, dtype=np.float64)
    return gain / (draft_seconds + curve.step_time(batch, context))


def plan_budget(stale_conf: np.ndarray | torch.Tensor, curve: ThroughputCurve,
                drafted: np.ndarray | None = None, *, extra_tokens: int = 0, draft_seconds: float = 0.0,
                max_budget: int | None = None, plain_fallback: bool = False,
                context: float | None = None) -> int:
    """Total draft tokens K to verify next step, from stale confidences, on the host (no device sync).

    Global argmax of `budget_rates` (no early stop; ties: the smaller K).

    Args:
        stale_conf: [n, g] conditional confidences in [0, 1] of the *current* requests as known
            before the step (the previous step's or older; rows for new requests: 1.0 as vLLM
            does). numpy or a CPU tensor; a CUDA tensor is refused (reading it would sync).
        curve: the target's step time (s) against verify batch tokens.
        drafted: [n] drafts each request will have (default g).
        extra_tokens: non-speculative tokens sharing the step (chunked prefill).
        draft_seconds: drafter time of the step (s), charged to every budget.
        max_budget: cap on K (e.g. the rejection sampler's logits buffer).
        plain_fallback: also return 0 when plain decoding (no drafter run: n tokens in
            step_time(extra + n)) is at least as fast as the best budget; an engine may then skip
            drafting for the step.
        context: context length for a curve with a context axis.

    Returns:
        K, a Python int in [0, K_max].

    Example:
        >>> jagged = ThroughputCurve.from_points([1, 2, 3, 4], [1.0, 1.9, 1.9, 1.9])
        >>> plan_budget(np.array([[0.9, 0.9, 0.9]]), jagged)  # past the cliff at B = 2
        3
        >>> plan_budget(np.array([[0.9, 0.9, 0.9]]), jagged, draft_seconds=2.0, plain_fallback=True)
        0
    """
    rates = budget_rates(stale_conf, curve, drafted, extra_tokens, draft_seconds, max_budget, context)
    k = int(np.flatnonzero(rates >= rates.max())[0])
    if plain_fallback:
        n = int(np.asarray(stale_conf.shape)[0])
        plain = n / float(curve.step_time(extra_tokens + n, context)) if n else 0.0
        if plain >= rates[k]:
            return 0
    return k


def assign_budget(conf: torch.Tensor, budget: int | torch.Tensor,
                  drafted: torch.Tensor | None = None) -> torch.Tensor:
    """Per-request verify lengths [n] int64 admitting the `budget` best current candidates, on device.

    Candidate (i, k) (1-based k <= drafted_i, S_{i,k} > 0) is ranked by S_{i,k} = c_{i,1}...c_{i,k}
    descending, ties by smaller k then smaller i; the first `budget` are admitted. Always a prefix
    of each draft. Static shapes, no `.item()`/`.tolist()`/`nonzero()`: capturable in a CUDA graph.

    Args:
        conf: [n, g] float conditional confidences (current step), on the engine's device.
        budget: total drafts K to admit: a Python int or a 0-dim integer tensor on `conf`'s device
            (a CUDA graph can then be replayed with a new K written into it).
        drafted: [n] int drafts per request (default g), same device.

    Returns:
        lengths [n] int64 on `conf.device`, sum(lengths) = min(budget, #candidates).

    Example:
        >>> assign_budget(torch.tensor([[0.9, 0.5], [0.8, 0.8]]), 3).tolist()
        [1, 2]
    """
    if conf.ndim != 2:
        raise ValueError(f"conf must be [n, g], got shape {tuple(conf.shape)}")
    n, g = conf.shape
    device = conf.device
    c = conf.to(torch.float64)
    if device.type == "cpu" or g == 0:
        s = torch.cumprod(c, dim=1)                                          # [n, g], sequential
    else:  # left-to-right products, as on CPU: a parallel scan could round ties apart
        cols = [c[:, 0]]
        for k in range(1, g):
            cols.append(cols[-1] * c[:, k])
        s = torch.stack(cols, dim=1)
    pos = torch.arange(g, device=device)
    valid = s > 0
    if drafted is not None:
        if drafted.shape != (n,):
            raise ValueError(f"drafted must be [n={n}], got shape {tuple(drafted.shape)}")
        valid = valid & (pos[None, :] < drafted.to(device)[:, None])
    # k-major flattening: a stable sort by -S then breaks ties by smaller k, then smaller i
    key = torch.where(valid, -s, torch.full_like(s, float("inf"))).t().reshape(-1)   # [g * n]
    order = torch.sort(key, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=device)
    budget_t = torch.as_tensor(budget, device=device)
    admitted = (rank < budget_t) & valid.t().reshape(-1)
    return admitted.reshape(g, n).sum(dim=0).to(torch.int64)
