"""Converters from public LLM-inference trace formats to the trace schema (traces/README.md).

Each converter reads one file and returns `(frame, report)`: a DataFrame in the trace schema
(sorted by arrival, arrival_s from 0 at the first request) and a `ConvertReport` counting the rows
read, kept and dropped by reason. Bad input is a one-line ValueError naming file, line and field;
with `skip_bad=True` (azure, mooncake, burstgpt) a bad row is dropped and counted instead. A
timestamp outside the years 1970-2200 is bad (a typo such as 3023 overflowed nanoseconds into
1854 and shifted every good row by 169 years), and so is a trace whose requests span more than
2**33 s (where float64 arrival times lose microseconds).

Formats:
- `azure`: Azure LLM inference trace CSV `TIMESTAMP,ContextTokens,GeneratedTokens`
  (timestamps like `2023-11-16 18:15:46.6805900`). Rows with 0 tokens are dropped and counted.
- `mooncake`: Mooncake JSONL `{"timestamp": ms, "input_length", "output_length", "hash_ids"}`;
  hash_ids (512-token prefix blocks) are written as the trace's `prefix_blocks`, which the
  simulator's prefix cache uses. Timestamps are quantised (about 3 s), so by default
  requests sharing a timestamp are spread uniformly at random over [t, t + w), w = min(bucket width,
  gap to the next distinct timestamp), keeping file order; the bucket width is the median gap
  between distinct timestamps unless given. Jitter is seeded (`seed`) and can be turned off.
- `burstgpt`: BurstGPT CSV `Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type`
  (optionally `Session ID,Elapsed time`). Failed requests (0 response tokens) are DROPPED by
  default and counted; `keep_failed=True` keeps them as 1-token outputs (the schema needs >= 1).
- `lengths`: a length-only statistics CSV `num_prefill_tokens,num_decode_tokens[,...]` (e.g.
  etalon's ShareGPT stats) plus a renewal arrival process given by rate, cv and distribution.
- `vllm-bench`: a `vllm bench serve --save-result --save-detailed` result JSON (or SGLang
  `bench_serving --output-details` output): the per-request `input_lens` and `output_lens`, in
  order, with arrivals drawn as the benchmark drew them: gamma inter-arrival times with shape
  `burstiness` and mean 1 / `request_rate`, rescaled so the last request is sent at
  n / request_rate (vLLM's normalisation), seeded by `seed` (vLLM's own draws depend on its
  dataset sampling, so the times are a fresh sample of the same process); `request_rate` "inf"
  sends everything at 0. `arrivals="recorded"` uses the result's `start_times` instead (when the
  benchmark capped concurrency these are the send times after the cap). Failed requests (an
  error or 0 output tokens) are dropped and counted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from simulator.generate import arrival_times
from simulator.trace import MAX_ARRIVAL_S, MAX_TOKENS, SCHEMA, _show
from sparksched.io import check_input_file, json_error, read_lines

FORMATS = ("azure", "mooncake", "burstgpt", "lengths", "vllm-bench")
MAX_INPUT_BYTES = 16 << 30  # the public traces are megabytes to a few GB
# plausible wall-clock years for a trace timestamp (anything else is a typo or a corrupt row)
FIRST_YEAR, LAST_YEAR = 1970, 2200


@dataclass
class ConvertReport:
    """What a conversion did: rows read, rows written and rows dropped by reason."""

    source: str
    fmt: str
    rows_in: int = 0
    rows_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the CLI."""
        drops = ", ".join(f"{n} {why}" for why, n in self.dropped.items() if n) or "none"
        notes = f"; {'; '.join(self.notes)}" if self.notes else ""
        return f"{self.fmt}: {self.rows_in} rows read, {self.rows_out} requests written, dropped: {drops}{notes}"


def _read_csv(path: Path, required: tuple[str, ...]) -> pl.DataFrame:
    """All columns as strings; the header must name every required column."""
    check_input_file(path, "trace file", MAX_INPUT_BYTES)
    try:
        df = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=False)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: unreadable CSV: {first[:160]}") from None
    df = df.rename({c: c.strip() for c in df.columns})
    for col in required:
        if col not in df.columns:
            raise ValueError(f"{path}: line 1: field '{col}': missing column (got header {df.columns})")
    if df.height == 0:
        raise ValueError(f"{path}: line 1: field '<file>': no data rows (got only a header)")
    return df


