"""The profile file: schema, validation and loading.

A profile is JSON with `"schema": 1` and the measured (or roofline-estimated) step times of a target
on a device:

    {"schema": 1, "kind": "measured" | "estimated", "created": "2026-11-23T10:00:00Z",
     "device": {...}, "model": {"preset": ..., ...}, "dtype": "bfloat16", "torch": "2.13.0",
     "grid": {...},
     "verify":  [{"requests": n, "tokens": B, "tokens_per_request": t, "context": L,
                  "median_s": s, "p10_s": s, "p90_s": s, "cv": x, "repeats": r}, ...],
     "draft":   [{"requests": n, "block": g, "backbone_s": s, "head_s": s, "median_s": s, ...}, ...],
     "prefill": [{"prompt_tokens": P, "median_s": s, ...}, ...]}

Loading validates every required field and names the file, the section, the row and the field of
the first problem in a one-line ValueError. Facts that cannot be true are errors too: a device
memory below 1 MiB, a non-positive model size, a verify curve of one batch size (no curve), and a
step time that falls by more than 25 % as the batch grows (rows repeated at one point are averaged
first, as the curve averages them). Only regular files up to 64 MiB are read.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

_REQUIRED_TOP = ("schema", "device", "model", "dtype", "verify")
_ROW_FIELDS: dict[str, tuple[str, ...]] = {
    "verify": ("requests", "tokens", "context", "median_s"),
    "draft": ("requests", "block", "median_s"),
    "prefill": ("prompt_tokens", "median_s"),
}
_POSITIVE = {"requests", "tokens", "block", "prompt_tokens", "median_s"}
_NON_NEGATIVE = {"context", "p10_s", "p90_s", "backbone_s", "head_s", "cv", "repeats", "tokens_per_request"}

_KINDS = ("measured", "estimated")  # optional top-level "kind": timed on a device, or a roofline
MIN_DEVICE_MEMORY = 1 << 20  # bytes: no accelerator holds a model in less than a MiB
# model facts that must be positive where present (they size the KV cache and the weights)
_MODEL_POSITIVE = ("parameters", "layers", "kv_heads", "head_dim", "heads", "hidden", "vocab_size",
                   "kv_bytes_per_token")
# optional sections that, where present, are objects (the step-cost model and the simulator read into them)
_OPTIONAL_OBJECTS = ("drafter", "deployment", "grid", "settings", "software")
MAX_PROFILE_BYTES = 64 << 20  # a profile is kilobytes; anything this large is not one


class ProfileWarning(UserWarning):
    """A profile lacks something a run uses, so the run assumes it (e.g. a free drafter)."""

BUNDLED_DIR = "data/profiles"


def bundled_profiles() -> dict[str, Path]:
    """Profiles shipped in the package: file stem -> path."""
    root = resources.files("sparksched").joinpath(BUNDLED_DIR)
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".json")}


def resolve_profile(name: str | Path) -> Path:
    """A path that exists as given, else the bundled profile of that name (with or without .json)."""
    path = Path(name)
    if path.exists():
        return path
    bundled = bundled_profiles()
    stem = path.name[:-5] if path.name.endswith(".json") else path.name
    if stem in bundled:
        return bundled[stem]
    raise ValueError(f"profile {str(name)!r}: no such file, and no bundled profile of that name "
                     f"(bundled: {', '.join(sorted(bundled)) or 'none'})")


def validate_profile(profile: Any, where: str = "profile") -> dict[str, Any]:
    """Check a parsed profile against schema 1; return it, or raise one-line ValueError naming the spot."""
    if not isinstance(profile, dict):
        raise ValueError(f"{where}: a profile must be a JSON object, got {type(profile).__name__}")
    for key in _REQUIRED_TOP:
        if key not in profile:
            raise ValueError(f"{where}: missing field {key!r}")
    if profile["schema"] != SCHEMA_VERSION:
        raise ValueError(f"{where}: field 'schema' is {profile['schema']!r}; this sparksched reads "
                         f"schema {SCHEMA_VERSION}")
    if "kind" in profile and profile["kind"] not in _KINDS:
        raise ValueError(f"{where}: field 'kind' is {profile['kind']!r}; expected one of {', '.join(_KINDS)}")
    for section, fields in _ROW_FIELDS.items():
        rows = profile.get(section, [])
        if section == "verify" and (not isinstance(rows, list) or not rows):
            raise ValueError(f"{where}: field 'verify' must be a non-empty list of rows")
        if not isinstance(rows, list):
            raise ValueError(f"{where}: field {section!r} must be a list, got {type(rows).__name__}")
        for i, row in enumerate(rows):
            spot = f"{where}: {section}[{i}]"
            if not isinstance(row, dict):
                raise ValueError(f"{spot} must be an object, got {row!r}")
            for f in fields:
                if f not in row:
                    raise ValueError(f"{spot}: missing field {f!r}")
            for f, v in row.items():
                if f in _POSITIVE or f in _NON_NEGATIVE:
                    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    if not ok or (f in _POSITIVE and v <= 0) or (f in _NON_NEGATIVE and v < 0):
                        need = "> 0" if f in _POSITIVE else ">= 0"
                        raise ValueError(f"{spot}: field {f!r} must be a finite number {need}, got {v!r}")
            if section == "verify" and "tokens_per_request" in row:
                if row["requests"] * row["tokens_per_request"] != row["tokens"]:
                    raise ValueError(f"{spot}: tokens={row['tokens']} is not requests x tokens_per_request "
                                     f"= {row['requests']} x {row['tokens_per_request']}")
    _check_facts(profile, where)
    _check_monotone(profile["verify"], where)
    return profile


def _check_facts(profile: dict[str, Any], where: str) -> None:
    """Refuse device and model facts that cannot be true (they would size a KV cache silently)."""
    for part in ("device", "model", *_OPTIONAL_OBJECTS):
        if part in profile and not isinstance(profile[part], dict):
            raise ValueError(f"{where}: field {part!r} must be an object, got {type(profile[part]).__name__}")
    if "draft_families" in profile and not isinstance(profile["draft_families"], list):
        raise ValueError(f"{where}: field 'draft_families' must be a list, got "
                         f"{type(profile['draft_families']).__name__}")
    for holder, key in ((profile, "kv_capacity_tokens"), (profile.get("deployment") or {}, "kv_capacity_tokens")):
        v = holder.get(key)
        if v is not None and not (_finite(v) and v > 0):
            raise ValueError(f"{where}: field {key!r} must be a number > 0, got {v!r}")
    dtype = profile["dtype"]
    if not isinstance(dtype, str) or not dtype:
        raise ValueError(f"{where}: field 'dtype' must be a name such as 'bfloat16', got {dtype!r}")
    mem = profile["device"].get("memory_bytes")
    if mem is not None and not (_finite(mem) and mem >= MIN_DEVICE_MEMORY):
        raise ValueError(f"{where}: field 'device.memory_bytes' must be a number >= {MIN_DEVICE_MEMORY} "
                         f"(1 MiB), got {mem!r}")
    for key in _MODEL_POSITIVE:
        v = profile["model"].get(key)
        if v is not None and not (_finite(v) and v > 0):
            raise ValueError(f"{where}: field 'model.{key}' must be a number > 0, got {v!r}")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_monotone(rows: list[dict[str, Any]], where: str, tolerance: float = 0.25) -> None:
    """Reject a verify grid whose median falls by more than `tolerance` (relative) as B grows at one
    request count and context.

    Small dips are measurement noise and are smoothed by the isotonic fit of the step-cost model
    (sparksched.cost); a large drop means a corrupt or mislabelled file. Rows of different request
    counts are not compared: a step of more requests may cost more at the same B (KV reads).
    """
    samples: dict[tuple[float, float], dict[float, list[float]]] = {}
    for r in rows:
        samples.setdefault((float(r["requests"]), float(r["context"])), {}).setdefault(
            float(r["tokens"]), []).append(float(r["median_s"]))
    # repeated rows at one point count by their mean, as the step-cost model reads them
    by_point = {key: {b: sum(v) / len(v) for b, v in pts.items()} for key, pts in samples.items()}
    batches: dict[float, set[float]] = {}
    for (_, ctx), pts in by_point.items():
        batches.setdefault(ctx, set()).update(pts)
    for ctx, bs in batches.items():
        if len(bs) < 2:
            raise ValueError(f"{where}: verify rows at context {ctx:g} measure one batch size (tokens="
                             f"{next(iter(bs)):g}): a step-time curve needs at least two")
    for (n, ctx), pts in by_point.items():
        running_max, at = 0.0, 0.0
        for b in sorted(pts):
            if pts[b] < running_max * (1 - tolerance):
                raise ValueError(f"{where}: verify step time decreases from {running_max:.6g} s at "
                                 f"tokens={at:g} to {pts[b]:.6g} s at tokens={b:g} (requests {n:g}, "
                                 f"context {ctx:g})")
            if pts[b] > running_max:
                running_max, at = pts[b], b


def read_json(path: Path, what: str) -> Any:
    """Parsed JSON of `path`; a one-line ValueError naming the file (and the line) otherwise.

    Only a regular file of at most MAX_PROFILE_BYTES is read (a FIFO or /dev/zero would never end);
    undecodable bytes, deep nesting and integers of more than 4300 digits are named like syntax errors.
    """
    from sparksched.io import load_json, read_text

    return load_json(read_text(path, what, MAX_PROFILE_BYTES), str(path))


def load_profile(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Read and validate a profile from a path (bundled names resolve) or an already parsed dict."""
    if isinstance(source, dict):
        return validate_profile(source)
    path = resolve_profile(source)
    data = read_json(path, "profile")
    profile = validate_profile(data, str(path))
    profile["_source"] = str(path)
    return profile
