"""SGLang's DSpark cost tables: written from a profile, read back exactly as SGLang looks them up,
simulated, and refused with one clear line when malformed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from sparksched import StepCost, read_sglang_table, sglang_additive_table, sglang_sps_table
from sparksched.cli import main
from sparksched.sglang_tables import _additive_predict

ROOF = "h100-qwen3-8b-roofline"


def sglang_sps_lookup(table: dict, b: float) -> float:
    """SGLang's own rule, written out: the nearest probe at or below B, clamped at both ends."""
    probes, sps = table["sample_batch_tokens"], table["sample_steps_per_sec"]
    j = max([i for i, p in enumerate(probes) if p <= b], default=0)
    return 1.0 / sps[j]


def test_sps_table_round_trips_at_every_integer_batch():
    cost = StepCost.from_profile(ROOF)
    table = sglang_sps_table(cost, 2048, requests=16, block=7)
    back = read_sglang_table(json.loads(json.dumps(table)))
    for b in range(1, table["max_batch_tokens"] + 1):
        assert float(back.verify_seconds(16, b if b >= 16 else 16, 0)) == pytest.approx(
            sglang_sps_lookup(table, max(b, 16)), rel=1e-12)
    # whole steps: the verify pass plus the drafter at block 7, at the slice's own concurrency
    whole = float(cost.verify_seconds(16, 64, 2048)) + cost.draft_seconds(16, 7, 2048)
    assert sglang_sps_lookup(table, 64) == pytest.approx(whole, rel=1e-12)
    assert back.includes_drafter and back.draft_seconds(16, 7) == 0.0


def test_sps_reader_is_a_step_function_between_probes():
    cost = read_sglang_table({"sample_batch_tokens": [8, 16, 32], "sample_steps_per_sec": [1000.0, 950.0, 500.0],
                              "max_batch_tokens": 32})
    got = [float(cost.verify_seconds(1, b, 0)) for b in (1, 8, 15, 16, 31, 32, 32)]
    assert got == pytest.approx([1e-3, 1e-3, 1e-3, 1 / 950, 1 / 950, 1 / 500, 1 / 500], rel=1e-12)
    assert cost.max_batch_tokens(4, 0) == 32 and np.isinf(cost.verify_seconds(4, 33, 0))
    assert "max_batch_tokens" in cost.why(4, 33, 0)
    assert cost.max_batch_tokens(40, 0) == 40  # the anchors are always allowed: only drafts are capped


def test_additive_table_round_trips_and_prices_the_grid_within_10_percent():
    cost = StepCost.from_profile(ROOF)
    for ctx in (512, 2048, 8192):
        fit = sglang_additive_table(cost, ctx, block=7)
        assert np.abs(fit.errors).max() < 0.10, (ctx, fit.report())
        back = read_sglang_table(json.loads(json.dumps(fit.table)))
        n, b = fit.points[:, 0], fit.points[:, 1]
        got = np.asarray([float(back.verify_seconds(x, y, 0)) for x, y in zip(n, b)])
        np.testing.assert_allclose(got, _additive_predict(fit.table, n, b), rtol=1e-12)
        t = fit.table  # alpha and theta start at 0 and never fall (SGLang's monotone convention)
        assert t["alpha_seconds"][0] == 0.0 and t["theta_seconds"][0] == 0.0
        assert np.all(np.diff(t["alpha_seconds"]) >= 0) and np.all(np.diff(t["theta_seconds"]) >= 0)


def test_additive_fit_error_is_measured_not_assumed():
    """Negative control: a table with a request term off by 20 % is reported 20 % off the grid."""
    cost = StepCost.from_profile(ROOF)
    fit = sglang_additive_table(cost, 2048, block=7)
    off = dict(fit.table, alpha_seconds=[1.2 * a for a in fit.table["alpha_seconds"]])
    n, b, s = fit.points.T
    err = np.abs(_additive_predict(off, n, b) / s - 1)
    assert err.max() > 0.05 > np.abs(fit.errors).max() + 0.04