def _first_bad(mask: pl.Series) -> int | None:
    idx = mask.arg_true()
    return int(idx[0]) if idx.len() else None


def _checked(raw: pl.Series, bad: pl.Series, path: Path, col: str, what: str, skip: np.ndarray | None) -> None:
    """Raise for the first bad row (line numbers count the header as line 1), or mark bad rows in `skip`."""
    mask = bad.fill_null(True)
    if skip is not None:
        skip |= mask.to_numpy()
        return
    i = _first_bad(mask)
    if i is not None:
        raise ValueError(f"{path}: line {i + 2}: field '{col}': {what} (got {_show(raw[i])})")


def _int_col(df: pl.DataFrame, col: str, path: Path, skip: np.ndarray | None = None) -> np.ndarray:
    """(n,) int64 of a string column of integers >= 0 (0 where `skip` marks a bad row)."""
    raw = df[col].str.strip_chars()
    parsed = raw.cast(pl.Float64, strict=False)
    bad = parsed.is_null() | ~parsed.is_finite() | (parsed < 0) | (parsed != parsed.floor()) | (parsed > 1e9)
    _checked(raw, bad, path, col, "must be an integer >= 0", skip)
    return parsed.set(bad.fill_null(True), 0.0).cast(pl.Int64).to_numpy()


def _float_col(df: pl.DataFrame, col: str, path: Path, skip: np.ndarray | None = None) -> np.ndarray:
    raw = df[col].str.strip_chars()
    parsed = raw.cast(pl.Float64, strict=False)
    bad = parsed.is_null() | ~parsed.is_finite() | (parsed < 0)
    _checked(raw, bad, path, col, "must be a number >= 0", skip)
    return parsed.set(bad.fill_null(True), 0.0).to_numpy()


def _build(times_s: np.ndarray, prompt: np.ndarray, output: np.ndarray, domain: str, prefix: str,
           extra: dict[str, Any] | None = None, where: tuple[Path, np.ndarray, str] | None = None) -> pl.DataFrame:
    """Sort by time (stable), start at 0, number the ids; extra: optional columns (same length).

    where: (file, source line of each row, time column) to name the row that stretches the trace
    past MAX_ARRIVAL_S.
    """
    if not np.all(np.isfinite(times_s)):
        i = int(np.argmax(~np.isfinite(times_s)))
        path, lines, col = where if where is not None else (Path("trace"), np.arange(times_s.size) + 1, "time")
        raise ValueError(f"{path}: line {int(lines[i])}: field '{col}': gives an arrival time of {times_s[i]!r}")
    span = times_s - times_s.min() if times_s.size else times_s
    if np.any(span >= MAX_ARRIVAL_S):
        i = int(np.argmax(span))
        path, lines, col = where if where is not None else (Path("trace"), np.arange(times_s.size) + 1, "time")
        raise ValueError(f"{path}: line {int(lines[i])}: field '{col}': {span[i]:.4g} s after the first request "
                         f"(more than {MAX_ARRIVAL_S:.4g} s, where float64 loses microseconds: a typo?)")
    order = np.argsort(times_s, kind="stable")
    times = times_s[order] - (times_s[order][0] if times_s.size else 0.0)
    n = times.size
    width = max(6, len(str(n)))
    cols: dict[str, Any] = {
        "id": [f"{prefix}-{i:0{width}d}" for i in range(1, n + 1)],
        "arrival_s": np.maximum(times, 0.0),
        "prompt_tokens": prompt[order],
        "output_tokens": output[order],
        "domain": [domain] * n,
    }
    for name, values in (extra or {}).items():
        cols[name] = [values[i] for i in order.tolist()]
    return pl.DataFrame(cols, schema={c: SCHEMA[c] for c in cols})


def _drop(report: ConvertReport, keep: np.ndarray, reason: str) -> None:
    report.dropped[reason] = report.dropped.get(reason, 0) + int((~keep).sum())


def _no_rows(path: Path, report: ConvertReport) -> ValueError:
    return ValueError(f"{path}: line 1: field '<file>': no valid request left after conversion "
                      f"(got {report.summary()})")


