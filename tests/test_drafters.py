"""Drafter families priced on the target's deployment."""

from __future__ import annotations

import pytest

from profiler.devices import get_device_spec
from profiler.drafters import PAPER_LAYERS, PAPER_WINDOW, draft_cost, drafter_presets
from profiler.model_presets import resolve_model
from profiler.parallel import Deployment
from profiler.passes import Precision

DS, QWEN8 = resolve_model("deepseek-v3"), resolve_model("qwen3-8b")
H200 = get_device_spec("h200")
DEP = Deployment(gpus=8, ep=8, dp_attention=True)
FP8 = Precision("float8", "float8")


def _seconds(model, fam: str, n: int, g: int, ctx: int, dep=DEP, prec=FP8) -> float:
    bb, hd = draft_cost(model, drafter_presets(model)[fam], n, g, ctx, prec, dep)
    return bb.seconds(H200) + hd.seconds(H200)


def test_presets_follow_the_paper_on_moe_targets() -> None:
    ds = drafter_presets(DS)
    assert (ds["dspark"].layers, ds["dspark"].window, ds["dspark"].moe) == (PAPER_LAYERS, PAPER_WINDOW, True)
    assert ds["mtp1"].layers == 1 and ds["mtp1"].moe and ds["eagle3"].vocab == 32000 and not ds["eagle3"].moe
    dense = drafter_presets(QWEN8)
    assert (dense["dspark"].layers, dense["dspark"].window) == (5, 0)  # the reference decoder's drafter
    with pytest.raises(ValueError, match="drafter needs layers >= 1"):
        drafter_presets(QWEN8, layers=0)


def test_sliding_window_drafter_ignores_context_but_mtp_does_not() -> None:
    assert _seconds(DS, "dspark", 64, 5, 512) == pytest.approx(_seconds(DS, "dspark", 64, 5, 32768))
    assert _seconds(DS, "mtp1", 64, 1, 32768) > 1.2 * _seconds(DS, "mtp1", 64, 1, 512)  # its own KV cache


def test_autoregressive_eagle_pays_per_token_and_dspark_per_block() -> None:
    assert _seconds(DS, "eagle3", 32, 7, 2048) == pytest.approx(7 / 5 * _seconds(DS, "eagle3", 32, 5, 2048), rel=1e-6)
    assert _seconds(DS, "dspark", 32, 7, 2048) < 1.3 * _seconds(DS, "dspark", 32, 5, 2048)
    assert _seconds(DS, "dspark", 32, 5, 2048) > _seconds(DS, "dflash", 32, 5, 2048)  # + the Markov head


def test_moe_drafter_layers_see_the_whole_deployment() -> None:
    one_group = Deployment(gpus=8, ep=8, dp_attention=True)
    bb, _ = draft_cost(DS, drafter_presets(DS)["dspark"], 4, 5, 2048, FP8, one_group)
    assert bb.breakdown(H200)["comm_s"] > 0  # EP all-to-all in every drafter MoE layer
