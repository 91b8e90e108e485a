"""The one inverse-CDF sampler (sparksched.sampling) and the one survival product (sparksched.survival)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparksched.sampling import sample_rows
from sparksched.survival import survival, survival_flat, survival_torch


def searchsorted_sampler(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """NEGATIVE CONTROL: the sampler two copies used before: the first cumulative sum that reaches
    u x total, which is a zero-weight token when u = 0 and the row starts with zeros."""
    cdf = weights.cumsum(-1)
    return torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).squeeze(1).clamp_max(weights.shape[-1] - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0, 3.0]), min_size=4, max_size=4),
                min_size=1, max_size=6),
       st.lists(st.sampled_from([0.0, 1e-300, 0.25, 0.5, 0.999999999]), min_size=6, max_size=6))
def test_a_zero_weight_token_is_never_sampled(rows, us):
    w = torch.tensor([r if sum(r) > 0 else [0.0, 0.0, 0.0, 1.0] for r in rows], dtype=torch.float64)
    u = torch.tensor(us[: w.shape[0]], dtype=torch.float64)
    x = sample_rows(w, u)
    assert bool((w[torch.arange(w.shape[0]), x] > 0).all())


def test_negative_control_searchsorted_returns_a_zero_weight_token_at_u_zero():
    w = torch.tensor([[0.0, 0.5, 0.5]], dtype=torch.float64)
    u = torch.zeros(1, dtype=torch.float64)
    assert int(searchsorted_sampler(w, u)[0]) == 0 and float(w[0, 0]) == 0.0
    assert int(sample_rows(w, u)[0]) == 1


def test_sampler_follows_the_weights():
    w = torch.tensor([[0.2, 0.0, 0.8]], dtype=torch.float64).repeat(20000, 1)
    u = torch.rand(20000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    freq = np.bincount(sample_rows(w, u).numpy(), minlength=3) / 20000
    np.testing.assert_allclose(freq, [0.2, 0.0, 0.8], atol=0.01)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.integers(1, 8), st.integers(0, 2**31))
def test_survival_is_the_sequential_product_on_every_path(n, g, seed):
    r = np.random.default_rng(seed)
    conf = r.random((n, g))
    drafted = r.integers(0, g + 1, n)
    want = np.zeros((n, g))
    for i in range(n):
        s = 1.0
        for k in range(g):
            s = s * conf[i, k]
            want[i, k] = s if k < drafted[i] else 0.0
    np.testing.assert_array_equal(survival(conf, drafted), want)
    np.testing.assert_array_equal(survival_flat(conf, drafted), want.T.ravel())
    np.testing.assert_array_equal(survival_torch(torch.from_numpy(conf), torch.from_numpy(drafted)).numpy(), want)