def _timestamps(raw: pl.Series, path: Path, col: str, skip: np.ndarray | None) -> np.ndarray:
    """(n,) int64 microseconds since 1970 of date-time strings; bad or implausible ones raise or
    are marked in `skip` (then 0)."""
    # microseconds reach far past any plausible year (nanoseconds overflow int64 after 2262)
    stamp = raw.str.replace("T", " ", literal=True).str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us",
                                                                    strict=False)
    unparsed = stamp.is_null()
    year = stamp.dt.year()
    implausible = ~unparsed & ((year < FIRST_YEAR) | (year > LAST_YEAR)).fill_null(False)
    if skip is None:
        i = _first_bad(unparsed)
        if i is not None:
            raise ValueError(f"{path}: line {i + 2}: field '{col}': not a time like '2023-11-16 18:15:46.6805900' "
                             f"(got {_show(raw[i])})")
        i = _first_bad(implausible)
        if i is not None:
            raise ValueError(f"{path}: line {i + 2}: field '{col}': year {year[i]} is outside {FIRST_YEAR}-"
                             f"{LAST_YEAR} (a typo? --skip-bad drops such rows) (got {_show(raw[i])})")
    bad = (unparsed | implausible).to_numpy()
    if skip is not None:
        skip |= bad
    return stamp.cast(pl.Int64).fill_null(0).to_numpy()


def convert_azure(path: str | Path, *, domain: str | None = None,
                  skip_bad: bool = False) -> tuple[pl.DataFrame, ConvertReport]:
    """Azure LLM inference trace CSV -> trace. domain: default 'code' if the file name says code, else 'chat'.

    skip_bad: drop and count rows with an unreadable or implausible timestamp or token count
    instead of stopping at the first.
    """
    path = Path(path)
    domain = domain or ("code" if "code" in path.name.lower() else "chat")
    df = _read_csv(path, ("TIMESTAMP", "ContextTokens", "GeneratedTokens"))
    report = ConvertReport(str(path), "azure", rows_in=df.height)
    skip = np.zeros(df.height, dtype=bool) if skip_bad else None
    us = _timestamps(df["TIMESTAMP"].str.strip_chars(), path, "TIMESTAMP", skip)
    prompt = _int_col(df, "ContextTokens", path, skip)
    output = _int_col(df, "GeneratedTokens", path, skip)
    good = np.ones(df.height, dtype=bool) if skip is None else ~skip
    if skip is not None:
        _drop(report, good, "bad rows (--skip-bad)")
    keep = good & (prompt >= 1) & (output >= 1)
    _drop(report, keep | ~good, "with 0 tokens")
    seconds = (us - (us[good].min() if good.any() else 0)) / 1e6
    if np.any(np.diff(seconds[good]) < 0):
        report.notes.append("rows were not in time order: sorted")
    lines = np.arange(df.height) + 2
    out = _build(seconds[keep], prompt[keep], output[keep], domain, "az", where=(path, lines[keep], "TIMESTAMP"))
    report.rows_out = out.height
    if out.height == 0:
        raise _no_rows(path, report)
    return out, report


def _jitter(ms: np.ndarray, rng: np.random.Generator, bucket_s: float | None) -> tuple[np.ndarray, float]:
    """Spread equal timestamps (ms) over [t, t + w); returns seconds (sorted) and the bucket width used."""
    seconds = ms / 1000.0
    order = np.argsort(seconds, kind="stable")
    t = seconds[order]
    distinct, start, counts = np.unique(t, return_index=True, return_counts=True)
    gaps = np.diff(distinct)
    width = float(bucket_s) if bucket_s is not None else (float(np.median(gaps)) if gaps.size else 0.0)
    window = np.minimum(np.append(gaps, np.inf), width)  # never spill into the next bucket
    offsets = np.empty_like(t)
    for k in range(distinct.size):  # sorted uniform offsets keep the file order within a bucket
        c = counts[k]
        offsets[start[k]:start[k] + c] = np.sort(rng.random(c)) * window[k]
    out = np.empty_like(seconds)
    out[order] = t + offsets
    return out, width


