"""`sparksched pareto` / `sparksched whatif` (sparksched/commands/pareto.py) through click's CliRunner, and
the analysis and result sets behind them (simulator/analysis.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from sparksched.cli import main


def _sweep_rows() -> pl.DataFrame:
    """Hand-made sweep rows: 'fast' beats 'mtp1' everywhere; loads are concurrency caps."""
    caps = [1, 2, 4, 8, 16]
    rows = []
    for p, spd, thr in [("fast", [200.0, 180.0, 150.0, 100.0, 60.0], [200.0, 360.0, 600.0, 800.0, 960.0]),
                        ("mtp1", [120.0, 110.0, 90.0, 60.0, 30.0], [120.0, 220.0, 360.0, 480.0, 480.0])]:
        for c, s, t in zip(caps, spd, thr):
            rows.append({"run": len(rows), "policy": p, "max_running": c, "rate_scale": 16.0,
                         "user_tps_p50": s, "user_tps_p90": s * 1.2, "throughput_tps": t,
                         "ttft_p90_s": 0.5, "mean_running": c * 0.9, "budget_per_request": 2.0,
                         "mean_batch_tokens": 2.0 * c, "mean_step_s": 0.01})
    return pl.DataFrame(rows)


def _write_sweep(folder: Path, rows: pl.DataFrame | None = None) -> None:
    """`rows` as the sweep.parquet of a complete result set (what `pareto -o` writes)."""
    from sparksched.io import ResultSet, write_parquet

    with ResultSet(folder, overwrite=True, names=["sweep.parquet"]) as rs:
        write_parquet(rs.path("sweep.parquet"), _sweep_rows() if rows is None else rows)


def test_whatif_from_previous_sweep(tmp_path: Path):
    _write_sweep(tmp_path)
    r = CliRunner().invoke(main, ["whatif", "--from", str(tmp_path), "--sla", "100", "--throughput", "480"])
    assert r.exit_code == 0, r.output
    out = r.output
    # fast: exactly 800 at its (100, 800) point; mtp1: between (110, 220) and (90, 360) -> 290
    assert "fast" in out and "800 tok/s" in out and "at a swept point" in out
    assert "290 tok/s" in out and "2.76x mtp1" in out
    # matched throughput 480: fast is interpolated at 165, mtp1 at its (60, 480) point
    assert "165.0 tok/s/user" in out and "60.0 tok/s/user" in out
    # SLA-breaking load: fast 150 @4 -> 100 @8 holds at exactly 100 (>=), breaks at 16
    assert "breaks at about 8.0" in out


def test_whatif_unreachable_sla_is_reported(tmp_path: Path):
    _write_sweep(tmp_path)
    r = CliRunner().invoke(main, ["whatif", "--from", str(tmp_path), "--sla", "150"])
    assert r.exit_code == 0, r.output
    assert "mtp1" in r.output and "unreachable" in r.output and "(mtp1 cannot meet it)" in r.output
    assert "not met even at the lightest load" in r.output
    r = CliRunner().invoke(main, ["whatif", "--from", str(tmp_path), "--sla", "500"])
    assert r.output.count("unreachable") == 2


def test_whatif_from_sweep_filters_policies(tmp_path: Path):
    _write_sweep(tmp_path)
    r = CliRunner().invoke(main, ["whatif", "--from", str(tmp_path), "--sla", "100", "--policies", "fast"])
    assert r.exit_code == 0, r.output
    assert "fast" in r.output and "mtp1" not in r.output
    r = CliRunner().invoke(main, ["whatif", "--from", str(tmp_path), "--policies", "fast,nope"])
    assert r.exit_code != 0 and "['nope'] not in" in r.output


def test_bad_input_is_one_line_error(tmp_path: Path):
    runner = CliRunner()
    r = runner.invoke(main, ["whatif", "--from", str(tmp_path / "nope")])
    assert r.exit_code != 0 and "cannot read a sweep" in r.output and "Traceback" not in r.output
    _write_sweep(tmp_path / "s", pl.DataFrame({"policy": ["a"]}))
    r = runner.invoke(main, ["whatif", "--from", str(tmp_path / "s")])
    assert r.exit_code != 0 and "missing columns" in r.output
    r = runner.invoke(main, ["pareto", "--load", "8,x", "-o", str(tmp_path / "o")])
    assert r.exit_code != 0 and "'x' is not a valid int" in r.output and not (tmp_path / "o").exists()
    r = runner.invoke(main, ["pareto", "--rate-scales", "-1", "-o", str(tmp_path / "o")])
    assert r.exit_code != 0 and "must be > 0" in r.output
    r = runner.invoke(main, ["pareto", "--policies", "dspark,mtp1", "--baseline", "static-3",
                             "-o", str(tmp_path / "o")])
    assert r.exit_code != 0 and "not one of the swept policies" in r.output
    assert isinstance(r.exception, SystemExit)  # a usage error, not a crash


def test_outputs_from_synthetic_sweep(tmp_path: Path):
    """The tables and PNGs of a sweep, written from hand-made rows (no simulator involved)."""
    from simulator.analysis import PNG_NAMES, analyse, report_text, write_pareto_set
    from simulator.config import SimConfig
    from simulator.sweep import SweepResult

    rows = _sweep_rows()
    budget = pl.DataFrame({"run": [0, 1, 5, 6], "policy": ["fast", "fast", "mtp1", "mtp1"],
                           "decode_requests": [1, 2, 1, 2], "steps": [10, 10, 10, 10],
                           "verify_budget": [5.0, 4.5, 2.0, 2.0]})
    acc = pl.DataFrame({"run": [0, 0, 5], "policy": ["fast", "fast", "mtp1"], "domain": ["chat"] * 3,
                        "position": [1, 2, 1], "trials": [100, 80, 100], "accepted": [80, 60, 85],
                        "acceptance": [0.8, 0.75, 0.85]})
    res = SweepResult(rows, budget, acc)
    a = analyse(rows, 100.0, "mtp1", "user_tps_p50")
    text = report_text(a, 100.0, "mtp1", "user_tps_p50")
    assert "Frontier" in text and "+" in text  # a gain line
    # the dominated (30, 480) mtp1 point at cap 16 is not in the frontier
    assert a.front.filter((pl.col("policy") == "mtp1") & (pl.col("max_running") == 16)).is_empty()
    base = SimConfig(profile=str(tmp_path / "no-such-profile.json"))  # step-time plot skipped
    written = write_pareto_set(tmp_path / "out", res, a, base, 100.0, "user_tps_p50", text)
    names = {p.name for p in written}
    assert {PNG_NAMES["frontier"], PNG_NAMES["budget"], PNG_NAMES["acceptance"], "sweep.parquet",
            "frontier.parquet", "sla.parquet", "speed_gain.parquet", "report.txt"} <= names
    assert PNG_NAMES["step_time"] not in names
    for p in written:
        assert p.stat().st_size > 0
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pl.read_parquet(tmp_path / "out" / "sweep.parquet").equals(rows)
    # no temporary files left behind
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


@pytest.mark.skipif(importlib.util.find_spec("simulator.run") is None, reason="simulator.run not available yet")
def test_pareto_end_to_end_small(tmp_path: Path):
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["pareto", "--trace", "chat.jsonl", "--policies", "dspark,mtp1",
                                  "--load", "2,8", "--max-requests", "30", "--workers", "1", "--no-progress",
                                  "--sla", "50", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "Frontier" in r.output and "Throughput at per-user speed >= 50" in r.output
    rows = pl.read_parquet(out / "sweep.parquet")
    assert rows.height == 4 and set(rows["policy"]) == {"dspark", "mtp1"}
    for name in ("frontier.png", "verify_budget_vs_concurrency.png", "acceptance_by_position.png",
                 "step_time.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    # whatif answers from that sweep without simulating again
    r = CliRunner().invoke(main, ["whatif", "--from", str(out), "--sla", "50"])
    assert r.exit_code == 0 and "dspark" in r.output


# ---------------------------------------------------------------------------------------- issue 15
def _analysed(rows: pl.DataFrame, baseline: str):
    from simulator.analysis import analyse
    from simulator.sweep import SweepResult

    budget = pl.DataFrame(schema={"run": pl.Int64, "policy": pl.Utf8, "decode_requests": pl.Int64,
                                  "steps": pl.Int64, "verify_budget": pl.Float64})
    acc = pl.DataFrame(schema={"run": pl.Int64, "policy": pl.Utf8, "domain": pl.Utf8, "position": pl.Int64,
                               "trials": pl.Int64, "accepted": pl.Int64, "acceptance": pl.Float64})
    return SweepResult(rows, budget, acc), analyse(rows, 100.0, baseline, "user_tps_p50")


def test_a_rerun_leaves_no_file_of_the_earlier_sweep(tmp_path: Path):
    """speed_gain.parquet of a two-policy sweep survived a rerun with one policy (issue 15, 1)."""
    from simulator.analysis import write_pareto_set
    from simulator.config import SimConfig
    from sparksched.io import OutputError, check_result_set

    base = SimConfig(profile=str(tmp_path / "no-such-profile.json"))
    out = tmp_path / "out"
    res, a = _analysed(_sweep_rows(), "mtp1")
    write_pareto_set(out, res, a, base, 100.0, "user_tps_p50", "two policies")
    assert (out / "speed_gain.parquet").exists()
    one = _sweep_rows().filter(pl.col("policy") == "fast")
    res1, a1 = _analysed(one, "fast")
    with pytest.raises(OutputError, match="--overwrite"):
        write_pareto_set(out, res1, a1, base, 100.0, "user_tps_p50", "one policy")
    assert (out / "report.txt").read_text() == "two policies\n"
    write_pareto_set(out, res1, a1, base, 100.0, "user_tps_p50", "one policy", overwrite=True)
    assert not (out / "speed_gain.parquet").exists()
    assert pl.read_parquet(out / "sweep.parquet").equals(one)
    assert check_result_set(out)["about"]["policies"] == ["fast"]


def test_whatif_refuses_an_incomplete_result_set(tmp_path: Path):
    _sweep_rows().write_parquet(tmp_path / "sweep.parquet")  # no manifest: an interrupted or foreign folder
    r = CliRunner().invoke(main, ["whatif", "--from", str(tmp_path)])
    assert r.exit_code == 1 and "not a complete result set" in r.output
    _write_sweep(tmp_path / "s")
    (tmp_path / "s" / "sweep.parquet").write_bytes(b"truncated")
    r = CliRunner().invoke(main, ["whatif", "--from", str(tmp_path / "s")])
    assert r.exit_code == 1 and "size differs from the manifest" in r.output


def test_duplicate_policies_and_unwritable_outputs_are_refused_before_the_sweep(tmp_path: Path, monkeypatch):
    import simulator.sweep

    def never(*args, **kwargs):
        raise AssertionError("the sweep ran")

    monkeypatch.setattr(simulator.sweep, "run_sweep", never)
    r = CliRunner().invoke(main, ["pareto", "--policies", "dspark,mtp1,dspark", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "dspark named more than once" in r.output
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    r = CliRunner().invoke(main, ["pareto", "--policies", "dspark", "-o", str(blocker / "out")])
    assert r.exit_code == 1 and "cannot write" in r.output and "Traceback" not in r.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "sweep.parquet").write_bytes(b"x")
    r = CliRunner().invoke(main, ["pareto", "--policies", "dspark", "-o", str(tmp_path / "full")])
    assert r.exit_code == 1 and "--overwrite" in r.output
