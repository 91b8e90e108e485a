"""The request trace: schema, validation, streaming loader and atomic writer (the schema: traces/README.md).

A trace is JSON Lines, one request a line, sorted by arrival time:

    {"id": "c-000001", "arrival_s": 0.137, "prompt_tokens": 812, "output_tokens": 245, "domain": "chat"}

Required fields: `id` (non-empty string, unique in the file), `arrival_s` (seconds >= 0 and below
2**33 s, about 272 years, where float64 still resolves a microsecond; not decreasing from one line
to the next; ties allowed), `prompt_tokens` and `output_tokens` (JSON
integers, 1 <= n <= 10**9), `domain` (non-empty string). Optional fields, `null` meaning absent:
`prompt` (text for the real loop), `session` (string: the conversation a request belongs to, which
the `session` router keeps on one replica), `slo_tps` (per-request SLA, tokens/s > 0),
`prefix_blocks` (list of integers in [0, 2**63 - 1]: the hashes of the prompt's consecutive blocks of
PREFIX_BLOCK_TOKENS = 512 tokens, the last one possibly partial; equal hashes mean equal prompt
prefixes up to that block, as Mooncake's `hash_ids`, which are read as `prefix_blocks` too; the
simulator's prefix cache uses them, simulator.prefix). Other keys are ignored. Blank lines (JSON whitespace only) are skipped. A `.gz` suffix is read and written through gzip.
Only regular files are read (not a FIFO or a device), and a line may hold at most 1 MiB.

The first bad line stops loading with a one-line ValueError
`"<file>: line <n>: field '<f>': <what> (got <value>)"`; nothing is half-loaded.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any

import polars as pl

from sparksched.io import check_input_file, json_error, read_lines, write_lines

REQUIRED = ("id", "arrival_s", "prompt_tokens", "output_tokens", "domain")
OPTIONAL = ("prompt", "session", "slo_tps", "prefix_blocks")
PREFIX_BLOCK_TOKENS = 512  # prompt tokens per prefix_blocks hash (Mooncake's block size)
MAX_TOKENS = 10**9  # larger token counts are certainly corrupt (and would overflow nothing, but hide bugs)
MAX_HASH = 2**63 - 1  # prefix_blocks are stored as Int64
MAX_ARRIVAL_S = 2.0**33  # beyond it float64 spaces times more than a microsecond apart

# polars dtypes of every column; the simulator relies on these names
SCHEMA: dict[str, Any] = {
    "id": pl.Utf8,
    "arrival_s": pl.Float64,
    "prompt_tokens": pl.Int64,
    "output_tokens": pl.Int64,
    "domain": pl.Utf8,
    "prompt": pl.Utf8,
    "session": pl.Utf8,
    "slo_tps": pl.Float64,
    "prefix_blocks": pl.List(pl.Int64),
}

JSON_SPACE = " \t\r\n"  # the only whitespace JSON allows; a line of just these is blank
_CHUNK = 65536
Row = tuple[Any, ...]  # (id, arrival_s, prompt_tokens, output_tokens, domain, prompt, session, slo_tps, prefix_blocks)  # rows buffered as Python values before they become a polars frame


@dataclass(frozen=True)
class TraceRecord:
    """One request of a trace. Times in seconds from the trace start, lengths in tokens."""

    id: str
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    domain: str
    prompt: str | None = None
    session: str | None = None
    slo_tps: float | None = None
    prefix_blocks: tuple[int, ...] | None = None

    def to_json(self) -> str:
        """One JSON line (no newline); optional fields only when set."""
        obj: dict[str, Any] = {
            "id": self.id,
            "arrival_s": self.arrival_s,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "domain": self.domain,
        }
        if self.prompt is not None:
            obj["prompt"] = self.prompt
        if self.session is not None:
            obj["session"] = self.session
        if self.slo_tps is not None:
            obj["slo_tps"] = self.slo_tps
        if self.prefix_blocks is not None:
            obj["prefix_blocks"] = list(self.prefix_blocks)
        return json.dumps(obj, ensure_ascii=False, allow_nan=False)


def _show(value: Any, limit: int = 60) -> str:
    """A short, single-line rendering of a bad value for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Checker:
    """Validates successive records of one file: field types, ranges, order and unique ids."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.prev_arrival = -math.inf
        self.seen: set[str] = set()

    def fail(self, line: int, field: str, what: str, value: Any) -> ValueError:
        return ValueError(f"{self.where}: line {line}: field '{field}': {what} (got {_show(value)})")

    def _text(self, line: int, obj: dict[str, Any], field: str, required: bool) -> str | None:
        value = obj.get(field)
        if value is None:
            if required:
                raise self.fail(line, field, "missing" if field not in obj else "must not be null", value)
            return None
        if not isinstance(value, str):
            raise self.fail(line, field, f"must be a string, not {type(value).__name__}", value)
        if required and not value:
            raise self.fail(line, field, "must not be empty", value)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise self.fail(line, field, "is not valid Unicode (lone surrogate)", value) from None
        return value

    def _tokens(self, line: int, obj: dict[str, Any], field: str) -> int:
        if field not in obj:
            raise self.fail(line, field, "missing", None)
        value = obj[field]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(line, field, f"must be an integer, not {type(value).__name__}", value)
        if value < 1:
            raise self.fail(line, field, "must be >= 1", value)
        if value > MAX_TOKENS:
            raise self.fail(line, field, f"must be <= {MAX_TOKENS}", value)
        return value

    def _number(self, line: int, value: Any, field: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(line, field, f"must be a number, not {type(value).__name__}", value)
        try:
            number = float(value)
        except OverflowError:
            raise self.fail(line, field, "must be finite", value) from None
        if not math.isfinite(number):
            raise self.fail(line, field, "must be finite", value)
        return number

    def row(self, obj: Any, line: int) -> Row:
        """Validate one parsed line; return its 9 field values in schema order, or raise the ValueError.

        The common case (exactly the five required keys, plain values) takes an inline fast path;
        anything else goes through `check`, which alone produces error messages.
        """
        if type(obj) is dict and len(obj) == 5:
            rid, a, p, o, d = (obj.get("id"), obj.get("arrival_s"), obj.get("prompt_tokens"),
                               obj.get("output_tokens"), obj.get("domain"))
            if (type(rid) is str and type(d) is str and type(p) is int and type(o) is int
                    and (type(a) is float or (type(a) is int and a <= 2**53))
                    and 1 <= p <= MAX_TOKENS and 1 <= o <= MAX_TOKENS and a >= 0 and a >= self.prev_arrival
                    and a < MAX_ARRIVAL_S and rid and d and rid.isascii() and d.isascii() and rid not in self.seen):
                self.seen.add(rid)
                self.prev_arrival = a = float(a)
                return (rid, a, p, o, d, None, None, None, None)
        return self.check(obj, line)

    def check(self, obj: Any, line: int) -> Row:
        """Validate one parsed line (every rule, with the error messages); return its row."""
        if not isinstance(obj, dict):
            raise self.fail(line, "<line>", f"must be a JSON object, not {type(obj).__name__}", obj)
        rid = self._text(line, obj, "id", True)
        assert rid is not None
        if "arrival_s" not in obj:
            raise self.fail(line, "arrival_s", "missing", None)
        arrival = self._number(line, obj["arrival_s"], "arrival_s")
        if arrival < 0:
            raise self.fail(line, "arrival_s", "must be >= 0", obj["arrival_s"])
        if arrival >= MAX_ARRIVAL_S:
            raise self.fail(line, "arrival_s", f"must be < {MAX_ARRIVAL_S:.0f} s (2**33: float64 holds "
                            "microseconds below it; epoch micro- or milliseconds read as seconds?)", obj["arrival_s"])
        if arrival < self.prev_arrival:
            raise self.fail(line, "arrival_s", f"out of order: earlier than the previous line's "
                            f"{self.prev_arrival!r}", obj["arrival_s"])
        prompt_tokens = self._tokens(line, obj, "prompt_tokens")
        output_tokens = self._tokens(line, obj, "output_tokens")
        domain = self._text(line, obj, "domain", True)
        assert domain is not None
        prompt = self._text(line, obj, "prompt", False)
        session = self._text(line, obj, "session", False)
        slo = obj.get("slo_tps")
        slo_tps = None
        if slo is not None:
            slo_tps = self._number(line, slo, "slo_tps")
            if slo_tps <= 0:
                raise self.fail(line, "slo_tps", "must be > 0", slo)
        field = "prefix_blocks" if obj.get("prefix_blocks") is not None else "hash_ids"
        hashes = obj.get(field)
        prefix_blocks = None
        if hashes is not None:
            if not isinstance(hashes, list):
                raise self.fail(line, field, f"must be a list of integers, not {type(hashes).__name__}",
                                hashes)
            for h in hashes:
                if isinstance(h, bool) or not isinstance(h, int) or not 0 <= h <= MAX_HASH:
                    raise self.fail(line, field, f"items must be integers in [0, {MAX_HASH}]", h)
            prefix_blocks = tuple(hashes)
        if rid in self.seen:
            raise self.fail(line, "id", "duplicate id", rid)
        self.seen.add(rid)
        self.prev_arrival = arrival
        return (rid, arrival, prompt_tokens, output_tokens, domain, prompt, session, slo_tps, prefix_blocks)


def _open_read(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _iter_rows(path: str | Path) -> Iterator[Row]:
    """Validated rows of a JSON Lines trace in file order (see `iter_trace`)."""
    path = check_input_file(path, "trace")
    where = str(path)
    checker = _Checker(where)
    count = 0
    line = 0
    try:
        stream = _open_read(path)
    except OSError as exc:
        raise ValueError(f"{where}: cannot open trace: {exc.strerror or exc}") from None
    loads = json.loads
    with stream:
        for line, text in read_lines(stream, where):
            if not text.strip(JSON_SPACE):
                continue
            try:
                obj = loads(text)
            except (ValueError, RecursionError) as exc:  # JSONDecodeError, and ints of > 4300 digits
                raise checker.fail(line, "<line>", json_error(exc), text.rstrip("\r\n")) from None
            yield checker.row(obj, line)
            count += 1
    if count == 0:
        raise ValueError(f"{where}: line {line}: field '<file>': trace holds no requests (got an empty file)")


def iter_trace(path: str | Path) -> Iterator[TraceRecord]:
    """Stream the validated records of a JSON Lines trace, in file order.

    Raises the one-line ValueError of the first bad line when it reaches it (records before it have
    already been yielded: use `load_trace` for all-or-nothing), and at the end if the file holds no
    request at all.
    """
    for row in _iter_rows(path):
        yield TraceRecord(*row)


def _frame(rows: list[Row]) -> pl.DataFrame:
    """One chunk of rows as a frame with every column (optional ones null where unset)."""
    names = REQUIRED + OPTIONAL
    if any(r[8] is not None for r in rows):
        rows = [r if r[8] is None else (*r[:8], list(r[8])) for r in rows]
    return pl.DataFrame(rows, schema={c: SCHEMA[c] for c in names}, orient="row")


def empty_frame() -> pl.DataFrame:
    """A trace frame with the required columns and no rows."""
    return pl.DataFrame(schema={c: SCHEMA[c] for c in REQUIRED})


def load_trace(path: str | Path) -> pl.DataFrame:
    """Load and validate a whole trace into a polars DataFrame (all or nothing).

    Columns: id Utf8, arrival_s Float64 (s), prompt_tokens Int64, output_tokens Int64, domain Utf8,
    then each optional column (prompt Utf8, session Utf8, slo_tps Float64, prefix_blocks List(Int64)) that
    at least one line sets (null elsewhere). Rows are streamed in chunks of 65536 into polars, so
    the file is never held as Python objects more than one chunk at a time.
    """
    frames: list[pl.DataFrame] = []
    rows: list[Row] = []
    for row in _iter_rows(path):
        rows.append(row)
        if len(rows) == _CHUNK:
            frames.append(_frame(rows))
            rows = []
    if rows:
        frames.append(_frame(rows))
    df = pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]
    keep = list(REQUIRED) + [c for c in OPTIONAL if df[c].null_count() < df.height]
    return df.select(keep)


def validate_frame(df: pl.DataFrame, where: str = "trace") -> pl.DataFrame:
    """Check a trace DataFrame by the loader's rules (row n reported as line n); return it."""
    for rec in records_from_frame(df, where):
        del rec
    return df


