"""Mixture-of-experts arithmetic: which experts a batch touches, and how full their GEMM tiles are.

Under top-k routing each token picks k of E experts. Modelling the picks as uniform and independent
across tokens, an expert is missed by one token with probability 1 - k/E, so B tokens touch

    E_touched(B) = E (1 - (1 - k/E)^B)

distinct experts in expectation (1 token touches k; B >> E/k touches all E). On an expert-parallel
rank holding E/ep experts the same fraction applies. Each touched expert's weights are read from
memory once per step, however many tokens it serves, which is why an MoE decode step is cheap at a
few tokens and then grows with B until every expert is read: the regime where confidence scheduling
matters most. Real routers are not uniform (hot experts), which touches fewer distinct experts than
this at small B and loads some ranks more than others; the profile states the uniform assumption.

A touched expert serves m = B k / E_touched tokens on average. Its grouped GEMM computes in tiles of
`tile` rows, so it pays ceil(m / tile) tiles: at small m most of each tile is padding. That is the
grouped-GEMM efficiency loss at small per-expert batches (e.g. DeepGEMM's masked layout for decode
uses 64-row blocks on Hopper).
"""

from __future__ import annotations

import math

import numpy as np

MOE_TILE = 64  # rows per grouped-GEMM block on Hopper-class GPUs


def touched_fraction(tokens: float, experts: int, top_k: int) -> float:
    """Expected share of the E experts that `tokens` tokens route to: 1 - (1 - k/E)^tokens."""
    if tokens <= 0:
        return 0.0
    if top_k >= experts:
        return 1.0
    return float(-np.expm1(tokens * np.log1p(-top_k / experts)))


def expected_touched(tokens: float, experts: int, top_k: int) -> float:
    """Expected number of distinct experts `tokens` tokens touch (E x touched_fraction)."""
    return experts * touched_fraction(tokens, experts, top_k)


def tokens_per_touched_expert(tokens: float, experts: int, top_k: int) -> float:
    """Mean tokens a touched expert serves: B k / E_touched (k at B = 1, B k / E once all are touched)."""
    touched = expected_touched(tokens, experts, top_k)
    return tokens * top_k / touched if touched > 0 else 0.0


def tiled_rows(rows: float, tile: int = MOE_TILE) -> int:
    """Rows a GEMM pays for `rows` useful rows: whole tiles of `tile`."""
    return int(math.ceil(rows / tile - 1e-9) * tile) if rows > 0 else 0


def grouped_gemm_efficiency(tokens: float, experts: int, top_k: int, tile: int = MOE_TILE) -> float:
    """Useful rows / paid rows of the grouped expert GEMM at `tokens` tokens (1.0 = full tiles)."""
    m = tokens_per_touched_expert(tokens, experts, top_k)
    return m / tiled_rows(m, tile) if m > 0 else 0.0
