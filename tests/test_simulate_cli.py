"""`sparksched simulate`: end to end on a bundled trace, outputs, and one-line errors."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner

from sparksched.cli import main

OUTPUTS = ["acceptance.parquet", "acceptance_by_position.png", "budget.parquet", "latency_cdf.png",
           "report.html", "requests.parquet", "result.json", "rounds.parquet", "scenario.toml", "steps.parquet",
           "summary.json", "timeline.json", "timeseries.png"]


def test_simulate_bundled_trace_writes_results(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["simulate", "--trace", "chat", "--max-requests", "40", "--policy", "static-3",
                                    "--timeline", "--no-progress", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "throughput" in res.output and "per-user tok/s" in res.output and "static-3" in res.output
    assert "TTFT mean / median / P90 / P99" in res.output and " ms" in res.output
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUTS, "manifest.json"])
    doc = json.loads((out / "summary.json").read_text())
    assert doc["summary"]["finished"] == 40 and doc["config"]["policy"] == "static-3"
    req = pl.read_parquet(out / "requests.parquet")
    assert req.height == 40 and (req["emitted_tokens"] == req["output_tokens"]).all()


def test_result_json_is_consistent_with_the_parquet_tables(tmp_path):
    """The issue's check, through the CLI: result.json against requests.parquet and rounds.parquet."""
    import numpy as np

    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["simulate", "--trace", "chat", "--max-requests", "80", "--timeline",
                                    "--no-report", "-q", "-o", str(out)])
    assert res.exit_code == 0 and res.output == "", res.output
    result = json.loads((out / "result.json").read_text())
    req = pl.read_parquet(out / "requests.parquet").filter(pl.col("status") == "finished")
    rounds = pl.read_parquet(out / "rounds.parquet")
    assert result["mean_ttft_ms"] == pytest.approx(1000 * (req["first_token_s"] - req["arrival_s"]).mean())
    drafts = rounds.filter(pl.col("verified") > 0)["accepted"].to_numpy()
    assert result["spec_decode_acceptance_length"] == pytest.approx(1 + drafts.mean())
    assert result["spec_decode_per_position_acceptance_rates"] == pytest.approx(
        [float((drafts >= k).mean()) for k in range(1, 8)])
    trace = json.loads((out / "timeline.json").read_text())
    assert len([e for e in trace["traceEvents"] if e.get("cat") == "step"]) == pl.read_parquet(out / "steps.parquet").height
    assert np.isfinite(result["p99_e2el_ms"])


def test_report_html_is_self_contained(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["simulate", "--trace", "code", "--max-requests", "30", "--no-progress", "-o", str(out)])
    assert res.exit_code == 0, res.output
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "http://" not in page and "https://" not in page and "<script" not in page  # opens offline
    result = json.loads((out / "result.json").read_text())
    assert f"{result['mean_ttft_ms']:.4g}" in page and "scenario" in page.lower()


def test_scenario_file_round_trip_and_cli_override(tmp_path):
    first = tmp_path / "a"
    res = CliRunner().invoke(main, ["simulate", "--trace", "math", "--max-requests", "25", "--block", "5",
                                    "--goodput", "ttft:300", "tpot:10", "--no-report", "-q", "-o", str(first)])
    assert res.exit_code == 0, res.output
    scenario = (first / "scenario.toml").read_text()
    assert 'block = 5  # command line' in scenario and 'goodput = "ttft:300 tpot:10"' in scenario
    again = tmp_path / "b"
    res = CliRunner().invoke(main, ["simulate", "--config", str(first / "scenario.toml"), "-q", "-o", str(again)])
    assert res.exit_code == 0, res.output
    a, b = (json.loads((d / "result.json").read_text()) for d in (first, again))
    assert {k: v for k, v in a.items() if k != "date"} == {k: v for k, v in b.items() if k != "date"}
    assert "block = 5  # from" in (again / "scenario.toml").read_text()
    over = tmp_path / "c"
    res = CliRunner().invoke(main, ["simulate", "--config", str(first / "scenario.toml"), "--block", "3",
                                    "-q", "--no-report", "-o", str(over)])
    assert res.exit_code == 0, res.output
    assert json.loads((over / "summary.json").read_text())["config"]["block"] == 3


