"""Strict JSON for the simulator's result files (result.json, summary.json), on top of `sparksched.io`.

`jsonable` turns numpy values and non-finite floats into strict JSON values; `write_json` writes
them through `sparksched.io`, the project's one atomic writer (a temporary file beside the target,
flushed, mode 0644, renamed into place; a failed write leaves the old file, or none, and raises one
`OutputError` line naming the file). Other files are written with `sparksched.io` directly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from sparksched import io


def jsonable(x: Any) -> Any:
    """Plain JSON values: numpy scalars become Python numbers, NaN and infinities become None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [jsonable(v) for v in x.tolist()]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """`obj` as strict JSON (no NaN tokens: see `jsonable`) to `path`, atomically."""
    text = json.dumps(jsonable(obj), indent=indent, allow_nan=False)
    return io.write_text(path, text + "\n")
