"""`sparksched trace ...` through click's CliRunner: outputs, messages and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from simulator.trace import load_trace
from sparksched.cli import main

AZURE_SAMPLE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:51.0000000,879,55
"""


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, ["trace", *args], catch_exceptions=False)

    return invoke


def assert_clean_error(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_generate_then_stats(run, tmp_path):
    result = run("generate", "--domain", "chat", "--rate", "5", "--duration", "600", "--seed", "0", "-o", "chat.jsonl")
    assert result.exit_code == 0, result.output
    df = load_trace(tmp_path / "chat.jsonl")
    assert 2400 < df.height < 3600 and f"{df.height} requests" in result.output
    stats = run("stats", "chat.jsonl")
    assert stats.exit_code == 0, stats.output
    assert str(df.height) in stats.output and "inter-arrival CV" in stats.output and "prompt p99" in stats.output
    again = run("generate", "--domain", "chat", "--rate", "5", "--duration", "600", "--seed", "0", "-o", "b.jsonl")
    assert again.exit_code == 0 and (tmp_path / "b.jsonl").read_bytes() == (tmp_path / "chat.jsonl").read_bytes()


def test_generate_options(run, tmp_path):
    result = run("generate", "--domain", "mixed", "--requests", "500", "--arrival", "weibull", "--cv", "2",
                 "--modulation", "sine", "--mod-period", "30", "--mix", "chat=1,math=1", "-o", "m.jsonl")
    assert result.exit_code == 0, result.output
    df = load_trace(tmp_path / "m.jsonl")
    assert df.height == 500 and set(df["domain"]) == {"chat", "math"}


def test_stats_of_bundled_names_and_csv(run):
    result = run("stats", "chat", "mixed.jsonl")
    assert result.exit_code == 0, result.output
    assert "all (chat)" in result.output and "3000" in result.output and "math" in result.output
    csv = run("stats", "--csv", "code")
    assert csv.exit_code == 0 and csv.output.splitlines()[0].startswith("domain,requests,span_s")


def test_convert_azure_and_transform_and_mix(run, tmp_path):
    (tmp_path / "az.csv").write_text(AZURE_SAMPLE)
    result = run("convert", "--from", "azure", "az.csv", "az.jsonl")
    assert result.exit_code == 0, result.output
    assert "3 requests written" in result.output and load_trace(tmp_path / "az.jsonl").height == 3
    clipped = run("transform", "az.jsonl", "-o", "t.jsonl", "--rate-scale", "2", "--clip-prompt", "400",
                  "--clip-output", "50")
    assert clipped.exit_code == 0, clipped.output
    assert "clipped 2 requests (1 prompts, 2 outputs)" in clipped.output
    df = load_trace(tmp_path / "t.jsonl")
    assert df["prompt_tokens"].max() == 400 and df["arrival_s"][1] == pytest.approx(4.314579 / 2)
    mixed = run("mix", "chat", "code", "-o", "cm.jsonl", "--weights", "0.5,0.5", "--seed", "3")
    assert mixed.exit_code == 0, mixed.output
    shares = load_trace(tmp_path / "cm.jsonl")["domain"].value_counts()
    assert set(shares["domain"]) == {"chat", "code"}


def test_convert_lengths_needs_rate(run, tmp_path):
    (tmp_path / "l.csv").write_text("num_prefill_tokens,num_decode_tokens\n10,20\n30,40\n")
    assert_clean_error(run("convert", "--from", "lengths", "l.csv", "o.jsonl"), code=2)
    ok = run("convert", "--from", "lengths", "--rate", "2", "--cv", "1.5", "l.csv", "o.jsonl")
    assert ok.exit_code == 0 and load_trace(tmp_path / "o.jsonl").height == 2


# an Azure file with a year-3023 typo in its second row: nanoseconds overflowed it into 1854
Y3023 = ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"
         "3023-11-16 18:15:50.9951690,396,109\n2023-11-16 18:15:51.0000000,879,55\n")


