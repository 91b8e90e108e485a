"""Deployments: how weights and KV split over GPUs, what fits, and one-line errors for bad splits."""

from __future__ import annotations

import pytest

from profiler.devices import get_device_spec
from profiler.grid import Grid
from profiler.model_presets import resolve_model
from profiler.parallel import (
    Collective,
    Deployment,
    kv_bytes_per_token_layer,
    kv_capacity_tokens,
    weight_bytes_per_gpu,
)
from profiler.roofline import check_fits, roofline_profile

DS, QWEN8, QWEN_MOE = (resolve_model(m) for m in ("deepseek-v3", "qwen3-8b", "qwen3-30b-a3b"))
H100, H200 = get_device_spec("h100"), get_device_spec("h200")
GiB = 2**30


def test_weights_split_by_tp_ep_and_dp_attention() -> None:
    one = weight_bytes_per_gpu(QWEN8, Deployment(), "bfloat16")
    assert weight_bytes_per_gpu(QWEN8, Deployment(gpus=4), "bfloat16") == pytest.approx(one / 4)
    # EP8 spreads the experts; DP attention replicates attention, dense layers and embeddings per GPU
    tp8 = weight_bytes_per_gpu(DS, Deployment(gpus=8, ep=8), "float8")
    dp8 = weight_bytes_per_gpu(DS, Deployment(gpus=8, ep=8, dp_attention=True), "float8")
    experts = 58 * 256 * DS.expert_params() / 8
    assert experts < tp8 < dp8 and dp8 - tp8 > 10 * GiB
    assert sum(weight_bytes_per_gpu(DS, Deployment(gpus=8, ep=8), "float8") for _ in range(8)) == \
        pytest.approx(DS.parameters() + 2 * DS.vocab_size * DS.hidden, rel=0.01)  # 16-bit embeddings


def test_kv_splits_by_heads_but_mla_latent_does_not() -> None:
    assert kv_bytes_per_token_layer(QWEN8, Deployment(gpus=4), "bfloat16") == 2 * 8 * 128 * 2 / 4
    assert kv_bytes_per_token_layer(QWEN8, Deployment(gpus=16, tp=16), "bfloat16") == 2 * 8 * 128 * 2 / 8
    assert kv_bytes_per_token_layer(DS, Deployment(gpus=8, ep=8), "float8") == 576
    cap = kv_capacity_tokens(DS, Deployment(gpus=8, ep=8, dp_attention=True), H200, "float8", "float8")
    assert 0.5e6 < cap < 2e6


def test_deployment_that_does_not_fit_is_one_clear_line() -> None:
    with pytest.raises(ValueError) as exc:
        check_fits(DS, Deployment(gpus=8, ep=8), H100, "bfloat16")
    msg = str(exc.value)
    assert "deepseek-v3 (bfloat16) does not fit" in msg and "GiB of weights per GPU" in msg and "\n" not in msg
    assert check_fits(DS, Deployment(gpus=8, ep=8), H200, "float8") < 0.9 * H200.memory_bytes


def test_no_grid_point_fitting_is_an_error() -> None:
    grid = Grid(requests=(64,), tokens_per_request=(1,), contexts=(1_000_000,), prompts=(8,), draft_requests=(1,),
                blocks=(1,), draft_context=8)
    with pytest.raises(ValueError, match="no grid point fits: qwen3-30b-a3b"):
        roofline_profile("h100", QWEN_MOE, grid)


@pytest.mark.parametrize("kwargs, model, message", [
    ({"gpus": 8, "tp": 4}, QWEN8, "without --dp-attention one engine's attention spans all GPUs"),
    ({"gpus": 6, "tp": 4, "dp_attention": True}, QWEN8, "--gpus 6 is not a multiple of --tp 4"),
    ({"gpus": 8, "ep": 3}, DS, "--gpus 8 is not a multiple of --ep 3"),
    ({"gpus": 2, "ep": 2}, QWEN8, "--ep 2: qwen3-8b is dense"),
    ({"gpus": 3}, QWEN8, "--tp 3: qwen3-8b has 32 attention heads"),
    ({"gpus": 0}, QWEN8, "--gpus must be >= 1"),
])
def test_bad_splits_are_named(kwargs: dict, model, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Deployment(**kwargs).check(model)


def test_collectives_cross_the_network_beyond_a_node() -> None:
    inside = Collective("all_to_all", 10e6, 8).seconds(H100)
    across = Collective("all_to_all", 10e6, 16).seconds(H100)
    assert across > 3 * inside  # NIC (50 GB/s) vs NVLink (450 GB/s per direction)
    ring = Collective("all_reduce", 10e6, 8).seconds(H100)
    assert ring == pytest.approx(H100.link_latency_s + 2 * 7 / 8 * 10e6 / H100.link_bandwidth)
    assert Collective("all_reduce", 10e6, 1).seconds(H100) == 0.0