def convert_mooncake(path: str | Path, *, domain: str = "chat", jitter: bool = True, seed: int = 0,
                     bucket_s: float | None = None, skip_bad: bool = False) -> tuple[pl.DataFrame, ConvertReport]:
    """Mooncake JSONL -> trace, hash_ids as prefix_blocks; seeded jitter within timestamp buckets (on by default).

    bucket_s: jitter window in seconds (finite, > 0); default the median gap between timestamps.
    skip_bad: drop and count bad lines instead of stopping at the first.
    """
    path = Path(path)
    if bucket_s is not None and not (isinstance(bucket_s, (int, float)) and math.isfinite(bucket_s) and bucket_s > 0):
        raise ValueError(f"mooncake: the bucket width (--bucket) must be a finite number of seconds > 0, got {bucket_s!r}")
    report = ConvertReport(str(path), "mooncake")
    stamps: list[float] = []
    prompt: list[int] = []
    output: list[int] = []
    hashes: list[list[int] | None] = []
    lines: list[int] = []
    bad_lines = 0

    def bad(line: int, name: str, what: str, value: Any) -> ValueError:
        text = repr(value)
        text = text if len(text) <= 60 else text[:57] + "..."
        return ValueError(f"{path}: line {line}: field '{name}': {what} (got {text})")

    def record(line: int, text: str) -> None:
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise bad(line, "<line>", json_error(exc), text.rstrip()) from None
        if not isinstance(obj, dict):
            raise bad(line, "<line>", "must be a JSON object", obj)
        for name in ("timestamp", "input_length", "output_length"):
            value = obj.get(name)
            if name not in obj:
                raise bad(line, name, "missing", None)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise bad(line, name, "must be a number >= 0", value)
            if name != "timestamp" and (not isinstance(value, int) or value > 10**9):
                raise bad(line, name, "must be an integer in [0, 1e9]", value)
        ids = obj.get("hash_ids")
        if ids is not None and (not isinstance(ids, list) or not all(
                isinstance(h, int) and not isinstance(h, bool) and 0 <= h < 2**63 for h in ids)):
            raise bad(line, "hash_ids", "must be a list of integers >= 0", ids)
        stamps.append(float(obj["timestamp"]))
        prompt.append(obj["input_length"])
        output.append(obj["output_length"])
        hashes.append(ids)
        lines.append(line)

    check_input_file(path, "trace file", MAX_INPUT_BYTES)
    try:
        stream = open(path, "rb")
    except OSError as exc:
        raise ValueError(f"{path}: cannot open: {exc.strerror or exc}") from None
    with stream:
        for line, text in read_lines(stream, str(path)):
            if not text.strip(" \t\r\n"):
                continue
            try:
                record(line, text)
            except ValueError:
                if not skip_bad:
                    raise
                bad_lines += 1
    report.rows_in = len(stamps) + bad_lines
    if bad_lines:
        report.dropped["bad rows (--skip-bad)"] = bad_lines
    p, o, ms = np.array(prompt, dtype=np.int64), np.array(output, dtype=np.int64), np.array(stamps)
    keep = (p >= 1) & (o >= 1)
    _drop(report, keep, "with 0 tokens")
    if not keep.any():
        raise _no_rows(path, report)
    ms = ms[keep]
    if jitter:
        seconds, width = _jitter(ms, np.random.default_rng(seed), bucket_s)
        report.notes.append(f"jitter on (seed {seed}, bucket {width:g} s)")
    else:
        seconds = ms / 1000.0
        report.notes.append("jitter off")
    kept_hashes = [h for h, k in zip(hashes, keep.tolist()) if k]
    extra = {"prefix_blocks": kept_hashes} if any(h is not None for h in kept_hashes) else None
    out = _build(seconds, p[keep], o[keep], domain, "mc", extra, where=(path, np.asarray(lines)[keep], "timestamp"))
    report.rows_out = out.height
    return out, report