def records_from_frame(df: pl.DataFrame, where: str = "trace") -> Iterator[TraceRecord]:
    """Validated records of a trace DataFrame, in row order (row n reported as line n)."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: line 1: field '{missing[0]}': missing column (got columns {df.columns})")
    checker = _Checker(where)
    cols = [c for c in REQUIRED + OPTIONAL if c in df.columns]
    for i, row in enumerate(df.select(cols).iter_rows(named=True), start=1):
        yield TraceRecord(*checker.check(row, i))
    if df.height == 0:
        raise ValueError(f"{where}: line 0: field '<file>': trace holds no requests (got an empty frame)")


def write_trace(records_or_df: pl.DataFrame | Iterable[TraceRecord], path: str | Path) -> int:
    """Validate and write a trace as JSON Lines, atomically (temp file + rename); return its size.

    Accepts a DataFrame with the loader's columns or an iterable of `TraceRecord`s. If any record is
    invalid the ValueError propagates and `path` is left untouched.
    """
    path = Path(path)
    if isinstance(records_or_df, pl.DataFrame):
        records: Iterable[TraceRecord] = records_from_frame(records_or_df, str(path))
    else:
        checker = _Checker(str(path))

        def checked() -> Iterator[TraceRecord]:
            n = 0
            for n, rec in enumerate(records_or_df, start=1):
                if not isinstance(rec, TraceRecord):
                    raise ValueError(f"{path}: line {n}: field '<line>': must be a TraceRecord (got {_show(rec)})")
                obj = {c: getattr(rec, c) for c in REQUIRED + OPTIONAL}
                if rec.prefix_blocks is not None:
                    obj["prefix_blocks"] = list(rec.prefix_blocks)
                yield TraceRecord(*checker.check(obj, n))
            if n == 0:
                raise ValueError(f"{path}: line 0: field '<file>': trace holds no requests (got nothing to write)")

        records = checked()
    return write_lines(path, (rec.to_json() for rec in records))


def bundled_dir() -> Path:
    """The directory of the bundled traces (the `traces` package)."""
    import traces

    found = getattr(traces, "BUNDLED_DIR", None)  # absent when an old editable install maps a namespace
    if found is not None:
        return Path(found)
    for entry in getattr(traces, "__path__", []):
        if Path(entry).is_dir():
            return Path(entry)
    return Path(str(resources.files("traces")))


def bundled_traces() -> dict[str, Path]:
    """Traces shipped in the `traces` package: file stem -> path."""
    root = bundled_dir()
    return {p.name[: -len(".jsonl")]: p for p in sorted(root.glob("*.jsonl"))}


def resolve_trace(name: str | Path) -> Path:
    """A path that exists as given, else the bundled trace of that name (with or without .jsonl)."""
    path = Path(name)
    if path.exists():
        return path
    bundled = bundled_traces()
    stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.name
    if path.parent == Path(".") and stem in bundled:
        return bundled[stem]
    raise ValueError(f"trace {str(name)!r}: no such file, and no bundled trace of that name "
                     f"(bundled: {', '.join(sorted(bundled)) or 'none'})")
