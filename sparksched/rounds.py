"""Recorded rounds: the file format in which engines log speculative rounds (writer and reader).

One row per request per speculative round. JSON Lines (`.jsonl`, optionally `.gz`) or Parquet
(`.parquet`), same fields:

    {"request": "c-000001", "step": 17, "domain": "chat",
     "conf": [0.93, 0.88, 0.71, 0.52, 0.40, 0.31, 0.22],
     "drafted": 7, "verified": 4, "accepted": 2}

    request   str    request id (any string; rounds of one request share it)
    step      int    engine step (or round) index, >= 0; orders a request's rounds
    domain    str    workload domain ("chat", "code", "math", ...); used to group rounds
    conf      [g]    conditional confidences c_1..c_g in [0, 1] the drafter reported (c_k: probability
                     that draft k survives given 1..k-1 survived); entries past `drafted` are ignored
    drafted   int    draft tokens proposed, 0 <= drafted <= g
    verified  int    draft tokens sent to verification (l), 0 <= verified <= drafted
    accepted  int    leading drafts accepted, 0 <= accepted <= verified (the round emits accepted + 1)

Every row of a file has the same g (len(conf)). The first bad row stops reading with a one-line
ValueError "<file>: line <n>: field '<f>': <what> (got <value>)"; writers never leave a
half-written file (temp file + rename).

    with RoundsWriter("rounds.jsonl") as w:
        w.add(["r1", "r2"], step=0, domain=["chat", "code"], conf=conf, drafted=[7, 7],
              verified=lengths, accepted=accepted)
    rounds = read_rounds("rounds.jsonl")   # Rounds: numpy arrays, conf [m, g]
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from sparksched.io import check_input_file, json_error, read_lines, write_lines, write_parquet

FIELDS = ("request", "step", "domain", "conf", "drafted", "verified", "accepted")

__all__ = ["FIELDS", "Rounds", "RoundsWriter", "read_rounds", "write_rounds"]


@dataclass(frozen=True)
class Rounds:
    """Recorded rounds as arrays (m rows, block g).

    Attributes:
        request: [m] object array of request ids (str).
        step: [m] int64.
        domain: [m] object array of domains (str).
        conf: [m, g] float64 conditional confidences.
        drafted, verified, accepted: [m] int64.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "rounds.jsonl")
        >>> _ = write_rounds(path, [{"request": "r1", "step": 0, "domain": "chat", "conf": [0.9, 0.6],
        ...                          "drafted": 2, "verified": 2, "accepted": 1}])
        >>> r = read_rounds(path)
        >>> r.conf.shape, r.accepted.tolist()
        ((1, 2), [1])
    """

    request: np.ndarray
    step: np.ndarray
    domain: np.ndarray
    conf: np.ndarray
    drafted: np.ndarray
    verified: np.ndarray
    accepted: np.ndarray

    @property
    def block(self) -> int:
        """g, the confidence vector length."""
        return int(self.conf.shape[1])

    def __len__(self) -> int:
        return int(self.step.size)


def _bad(where: str, line: int, field: str, what: str, value: Any) -> ValueError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return ValueError(f"{where}: line {line}: field '{field}': {what} (got {shown})")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_row(row: Any, where: str, line: int, block: int | None) -> int:
    """Validate one row; return its g."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: line {line}: a round must be a JSON object (got {type(row).__name__})")
    for f in FIELDS:
        if f not in row:
            raise _bad(where, line, f, "missing", None)
    if not isinstance(row["request"], str) or not row["request"]:
        raise _bad(where, line, "request", "must be a non-empty string", row["request"])
    if not isinstance(row["domain"], str) or not row["domain"]:
        raise _bad(where, line, "domain", "must be a non-empty string", row["domain"])
    if not _is_int(row["step"]) or not 0 <= row["step"] < 2**63:
        raise _bad(where, line, "step", "must be an integer in [0, 2**63)", row["step"])
    conf = row["conf"]
    if not isinstance(conf, (list, tuple)) or not conf:
        raise _bad(where, line, "conf", "must be a non-empty list of numbers", conf)
    for c in conf:
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or not 0 <= c <= 1:
            raise _bad(where, line, "conf", "entries must be numbers in [0, 1]", c)
    g = len(conf)
    if block is not None and g != block:
        raise _bad(where, line, "conf", f"has {g} entries, earlier rows have {block}", conf)
    d, v, a = row["drafted"], row["verified"], row["accepted"]
    if not _is_int(d) or not 0 <= d <= g:
        raise _bad(where, line, "drafted", f"must be an integer in [0, {g}]", d)
    if not _is_int(v) or not 0 <= v <= d:
        raise _bad(where, line, "verified", f"must be an integer in [0, drafted={d}]", v)
    if not _is_int(a) or not 0 <= a <= v:
        raise _bad(where, line, "accepted", f"must be an integer in [0, verified={v}]", a)
    return g


