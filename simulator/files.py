"""Every file the reports, timelines, scenario and result writers produce goes through `atomic_write`.

A write goes to a temporary file in the target's directory and is renamed into place, so a reader
never sees a half-written file and a failed write leaves the old file (or none). Keeping the one
function here lets a project-wide writer replace it in one place.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> Path:
    """Call `write(tmp_path)` on a temporary file beside `path`, then rename it to `path`.

    The parent directory is created. On any error the temporary file is removed and the error re-raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """`text` (UTF-8) to `path`, atomically."""
    return atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))


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
    return write_text(path, text + "\n")
