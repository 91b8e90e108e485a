"""`sparksched profile`: measure / roofline / show / check / compare through the click CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sparksched.cli import main
from sparksched.profile import load_profile

TINY_ARGS = ["--requests", "1,4", "--tokens", "1,4", "--contexts", "8,32", "--prompts", "8",
             "--draft-requests", "1", "--blocks", "2", "--draft-context", "8", "--draft-layers", "1",
             "--rank", "8", "--repeats", "2", "--rounds", "1", "--warmup", "1", "--retries", "5",
             "--no-progress"]
ROOF_ARGS = ["--requests", "1,2,4,8", "--tokens", "1,2,4", "--contexts", "512,1024,2048"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative output paths land in the test's own folder


def _run(args: list[str], cwd: Path):
    result = CliRunner().invoke(main, ["profile", *args], catch_exceptions=False)
    return result, sorted(p.name for p in cwd.iterdir())


def _one_line_error(result) -> str:
    assert result.exit_code != 0
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output
    return lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_gpu_without_cuda_is_one_clear_line(tmp_path: Path) -> None:
    result, files = _run(["--gpu", "0", "--model", "qwen3-8b", "-o", "h100.json"], tmp_path)
    assert "--gpu 0: CUDA is not available" in _one_line_error(result)
    assert files == []


def test_roofline_then_show_writes_png_and_check_prints_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["profile", "--roofline", "h100", "--model", "qwen3-8b", *ROOF_ARGS,
                             "-o", "est.json"])
    assert r.exit_code == 0, r.output
    assert load_profile("est.json")["kind"] == "estimated"
    r = runner.invoke(main, ["profile", "show", "est.json", "--png", "est.png"])
    assert r.exit_code == 0, r.output
    assert "median ms" in r.output and "tokens/s" in r.output and "prefill" in r.output
    assert Path("est.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = runner.invoke(main, ["profile", "check", "est.json"])
    assert r.exit_code == 0, r.output
    assert "leave-one-tokens-out" in r.output and "median rel. error=" in r.output
    assert "leave-one-context-out" in r.output
    r = runner.invoke(main, ["profile", "check", "est.json", "--json"])
    summary = json.loads(r.output)
    assert summary["tokens"]["points"] > 0 and summary["all"]["max"] >= summary["all"]["median"] >= 0


def test_cpu_measure_via_cli(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    result, files = _run(["--device", "cpu", "--model", "tiny", *TINY_ARGS, "-o", "cpu.json"], tmp_path)
    assert result.exit_code == 0, result.output
    torch.set_num_threads(threads)  # the CLI pins 1 thread on CPU; restore for other tests
    assert "wrote cpu.json" in result.output and files == ["cpu.json"]


@pytest.mark.parametrize("args, message", [
    (["--roofline", "b300", "-o", "x.json"], "unknown roofline device 'b300'"),
    (["--roofline", "h100", "--model", "gpt-9", "-o", "x.json"], "unknown model preset 'gpt-9'"),
    (["--roofline", "h100", "--model", "deepseek-v3", "--dtype", "bf16", "--gpus", "8", "--ep", "8", "-o", "x.json"],
     "deepseek-v3 (bfloat16) does not fit: "),
    (["--roofline", "h100", "--model", "qwen3-8b", "--gpus", "8", "--tp", "4", "-o", "x.json"],
     "without --dp-attention one engine's attention spans all GPUs"),
    (["--roofline", "h100", "--model", "qwen3-8b", "--ep", "2", "--gpus", "2", "-o", "x.json"], "qwen3-8b is dense"),
    (["--roofline", "h100", "--dtype", "int3", "-o", "x.json"], "unknown dtype 'int3'"),
    (["--roofline", "h100", "--model", "no/config.json", "-o", "x.json"], "--model no/config.json: no such file"),
    (["--device", "cpu", "--gpus", "2", "-o", "x.json"], "--gpus: only with --roofline"),
    (["--roofline", "h100", "--requests", "1,two", "-o", "x.json"], "--requests: 'two' is not an integer"),
    (["--roofline", "h100", "-o", "no/such/dir/x.json"], "does not exist"),
    (["--device", "cpu", "--dtype", "int3", "-o", "x.json"], "--dtype 'int3'"),
    (["--device", "cpu", "--cuda-graph", *TINY_ARGS, "-o", "x.json"], "--cuda-graph needs a CUDA device"),
    (["--gpu", "0", "--roofline", "h100"], "give one of --gpu, --device, --roofline"),
])
def test_bad_options_are_one_line_and_write_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    result, files = _run(args, tmp_path)
    assert message in _one_line_error(result)
    assert files == []


def test_roofline_deepseek_on_8_h200_with_ep8(tmp_path: Path) -> None:
    result, files = _run(["--roofline", "h200", "--model", "deepseek-v3", "--gpus", "8", "--ep", "8", "-o", "f.json"],
                         tmp_path)
    assert result.exit_code == 0, result.output
    assert files == ["f.json"] and "float8 weights" in result.output and "ep 8" in result.output
    prof = load_profile("f.json")
    dep = prof["deployment"]
    assert (dep["gpus"], dep["tp"], dep["ep"], prof["dtype"]) == (8, 8, 8, "float8")
    assert dep["kv_capacity_tokens"] > 100_000 and prof["model"]["attention"] == "mla"
    row = prof["verify"][0]
    assert row["tokens_per_s_per_gpu"] == pytest.approx(row["tokens_per_s"] / 8, rel=1e-5)
    assert {r["family"] for r in prof["draft_families"]} == {"dspark", "dflash", "mtp1", "eagle3"}
    assert prof["drafter"]["layers"] == 3 and prof["drafter"]["window"] == 128


def test_roofline_from_a_qwen3_moe_config_json(tmp_path: Path) -> None:
    from profiler.model_presets import MODEL_PRESETS

    QWEN3_30B_A3B = MODEL_PRESETS["qwen3-30b-a3b"]  # the public config.json fields
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_30B_A3B))
    result, files = _run(["--roofline", "h100", "--model", "config.json", "--requests", "1,8,64", "-o", "q.json"],
                         tmp_path)
    assert result.exit_code == 0, result.output
    prof = load_profile("q.json")
    assert prof["model"]["n_routed_experts"] == 128 and prof["dtype"] == "bfloat16"
    assert prof["model"]["parameters"] == pytest.approx(30.5e9, rel=0.01)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**QWEN3_30B_A3B, "model_type": "jamba"}))
    result, files = _run(["--roofline", "h100", "--model", str(bad), "-o", "j.json"], tmp_path)
    assert "field 'model_type': 'jamba' is not supported" in _one_line_error(result) and "j.json" not in files


def test_check_and_show_report_bad_files_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": 1, "device": {}, "model": {}, "dtype": "bfloat16",
                               "verify": [{"requests": 1, "tokens": 1, "context": 0}]}))
    for cmd in ("check", "show"):
        result, _ = _run([cmd, str(bad)], tmp_path)
        assert "verify[0]: missing field 'median_s'" in _one_line_error(result)
    result, _ = _run(["check", str(tmp_path / "none.json")], tmp_path)
    assert "no such file" in _one_line_error(result)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("graph", [[], ["--cuda-graph"]])
def test_gpu_measure_tiny(tmp_path: Path, graph: list[str]) -> None:
    result, files = _run(["--gpu", "0", "--model", "tiny", *TINY_ARGS, *graph, "-o", "gpu.json"], tmp_path)
    assert result.exit_code == 0, result.output
    assert files == ["gpu.json"]


def test_bare_profile_prints_help_and_measures_nothing(tmp_path: Path) -> None:
    result, files = _run([], tmp_path)
    assert result.exit_code == 0 and "--roofline" in result.output and files == []


def test_negative_counts_are_usage_errors():
    """Issue 15, 9: --worst -1 and --max-rows -1 were accepted."""
    for args in (["profile", "check", "cpu-tiny", "--worst", "-1"], ["profile", "show", "cpu-tiny", "--max-rows", "-1"]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2 and "-1 is not in the range x>=0" in res.output, res.output
