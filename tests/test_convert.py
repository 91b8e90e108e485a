"""Converters: small samples made here, the public files in ../shared/data/traces/ when present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.convert import (
    _jitter,
    convert,
    convert_azure,
    convert_burstgpt,
    convert_lengths,
    convert_mooncake,
)
from simulator.trace import load_trace, write_trace
from simulator.trace_tools import trace_stats

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
AZURE_CONV = DATA / "azure2023_AzureLLMInferenceTrace_conv.csv"
AZURE_CODE = DATA / "azure2023_AzureLLMInferenceTrace_code.csv"
SHAREGPT = DATA / "etalon_sharegpt_8k_filtered_stats_llama2_tokenizer.csv"


def needs(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"public data absent: {path}")


def round_trip(df: pl.DataFrame, tmp_path: Path) -> pl.DataFrame:
    """Write the converted frame as a trace and load it back (validates every row)."""
    out = tmp_path / "converted.jsonl"
    write_trace(df, out)
    loaded = load_trace(out)
    assert loaded.equals(df)
    return loaded


# --- Azure ----------------------------------------------------------------------------------------------------

AZURE_SAMPLE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:50.9951690,0,3
2023-11-16 18:15:51.0000000,879,55
"""


def test_azure_sample(tmp_path):
    path = tmp_path / "AzureLLMInferenceTrace_conv.csv"
    path.write_text(AZURE_SAMPLE)
    df, report = convert_azure(path)
    assert df["arrival_s"].to_list() == pytest.approx([0.0, 4.314579, 4.31941])
    assert df["prompt_tokens"].to_list() == [374, 396, 879]
    assert df["domain"].unique().to_list() == ["chat"]
    assert report.rows_in == 4 and report.rows_out == 3 and report.dropped == {"with 0 tokens": 1}
    round_trip(df, tmp_path)
    code = tmp_path / "x_code.csv"
    code.write_text(AZURE_SAMPLE)
    assert convert_azure(code)[0]["domain"].unique().to_list() == ["code"]
    assert convert_azure(code, domain="other")[0]["domain"].unique().to_list() == ["other"]


@pytest.mark.parametrize(("text", "match"), [
    ("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,3\n", "line 1: field 'GeneratedTokens': missing column"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,3,4\nyesterday,3,4\n",
     "line 3: field 'TIMESTAMP'"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,3,-4\n", "line 2: field 'GeneratedTokens'"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,3.5,4\n", "line 2: field 'ContextTokens'"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n", "no data rows"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,0,4\n", "no valid request left"),
])
def test_azure_errors(tmp_path, text, match):
    path = tmp_path / "a.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        convert_azure(path)


# --- Mooncake -------------------------------------------------------------------------------------------------


def mooncake_sample(tmp_path: Path) -> Path:
    rows = [(0, 10, 5, [1, 2]), (0, 600, 7, [1, 3]), (0, 20, 0, [4]), (3000, 30, 9, [5]),
            (3000, 40, 2, []), (6000, 50, 3, [6, 7]), (6000, 60, 4, [6, 8])]
    lines = [json.dumps({"timestamp": t, "input_length": i, "output_length": o, "hash_ids": h}) for t, i, o, h in rows]
    path = tmp_path / "mooncake.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_mooncake_jitter_spreads_within_buckets_and_keeps_order(tmp_path):
    path = mooncake_sample(tmp_path)
    df, report = convert_mooncake(path, seed=3)
    assert report.dropped == {"with 0 tokens": 1} and report.rows_out == 6
    assert "jitter on (seed 3, bucket 3 s)" in report.notes
    t = df["arrival_s"].to_numpy()
    assert np.all(np.diff(t) >= 0)
    assert df["prompt_tokens"].to_list() == [10, 600, 30, 40, 50, 60]  # file order kept within buckets
    assert t[0] == 0.0  # converted traces start at 0
    assert df["prefix_blocks"].to_list() == [[1, 2], [1, 3], [5], [], [6, 7], [6, 8]]
    round_trip(df, tmp_path)
    again, _ = convert_mooncake(path, seed=3)
    other, _ = convert_mooncake(path, seed=4)
    assert again.equals(df) and not other.equals(df)


def test_jitter_stays_inside_each_bucket():
    ms = np.array([6000.0, 0.0, 0.0, 3000.0, 3000.0, 3000.0, 6000.0])
    seconds, width = _jitter(ms, np.random.default_rng(0), None)
    assert width == 3.0
    assert np.floor(seconds / 3.0).tolist() == (ms / 3000.0).tolist()
    assert seconds[1] <= seconds[2] and seconds[3] <= seconds[4] <= seconds[5] and seconds[0] <= seconds[6]


def test_mooncake_without_jitter_is_exact(tmp_path):
    df, report = convert_mooncake(mooncake_sample(tmp_path), jitter=False)
    assert df["arrival_s"].to_list() == [0.0, 0.0, 3.0, 3.0, 6.0, 6.0]
    assert "jitter off" in report.notes