BAD = [
    ({"sample_batch_tokens": [8, 8], "sample_steps_per_sec": [1.0, 1.0], "max_batch_tokens": 8},
     r"'sample_batch_tokens' must be strictly increasing, got 8 then 8"),
    ({"sample_batch_tokens": [8, 16], "sample_steps_per_sec": [1.0], "max_batch_tokens": 16},
     r"fields 'sample_batch_tokens' and 'sample_steps_per_sec' must have the same length, got 2 and 1"),
    ({"sample_batch_tokens": [8], "sample_steps_per_sec": [float("nan")], "max_batch_tokens": 8},
     r"'sample_steps_per_sec'\[0\] must be a finite number > 0, got nan"),
    ({"sample_batch_tokens": [8], "sample_steps_per_sec": [-3.0], "max_batch_tokens": 8},
     r"'sample_steps_per_sec'\[0\] must be a finite number > 0, got -3.0"),
    ({"sample_batch_tokens": [8], "sample_steps_per_sec": [3.0]}, r"'max_batch_tokens' must be a finite number > 0"),
    ({"bias_seconds": 0.1, "bs_probes": [1, 2], "alpha_seconds": [0.0, -0.1], "m_probes": [4],
      "theta_seconds": [0.0]}, r"'alpha_seconds'\[1\] must be a finite number >= 0, got -0.1"),
    ({"bias_seconds": 0.1, "bs_probes": [2, 1], "alpha_seconds": [0.0, 0.1], "m_probes": [4],
      "theta_seconds": [0.0]}, r"'bs_probes' must be strictly increasing"),
    ({"bias_seconds": 0.1, "bs_probes": [1], "alpha_seconds": [0.0], "m_probes": [4, 8],
      "theta_seconds": [0.0]}, r"'m_probes' and 'theta_seconds' must have the same length"),
    ({"bias_seconds": "fast", "bs_probes": [1], "alpha_seconds": [0.0], "m_probes": [4], "theta_seconds": [0.0]},
     r"'bias_seconds' must be a finite number >= 0, got 'fast'"),
    ({"bias_seconds": 0.1, "bs_probes": [1], "alpha_seconds": [0.0], "m_probes": [4]},
     r"missing field 'theta_seconds'"),
    ({"bias_seconds": 0.1, "bs_probes": 1, "alpha_seconds": [0.0], "m_probes": [4], "theta_seconds": [0.0]},
     r"'bs_probes' must be a non-empty list of numbers, got 1"),
]


@pytest.mark.parametrize("table, match", BAD)
def test_bad_tables_get_one_line_naming_the_field(tmp_path, table, match):
    path = tmp_path / "sps.json"
    path.write_text(json.dumps(table).replace("NaN", "NaN"))
    with pytest.raises(ValueError, match=match) as info:
        read_sglang_table(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    # the CLI: one line on stderr, exit 1, no traceback
    r = CliRunner().invoke(main, ["simulate", "--trace", "chat", "--max-requests", "5", "--profile", str(path),
                                  "--no-progress", "-o", str(tmp_path / "out")])
    assert r.exit_code == 1 and "Traceback" not in r.output and str(path) in r.output


def test_cli_exports_both_formats_and_simulates_them(tmp_path):
    runner = CliRunner()
    add, sps, vl = tmp_path / "add.json", tmp_path / "sps.json", tmp_path / "vllm.json"
    r = runner.invoke(main, ["profile", "export", ROOF, "--to", "sglang-additive", "--context", "2048", "-o", str(add)])
    assert r.exit_code == 0, r.output
    assert "additive fit:" in r.output and "max" in r.output
    assert set(json.loads(add.read_text())) == {"bias_seconds", "bs_probes", "alpha_seconds", "m_probes", "theta_seconds"}
    r = runner.invoke(main, ["profile", "export", ROOF, "--to", "sglang-sps", "--context", "2048", "--requests", "32",
                             "-o", str(sps)])
    assert r.exit_code == 0, r.output
    assert set(json.loads(sps.read_text())) == {"sample_batch_tokens", "sample_steps_per_sec", "max_batch_tokens"}
    r = runner.invoke(main, ["profile", "export", ROOF, "--to", "vllm", "--context", "8192", "-o", str(vl)])
    assert r.exit_code == 0, r.output
    v = json.loads(vl.read_text())
    assert all(math.isfinite(ms) for _, ms in v["verify_curve"]) and v["draft_curve"]
    for table in (add, sps):
        r = runner.invoke(main, ["simulate", "--trace", "chat", "--max-requests", "40", "--profile", str(table),
                                 "--no-progress", "-o", str(tmp_path / f"run-{table.stem}")])
        assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["profile", "export", ROOF, "--to", "sglang-sps", "--context", "-5", "-o", str(sps)])
    assert r.exit_code == 2 and "--context must be a finite length >= 0" in r.output  # a usage error
    r = runner.invoke(main, ["profile", "export", str(tmp_path / "none.json"), "--to", "vllm", "--context", "1",
                             "-o", str(vl)])
    assert r.exit_code == 1 and "none.json" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["profile", "export", ROOF, "--to", "vllm", "--context", "8192", "-q", "-o", str(vl)])
    assert r.exit_code == 0 and r.output == ""
