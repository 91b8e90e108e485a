"""Every parser, fuzzed: each input gives a result or one clear error, never a traceback (issue 15).

A parser here reads one file. The property (`clear_outcome`): it returns a result that passes the
parser's own invariants, or raises a ValueError whose message is one line naming the file. Any other
exception (KeyError, TypeError, a polars error, OverflowError, MemoryError, a bare
UnicodeDecodeError or JSONDecodeError without the file name) fails the test.

Inputs mix four kinds, so both the outer layer (bytes, lines, JSON) and the field checks are hit:
raw bytes; JSON documents of any shape; valid records with one field replaced by an awkward value
(huge and tiny numbers, NaN/Infinity literals, 5000-digit integers, deep nesting, lone surrogates,
wrong types); and files of valid records (so the happy path is checked too).

Parsers: trace JSON Lines (`load_trace`), each converter's input (azure, burstgpt, lengths CSV;
mooncake JSON Lines; vllm bench serve results), profile JSON (`load_profile`, then the step-cost
model and KV sizing a run derives from it), recorded rounds (`read_rounds`, the --acceptance
file), SGLang cost tables (SpsCostTable, SpsAdditiveCostTable), scenario files (TOML), SGLang STS
JSON and Hugging Face config.json. `EXTRA_PARSERS` is the hook for parsers added later: append
(name, file suffix, parse(path) -> result or ValueError, strategy of file bytes, check(result)).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def clear_outcome(parse: Callable[[Path], Any], path: Path) -> Any:
    """parse(path), or None after a ValueError that is one line naming the file."""
    try:
        return parse(path)
    except ValueError as exc:
        msg = str(exc)
        assert "\n" not in msg, msg
        assert str(path) in msg or path.name in msg, f"the error does not name {path.name}: {msg}"
        assert len(msg) < 1000, msg
        return None


# ------------------------------------------------------------------------------------------ building blocks
AWKWARD = st.sampled_from([
    "null", "true", "false", "0", "-1", "1", "0.5", "-0.0", "1e308", "-1e308", "1e-320", "1e400", "NaN",
    "Infinity", "-Infinity", '""', '"x"', '"\\ud800"', '"\\u0000"', "[]", "{}", "[1, 2]", '{"a": 1}',
    "9" * 5000, "-" + "9" * 30, "1" + "0" * 25, "8589934592", "1700000000000000", "2e9", "3.5",
    "[" * 3000 + "]" * 3000,
])


def _json_text(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)


def _record_line(record: dict[str, Any], draw: Callable[..., Any]) -> str:
    """A JSON object text: `record`, possibly with one field dropped or replaced by an awkward literal."""
    fields = {k: _json_text(v) for k, v in record.items()}
    how = draw(st.sampled_from(["keep", "keep", "replace", "drop", "extra"]))
    key = draw(st.sampled_from(sorted(fields)))
    if how == "replace":
        fields[key] = draw(AWKWARD)
    elif how == "drop":
        del fields[key]
    elif how == "extra":
        fields["zz"] = draw(AWKWARD)
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}"


@st.composite
def jsonl_files(draw, make_record: Callable[[int, Callable[..., Any]], dict[str, Any]]) -> bytes:
    """File bytes of JSON Lines: mostly (possibly mutated) records, sometimes other lines or raw bytes."""
    lines: list[bytes] = []
    for i in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["record", "record", "record", "json", "blank", "bytes"]))
        if kind == "record":
            lines.append(_record_line(make_record(i, draw), draw).encode())
        elif kind == "json":
            lines.append(_json_text(draw(json_values)).encode())
        elif kind == "blank":
            lines.append(draw(st.sampled_from([b"", b"  ", b"\t\r"])))
        else:
            lines.append(draw(st.binary(max_size=24)).replace(b"\n", b" "))
    return b"\n".join(lines) + draw(st.sampled_from([b"\n", b""]))


@st.composite
def csv_files(draw, header: str, make_row: Callable[[int, Callable[..., Any]], list[str]]) -> bytes:
    """CSV bytes: the header (sometimes damaged) and rows with cells sometimes replaced."""
    cell = st.one_of(st.sampled_from(["", "0", "-3", "1e9", "1e10", "nan", "inf", "3.5", "x", '"', "9" * 40,
                                      "3023-11-16 18:15:50.9951690", "1023-01-01 00:00:00", "2023-02-30 00:00:00",
                                      "2023-11-16T18:15:46", "\u00e9"]), st.text(max_size=5))
    names = header.split(",")
    if draw(st.integers(0, 9)) == 0:
        names = names[:-1]
    rows = [",".join(names)]
    for i in range(draw(st.integers(0, 5))):
        row = make_row(i, draw)
        if draw(st.booleans()):
            j = draw(st.integers(0, len(row) - 1))
            row[j] = draw(cell)
        rows.append(",".join(row))
    text = "\n".join(rows) + "\n"
    if draw(st.integers(0, 9)) == 0:
        return text.encode() + draw(st.binary(max_size=16))
    return text.encode("utf-8", errors="surrogatepass")


# ------------------------------------------------------------------------------------------ the parsers
def _trace_record(i: int, draw) -> dict[str, Any]:
    return {"id": f"r{i}", "arrival_s": float(i) * draw(st.sampled_from([0.5, 1.0, 1e6])),
            "prompt_tokens": draw(st.integers(1, 4000)), "output_tokens": draw(st.integers(1, 500)), "domain": "chat"}


def _check_trace(df) -> None:
    from simulator.trace import validate_frame

    validate_frame(df)
    assert df["arrival_s"].is_sorted() and df.height >= 1


def _parse_trace(path: Path):
    from simulator.trace import load_trace

    return load_trace(path)


def _converter(fmt: str, **options: Any) -> Callable[[Path], Any]:
    def parse(path: Path):
        from simulator.convert import convert

        return convert(fmt, path, **options)

    return parse


def _check_converted(result) -> None:
    df, report = result
    _check_trace(df)
    assert df.height == report.rows_out >= 1
    assert float(df["arrival_s"].max()) < 2.0**33


def _mooncake_record(i: int, draw) -> dict[str, Any]:
    return {"timestamp": draw(st.sampled_from([0, 1000, 3000, 1.7e12])) + i, "input_length": draw(st.integers(0, 9000)),
            "output_length": draw(st.integers(0, 500)), "hash_ids": [i, i + 1]}


def _azure_row(i: int, draw) -> list[str]:
    return [f"2023-11-16 18:15:{10 + i:02d}.6805900", str(draw(st.integers(0, 5000))), str(draw(st.integers(0, 500)))]


def _burst_row(i: int, draw) -> list[str]:
    return [str(5 * i), "ChatGPT", str(draw(st.integers(0, 2000))), str(draw(st.integers(0, 300))), "0", "API log"]


def _lengths_row(i: int, draw) -> list[str]:
    return [str(draw(st.integers(0, 4000))), str(draw(st.integers(0, 800)))]


def _profile_bytes() -> st.SearchStrategy[bytes]:
    """A bundled profile with one field of it deleted or replaced, or any JSON, or raw bytes."""
    from sparksched.profile import load_profile

    base = {k: v for k, v in load_profile("cpu-tiny").items() if not k.startswith("_")}

    @st.composite
    def mutated(draw) -> bytes:
        doc = json.loads(json.dumps(base))
        for _ in range(draw(st.integers(0, 2))):
            section = draw(st.sampled_from(["top", "device", "model", "verify", "draft", "prefill"]))
            if section == "top":
                holder: Any = doc
            elif section in ("device", "model"):
                holder = doc.get(section)
            else:
                rows = doc.get(section)
                if not isinstance(rows, list) or not rows:
                    continue
                holder = rows[draw(st.integers(0, len(rows) - 1))]
                if draw(st.integers(0, 4)) == 0:  # duplicate a row (issue 15, 10j)
                    rows.append(dict(holder))
            if not isinstance(holder, dict) or not holder:
                continue
            key = draw(st.sampled_from(sorted(holder)))
            if draw(st.booleans()):
                holder.pop(key)
            else:
                holder[key] = "__AWKWARD__"
        text = json.dumps(doc)
        return text.replace('"__AWKWARD__"', draw(AWKWARD), 1).encode()

    return st.one_of(mutated(), mutated(), json_values.map(lambda v: _json_text(v).encode()), st.binary(max_size=64))


def _parse_profile(path: Path):
    from simulator.run import derive_kv_blocks
    from sparksched.cost import StepCost
    from sparksched.profile import load_profile

    profile = load_profile(path)
    cost = StepCost.from_profile(profile)  # what simulate builds from it, same errors
    blocks, _ = derive_kv_blocks(profile, 16)
    return profile, cost, blocks


def _check_profile(result) -> None:
    _, cost, blocks = result
    t = [cost.step_seconds(n, n * t, 256.0) for n in (1, 4) for t in (1, 2, 4)]
    assert all(x > 0 for x in t) and blocks >= 1


def _round_record(i: int, draw) -> dict[str, Any]:
    return {"request": f"r{i % 2}", "step": i, "domain": "chat", "conf": [0.9, 0.5, 0.2], "drafted": 3,
            "verified": draw(st.integers(0, 3)), "accepted": 0}


def _parse_rounds(path: Path):
    from sparksched.rounds import read_rounds

    return read_rounds(path)


def _check_rounds(r) -> None:
    assert r.conf.ndim == 2 and len(r) >= 1
    assert np.all((r.accepted <= r.verified) & (r.verified <= r.drafted) & (r.drafted <= r.block))


@st.composite
def json_documents(draw, base: dict[str, Any]) -> bytes:
    """`base` with up to two of its fields (top level or one level down) deleted or replaced by an
    awkward literal; sometimes any JSON or raw bytes instead."""
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "json", "bytes"]))
    if kind == "json":
        return _json_text(draw(json_values)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    doc = json.loads(json.dumps(base))
    awkward = []
    for _ in range(draw(st.integers(0, 2))):
        holder: Any = doc
        key = draw(st.sampled_from(sorted(holder)))
        if isinstance(holder[key], dict) and holder[key] and draw(st.booleans()):
            holder = holder[key]
            key = draw(st.sampled_from(sorted(holder)))
        if isinstance(holder[key], list) and holder[key] and draw(st.booleans()):
            holder, key = holder[key], draw(st.integers(0, len(holder[key]) - 1))
        if draw(st.booleans()) and isinstance(holder, dict):
            holder.pop(key)
        else:
            marker = f"__AWKWARD{len(awkward)}__"
            holder[key] = marker
            awkward.append((marker, draw(AWKWARD)))
    text = json.dumps(doc)
    for marker, literal in awkward:
        text = text.replace(f'"{marker}"', literal, 1)
    return text.encode()


SPS_TABLE = {"sample_batch_tokens": [8, 16, 64], "sample_steps_per_sec": [100.0, 80.0, 40.0], "max_batch_tokens": 64}
ADDITIVE_TABLE = {"bias_seconds": 0.01, "bs_probes": [1, 64], "alpha_seconds": [0.0, 0.004], "m_probes": [64, 512],
                  "theta_seconds": [0.0, 0.002]}
STS = {"temperatures": [1.0, 1.2, 0.9], "dataset": "chat", "num_samples": 100, "ece_before": 0.05, "ece_after": 0.01}
BENCH = {"request_rate": 4.0, "burstiness": 1.0, "input_lens": [120, 340, 56], "output_lens": [30, 12, 200],
         "start_times": [0.0, 0.5, 0.7], "errors": ["", "", ""], "completed": 3, "duration": 10.0}
HF_CONFIG = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 1024, "intermediate_size": 2816,
             "num_hidden_layers": 8, "num_attention_heads": 16, "num_key_value_heads": 4,
             "max_position_embeddings": 4096, "torch_dtype": "bfloat16"}


@st.composite
def toml_files(draw) -> bytes:
    """Scenario files: key = value lines (known and unknown keys, awkward values), tables, raw bytes."""
    if draw(st.integers(0, 6)) == 0:
        return draw(st.binary(max_size=64))
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["pair", "pair", "table", "junk"]))
        key = draw(st.sampled_from(["seed", "policy", "max-running", "load", "nonsense", "'seed'", "a.b"]))
        value = draw(st.sampled_from(["1", "-1", "1e400", "nan", "inf", '"dspark"', '"x"', "[1, 2]", "{}", "true",
                                      "9" * 5000, '"\\u0000"', "1979-05-27", "[" * 200]))
        if kind == "pair":
            lines.append(f"{key} = {value}")
        elif kind == "table":
            lines.append(draw(st.sampled_from(["[simulate]", "[pareto]", "[nope]", "[[simulate]]", "["])))
        else:
            lines.append(draw(st.text(max_size=12)))
    return "\n".join(lines).encode("utf-8", errors="surrogatepass")


def _parse_sglang(path: Path):
    from sparksched.sglang_tables import read_sglang_table

    return read_sglang_table(path)


def _check_cost(cost) -> None:
    assert float(cost.step_seconds(4, 8.0, 0.0)) > 0


def _parse_scenario(path: Path):
    from simulator.scenario import read_scenario

    return read_scenario(path, "simulate", {"simulate": {"seed", "policy", "max_running"}, "pareto": {"load"}})


def _parse_sts(path: Path):
    from sparksched.sts_io import read_sts_json

    return read_sts_json(path)


def _parse_hf(path: Path):
    from profiler.hf_config import config_to_spec

    return config_to_spec(path)


Parser = tuple[str, str, Callable[[Path], Any], st.SearchStrategy[bytes], Callable[[Any], None]]
PARSERS: list[Parser] = [
    # (name, file suffix, parse, strategy of file bytes, check of a successful result)
    ("trace", ".jsonl", _parse_trace, jsonl_files(_trace_record), _check_trace),
    ("azure", ".csv", _converter("azure"), csv_files("TIMESTAMP,ContextTokens,GeneratedTokens", _azure_row),
     _check_converted),
    ("azure --skip-bad", ".csv", _converter("azure", skip_bad=True),
     csv_files("TIMESTAMP,ContextTokens,GeneratedTokens", _azure_row), _check_converted),
    ("burstgpt", ".csv", _converter("burstgpt"),
     csv_files("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type", _burst_row), _check_converted),
    ("lengths", ".csv", _converter("lengths", rate=2.0),
     csv_files("num_prefill_tokens,num_decode_tokens", _lengths_row), _check_converted),
    ("mooncake", ".jsonl", _converter("mooncake"), jsonl_files(_mooncake_record), _check_converted),
    ("mooncake --skip-bad", ".jsonl", _converter("mooncake", skip_bad=True), jsonl_files(_mooncake_record),
     _check_converted),
    ("profile", ".json", _parse_profile, _profile_bytes(), _check_profile),
    ("rounds", ".jsonl", _parse_rounds, jsonl_files(_round_record), _check_rounds),
    ("vllm-bench", ".json", _converter("vllm-bench"), json_documents(BENCH), _check_converted),
    ("sglang table", ".json", _parse_sglang,
     st.one_of(json_documents(SPS_TABLE), json_documents(ADDITIVE_TABLE)), _check_cost),
    ("scenario", ".toml", _parse_scenario, toml_files(), lambda keys: None),
    ("sts", ".json", _parse_sts, json_documents(STS), lambda sts: None),
    ("hf config", ".json", _parse_hf, json_documents(HF_CONFIG), lambda spec: None),
]

# Parsers added by later work register here with the same tuple shape:
# (name, file suffix, parse(path), strategy of file bytes, check(result)).
EXTRA_PARSERS: list[Parser] = []


# inputs every run tries first, whatever the random draw: the cases issue 15 reported
_GOOD_TRACE = b'{"id": "a", "arrival_s": 0.5, "prompt_tokens": 3, "output_tokens": 2, "domain": "chat"}\n'
ALWAYS: dict[str, list[bytes]] = {
    ".jsonl": [_GOOD_TRACE + b'{"id": "b", "arrival_s": ' + b"9" * 5000 + b"}\n", _GOOD_TRACE + b"\xff\xfe{\x00\n",
               b'{"id": "a", "arrival_s": 1.7e15, "prompt_tokens": 3, "output_tokens": 2, "domain": "chat"}\n',
               b'{"timestamp": 1e308, "input_length": 3, "output_length": 2}\n{"timestamp": 0, "input_length": 3, '
               b'"output_length": 2}\n', b"[" * 5000 + b"\n", b"\x80" * 40],
    ".csv": [b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44\n3023-11-16 18:15:50.99,396,"
             b"109\n", b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,3," + b"9" * 5000 + b"\n",
             b"\x80\x81,\xff\n1,2\n"],
    ".json": [b'{"schema": 1, "device": ' + b"9" * 5000 + b"}", b"\x80", b"[" * 5000],
}


@pytest.mark.parametrize("name, suffix, parse, files, check", PARSERS + EXTRA_PARSERS,
                         ids=[p[0] for p in PARSERS + EXTRA_PARSERS])
def test_every_input_gives_a_result_or_one_clear_error(tmp_path, name, suffix, parse, files, check):
    def run(data: bytes) -> None:
        path = tmp_path / f"input{suffix}"
        path.write_bytes(data)
        result = clear_outcome(parse, path)
        if result is not None:
            check(result)

    for data in ALWAYS.get(suffix, []):
        run(data)
    SETTINGS(given(data=files)(run))()


def test_the_fuzz_reaches_both_outcomes():
    """Guard against a vacuous pass: the trace strategy yields accepted files and refused ones."""
    import tempfile

    seen = {"ok": 0, "error": 0}

    @settings(max_examples=80, deadline=None, database=None)
    @given(data=jsonl_files(_trace_record))
    def run(data: bytes) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "t.jsonl"
            path.write_bytes(data)
            seen["ok" if clear_outcome(_parse_trace, path) is not None else "error"] += 1

    run()
    assert seen["ok"] >= 5 and seen["error"] >= 5, seen


def test_negative_control_a_naive_parser_fails_the_property(tmp_path):
    """A parser that trusts its input (json.loads per line, no checks) breaks the property on
    inputs the fuzz generates: a bare JSONDecodeError or a KeyError, not one line naming the file."""

    def naive(path: Path):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [(r["id"], float(r["arrival_s"])) for r in rows]

    for text in ('{"id": "a", "arrival_s": 0}\n{"id": "b"\n', '{"arrival_s": 1}\n', '{"id": "a", "arrival_s": ' + "9" * 5000 + "}\n"):
        path = tmp_path / "t.jsonl"
        path.write_text(text)
        with pytest.raises((AssertionError, KeyError, ValueError, OverflowError)):
            clear_outcome(naive, path)
        clear_outcome(_parse_trace, path)  # the real loader meets the property on the same files