def test_mooncake_bucket_never_spills_into_the_next_timestamp(tmp_path):
    lines = [json.dumps({"timestamp": ts, "input_length": 5, "output_length": 5}) for ts in [0] * 50 + [100] * 50]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines))
    df, _ = convert_mooncake(path, bucket_s=3.0)
    t = df["arrival_s"].to_numpy()
    assert t[49] - t[0] < 0.1 and t[50] >= t[49]
    assert "prefix_blocks" not in df.columns


@pytest.mark.parametrize(("line", "match"), [
    ('{"timestamp": 0, "input_length": 5}', "line 2: field 'output_length': missing"),
    ('{"timestamp": -1, "input_length": 5, "output_length": 5}', "line 2: field 'timestamp'"),
    ('{"timestamp": 0, "input_length": 5.5, "output_length": 5}', "line 2: field 'input_length'"),
    ('{"timestamp": 0, "input_length": 5, "output_length": 5, "hash_ids": [-1]}', "line 2: field 'hash_ids'"),
    ("{oops", "line 2: field '<line>': bad JSON"),
])
def test_mooncake_errors(tmp_path, line, match):
    path = tmp_path / "m.jsonl"
    path.write_text('{"timestamp": 0, "input_length": 5, "output_length": 5}\n' + line + "\n")
    with pytest.raises(ValueError, match=match):
        convert_mooncake(path)


# --- BurstGPT -------------------------------------------------------------------------------------------------

BURST_SAMPLE = """Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type,Session ID,Elapsed time
5,ChatGPT,472,18,490,Conversation log,s1,1.2
45,ChatGPT,1087,0,1087,Conversation log,s1,0.4
118,GPT-4,417,134,551,API log,,3.0
140,ChatGPT,0,20,20,Conversation log,s2,0.1
160,ChatGPT,500,30,530,Conversation log,s2,1.0
"""


def test_burstgpt_drops_failed_by_default(tmp_path):
    path = tmp_path / "burst.csv"
    path.write_text(BURST_SAMPLE)
    df, report = convert_burstgpt(path)
    assert df["prompt_tokens"].to_list() == [472, 417, 500]
    assert df["arrival_s"].to_list() == [0.0, 113.0, 155.0]
    assert df["session"].to_list() == ["s1", None, "s2"]
    assert report.dropped == {"with 0 request tokens": 1, "failed (0 response tokens)": 1}
    round_trip(df, tmp_path)


def test_burstgpt_keep_failed_and_model_filter(tmp_path):
    path = tmp_path / "burst.csv"
    path.write_text(BURST_SAMPLE)
    kept, report = convert_burstgpt(path, keep_failed=True)
    assert kept["output_tokens"].to_list() == [18, 1, 134, 30]
    assert any("1 failed requests kept" in note for note in report.notes)
    gpt4, report = convert_burstgpt(path, model="GPT-4")
    assert gpt4.height == 1 and report.dropped["of other models than GPT-4"] == 4


def test_burstgpt_without_session_columns(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                    "1.5,ChatGPT,10,2,12,API log\n0.5,ChatGPT,11,3,14,API log\n")
    df, report = convert_burstgpt(path)
    assert "session" not in df.columns and df["prompt_tokens"].to_list() == [11, 10]
    assert "rows were not in time order: sorted" in report.notes


# --- length-only statistics -----------------------------------------------------------------------------------


def test_lengths_sample_with_arrivals(tmp_path):
    path = tmp_path / "lengths.csv"
    rows = ["num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio"]
    rows += [f"{10 + i},{1 + i % 7},{11 + i + i % 7},0.5" for i in range(2000)] + ["0,5,5,0"]
    path.write_text("\n".join(rows) + "\n")
    df, report = convert_lengths(path, rate=8.0, cv=1.0, seed=1)
    assert df.height == 2000 and report.dropped == {"with 0 tokens": 1}
    assert df["prompt_tokens"].to_list() == [10 + i for i in range(2000)]  # file order kept
    rate = (df.height - 1) / df["arrival_s"].max()
    assert abs(rate / 8.0 - 1) < 5 / np.sqrt(2000)
    round_trip(df, tmp_path)
    limited, report = convert_lengths(path, rate=8.0, limit=10, shuffle=True, seed=2)
    assert limited.height == 10 and report.dropped["beyond the limit"] == 1990
    assert limited["prompt_tokens"].to_list() != list(range(10, 20))
    assert convert_lengths(path, rate=8.0, seed=1)[0].equals(df)


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown format"):
        convert("sharegpt", "x.csv")


# --- garbage: a clean ValueError or a valid trace, never another exception ------------------------------------


