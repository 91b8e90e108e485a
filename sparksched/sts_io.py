"""STS calibration files in SGLang's DSpark format: build what we fit, read what SGLang fitted.

SGLang's DSpark mode reads Sequential Temperature Scaling as a JSON object:

    {"temperatures": [1.32, 1.16, 1.22, 1.0, 1.65, 1.0, 2.46],   # one per block position, > 0
     "dataset": "sharegpt", "num_samples": 3313,
     "ece_before": 0.028, "ece_after": 0.020}

applied as c_k' = sigmoid(logit(c_k) / T_k) (sparksched.calibration.apply_sts is the same map).
`ece_before` / `ece_after` are written as one number each: the mean over positions of the ECE of
the cumulative survival S_k, weighted by the rows seen at each position; the per-position values
go under `ece_before_by_position` / `ece_after_by_position` (extra keys a reader of the format
ignores). Reading accepts either a number or a per-position list for the ECE keys; only
`temperatures` is required. (Writing is the caller's: `sparksched calibration` writes atomically.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class StsFile:
    """An STS calibration: temperatures [g] and what the file says about how they were fitted."""

    temperatures: np.ndarray
    dataset: str | None = None
    num_samples: int | None = None
    ece_before: float | list[float] | None = None
    ece_after: float | list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def weighted_ece(values: Any, counts: Any = None) -> float | None:
    """One ECE from per-position values: the mean weighted by rows per position (plain mean without counts)."""
    v = np.asarray(values, dtype=np.float64)
    w = np.ones_like(v) if counts is None else np.asarray(counts, dtype=np.float64)
    keep = np.isfinite(v) & (w > 0)
    return float(np.average(v[keep], weights=w[keep])) if keep.any() else None


def sts_document(temperatures: Any, *, dataset: str | None, num_samples: int | None,
                 ece_before: Any = None, ece_after: Any = None, counts: Any = None) -> dict[str, Any]:
    """The SGLang STS JSON object (see the module docstring); per-position ECE lists become one number each.

    Example:
        >>> sts_document([1.5, 2.0], dataset="chat", num_samples=10, ece_before=[0.1, 0.3],
        ...              ece_after=[0.05, 0.1], counts=[10, 5])["ece_before"]
        0.16666666666666666
    """
    t = np.asarray(temperatures, dtype=np.float64)
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t) & (t > 0)):
        raise ValueError(f"temperatures must be a non-empty list of finite numbers > 0, got {t.tolist()}")
    doc: dict[str, Any] = {"temperatures": [float(x) for x in t], "dataset": dataset,
                           "num_samples": None if num_samples is None else int(num_samples)}
    for key, value in (("ece_before", ece_before), ("ece_after", ece_after)):
        if value is None:
            doc[key] = None
        elif np.ndim(value) == 0:
            doc[key] = float(value)
        else:
            per = [float(x) if math.isfinite(float(x)) else None for x in np.asarray(value, dtype=np.float64)]
            doc[key] = weighted_ece(value, counts)
            doc[f"{key}_by_position"] = per
    return doc


def read_sts_json(path: str | Path) -> StsFile:
    """Read an SGLang STS calibration JSON; ValueError naming the file and the key when it is not one."""
    from sparksched.io import load_json, read_text

    path = Path(path)
    doc = load_json(read_text(path, "STS file"), str(path))
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: field '<file>': must be a JSON object with 'temperatures'")
    t = doc.get("temperatures")
    if not isinstance(t, list) or not t or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0 for x in t):
        raise ValueError(f"{path}: field 'temperatures': must be a non-empty list of numbers > 0 (got {t!r})")
    n = doc.get("num_samples")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ValueError(f"{path}: field 'num_samples': must be an integer >= 0 (got {n!r})")
    eces = {}
    for key in ("ece_before", "ece_after"):
        v = doc.get(key)
        ok = v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) or (
            isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v))
        if not ok:
            raise ValueError(f"{path}: field '{key}': must be a number or a list of numbers (got {v!r})")
        eces[key] = v
    dataset = doc.get("dataset")
    extra = {k: v for k, v in doc.items() if k not in ("temperatures", "dataset", "num_samples", "ece_before",
                                                       "ece_after")}
    return StsFile(np.asarray(t, dtype=np.float64), None if dataset is None else str(dataset), n,
                   eces["ece_before"], eces["ece_after"], extra)
