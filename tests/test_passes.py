"""Physical invariants of the roofline's pass costs: experts touched, MoE scaling, FP8 rates, collectives."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import profiler.passes as passes
from profiler.devices import DTYPE_BYTES, get_device_spec
from profiler.model_presets import resolve_model
from profiler.moe import expected_touched
from profiler.parallel import Deployment
from profiler.passes import verify_cost

H100, H200, A100 = get_device_spec("h100"), get_device_spec("h200"), get_device_spec("a100")
DS, QWEN_MOE, MIXTRAL, QWEN8 = (resolve_model(m) for m in ("deepseek-v3", "qwen3-30b-a3b", "mixtral-8x7b", "qwen3-8b"))
DS_DP8 = Deployment(gpus=8, ep=8, dp_attention=True)
CASES = [(QWEN_MOE, H100, Deployment(), "bfloat16"), (MIXTRAL, H100, Deployment(gpus=2), "bfloat16"),
         (DS, H200, DS_DP8, "float8"), (DS, H200, Deployment(gpus=8, ep=8), "float8")]


def _expert_read_floor(model, dep, n: int, t: int, dtype: str, device) -> float:
    """Seconds to read, once, the weights of the experts the step's tokens touch on one GPU."""
    touched = expected_touched(dep.groups * n * t, model.n_routed_experts, model.experts_per_token) / dep.ep
    per_gpu = touched * model.expert_params() / dep.expert_tp * DTYPE_BYTES[dtype]
    return len(model.moe_layers) * per_gpu / device.bandwidth


@settings(max_examples=40, deadline=None)
@given(case=st.sampled_from(range(len(CASES))), n=st.integers(1, 512), t=st.integers(1, 8),
       ctx=st.sampled_from([0, 512, 8192]))
def test_a_step_costs_at_least_reading_the_experts_it_touches(case: int, n: int, t: int, ctx: int) -> None:
    model, device, dep, dtype = CASES[case]
    assert verify_cost(model, n, t, ctx, dtype, dep).seconds(device) >= _expert_read_floor(model, dep, n, t, dtype, device)


def test_reading_only_k_experts_breaks_the_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    # negative control: a cost that reads k experts per layer however many tokens route (active params)
    model, device, dep, dtype = CASES[0]
    monkeypatch.setattr(passes, "expected_touched", lambda b, e, k: float(k))
    assert verify_cost(model, 256, 1, 512, dtype, dep).seconds(device) < \
        _expert_read_floor(model, dep, 256, 1, dtype, device)


def _moe_growth(model, device, dep, dtype) -> float:
    return verify_cost(model, 256, 1, 2048, dtype, dep).seconds(device) / \
        verify_cost(model, 1, 1, 2048, dtype, dep).seconds(device)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_moe_decode_at_256_requests_costs_at_least_twice_one(case: int) -> None:
    assert _moe_growth(*CASES[case]) >= 2.0


def test_reading_every_expert_every_step_would_flatten_the_moe_curve(monkeypatch: pytest.MonkeyPatch) -> None:
    # negative control: a dense-style cost (all experts read at any batch) grows far less than 2x
    monkeypatch.setattr(passes, "expected_touched", lambda b, e, k: float(e))
    assert _moe_growth(*CASES[2]) < 2.0


def _fp8_over_bf16(device, model=QWEN8, n: int = 512, t: int = 8) -> float:
    fp8 = verify_cost(model, n, t, 0, "float8", kv_dtype="float8")
    bf16 = verify_cost(model, n, t, 0, "bfloat16", kv_dtype="bfloat16")
    assert fp8.bound(device) == bf16.bound(device) == "compute"
    return fp8.seconds(device) / bf16.seconds(device)


def test_compute_bound_fp8_steps_cost_about_half_of_bf16() -> None:
    assert 0.45 <= _fp8_over_bf16(H100) <= 0.6
    assert 0.45 <= _fp8_over_bf16(get_device_spec("b200")) <= 0.6
    # an A100 has no FP8 tensor cores: FP8 weights are dequantized and the math stays BF16
    assert _fp8_over_bf16(A100) > 0.9


def test_a_device_without_fp8_rates_fails_the_fp8_check() -> None:
    # negative control: pricing FP8 at the BF16 rate (the old roofline) does not halve compute
    no_fp8 = replace(H100, peak_tflops={k: v for k, v in H100.peak_tflops.items() if k != "float8"})
    assert _fp8_over_bf16(no_fp8) > 0.9


@pytest.mark.parametrize("model, dep", [(QWEN8, Deployment(gpus=2)), (MIXTRAL, Deployment(gpus=2)),
                                        (DS, DS_DP8), (DS, Deployment(gpus=72, ep=72, dp_attention=True))])
def test_tp_and_ep_communication_grows_with_tokens(model, dep) -> None:
    comm = np.array([[verify_cost(model, n, t, 512, "bfloat16", dep).breakdown(H100)["comm_s"]
                      for t in (1, 4, 8)] for n in (1, 16, 256)])
    assert np.all(comm > 0) and np.all(np.diff(comm, axis=0) > 0) and np.all(np.diff(comm, axis=1) > 0)


def test_single_gpu_has_no_communication() -> None:
    assert verify_cost(QWEN_MOE, 64, 4, 512).breakdown(H100)["comm_s"] == 0


@settings(max_examples=25, deadline=None)
@given(case=st.sampled_from(range(len(CASES))), n=st.integers(1, 255), t=st.integers(1, 7),
       ctx=st.integers(0, 16384))
def test_cost_never_falls_as_requests_tokens_or_context_grow(case: int, n: int, t: int, ctx: int) -> None:
    model, device, dep, dtype = CASES[case]
    base = verify_cost(model, n, t, ctx, dtype, dep).seconds(device)
    for more in ((n + 1, t, ctx), (n, t + 1, ctx), (n, t, ctx + 1024)):
        assert verify_cost(model, *more, dtype, dep).seconds(device) >= base * (1 - 1e-12)


def test_mla_and_sliding_windows_cap_what_attention_reads() -> None:
    # DeepSeek-V3 stores 576 latent + RoPE values per token per layer, not 2 x 128 heads x 128
    kv = verify_cost(DS, 1, 1, 32768, "float8", DS_DP8).kv_bytes
    assert kv == pytest.approx(61 * 576 * (32768 + 1))
    gemma = resolve_model("gemma-2-9b")
    short, long = (verify_cost(gemma, 8, 1, c).bytes for c in (4096, 8192))
    dense_like = resolve_model("gemma-2-9b").with_(sliding_layers=[], sliding_window=0)
    d_short, d_long = (verify_cost(dense_like, 8, 1, c).bytes for c in (4096, 8192))
    assert long - short == pytest.approx((d_long - d_short) / 2, rel=0.01)  # half the layers stop at 4096


def test_two_batch_overlap_hides_collectives_at_large_batch_and_costs_at_small() -> None:
    dep = Deployment(gpus=72, ep=72, dp_attention=True)
    tbo = replace(dep, two_batch_overlap=True)
    big = [verify_cost(DS, 256, 1, 2000, "float8", d).seconds(H100) for d in (dep, tbo)]
    assert big[1] < big[0]
    small = [verify_cost(DS, 2, 1, 2000, "float8", d).breakdown(H100) for d in (dep, tbo)]
    assert small[1]["memory_s"] > small[0]["memory_s"]  # two micro-batches read the weights twice
