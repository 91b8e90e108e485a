"""Survival: S_{i,k} = c_{i,1} c_{i,2} ... c_{i,k}, the probability that request i's first k drafts
all survive verification. The one place it is computed.

Every scheduler and policy ranks candidates by S, and the reference, numpy and torch schedulers must
agree bit for bit, so S has one rounding everywhere: the sequential float64 product, left to right.
numpy's and torch's CPU `cumprod` are sequential; on a GPU, `torch.cumprod` may use a parallel scan
(different rounding), so the torch version multiplies column by column there.

    >>> survival(np.array([[0.9, 0.5, 0.5]]), drafted=np.array([2])).tolist()
    [[0.9, 0.45, 0.0]]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["survival", "survival_flat", "survival_torch"]


def survival(conf: np.ndarray, drafted: np.ndarray | None = None) -> np.ndarray:
    """[n, g] float64 S from conf [n, g] (float64, validated by the caller); 0 at positions k >=
    drafted_i when `drafted` [n] is given."""
    s = np.cumprod(conf, axis=1)
    if drafted is not None:
        s[np.arange(conf.shape[1])[None, :] >= drafted[:, None]] = 0.0
    return s


def survival_flat(conf: np.ndarray, drafted: np.ndarray | None = None) -> np.ndarray:
    """S as one flat [g * n] array in candidate index order: (i, k) at k * n + i, so that index order
    is the schedulers' tie order (smaller k first, then smaller i)."""
    return survival(conf, drafted).T.ravel()


def survival_torch(conf: torch.Tensor, drafted: Any = None) -> torch.Tensor:
    """[n, g] float64 S on conf's device with the same rounding as `survival`; 0 beyond drafted
    ([n] integer tensor). Static shapes and no host synchronisation: capturable in a CUDA graph."""
    import torch

    n, g = conf.shape
    dev = conf.device
    c = conf.to(torch.float64)
    if g == 0:
        return c
    if dev.type == "cpu":
        s = torch.cumprod(c, dim=1)  # sequential on CPU: the same rounding as np.cumprod
    else:
        cols = [c[:, 0]]
        for k in range(1, g):  # explicit left-to-right product: a parallel scan would round differently
            cols.append(cols[-1] * c[:, k])
        s = torch.stack(cols, dim=1)
    if drafted is not None:
        if tuple(drafted.shape) != (n,):
            raise ValueError(f"drafted must have shape ({n},) to match conf, got {tuple(drafted.shape)}")
        ks = torch.arange(g, device=dev)
        s = torch.where(ks[None, :] < drafted.to(dev)[:, None], s, torch.zeros((), dtype=s.dtype, device=dev))
    return s
