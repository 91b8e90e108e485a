"""Exporters of a sparksched profile to vLLM's cost curves / cost table / dynamic-K table."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparksched.cost import StepCost
from sparksched.curve import ThroughputCurve
from sparksched.export import expected_tokens, vllm_cost_curves, vllm_cost_table, vllm_dynamic_k_table


def _profile() -> dict:
    verify = [{"requests": 1, "tokens": b, "context": ctx, "median_s": (0.010 + 1e-5 * b) * (1 + ctx / 8192)}
              for ctx in (0, 4096) for b in (1, 16, 64, 256)]
    draft = [{"requests": n, "block": g, "median_s": 0.001 * g + 1e-5 * n}
             for g in (4, 8) for n in (1, 8, 32) for _ in range(3)]
    return {"schema": 1, "device": {"name": "test"}, "model": {"preset": "tiny"}, "dtype": "float32",
            "verify": verify, "draft": draft}


def test_cost_curves_from_profile_are_milliseconds_at_the_measured_points():
    out = vllm_cost_curves(_profile(), context=4096, block=4)
    assert [b for b, _ in out["verify_curve"]] == [1, 16, 64, 256]
    assert out["verify_curve"][1][1] == pytest.approx((0.010 + 16e-5) * 1.5 * 1e3)
    assert out["draft_curve"] == [[n, pytest.approx((0.004 + 1e-5 * n) * 1e3)] for n in (1, 8, 32)]
    json.dumps(out)  # JSON-ready


def test_cost_curves_default_block_is_the_largest_and_a_missing_block_is_an_error():
    assert vllm_cost_curves(_profile())["draft_curve"][0][1] == pytest.approx((0.008 + 1e-5) * 1e3)
    with pytest.raises(ValueError, match="block=5"):
        vllm_cost_curves(_profile(), block=5)


def test_cost_table_without_capture_sizes_is_the_curve_in_ms():
    curve = StepCost.from_profile(_profile()).curve(1, 0)  # one request count: priced by batch tokens
    table = vllm_cost_table(_profile(), 300)
    np.testing.assert_allclose(table, curve.table(300) * 1e3)


def test_verify_entries_are_vllms_dummy_steps_on_a_request_grid():
    """Entry B is the step of min(B, max_num_seqs) requests (vLLM's dummy batches), not a B-average."""
    cost = StepCost.from_profile("h100-qwen3-8b-roofline")
    out = dict((b, ms) for b, ms in vllm_cost_curves(cost, context=512, max_num_seqs=64)["verify_curve"])
    assert out[64] == pytest.approx(1e3 * float(cost.verify_seconds(64, 64, 512)))
    assert out[512] == pytest.approx(1e3 * float(cost.verify_seconds(64, 512, 512)))  # 64 requests x 8 tokens
    assert max(out) == 64 * 8
    table = vllm_cost_table(cost, 600, context=512, max_num_seqs=64)
    assert table[32] == pytest.approx(1e3 * float(cost.verify_seconds(32, 32, 512)))
    assert table[300] == pytest.approx(1e3 * float(cost.verify_seconds(64, 300, 512)))
    # negative control: the same B spread over fewer requests is cheaper (KV reads), so the ray matters
    assert table[64] > 1e3 * float(cost.verify_seconds(8, 64, 512))


def test_dynamic_k_prices_each_concurrency_at_its_own_requests():
    cost = StepCost.from_profile("h100-qwen3-8b-roofline")
    table = vllm_dynamic_k_table(cost, 0.75, 64, 4, context=2048)
    for start, end, k in table:
        for b in (start, end):
            rates = [b * expected_tokens(0.75, kk) / (float(cost.verify_seconds(b, b * (1 + kk), 2048))
                                                      + cost.draft_seconds(b, kk, 2048)) for kk in range(5)]
            assert rates[k] == pytest.approx(max(rates))


def test_cost_table_pads_to_the_next_capture_size_then_follows_the_curve():
    curve = ThroughputCurve.from_points([1, 512], [0.001, 0.512])
    table = vllm_cost_table(curve, 600, capture_sizes=[8, 16, 256])
    assert table[1] == table[8] == pytest.approx(8.0)
    assert table[9] == table[16] == pytest.approx(16.0)
    assert table[17] == table[256] == pytest.approx(256.0)
    assert table[300] == pytest.approx(300.0)           # past the capture limit: no padding
    assert np.all(np.diff(table) >= 0)


def _rate(curve: ThroughputCurve, acceptance: float, b: int, k: int, draft: float) -> float:
    cost = float(curve.step_time(b * (1 + k))) + (draft if k else 0.0)
    return b * expected_tokens(acceptance, k) / cost


def _is_optimal(table: list[list[int]], curve: ThroughputCurve, acceptance: float, max_bs: int,
                max_k: int, draft: float) -> bool:
    for start, end, k in table:
        for b in range(start, end + 1):
            best = max(_rate(curve, acceptance, b, kk, draft) for kk in range(max_k + 1))
            if _rate(curve, acceptance, b, k, draft) < best * (1 - 1e-9):
                return False
    return True


@settings(max_examples=25, deadline=None)
@given(acc=st.floats(0.0, 1.0), draft=st.floats(0.0, 0.005), max_k=st.integers(0, 6),
       jump=st.floats(1.0, 3.0))
def test_dynamic_k_table_covers_every_batch_size_once_and_is_optimal(acc, draft, max_k, jump):
    curve = ThroughputCurve.from_points([1, 64, 65, 512], [0.010, 0.012, 0.012 * jump, 0.060 * jump])
    table = vllm_dynamic_k_table(curve, acc, 96, max_k, draft_seconds=draft)
    assert table[0][0] == 1 and table[-1][1] == 96
    for (_s0, e0, k0), (s1, _, k1) in zip(table, table[1:]):
        assert s1 == e0 + 1 and k0 != k1                # contiguous, merged
    assert all(0 <= k <= max_k for _, _, k in table)
    assert _is_optimal(table, curve, acc, 96, max_k, draft)


def test_dynamic_k_optimality_check_rejects_a_static_table():
    """Negative control: 'always max K' is not optimal on a curve that saturates."""
    curve = ThroughputCurve.from_points([1, 64, 512], [0.010, 0.010, 0.080])
    assert not _is_optimal([[1, 128, 3]], curve, 0.7, 128, 3, 0.0)
    assert _is_optimal(vllm_dynamic_k_table(curve, 0.7, 128, 3), curve, 0.7, 128, 3, 0.0)


def test_dynamic_k_extremes():
    flat = ThroughputCurve.from_points([1, 4096], [0.01, 0.01])
    assert vllm_dynamic_k_table(flat, 1.0, 8, 5) == [[1, 8, 5]]          # free verification, sure drafts
    assert vllm_dynamic_k_table(flat, 0.0, 8, 5) == [[1, 8, 0]]          # drafts never accepted
    assert vllm_dynamic_k_table(flat, 0.9, 8, 5, draft_seconds=1.0) == [[1, 8, 0]]  # drafter too slow


def test_dynamic_k_accepts_per_position_acceptance_and_a_drafter_function():
    curve = ThroughputCurve.from_points([1, 256], [0.01, 0.03])
    table = vllm_dynamic_k_table(curve, [0.9, 0.5, 0.1], 16, 4, draft_seconds=lambda b, k: 1e-4 * k)
    assert table[0][2] >= 1 and table[-1][1] == 16


@pytest.mark.parametrize("kwargs, match", [
    ({"acceptance": 1.5}, "acceptance"),
    ({"acceptance": [0.5, float("nan")]}, "acceptance"),
    ({"max_batch_size": 0}, "max_batch_size"),
    ({"max_k": -1}, "max_k"),
])
def test_dynamic_k_bad_input(kwargs, match):
    args = {"acceptance": 0.5, "max_batch_size": 4, "max_k": 2} | kwargs
    with pytest.raises(ValueError, match=match):
        vllm_dynamic_k_table(ThroughputCurve.from_points([1, 8], [0.01, 0.02]), **args)


def test_cost_table_bad_input():
    c = ThroughputCurve.from_points([1, 8], [0.01, 0.02])
    with pytest.raises(ValueError, match="max_batch_tokens"):
        vllm_cost_table(c, 0)
    with pytest.raises(ValueError, match="capture_sizes"):
        vllm_cost_table(c, 8, capture_sizes=[0, 4])