def convert_burstgpt(path: str | Path, *, domain: str = "chat", keep_failed: bool = False,
                     model: str | None = None, skip_bad: bool = False) -> tuple[pl.DataFrame, ConvertReport]:
    """BurstGPT CSV -> trace. Failed requests (0 response tokens): dropped unless keep_failed (-> 1 token).

    skip_bad: drop and count rows with an unreadable timestamp or token count instead of stopping.
    """
    path = Path(path)
    df = _read_csv(path, ("Timestamp", "Request tokens", "Response tokens"))
    report = ConvertReport(str(path), "burstgpt", rows_in=df.height)
    skip = np.zeros(df.height, dtype=bool) if skip_bad else None
    seconds = _float_col(df, "Timestamp", path, skip)
    prompt = _int_col(df, "Request tokens", path, skip)
    output = _int_col(df, "Response tokens", path, skip)
    keep = np.ones(df.height, dtype=bool) if skip is None else ~skip
    if skip is not None:
        _drop(report, keep, "bad rows (--skip-bad)")
    if model is not None:
        if "Model" not in df.columns:
            raise ValueError(f"{path}: line 1: field 'Model': missing column (got header {df.columns})")
        keep = (df["Model"].str.strip_chars() == model).fill_null(False).to_numpy()
        _drop(report, keep, f"of other models than {model}")
    empty_prompt = keep & (prompt < 1)
    _drop(report, ~empty_prompt, "with 0 request tokens")
    keep &= prompt >= 1
    failed = keep & (output < 1)
    if keep_failed:
        output = np.maximum(output, 1)
        if failed.any():
            report.notes.append(f"{int(failed.sum())} failed requests kept as 1-token outputs")
    else:
        _drop(report, ~failed, "failed (0 response tokens)")
        keep &= ~failed
    extra = None
    if "Session ID" in df.columns:
        sessions = df["Session ID"].str.strip_chars().to_list()
        extra = {"session": [s or None for s, k in zip(sessions, keep.tolist()) if k]}
    if not keep.any():
        raise _no_rows(path, report)
    lines = np.arange(df.height) + 2
    out = _build(seconds[keep], prompt[keep], output[keep], domain, "bg", extra,
                 where=(path, lines[keep], "Timestamp"))
    if np.any(np.diff(seconds[keep]) < 0):
        report.notes.append("rows were not in time order: sorted")
    report.rows_out = out.height
    return out, report


def convert_lengths(path: str | Path, *, rate: float, cv: float = 1.0, arrival: str = "gamma", seed: int = 0,
                    domain: str = "chat", limit: int | None = None,
                    shuffle: bool = False) -> tuple[pl.DataFrame, ConvertReport]:
    """Length-only CSV (num_prefill_tokens, num_decode_tokens) + renewal arrivals (rate req/s, cv) -> trace.

    Rows keep file order unless shuffle (seeded); limit keeps the first `limit` rows (after shuffling).
    """
    path = Path(path)
    df = _read_csv(path, ("num_prefill_tokens", "num_decode_tokens"))
    report = ConvertReport(str(path), "lengths", rows_in=df.height)
    prompt = _int_col(df, "num_prefill_tokens", path)
    output = _int_col(df, "num_decode_tokens", path)
    keep = (prompt >= 1) & (output >= 1)
    _drop(report, keep, "with 0 tokens")
    prompt, output = prompt[keep], output[keep]
    rng_order, rng_arrival = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    if shuffle:
        perm = rng_order.permutation(prompt.size)
        prompt, output = prompt[perm], output[perm]
    if limit is not None:
        if limit < 1:
            raise ValueError(f"lengths: limit must be >= 1 (got {limit})")
        if limit < prompt.size:
            report.dropped["beyond the limit"] = prompt.size - limit
        prompt, output = prompt[:limit], output[:limit]
    if prompt.size == 0:
        raise _no_rows(path, report)
    times = arrival_times(rng_arrival, rate, cv, arrival, requests=int(prompt.size))
    report.notes.append(f"arrivals: {arrival}, rate {rate:g} req/s, cv {cv:g}, seed {seed}")
    out = _build(times, prompt, output, domain, "ln")
    report.rows_out = out.height
    return out, report


def bench_arrivals(rng: np.random.Generator, n: int, rate: float, burstiness: float) -> np.ndarray:
    """(n,) send times of `vllm bench serve`: cumulative gamma(shape=burstiness, scale=1/(rate*burstiness))
    delays, rescaled so the last is n / rate; rate inf: all 0; burstiness inf: constant 1 / rate gaps."""
    if not rate > 0:
        raise ValueError(f"vllm-bench: request_rate must be > 0 (got {rate})")
    if not burstiness > 0:
        raise ValueError(f"vllm-bench: burstiness must be > 0 (got {burstiness})")
    if math.isinf(rate):
        return np.zeros(n)
    if math.isinf(burstiness):
        delays = np.full(n, 1.0 / rate)
    else:
        delays = rng.gamma(burstiness, 1.0 / (rate * burstiness), size=n)
    times = np.cumsum(delays)
    return times * ((n / rate) / times[-1]) if times[-1] > 0 else times


