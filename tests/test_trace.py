"""Trace schema: round trips, validation errors, all-or-nothing loading, bundled traces."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.generate import BUNDLE, bundle
from simulator.trace import (
    TraceRecord,
    _Checker,
    bundled_traces,
    iter_trace,
    load_trace,
    resolve_trace,
    write_trace,
)

# an error names the file, the line, the field and the value, on one line
ERROR = re.compile(r"^(?P<file>.+): line (?P<line>\d+): field '(?P<field>[^']+)': .+ \(got .*\)$")


def rec(i: int, t: float, **extra) -> dict:
    return {"id": f"r{i}", "arrival_s": t, "prompt_tokens": 10 + i, "output_tokens": 1 + i, "domain": "chat",
            **extra}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def good_lines(n: int = 5) -> list[str]:
    return [json.dumps(rec(i, 0.5 * i)) for i in range(n)]


def test_round_trip_records_with_optional_fields(tmp_path):
    records = [
        TraceRecord("a", 0.0, 5, 1, "chat"),
        TraceRecord("b", 0.25, 7, 3, "code", prompt="def f(x):\n  \u00e9", session="s1", slo_tps=20.0,
                    prefix_blocks=(1, 2, 2**62)),
        TraceRecord("c", 0.25, 9, 2, "math", prefix_blocks=()),
    ]
    for name in ("t.jsonl", "t.jsonl.gz"):
        path = tmp_path / name
        assert write_trace(records, path) == 3
        assert list(iter_trace(path)) == records
        df = load_trace(path)
        assert df.columns == ["id", "arrival_s", "prompt_tokens", "output_tokens", "domain", "prompt", "session",
                              "slo_tps", "prefix_blocks"]
        assert df["prefix_blocks"].to_list() == [None, [1, 2, 2**62], []]
        # a frame round-trips too
        write_trace(df, tmp_path / "again.jsonl")
        assert load_trace(tmp_path / "again.jsonl").equals(df)
    assert gzip.open(tmp_path / "t.jsonl.gz").read().startswith(b'{"id": "a"')


def test_load_trace_schema_required_columns_only(tmp_path):
    df = load_trace(write_lines(tmp_path / "t.jsonl", good_lines(4) + ["", "  "]))  # blank lines skipped
    assert df.schema == pl.Schema({"id": pl.Utf8, "arrival_s": pl.Float64, "prompt_tokens": pl.Int64,
                                   "output_tokens": pl.Int64, "domain": pl.Utf8})
    assert df.height == 4 and df["arrival_s"].to_list() == [0.0, 0.5, 1.0, 1.5]


def test_load_trace_chunks_concatenate(tmp_path, monkeypatch):
    import simulator.trace as trace_module

    monkeypatch.setattr(trace_module, "_CHUNK", 3)  # force several chunks, with an optional column in one
    lines = good_lines(7)
    lines[5] = json.dumps(rec(5, 2.5, session="x"))
    df = load_trace(write_lines(tmp_path / "t.jsonl", lines))
    assert df.height == 7 and df["session"].to_list() == [None] * 5 + ["x", None]


BAD = [
    ("missing field", 2, '{"id": "x", "arrival_s": 9, "prompt_tokens": 1, "domain": "chat"}', "output_tokens"),
    ("tokens not int", 3, '{"id": "x", "arrival_s": 9, "prompt_tokens": 1.5, "output_tokens": 1, "domain": "c"}',
     "prompt_tokens"),
    ("bool tokens", 3, '{"id": "x", "arrival_s": 9, "prompt_tokens": true, "output_tokens": 1, "domain": "c"}',
     "prompt_tokens"),
    ("zero output", 1, '{"id": "x", "arrival_s": 9, "prompt_tokens": 1, "output_tokens": 0, "domain": "c"}',
     "output_tokens"),
    ("negative prompt", 4, '{"id": "x", "arrival_s": 9, "prompt_tokens": -3, "output_tokens": 1, "domain": "c"}',
     "prompt_tokens"),
    ("out of order", 3, '{"id": "x", "arrival_s": 0.1, "prompt_tokens": 1, "output_tokens": 1, "domain": "c"}',
     "arrival_s"),
    ("nan arrival", 2, '{"id": "x", "arrival_s": NaN, "prompt_tokens": 1, "output_tokens": 1, "domain": "c"}',
     "arrival_s"),
    ("bad JSON", 2, '{"id": "x", "arrival_s": 9,', "<line>"),
    ("not an object", 2, '[1, 2]', "<line>"),
    ("duplicate id", 3, '{"id": "r0", "arrival_s": 9, "prompt_tokens": 1, "output_tokens": 1, "domain": "c"}', "id"),
    ("int id", 3, '{"id": 7, "arrival_s": 9, "prompt_tokens": 1, "output_tokens": 1, "domain": "c"}', "id"),
    ("empty domain", 3, '{"id": "x", "arrival_s": 9, "prompt_tokens": 1, "output_tokens": 1, "domain": ""}',
     "domain"),
    ("bad slo", 3, '{"id": "x", "arrival_s": 9, "prompt_tokens": 1, "output_tokens": 1, "domain": "c", '
     '"slo_tps": -1}', "slo_tps"),
    ("bad hash", 3, '{"id": "x", "arrival_s": 9, "prompt_tokens": 1, "output_tokens": 1, "domain": "c", '
     '"hash_ids": [1, "a"]}', "hash_ids"),
    ("huge tokens", 3, '{"id": "x", "arrival_s": 9, "prompt_tokens": 1' + "0" * 30 + ', "output_tokens": 1, '
     '"domain": "c"}', "prompt_tokens"),
]


@pytest.mark.parametrize(("what", "at", "line", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_line_names_file_line_field(tmp_path, what, at, line, field):
    lines = good_lines(5)
    lines.insert(at - 1, line)
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ValueError) as info:
        load_trace(path)
    message = str(info.value)
    match = ERROR.match(message)
    assert match, message
    assert "\n" not in message
    assert match["file"] == str(path) and int(match["line"]) == at and match["field"] == field


def test_invalid_utf8_and_empty_file(tmp_path):
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(good_lines(1)[0].encode() + b"\n\xff\xfe{\n")
    with pytest.raises(ValueError, match=r"line 2: field '<line>': is not valid UTF-8"):
        load_trace(path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no requests"):
        load_trace(empty)
    with pytest.raises(ValueError, match="cannot open"):
        load_trace(tmp_path / "missing.jsonl")


def test_write_trace_is_atomic_and_validates(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("old contents\n")
    records = [TraceRecord("a", 1.0, 5, 1, "chat"), TraceRecord("b", 0.5, 5, 1, "chat")]  # out of order
    with pytest.raises(ValueError, match=r"line 2: field 'arrival_s': out of order"):
        write_trace(records, path)
    assert path.read_text() == "old contents\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temp file left behind
    with pytest.raises(ValueError, match="missing column"):
        write_trace(pl.DataFrame({"id": ["a"]}), path)
    assert path.read_text() == "old contents\n"


# --- garbage lines: a clean ValueError or a complete, valid result; never anything else ---------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
field_names = st.sampled_from(["id", "arrival_s", "prompt_tokens", "output_tokens", "domain", "prompt",
                               "session", "slo_tps", "prefix_blocks"])
mutated_records = st.builds(lambda k, v: json.dumps({**rec(99, 100.0), k: v}), field_names, json_values)
garbage = st.one_of(
    st.text(max_size=40),
    json_values.map(json.dumps),
    mutated_records,
    st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
)


def check_outcome(loader, path: Path, n_lines: int) -> None:
    """The property: loading gives either all n_lines rows, or one ValueError in the documented format."""
    try:
        df = loader(path)
    except ValueError as exc:
        message = str(exc)
        assert "\n" not in message, message
        assert message.startswith(str(path)), message
        return
    assert isinstance(df, pl.DataFrame)
    assert df.height == n_lines
    assert df["output_tokens"].min() >= 1 and df["prompt_tokens"].min() >= 1
    assert df["arrival_s"].is_sorted() and df["id"].n_unique() == df.height


def _lines_of(text: str) -> list[str]:
    return [line for line in text.encode("utf-8", "surrogatepass").split(b"\n")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=garbage, where=st.integers(0, 5))
def test_garbage_lines_give_clean_error_or_full_result(tmp_path, junk, where):
    lines = [line.encode() for line in good_lines(5)]
    junk_lines = _lines_of(junk)
    lines[where:where] = junk_lines
    path = tmp_path / "garbage.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    nonblank = sum(1 for line in lines if line.strip(b" \t\r\n"))
    check_outcome(load_trace, path, nonblank)


@settings(max_examples=300, deadline=None)
@given(obj=st.one_of(mutated_records.map(json.loads),
                     st.fixed_dictionaries({"id": st.text(max_size=3), "arrival_s": json_values,
                                            "prompt_tokens": json_values, "output_tokens": json_values,
                                            "domain": st.text(max_size=2)})))
def test_fast_path_agrees_with_full_check(obj):
    fast, full = _Checker("f"), _Checker("f")
    fast.prev_arrival = full.prev_arrival = 1.0
    fast.seen.add("r0")
    full.seen.add("r0")
    try:
        expected = full.check(obj, 1)
    except ValueError:
        with pytest.raises(ValueError):
            fast.row(obj, 1)
        return
    assert fast.row(obj, 1) == expected


def naive_load(path: Path) -> pl.DataFrame:
    """A deliberately wrong loader: parses every line without validating the fields."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return pl.DataFrame(rows)


