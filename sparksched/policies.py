"""Baseline verify-length policies with the scheduler's call shape.

Each factory returns a callable `(conf, curve, drafted=None, extra_tokens=0) -> lengths` that
accepts the same inputs as `sparksched.schedule` (numpy arrays or torch tensors: conf [n, g],
drafted [n]) and returns [n] int64 verify lengths of the same kind (a tensor stays on its
device, no host synchronisation). `curve` and `extra_tokens` are accepted and ignored: these
policies are load-blind, which is what the scheduler is compared against.

    static(k)       l_i = min(k, drafted_i)  (MTP-1 is static(1) with a one-token drafter)
    threshold(tau)  l_i = largest k <= drafted_i with S_{i,k} = c_{i,1} * ... * c_{i,k} >= tau
    conf_threshold(tau)
                    l_i = number of leading positions with c_{i,k} >= tau: verify while each
                    position's own confidence clears tau, stop at the first one below (the DSpark
                    paper's static-threshold baseline, its Figure 5 sweep)
    verify_all      l_i = drafted_i

All four are non-anticipating (l_i >= k depends only on c_{i,1..k}), so they are lossless under
the same confidence contract as the scheduler.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sparksched.scheduler import _is_torch, check_conf, check_drafted

__all__ = ["Policy", "conf_threshold", "static", "threshold", "verify_all"]

Policy = Callable[..., Any]


def _drafted_np(drafted: Any, n: int, g: int) -> np.ndarray:
    dr = check_drafted(drafted, n, g)
    return np.full(n, g, dtype=np.int64) if dr is None else dr


def _drafted_torch(conf: Any, drafted: Any) -> Any:
    import torch

    n, g = conf.shape
    if drafted is None:
        return torch.full((n,), g, dtype=torch.int64, device=conf.device)
    if tuple(drafted.shape) != (n,):
        raise ValueError(f"drafted must have shape ({n},) to match conf, got {tuple(drafted.shape)}")
    return drafted.to(device=conf.device, dtype=torch.int64)


def static(k: int) -> Policy:
    """Verify min(k, drafted_i) tokens for every request (k >= 0).

    Example:
        >>> static(2)(np.full((2, 4), 0.5), None, drafted=[4, 1]).tolist()
        [2, 1]
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"static(k): k must be an integer >= 0, got {k!r}")
    k = int(k)

    def policy(conf: Any, curve: Any = None, drafted: Any = None, extra_tokens: int = 0) -> Any:
        if _is_torch(conf):
            import torch

            if conf.dim() != 2:
                raise ValueError(f"conf must be 2-D [n, g], got shape {tuple(conf.shape)}")
            return torch.clamp(_drafted_torch(conf, drafted), max=k)
        arr = check_conf(conf)
        return np.minimum(_drafted_np(drafted, *arr.shape), k)

    policy.__name__ = f"static_{k}"
    return policy


def _leading_run(conf: Any, drafted: Any, ok: Callable[[Any], Any]) -> Any:
    """[n] int64: per request, the leading run of positions k < drafted_i where ok(conf)[i, k] holds
    (numpy in, numpy out; a torch tensor stays on its device). conf [n, g] (float64 for ok)."""
    if _is_torch(conf):
        import torch

        if conf.dim() != 2:
            raise ValueError(f"conf must be 2-D [n, g], got shape {tuple(conf.shape)}")
        g = conf.shape[1]
        live = torch.arange(g, device=conf.device)[None, :] < _drafted_torch(conf, drafted)[:, None]
        return torch.cumprod((ok(conf.to(torch.float64)) & live).to(torch.int64), dim=1).sum(dim=1)
    arr = check_conf(conf)
    n, g = arr.shape
    live = np.arange(g)[None, :] < _drafted_np(drafted, n, g)[:, None]
    return np.cumprod(ok(arr) & live, axis=1).sum(axis=1, dtype=np.int64)


def _survival(conf: Any) -> Any:
    """S [n, g] = cumulative products of conf along the block (torch or numpy)."""
    if _is_torch(conf):
        import torch

        return torch.cumprod(conf, dim=1)
    return np.cumprod(conf, axis=1)


def threshold(tau: float) -> Policy:
    """Verify the longest drafted prefix whose survival S_{i,k} is >= tau (tau in [0, 1]).

    Example:
        >>> threshold(0.5)(np.array([[0.9, 0.8, 0.9], [0.4, 1.0, 1.0]])).tolist()  # S = .9 .72 .648
        [3, 0]
    """
    tau = _check_tau(tau, "threshold")

    def policy(conf: Any, curve: Any = None, drafted: Any = None, extra_tokens: int = 0) -> Any:
        return _leading_run(conf, drafted, lambda c: _survival(c) >= tau)  # S is non-increasing in k

    policy.__name__ = f"threshold_{tau:g}"
    return policy


def _check_tau(tau: Any, what: str) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.floating)) or not math.isfinite(tau) \
            or not 0.0 <= tau <= 1.0:
        raise ValueError(f"{what}(tau): tau must be a number in [0, 1], got {tau!r}")
    return float(tau)


def conf_threshold(tau: float) -> Policy:
    """Verify while each position's own confidence c_{i,k} >= tau; stop at the first k below it.

    Unlike `threshold`, which compares the survival product S_{i,k} with tau, this compares each
    c_{i,k} alone (the paper's static-threshold rule): a confident position after a doubtful one
    is still verified as long as every position before it clears tau. [l_i >= k] depends on
    c_{i,1..k} only, so it keeps the scheduler's confidence contract (lossless).

    Example:
        >>> conf_threshold(0.5)(np.array([[0.9, 0.6, 0.9], [0.9, 0.4, 1.0]])).tolist()  # S = .9 .54 .486
        [3, 1]
    """
    tau = _check_tau(tau, "conf_threshold")

    def policy(conf: Any, curve: Any = None, drafted: Any = None, extra_tokens: int = 0) -> Any:
        return _leading_run(conf, drafted, lambda c: c >= tau)

    policy.__name__ = f"conf_threshold_{tau:g}"
    return policy


def verify_all(conf: Any, curve: Any = None, drafted: Any = None, extra_tokens: int = 0) -> Any:
    """Verify every drafted token: l_i = drafted_i (default g).

    Example:
        >>> verify_all(np.full((3, 4), 0.1), None, drafted=[4, 0, 2]).tolist()
        [4, 0, 2]
    """
    if _is_torch(conf):
        if conf.dim() != 2:
            raise ValueError(f"conf must be 2-D [n, g], got shape {tuple(conf.shape)}")
        return _drafted_torch(conf, drafted).clone()
    arr = check_conf(conf)
    return _drafted_np(drafted, *arr.shape).copy()