@pytest.mark.parametrize(("args", "code", "needle"), [
    (("stats", "nope"), 1, "no bundled trace of that name"),
    (("stats", "bad.jsonl"), 1, "bad.jsonl: line 2: field 'output_tokens'"),
    (("convert", "--from", "azure", "missing.csv", "x.jsonl"), 1, "missing.csv: cannot open trace file: No such file"),
    (("convert", "--from", "azure", "bad.csv", "x.jsonl"), 1, "line 2: field 'TIMESTAMP'"),
    (("generate", "--cv", "-1", "-o", "x.jsonl"), 2, "'--cv': -1.0 is not in the range x>0"),
    (("generate", "--duration", "5", "--requests", "5", "-o", "x.jsonl"), 2, "not both"),
    (("generate", "--mix", "chat=1", "-o", "x.jsonl"), 2, "--mix needs --domain mixed"),
    (("generate", "--domain", "mixed", "--mix", "poetry=1", "-o", "x.jsonl"), 2, "mix: expected"),
    (("transform", "chat", "-o", "x.jsonl", "--rate-scale", "0"), 2, "'--rate-scale': 0.0 is not in the range x>0"),
    (("transform", "chat", "-o", "x.jsonl", "--clip-output", "0"), 2, "'--clip-output': 0 is not in the range x>=1"),
    (("mix", "chat", "code", "-o", "x.jsonl", "--weights", "1"), 2, "1 weights for 2 traces"),
    # issue 15, 4: the bucket must be > 0 and the error names the option, not the output file
    (("convert", "--from", "mooncake", "--bucket", "-5", "mc.jsonl", "x.jsonl"), 2, "--bucket"),
    (("convert", "--from", "mooncake", "--bucket", "nan", "mc.jsonl", "x.jsonl"), 2, "--bucket"),
    (("convert", "--from", "azure", "y3023.csv", "x.jsonl"), 1, "y3023.csv: line 3: field 'TIMESTAMP': year 3023"),
    # issue 15, 5: refuse before allocating
    (("generate", "--rate", "1000", "--duration", "1e9", "-o", "x.jsonl"), 1, "more than 10,000,000"),
    (("generate", "--requests", "100000000000", "-o", "x.jsonl"), 1, "more than 10,000,000"),
    (("stats", "/dev/zero"), 1, "/dev/zero: not a regular file"),
])
def test_errors_are_one_line_and_write_nothing(run, tmp_path, args, code, needle):
    (tmp_path / "bad.jsonl").write_text(
        '{"id": "a", "arrival_s": 0, "prompt_tokens": 3, "output_tokens": 2, "domain": "chat"}\n'
        '{"id": "b", "arrival_s": 1, "prompt_tokens": 3, "output_tokens": 0, "domain": "chat"}\n')
    (tmp_path / "bad.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\nnot a time,3,4\n")
    (tmp_path / "y3023.csv").write_text(Y3023)
    (tmp_path / "mc.jsonl").write_text('{"timestamp": 0, "input_length": 5, "output_length": 5}\n')
    line = assert_clean_error(run(*args), code)
    assert needle in line
    assert not (tmp_path / "x.jsonl").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_output_is_not_clobbered_on_error(run, tmp_path):
    out = tmp_path / "keep.jsonl"
    out.write_text("precious\n")
    (tmp_path / "bad.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,3,-4\n")
    assert_clean_error(run("convert", "--from", "azure", "bad.csv", "keep.jsonl"))
    assert out.read_text() == "precious\n"


def test_bundle_into_a_directory(run, tmp_path):
    result = run("bundle", "--dir", "b")
    assert result.exit_code == 0, result.output
    names = sorted(Path(p).name for p in result.output.split())
    assert names == ["chat.jsonl", "code.jsonl", "math.jsonl", "mixed.jsonl"]
    assert load_trace(tmp_path / "b" / "mixed.jsonl").height == 4000


def test_convert_skip_bad_drops_and_counts_the_typo(run, tmp_path):
    """Issue 15, 4: with --skip-bad the year-3023 row is dropped and counted; the good rows keep
    their own times (it was sorted first and shifted every good row by 169 years)."""
    (tmp_path / "y3023.csv").write_text(Y3023)
    res = run("convert", "--from", "azure", "--skip-bad", "y3023.csv", "ok.jsonl")
    assert res.exit_code == 0, res.output
    assert "1 bad rows (--skip-bad)" in res.output
    df = load_trace(tmp_path / "ok.jsonl")
    assert df["arrival_s"].to_list() == pytest.approx([0.0, 4.31941])
    assert df["prompt_tokens"].to_list() == [374, 879]


def test_write_errors_name_the_file(run, tmp_path):
    """Issue 15, 9: a write error is one line naming the file (was "Error: : No space left on
    device"); a read-only folder stands in for a full disk here (tests/test_io.py fills a tmpfs)."""
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        line = assert_clean_error(run("generate", "--requests", "10", "-o", "ro/t.jsonl"))
    finally:
        ro.chmod(0o755)
    assert line.startswith("Error: cannot write ro/t.jsonl: Permission denied")