@pytest.mark.parametrize("junk", [
    '{"id": "x", "arrival_s": 99, "prompt_tokens": 0, "output_tokens": 1, "domain": "c"}',  # partial/invalid
    '{"id": 1',  # JSONDecodeError message is not in the documented format (no path)
    '{"id": "r0", "arrival_s": 99, "prompt_tokens": 3, "output_tokens": 1, "domain": "c"}',  # duplicate id
])
def test_negative_control_naive_loader_fails_the_property(tmp_path, junk):
    lines = good_lines(5)
    lines.append(junk)
    path = write_lines(tmp_path / "t.jsonl", lines)
    check_outcome(load_trace, path, 6)
    with pytest.raises(AssertionError):
        check_outcome(naive_load, path, 6)


# --- resolving names and the bundled traces ------------------------------------------------------------------


def test_resolve_trace_prefers_existing_path_then_bundled(tmp_path, monkeypatch):
    bundled = bundled_traces()
    assert {"chat", "code", "math", "mixed"} <= set(bundled)
    monkeypatch.chdir(tmp_path)
    assert resolve_trace("chat") == bundled["chat"]
    assert resolve_trace("chat.jsonl") == bundled["chat"]
    local = write_lines(tmp_path / "chat.jsonl", good_lines(2))
    assert resolve_trace("chat.jsonl") == Path("chat.jsonl") and load_trace(resolve_trace("chat.jsonl")).height == 2
    assert local.exists()
    with pytest.raises(ValueError, match=r"no bundled trace of that name \(bundled: chat, code, math, mixed"):
        resolve_trace("nope")
    with pytest.raises(ValueError):
        resolve_trace("some/dir/chat.jsonl")  # a path with a directory never falls back to the bundle