def check_converter_outcome(fn, path: Path) -> None:
    try:
        df, report = fn(path)
    except ValueError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc), str(exc)
        return
    assert df.height == report.rows_out >= 1
    assert df["arrival_s"].is_sorted() and df["prompt_tokens"].min() >= 1 and df["output_tokens"].min() >= 1


csv_cell = st.one_of(st.integers(-5, 10**12).map(str), st.floats(allow_nan=True).map(str), st.text(max_size=6),
                     st.just("2023-11-16 18:15:46.1"), st.just(""))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(csv_cell, min_size=1, max_size=4), max_size=4),
       fmt=st.sampled_from(["azure", "burstgpt", "lengths"]))
def test_csv_garbage_gives_clean_error_or_valid_trace(tmp_path, rows, fmt):
    header = {"azure": "TIMESTAMP,ContextTokens,GeneratedTokens",
              "burstgpt": "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type",
              "lengths": "num_prefill_tokens,num_decode_tokens"}[fmt]
    good = {"azure": "2023-11-16 18:15:46.6805900,374,44", "burstgpt": "5,ChatGPT,472,18,490,API log",
            "lengths": "10,20"}[fmt]
    body = [",".join(r) for r in rows]
    path = tmp_path / "g.csv"
    path.write_text("\n".join([header, good, *body]) + "\n", encoding="utf-8", errors="surrogatepass")
    options = {"rate": 2.0} if fmt == "lengths" else {}
    check_converter_outcome(lambda p: convert(fmt, p, **options), path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.one_of(st.text(max_size=30), st.dictionaries(
    st.sampled_from(["timestamp", "input_length", "output_length", "hash_ids"]),
    st.one_of(st.integers(-3, 10**20), st.floats(), st.text(max_size=3), st.lists(st.integers(-2, 2**64), max_size=2)),
).map(json.dumps)))
def test_mooncake_garbage_gives_clean_error_or_valid_trace(tmp_path, junk):
    path = tmp_path / "m.jsonl"
    path.write_text('{"timestamp": 0, "input_length": 5, "output_length": 5}\n' + junk + "\n")
    check_converter_outcome(convert_mooncake, path)


def test_negative_control_unvalidated_converter_fails_the_check(tmp_path):
    def naive(path: Path):  # trusts the file: keeps 0-token rows, lets parse errors through
        df = pl.read_csv(path)
        out = pl.DataFrame({"arrival_s": [0.0] * df.height, "prompt_tokens": df["ContextTokens"],
                            "output_tokens": df["GeneratedTokens"]})
        return out, type("R", (), {"rows_out": out.height})()

    zero = tmp_path / "zero.csv"
    zero.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,0,4\n2023-11-16 18:15:47,5,4\n")
    check_converter_outcome(convert_azure, zero)
    with pytest.raises(AssertionError):
        check_converter_outcome(naive, zero)


# --- the public files -----------------------------------------------------------------------------------------


@needs(AZURE_CONV)
def test_public_azure_conversation(tmp_path):
    df, report = convert_azure(AZURE_CONV)
    assert report.rows_out == 19_366 and not any(report.dropped.values())
    row = trace_stats(round_trip(df, tmp_path)).row(0, named=True)
    assert row["mean_rate"] == pytest.approx(5.53, abs=0.01) and row["ia_cv"] == pytest.approx(1.09, abs=0.01)
    assert (row["prompt_p50"], row["prompt_p90"], row["prompt_p99"]) == (1020, 2735, 4142)
    assert (row["output_p50"], row["output_p90"], row["output_p99"]) == (129, 424, 601)
    assert row["prompt_mean"] == pytest.approx(1155, abs=1) and row["output_mean"] == pytest.approx(211, abs=1)


@needs(AZURE_CODE)
def test_public_azure_code(tmp_path):
    df, report = convert_azure(AZURE_CODE)
    assert report.rows_out == 8_819 and df["domain"].unique().to_list() == ["code"]
    row = trace_stats(round_trip(df, tmp_path)).row(0, named=True)
    assert row["ia_cv"] == pytest.approx(13.2, abs=0.1) and row["mean_rate"] == pytest.approx(2.57, abs=0.01)
    assert (row["output_p50"], row["output_p90"], row["output_p99"]) == (13, 55, 252)
    gaps = np.diff(df["arrival_s"].to_numpy())
    assert gaps.max() > 200  # the 217 s gap


@needs(SHAREGPT)
def test_public_sharegpt_lengths(tmp_path):
    df, report = convert_lengths(SHAREGPT, rate=5.0, cv=1.5, seed=0)
    assert report.rows_out == 30_731
    row = trace_stats(round_trip(df, tmp_path)).row(0, named=True)
    assert row["ia_cv"] == pytest.approx(1.5, rel=0.05) and row["mean_rate"] == pytest.approx(5.0, rel=0.05)
    assert row["prompt_mean"] == pytest.approx(2340, abs=1) and row["output_mean"] == pytest.approx(438.7, abs=1)