def test_scenario_sections_and_bad_keys(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('trace = "math"\nmax-requests = 10\npolicies = "dspark"\n[simulate]\npolicy = "mtp1"\n'
                   '[pareto]\nload = "4,8"\n')
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["simulate", "--config", str(cfg), "-q", "--no-report", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "summary.json").read_text())["config"]["policy"] == "mtp1"
    for text, needle in (('blok = 5\n', "key 'blok': no command has such an option"),
                         ('block = "five"\n', "key 'block'"),
                         ('block = 2.5\n', "expected an integer"),
                         ('[simulate]\nload = "4"\n', "`simulate` has no such option"),
                         ('[sim]\nblock = 3\n', "no command has such an option"),
                         ('block = \n', "not valid TOML")):
        cfg.write_text('trace = "math"\n' + text)
        res = CliRunner().invoke(main, ["simulate", "--config", str(cfg), "-q", "-o", str(tmp_path / "x")])
        assert res.exit_code == 2, (text, res.output)
        assert needle in res.output and "Traceback" not in res.output, (text, res.output)


def test_simulate_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from sparksched.cli import main; "
            f"main(['simulate', '--trace', 'chat', '--max-requests', '20', '-q', '--no-report', '-o', r'{tmp_path}'],"
            " standalone_mode=False); print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_default_output_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["simulate", "--trace", "math", "--max-requests", "5", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "runs" / "math-dspark" / "summary.json").exists()


def _fails(args, tmp_path, needle, code=None):
    out = tmp_path / "never"
    res = CliRunner().invoke(main, ["simulate", *args, "--no-progress", "-o", str(out)])
    assert res.exit_code != 0 if code is None else res.exit_code == code, res.output
    assert needle in res.output, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_inputs_are_one_line_errors(tmp_path):
    _fails(["--trace", "no-such-trace"], tmp_path, "no such file, and no bundled trace", 1)
    _fails(["--trace", "chat", "--policy", "static-x"], tmp_path, "policy 'static-x': K must be an integer >= 0", 2)
    _fails(["--trace", "chat", "--block", "0"], tmp_path, "block must be an integer >= 1", 2)
    _fails(["--trace", "chat", "--rate-scale", "-1"], tmp_path, "rate_scale must be a finite number > 0", 2)
    _fails(["--trace", "chat", "--goodput", "ttft:x"], tmp_path, "goodput", 2)
    _fails(["--trace", "chat", "--profile", "nope.json"], tmp_path, "profile 'nope.json'", 1)
    _fails(["--trace", "chat", "--acceptance", str(tmp_path / "missing.jsonl")], tmp_path,
           "cannot open rounds file: No such file", 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "arrival_s": 0, "prompt_tokens": 5, "output_tokens": 0, "domain": "chat"}\n')
    _fails(["--trace", str(bad)], tmp_path, "line 1", 1)


def test_model_engine_without_the_real_loop_is_a_clear_error(tmp_path):
    import importlib.util

    if importlib.util.find_spec("simulator.model_backend") is not None:
        return  # the real loop is installed; its own tests cover it
    _fails(["--trace", "chat", "--engine", "model"], tmp_path, "--engine model needs simulator/model_backend.py")