def test_bundled_traces_load_and_are_reproducible(tmp_path):
    bundled = bundled_traces()
    for stem, domain, requests, _seed in BUNDLE:
        df = load_trace(bundled[stem])
        assert df.height == requests
        assert bundled[stem].stat().st_size < 1_000_000
        assert set(df["domain"].unique()) == ({"chat", "code", "math"} if domain == "mixed" else {domain})
    for path in bundle(tmp_path):
        assert path.read_bytes() == bundled[path.stem].read_bytes(), f"{path.name} differs from its regeneration"


# ---------------------------------------------------------------------------------------- issue 15
def test_lines_longer_than_a_mebibyte_are_refused_by_file_and_line(tmp_path):
    """A 1 GB line took 4.4 GB to reject; the reader now stops after 1 MiB of it."""
    path = tmp_path / "long.jsonl"
    with open(path, "w") as fh:
        fh.write(good_lines(1)[0] + "\n")
        fh.write('{"id": "' + "x" * (2 << 20) + '"}\n')
    with pytest.raises(ValueError, match=r"long.jsonl: line 2: field '<line>': longer than 1,048,576 bytes"):
        load_trace(path)


def test_non_regular_files_are_refused(tmp_path):
    """/dev/zero or a pipe would be read forever."""
    import os

    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="pipe.jsonl: not a regular file"):
        load_trace(fifo)
    if os.path.exists("/dev/zero"):
        with pytest.raises(ValueError, match="/dev/zero: not a regular file"):
            load_trace("/dev/zero")


def test_huge_integers_and_absurd_times_name_line_and_field(tmp_path):
    path = tmp_path / "digits.jsonl"
    path.write_text(good_lines(1)[0] + '\n{"id": "b", "arrival_s": ' + "1" * 5000 + "}\n")
    with pytest.raises(ValueError, match=r"line 2: field '<line>': bad JSON: an integer with more than 4300 digits"):
        load_trace(path)
    for value in ("1e308", "1.7e15", "8589934592"):
        path.write_text(good_lines(1)[0] + '\n{"id": "b", "arrival_s": ' + value + ', "prompt_tokens": 1, '
                        '"output_tokens": 1, "domain": "chat"}\n')
        with pytest.raises(ValueError, match=r"line 2: field 'arrival_s': must be < 8589934592 s"):
            load_trace(path)
    path.write_text(good_lines(1)[0] + '\n{"id": "b", "arrival_s": 8589934591.5, "prompt_tokens": 1, '
                    '"output_tokens": 1, "domain": "chat"}\n')
    assert load_trace(path).height == 2  # just below 2**33: still microsecond-exact