def _lens(obj: dict[str, Any], key: str, path: Path, line: int) -> np.ndarray:
    v = obj.get(key)
    if not isinstance(v, list) or not v:
        raise ValueError(f"{path}: line {line}: field '{key}': missing or empty: the result needs per-request "
                         "lengths (run vllm bench serve with --save-detailed, sglang bench_serving with "
                         "--output-details)")
    for i, x in enumerate(v):
        if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= MAX_TOKENS:
            raise ValueError(f"{path}: line {line}: field '{key}[{i}]': must be an integer in [0, {MAX_TOKENS:.0e}] "
                             f"(got {_show(x)})")
    return np.asarray(v, dtype=np.int64)


def _rate(v: Any, path: Path, line: int, key: str, default: float) -> float:
    if v is None:
        return default
    if v == "inf":
        return math.inf
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ValueError(f"{path}: line {line}: field '{key}': must be a number > 0 or \"inf\" (got {_show(v)})")
    return float(v)


def convert_vllm_bench(path: str | Path, *, domain: str = "chat", seed: int = 0, arrivals: str = "rate",
                       rate: float | None = None, burstiness: float | None = None,
                       line: int | None = None) -> tuple[pl.DataFrame, ConvertReport]:
    """vllm bench serve (or sglang bench_serving) result with per-request lengths -> trace.

    rate / burstiness override the result's request_rate / burstiness; line picks a run of a JSON
    Lines file (default: the last). See the module docstring for the arrival process.
    """
    from simulator.bench_files import read_bench

    path = Path(path)
    bench = read_bench(path, line)
    obj, ln = bench.data, bench.line
    if obj.get("ramp_up_strategy"):
        raise ValueError(f"{path}: line {ln}: field 'ramp_up_strategy': ramp-up runs are not supported "
                         f"(got {obj['ramp_up_strategy']!r})")
    prompt = _lens(obj, "input_lens", path, ln)
    output = _lens(obj, "output_lens", path, ln)
    if prompt.size != output.size:
        raise ValueError(f"{path}: line {ln}: field 'output_lens': {output.size} entries for {prompt.size} input_lens")
    report = ConvertReport(str(path), "vllm-bench", rows_in=int(prompt.size))
    keep = (prompt >= 1) & (output >= 1)
    errors = obj.get("errors")
    if isinstance(errors, list) and len(errors) == prompt.size:
        keep &= np.array([not e for e in errors])
    _drop(report, keep, "failed (an error or 0 tokens)")
    if not keep.any():
        raise _no_rows(path, report)
    if arrivals == "recorded":
        starts = obj.get("start_times")
        if not isinstance(starts, list) or len(starts) != prompt.size or not all(
                isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) for t in starts):
            raise ValueError(f"{path}: line {ln}: field 'start_times': --arrivals recorded needs one start time "
                             "per request (a recent vllm bench serve with --save-detailed)")
        times = np.asarray(starts, dtype=np.float64)[keep]
        report.notes.append("arrivals: the benchmark's recorded start times")
    elif arrivals == "rate":
        r = rate if rate is not None else _rate(obj.get("request_rate"), path, ln, "request_rate", math.inf)
        b = burstiness if burstiness is not None else _rate(obj.get("burstiness"), path, ln, "burstiness", 1.0)
        times = bench_arrivals(np.random.default_rng(seed), int(keep.sum()), r, b)
        report.notes.append(f"arrivals: request rate {r:g} req/s, burstiness {b:g}, seed {seed}")
    else:
        raise ValueError(f"vllm-bench: arrivals must be 'rate' or 'recorded', got {arrivals!r}")
    if obj.get("max_concurrency") not in (None, "None"):
        report.notes.append(f"the benchmark capped concurrency at {obj['max_concurrency']} (not in the trace)")
    field = "start_times" if arrivals == "recorded" else "request_rate"
    out = _build(times, prompt[keep], output[keep], domain, "vb", where=(path, np.full(times.size, ln), field))
    report.rows_out = out.height
    return out, report


CONVERTERS: dict[str, Callable[..., tuple[pl.DataFrame, ConvertReport]]] = {
    "azure": convert_azure,
    "mooncake": convert_mooncake,
    "burstgpt": convert_burstgpt,
    "lengths": convert_lengths,
    "vllm-bench": convert_vllm_bench,
}


def convert(fmt: str, path: str | Path, **options: Any) -> tuple[pl.DataFrame, ConvertReport]:
    """Dispatch to the converter of `fmt` (one of FORMATS) with its keyword options."""
    if fmt not in CONVERTERS:
        raise ValueError(f"convert: unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    return CONVERTERS[fmt](path, **options)
