"""Inverse-CDF sampling of one token per row: the one sampler of the verifier, the drafter and the
plain-decoding loop.

Given weights [n, V] >= 0 (any positive total) and uniforms u [n] in [0, 1), row i's token is the
first index whose cumulative weight exceeds u_i times the row's total. Counting the cumulative sums
at or below the threshold (rather than `searchsorted`, which returns the first sum that *reaches* it)
means a token of zero weight is never returned, even for u = 0 exactly; the last token of positive
weight caps the index against rounding at u close to 1.

    >>> import torch
    >>> w = torch.tensor([[0.0, 0.5, 0.5], [0.2, 0.0, 0.8]], dtype=torch.float64)
    >>> sample_rows(w, torch.tensor([0.0, 0.3], dtype=torch.float64)).tolist()
    [1, 2]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["sample_rows"]


def sample_rows(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One token per row: weights [n, V] (float32 or float64) >= 0 with a positive sum, u [n] float64 in
    [0, 1); returns [n] int64 on weights' device. The running sum is taken in float64 whatever the
    weights' dtype. Static shapes, no host synchronisation."""
    import torch

    cdf = torch.cumsum(weights, dim=1, dtype=torch.float64)
    threshold = u * cdf[:, -1]
    idx = (cdf <= threshold[:, None]).sum(dim=1)
    v = weights.shape[1]
    last_positive = (v - 1) - torch.flip(weights > 0, dims=[1]).to(torch.int64).argmax(dim=1)
    return torch.minimum(idx, last_positive)
