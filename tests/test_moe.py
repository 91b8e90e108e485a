"""MoE arithmetic: expected distinct experts touched under top-k routing, tokens per expert, tile fill."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profiler.moe import (
    expected_touched,
    grouped_gemm_efficiency,
    tiled_rows,
    tokens_per_touched_expert,
    touched_fraction,
)


def _monte_carlo_touched(tokens: int, experts: int, top_k: int, trials: int, seed: int) -> float:
    """Distinct experts touched when each token picks top_k distinct experts uniformly at random."""
    rng = np.random.default_rng(seed)
    scores = rng.random((trials, tokens, experts))
    picks = np.argpartition(scores, top_k - 1, axis=2)[:, :, :top_k]  # k distinct experts per token
    hit = np.zeros((trials, experts), dtype=bool)
    for t in range(trials):
        hit[t, picks[t].ravel()] = True
    return float(hit.sum(axis=1).mean())


def _agrees_with_sampling(formula, tokens: int, experts: int, top_k: int) -> bool:
    sim = _monte_carlo_touched(tokens, experts, top_k, trials=200, seed=tokens * 7 + experts)
    return abs(formula(tokens, experts, top_k) - sim) <= 0.05 * experts + 0.5


@settings(max_examples=25, deadline=None)
@given(tokens=st.integers(1, 64), experts=st.sampled_from([8, 16, 64, 128]), top_k=st.integers(1, 8))
def test_expected_touched_matches_uniform_routing(tokens: int, experts: int, top_k: int) -> None:
    top_k = min(top_k, experts)
    assert _agrees_with_sampling(expected_touched, tokens, experts, top_k)


def test_linear_touch_count_is_rejected_by_the_same_check() -> None:
    # negative control: "every token brings k new experts until all are used" overcounts distinct experts
    def linear(b: int, e: int, k: int) -> float:
        return min(e, b * k)

    assert not _agrees_with_sampling(linear, 16, 128, 8)


@settings(max_examples=50, deadline=None)
@given(experts=st.sampled_from([8, 64, 256]), top_k=st.integers(1, 8), tokens=st.floats(1, 1e5))
def test_touched_bounds_and_monotone(experts: int, top_k: int, tokens: float) -> None:
    top_k = min(top_k, experts)
    e = expected_touched(tokens, experts, top_k)
    assert top_k - 1e-9 <= e <= min(experts, tokens * top_k) + 1e-9
    assert expected_touched(tokens * 2, experts, top_k) >= e - 1e-9


def test_one_token_touches_k_and_many_touch_all() -> None:
    assert touched_fraction(1, 256, 8) == pytest.approx(8 / 256)
    assert expected_touched(1, 256, 8) == pytest.approx(8)
    assert tokens_per_touched_expert(1, 256, 8) == pytest.approx(1.0)
    assert touched_fraction(4096, 256, 8) == pytest.approx(1.0, abs=1e-9)
    assert tokens_per_touched_expert(4096, 256, 8) == pytest.approx(4096 * 8 / 256, rel=1e-6)
    assert touched_fraction(0, 256, 8) == 0.0 and touched_fraction(3, 8, 8) == 1.0


def test_grouped_gemm_tiles_waste_small_per_expert_batches() -> None:
    assert tiled_rows(1) == 64 and tiled_rows(64) == 64 and tiled_rows(65) == 128 and tiled_rows(0) == 0
    small = grouped_gemm_efficiency(8, 256, 8)  # each touched expert serves ~1 token of a 64-row tile
    big = grouped_gemm_efficiency(8 * 2048, 256, 8)  # 512 tokens per expert: full tiles
    assert small < 0.05 and big == pytest.approx(1.0)
