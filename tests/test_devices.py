"""Device presets: datasheet sources, per-dtype FLOP rates, dtype names."""

from __future__ import annotations

import pytest

from profiler.devices import DEVICES, canonical_dtype, get_device_spec


def test_every_preset_states_its_source_and_links() -> None:
    assert set(DEVICES) == {"h100", "h200", "h800", "h20", "b200", "a100", "l40s", "mi300x"}
    for key, d in DEVICES.items():
        assert d.key == key and any(w in d.source for w in ("datasheet", "data sheet", "product brief"))
        assert d.peak_bandwidth > 0 and d.memory_bytes > 40 * 2**30 and d.link_bytes_per_s > 0
        assert d.bandwidth == pytest.approx(0.9 * d.peak_bandwidth) and d.flops == pytest.approx(0.8 * d.peak_flops)


def test_rates_follow_the_dtype_the_device_computes_in() -> None:
    h100, a100, b200 = (get_device_spec(k) for k in ("h100", "a100", "b200"))
    assert h100.rate("fp8") == pytest.approx(2 * h100.rate("bf16"), rel=0.01)
    assert h100.compute_dtype("fp4") == "float8" and b200.compute_dtype("fp4") == "float4"
    assert b200.rate("fp4") == pytest.approx(4 * b200.rate("bf16"))
    assert a100.compute_dtype("float8") == "bfloat16" and a100.rate("fp8") == a100.rate("bf16")
    assert get_device_spec("H20").rate("bf16") < h100.rate("bf16") / 5  # H20: 148 vs 989 TFLOP/s


def test_dtype_names() -> None:
    assert canonical_dtype("FP8") == "float8" and canonical_dtype("torch.bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="unknown dtype 'int3'; known: float32"):
        canonical_dtype("int3")
    with pytest.raises(ValueError, match="unknown roofline device 'b300'; known: h100"):
        get_device_spec("b300")
