"""The profile file: schema, validation and loading (DESIGN.md section 3).

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
the first problem in a one-line ValueError.
"""

from __future__ import annotations

import json
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
    _check_monotone(profile["verify"], where)
    return profile


def _check_monotone(rows: list[dict[str, Any]], where: str, tolerance: float = 0.25) -> None:
    """Reject a verify grid whose median falls by more than `tolerance` (relative) as B grows at one
    request count and context.

    Small dips are measurement noise and are smoothed by the isotonic fit of the step-cost model
    (sparksched.cost); a large drop means a corrupt or mislabelled file. Rows of different request
    counts are not compared: a step of more requests may cost more at the same B (KV reads).
    """
    by_point: dict[tuple[float, float], dict[float, float]] = {}
    for r in rows:
        by_point.setdefault((float(r["requests"]), float(r["context"])), {}).setdefault(
            float(r["tokens"]), float(r["median_s"]))
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
    """Parsed JSON of `path`; a one-line ValueError naming the file (and the line) otherwise."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: line {exc.lineno}: not valid JSON: {exc.msg}") from None


def load_profile(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Read and validate a profile from a path (bundled names resolve) or an already parsed dict."""
    if isinstance(source, dict):
        return validate_profile(source)
    path = resolve_profile(source)
    data = read_json(path, "profile")
    profile = validate_profile(data, str(path))
    profile["_source"] = str(path)
    return profile