def _open_binary(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def read_rounds(path: str | Path) -> Rounds:
    """Read and validate a rounds file (.jsonl, .jsonl.gz or .parquet); ValueError on the first bad row.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "rounds.jsonl")
        >>> with open(path, "w") as fh:
        ...     _ = fh.write('{"request": "r1", "step": 0, "domain": "code", "conf": [0.8], '
        ...                  '"drafted": 1, "verified": 1, "accepted": 0}' + chr(10))
        >>> read_rounds(path).domain.tolist()
        ['code']
    """
    path = check_input_file(path, "rounds file")
    where = str(path)
    rows: list[dict[str, Any]]
    if path.name.endswith(".parquet"):
        import polars as pl

        try:
            rows = pl.read_parquet(path).to_dicts()
        except Exception as exc:  # polars raises several types for unreadable files
            raise ValueError(f"{where}: not a readable Parquet file: {exc}") from None
        numbered = list(enumerate(rows, start=1))
    else:
        numbered = []
        with _open_binary(path) as fh:
            for i, text in read_lines(fh, where):
                if not text.strip():
                    continue
                try:
                    numbered.append((i, json.loads(text)))
                except (ValueError, RecursionError) as exc:
                    raise ValueError(f"{where}: line {i}: field '<line>': {json_error(exc)}") from None
    if not numbered:
        raise ValueError(f"{where}: no rounds in the file")
    block: int | None = None
    for i, row in numbered:
        block = _check_row(row, where, i, block)
    rs = [r for _, r in numbered]
    return Rounds(
        request=np.asarray([r["request"] for r in rs], dtype=object),
        step=np.asarray([r["step"] for r in rs], dtype=np.int64),
        domain=np.asarray([r["domain"] for r in rs], dtype=object),
        conf=np.asarray([r["conf"] for r in rs], dtype=np.float64),
        drafted=np.asarray([r["drafted"] for r in rs], dtype=np.int64),
        verified=np.asarray([r["verified"] for r in rs], dtype=np.int64),
        accepted=np.asarray([r["accepted"] for r in rs], dtype=np.int64),
    )


class RoundsWriter:
    """Append rounds in batches; the file appears (atomically) on `close()` / leaving the `with`.

    `add` takes one engine step's batch as arrays (n requests): request ids [n], domain (str or [n]),
    conf [n, g], drafted [n], verified [n], accepted [n]; step is an int or [n]. Rows are validated.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "rounds.jsonl")
        >>> with RoundsWriter(path) as w:
        ...     w.add(["r1", "r2"], step=0, domain="chat", conf=[[0.9, 0.5], [0.4, 0.2]],
        ...           drafted=[2, 2], verified=[2, 1], accepted=[2, 0])
        >>> read_rounds(path).verified.tolist()
        [2, 1]
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._rows: list[dict[str, Any]] = []
        self._block: int | None = None
        self._closed = False

    def add(self, request: Sequence[str], step: int | Sequence[int], domain: str | Sequence[str],
            conf: Any, drafted: Any, verified: Any, accepted: Any) -> None:
        """Append one batch of rounds (see the class docstring for shapes)."""
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        conf = np.asarray(conf, dtype=np.float64)
        n = len(request)
        if conf.ndim != 2 or conf.shape[0] != n:
            raise ValueError(f"{self.path}: conf must be [n={n}, g], got shape {conf.shape}")
        steps = np.broadcast_to(np.asarray(step, dtype=np.int64), (n,))
        domains = [domain] * n if isinstance(domain, str) else list(domain)
        cols = [np.broadcast_to(np.asarray(x, dtype=np.int64), (n,)) for x in (drafted, verified, accepted)]
        for i in range(n):
            row = {"request": str(request[i]), "step": int(steps[i]), "domain": domains[i],
                   "conf": [float(c) for c in conf[i]], "drafted": int(cols[0][i]),
                   "verified": int(cols[1][i]), "accepted": int(cols[2][i])}
            self._block = _check_row(row, str(self.path), len(self._rows) + 1, self._block)
            self._rows.append(row)

    def close(self) -> int:
        """Write the file atomically; return the number of rows."""
        if self._closed:
            return len(self._rows)
        self._closed = True
        return write_rounds(self.path, self._rows)

    def __enter__(self) -> RoundsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True  # an error inside the block writes nothing


def write_rounds(path: str | Path, rows: Sequence[dict[str, Any]]) -> int:
    """Validate and write rows (dicts with FIELDS) to .jsonl[.gz] or .parquet, atomically.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "rounds.parquet")
        >>> write_rounds(path, [{"request": "r1", "step": 3, "domain": "math", "conf": [0.7, 0.7],
        ...                      "drafted": 2, "verified": 0, "accepted": 0}])
        1
    """
    path = Path(path)
    block: int | None = None
    for i, row in enumerate(rows, start=1):
        block = _check_row(row, str(path), i, block)
    if path.name.endswith(".parquet"):
        import polars as pl

        write_parquet(path, pl.DataFrame([{k: r[k] for k in FIELDS} for r in rows],
                                         schema={"request": pl.Utf8, "step": pl.Int64, "domain": pl.Utf8,
                                                 "conf": pl.List(pl.Float64), "drafted": pl.Int64,
                                                 "verified": pl.Int64, "accepted": pl.Int64}))
    else:
        write_lines(path, (json.dumps({k: r[k] for k in FIELDS}) for r in rows), compress=path.name.endswith(".gz"))
    return len(rows)
