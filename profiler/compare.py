"""Roofline versus measured: relative error of the estimate at every measured verify point."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from profiler.models import ModelSpec, from_decoder_config
from profiler.roofline import DEVICES, get_device_spec, verify_cost
from sparksched.models.presets import DecoderConfig
from sparksched.profile import load_profile

_CONFIG_FIELDS = set(DecoderConfig.__dataclass_fields__)


def model_of(profile: dict[str, Any]) -> ModelSpec:
    """The ModelSpec a profile's "model" field describes (a roofline ModelSpec or a measured DecoderConfig)."""
    model = profile["model"]
    if "model_type" in model:
        return ModelSpec.from_dict(model)
    return from_decoder_config(DecoderConfig(**{k: v for k, v in model.items() if k in _CONFIG_FIELDS}))


def guess_device_key(device: dict[str, Any]) -> str:
    """The DEVICES key matching a measured profile's device name (e.g. 'NVIDIA H100 80GB HBM3' -> h100)."""
    name = str(device.get("name", "")).lower()
    for key in DEVICES:
        if key in name:
            return key
    raise ValueError(f"cannot tell which roofline device matches {device.get('name')!r}; pass --roofline "
                     f"(known: {', '.join(DEVICES)})")


@dataclass(frozen=True)
class Comparison:
    rows: list[dict[str, Any]]  # requests, tokens_per_request, context, tokens, measured_s, roofline_s, rel_error

    def summary(self) -> dict[str, float]:
        e = np.asarray([r["rel_error"] for r in self.rows])
        signed = np.asarray([r["roofline_s"] / r["measured_s"] - 1 for r in self.rows])
        return {"points": int(e.size), "median": float(np.median(e)), "max": float(e.max()),
                "median_signed": float(np.median(signed))}


def compare(measured: Any, device: str | None = None) -> Comparison:
    """Roofline estimate (device key, or guessed from the profile) against every measured verify row."""
    prof = load_profile(measured)
    key = device or guess_device_key(prof.get("device", {}))
    spec = get_device_spec(key)
    config = model_of(prof)
    dtype = prof["dtype"]
    rows = []
    for r in prof["verify"]:
        t = int(r.get("tokens_per_request", r["tokens"] // r["requests"]))
        est = verify_cost(config, int(r["requests"]), t, int(r["context"]), dtype).seconds(spec)
        rows.append({"requests": r["requests"], "tokens_per_request": t, "context": r["context"],
                     "tokens": r["tokens"], "measured_s": r["median_s"], "roofline_s": est,
                     "rel_error": abs(est - r["median_s"]) / r["median_s"]})
    return Comparison(rows)


def format_comparison(c: Comparison) -> str:
    """A text table (one line per point) and the median / max relative error."""
    lines = [f"{'context':>7} {'n':>4} {'t':>2} {'B':>5} {'measured ms':>12} {'roofline ms':>12} {'rel.err':>8}"]
    for r in sorted(c.rows, key=lambda r: (r["context"], r["tokens"], r["requests"])):
        lines.append(f"{r['context']:>7} {r['requests']:>4} {r['tokens_per_request']:>2} {r['tokens']:>5} "
                     f"{r['measured_s'] * 1e3:>12.4f} {r['roofline_s'] * 1e3:>12.4f} {r['rel_error']:>8.1%}")
    s = c.summary()
    lines.append(f"points={s['points']}  median rel. error={s['median']:.1%}  max={s['max']:.1%}  "
                 f"median (roofline/measured - 1)={s['median_signed']:+.1%}")
    return "\n".join(lines)