def test_recorded_rounds_drive_the_simulation(tmp_path):
    import numpy as np

    from sparksched.rounds import RoundsWriter

    rng = np.random.default_rng(0)
    path = tmp_path / "rounds.jsonl"
    with RoundsWriter(path) as w:
        for step in range(60):
            conf = rng.uniform(0.3, 1.0, (8, 7))
            accepted = np.minimum((rng.random((8, 7)) < conf).argmin(axis=1), 7)
            w.add([f"r{i}" for i in range(8)], step, "chat", conf, np.full(8, 7), np.full(8, 7), accepted)
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["simulate", "--trace", "chat", "--max-requests", "20", "--acceptance", str(path),
                                    "--no-progress", "-o", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "summary.json").read_text())
    assert doc["summary"]["finished"] == 20 and doc["meta"]["backend"] == "recorded rounds.jsonl"
    # the recorded trace replayed request by request: the chat trace's ids name no recorded request here,
    # so every request falls back to a donor of its domain, and the config says which mode ran
    out2 = tmp_path / "run2"
    res = CliRunner().invoke(main, ["simulate", "--trace", "chat", "--max-requests", "20", "--acceptance", str(path),
                                    "--recorded-donors", "request", "--no-progress", "-o", str(out2)])
    assert res.exit_code == 0, res.output
    doc2 = json.loads((out2 / "summary.json").read_text())
    assert doc2["config"]["recorded_donors"] == "request" and doc2["summary"]["finished"] == 20
    bad = CliRunner().invoke(main, ["simulate", "--trace", "chat", "--recorded-donors", "trace", "-o", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "'trace' is not one of" in bad.output


def test_simulate_runs_on_the_bundled_moe_profiles(tmp_path):
    for name in ("h200x8-deepseek-v3-ep8-dp-fp8-roofline", "h100-qwen3-30b-a3b-roofline"):
        out = tmp_path / name
        res = CliRunner().invoke(main, ["simulate", "--trace", "chat", "--profile", name, "--max-requests", "30",
                                        "--block", "5", "--no-progress", "-o", str(out)])
        assert res.exit_code == 0, res.output
        doc = json.loads((out / "summary.json").read_text())
        assert doc["summary"]["finished"] == 30
        # KV blocks come from the profile's deployment (MLA latents, FP8 KV), not the dense-model formula
        assert "profile deployment" in json.dumps(doc)


@pytest.mark.parametrize("policy", ["none", "mtp1"])
def test_report_for_runs_without_or_with_one_token_drafts(tmp_path, policy):
    """Plain decoding writes no spec_decode_* keys (vLLM omits them) and still draws every figure."""
    out = tmp_path / policy
    res = CliRunner().invoke(main, ["simulate", "--trace", "chat", "--max-requests", "15", "--policy", policy,
                                    "--timeline", "-q", "-o", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "result.json").read_text())
    assert ("spec_decode_acceptance_length" in result) == (policy == "mtp1")
    if policy == "mtp1":
        assert len(result["spec_decode_per_position_acceptance_rates"]) == 1
    assert (out / "acceptance_by_position.png").read_bytes()[:4] == b"\x89PNG" and (out / "report.html").exists()


# ---------------------------------------------------------------------------------------- reliability (issue 15)
def _run(*args):
    return CliRunner().invoke(main, ["simulate", "--no-progress", *args])


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def test_rerun_into_a_results_folder_refuses_without_overwrite(tmp_path):
    """A rerun never mixes two runs in one folder: refused without --overwrite (before the run),
    replaced whole with it; the manifest lists exactly the files of the run that wrote them."""
    out = tmp_path / "run"
    assert _run("--trace", "math", "--max-requests", "10", "-o", str(out)).exit_code == 0
    before = _manifest(out)
    res = _run("--trace", "math", "--max-requests", "20", "--policy", "static-3", "--seed", "7", "-o", str(out))
    assert res.exit_code == 1 and "--overwrite" in res.output and len(res.output.strip().splitlines()) == 1
    assert _manifest(out) == before  # untouched
    res = _run("--trace", "math", "--max-requests", "20", "--policy", "static-3", "--seed", "7", "-o", str(out),
               "--overwrite")
    assert res.exit_code == 0, res.output
    after = _manifest(out)
    assert after["about"]["seed"] == 7 and after["about"]["policy"] == "static-3"
    assert sorted(after["files"]) == sorted(p.name for p in out.iterdir() if p.name != "manifest.json")
    assert pl.read_parquet(out / "requests.parquet").height == 20
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging or old folders left behind
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in out.iterdir())


def test_overwrite_never_replaces_a_folder_it_did_not_write(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    res = _run("--trace", "math", "--max-requests", "5", "-o", str(out), "--overwrite")
    assert res.exit_code == 1 and "notes.txt" in res.output
    assert (out / "notes.txt").read_text() == "keep me"


def test_default_folder_keeps_seeds_and_rate_scales_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _run("--trace", "math", "--max-requests", "5").exit_code == 0
    assert _run("--trace", "math", "--max-requests", "5", "--seed", "7").exit_code == 0
    assert _run("--trace", "math", "--max-requests", "5", "--rate-scale", "2").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["math-dspark", "math-dspark-seed7",
                                                                      "math-dspark-x2"]
    res = _run("--trace", "math", "--max-requests", "5", "--seed", "7")
    assert res.exit_code == 1 and "--overwrite" in res.output


def test_conflicting_flags_are_usage_errors(tmp_path):
    res = _run("--trace", "math", "--clock", "measured", "-o", str(tmp_path / "a"))
    assert res.exit_code == 2 and "--clock measured needs --engine model" in res.output
    res = _run("--trace", "math", "--recorded-donors", "request", "-o", str(tmp_path / "b"))
    assert res.exit_code == 2 and "--recorded-donors needs a recorded-rounds file" in res.output
    res = _run("--trace", "math", "--recorded-donors", "domain", "-o", str(tmp_path / "c"))
    assert res.exit_code == 2
    assert not any(tmp_path.iterdir())


def _shifted(tmp_path, offset, name, back=0.0):
    """math.jsonl's first 30 requests with `offset` added to every arrival (then `back` taken off)."""
    from simulator.trace import load_trace, resolve_trace, write_trace

    df = load_trace(resolve_trace("math")).head(30)
    path = tmp_path / name
    write_trace(df.with_columns((pl.col("arrival_s") + offset) - back), path)
    return path


def test_epoch_stamped_arrivals_keep_their_precision(tmp_path):
    """Arrivals in epoch seconds run on a clock shifted by a whole number of seconds: the same
    results, bit for bit, as the same times written from 0 (issue 15, 3); the offset is kept in
    summary.json. On a clock at 1.7e9 s the steps (milliseconds) were rounded to 2.4e-7 s each."""
    base, epoch = tmp_path / "base", tmp_path / "epoch"
    assert _run("--trace", str(_shifted(tmp_path, 1.7e9, "a.jsonl", back=1.7e9)), "-o", str(base)).exit_code == 0
    res = _run("--trace", str(_shifted(tmp_path, 1.7e9, "b.jsonl")), "-o", str(epoch))
    assert res.exit_code == 0, res.output
    a, b = (pl.read_parquet(d / "requests.parquet") for d in (base, epoch))
    assert a.equals(b)
    assert json.loads((epoch / "summary.json").read_text())["meta"]["arrival_offset_s"] == 1.7e9


def test_times_coarser_than_a_microsecond_are_refused(tmp_path):
    for stamp in (1.7e15, 1.7e12):  # epoch microseconds or milliseconds read as seconds
        path = tmp_path / "us.jsonl"
        path.write_text("".join(json.dumps({"id": f"r{i}", "arrival_s": stamp + i, "prompt_tokens": 8,
                                            "output_tokens": 8, "domain": "chat"}) + "\n" for i in range(3)))
        res = _run("--trace", str(path), "-o", str(tmp_path / "o"))
        assert res.exit_code == 1 and "line 1: field 'arrival_s'" in res.output, res.output
    res = _run("--trace", "math", "--max-requests", "5", "--rate-scale", "1e-300", "-o", str(tmp_path / "o"))
    assert res.exit_code == 1 and "rate_scale 1e-300 stretches" in res.output
    assert not (tmp_path / "o").exists()


def test_huge_concurrency_and_prefill_flags_allocate_what_the_run_needs(tmp_path):
    """`--max-running 1e9` or `--prefill-chunk 1e9` allocated about 8 GB each (issue 15, 5): under a
    2 GiB address-space limit the run must still finish, with the same results as the defaults."""
    import subprocess
    import sys

    resource = pytest.importorskip("resource")
    if sys.platform != "linux":
        pytest.skip("RLIMIT_AS semantics are Linux's")
    limit = 2 << 30
    code = (f"import resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit})); "
            "from sparksched.cli import main; sys.argv = ['sparksched'] + sys.argv[1:]; main()")
    base = ["simulate", "--trace", "math", "--max-requests", "30", "--no-progress"]
    ref = tmp_path / "ref"
    assert _run(*base[1:], "-o", str(ref)).exit_code == 0
    for flag in ("--max-running", "--prefill-chunk"):
        out = tmp_path / flag.strip("-")
        r = subprocess.run([sys.executable, "-c", code, *base, flag, "1000000000", "-o", str(out)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        got, want = (pl.read_parquet(d / "requests.parquet") for d in (out, ref))
        assert got.equals(want), flag
        meta = json.loads((out / "summary.json").read_text())["meta"]
        assert meta["max_running_used"] <= 30 and meta["prefill_chunk_used"] < 10**6  # cut to the trace
    del resource


def _profile(tmp_path, edit, name="p.json"):
    from sparksched.profile import load_profile

    prof = {k: v for k, v in load_profile("h100-qwen3-8b-roofline").items() if not k.startswith("_")}
    edit(prof)
    path = tmp_path / name
    path.write_text(json.dumps(prof))
    return str(path)


def test_profiles_with_impossible_facts_are_errors_not_fallbacks(tmp_path):
    """Issue 15, 8: these fell back to 16384 KV blocks (or a free drafter) with a note in
    summary.json only."""
    # without the deployment section (a measured profile has none) the KV cache is sized from the facts
    plain = lambda edit: (lambda p: (p.pop("deployment", None), edit(p)))
    cases = [
        (lambda p: p["device"].update(memory_bytes=1), "field 'device.memory_bytes'"),
        (plain(lambda p: p.update(dtype="int4")), "field 'dtype': no known bytes per element for 'int4'"),
        (plain(lambda p: p["device"].update(memory_bytes=8e9)), "leave no KV cache"),  # 16 GB of weights in 8 GB
        (lambda p: p.update(verify=p["verify"][:1]), "measure one batch size"),
    ]
    for edit, needle in cases:
        res = _run("--trace", "math", "--max-requests", "5", "--profile", _profile(tmp_path, edit),
                   "-o", str(tmp_path / "o"))
        assert res.exit_code == 1 and needle in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
    # --kv-blocks sidesteps the sizing facts
    res = _run("--trace", "math", "--max-requests", "5", "--kv-blocks", "4096", "-o", str(tmp_path / "k"),
               "--profile", _profile(tmp_path, plain(lambda p: p.update(dtype="int4"))))
    assert res.exit_code == 0, res.output


def test_a_profile_without_drafter_timings_warns_on_stderr(tmp_path):
    res = _run("--trace", "math", "--max-requests", "5", "--profile", _profile(tmp_path, lambda p: p.update(draft=[])),
               "-o", str(tmp_path / "o"))
    assert res.exit_code == 0, res.output
    assert "warning: " in res.stderr and "no draft rows: the drafter is charged 0 s" in res.stderr
    res = _run("--trace", "math", "--max-requests", "5", "--policy", "none", "-o", str(tmp_path / "plain"),
               "--profile", _profile(tmp_path, lambda p: p.update(draft=[])))
    assert res.exit_code == 0 and "warning" not in res.stderr  # no drafter, nothing assumed


def test_a_binary_acceptance_file_names_file_and_line(tmp_path):
    """Issue 15, 9: a binary --acceptance file gave "'utf-8' codec can't decode"."""
    path = tmp_path / "rounds.jsonl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    _fails(["--trace", "chat", "--max-requests", "5", "--acceptance", str(path)], tmp_path,
           f"{path}: line 1: field '<line>': is not valid UTF-8")
