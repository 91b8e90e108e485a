"""STS calibration in SGLang's DSpark JSON format: fit and export here, read SGLang's, apply to rounds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from sparksched.cli import main
from sparksched.rounds import RoundsWriter, read_rounds
from sparksched.sts_io import read_sts_json, sts_document


def _overconfident_rounds(path, factor=3.0, g=5, steps=300, seed=0):
    """Rounds whose confidences are `factor` x too sharp in logit space (STS should find T ~ factor)."""
    rng = np.random.default_rng(seed)
    with RoundsWriter(path) as w:
        for step in range(steps):
            z = rng.normal(1.0, 1.0, (8, g))
            ok = rng.random((8, g)) < 1 / (1 + np.exp(-z))
            accepted = np.where(ok.all(axis=1), g, ok.argmin(axis=1))
            w.add([f"r{i}" for i in range(8)], step, "chat", 1 / (1 + np.exp(-factor * z)), np.full(8, g),
                  np.full(8, g), accepted)
    return path


def test_reads_a_file_written_by_sglang(tmp_path):
    """SGLang's documented keys: temperatures (one per position), dataset, num_samples, ece_before, ece_after."""
    p = tmp_path / "sglang_sts.json"
    p.write_text(json.dumps({"temperatures": [0.9, 1.1, 1.4], "dataset": "sharegpt", "num_samples": 20000,
                             "ece_before": 0.061, "ece_after": 0.012}))
    f = read_sts_json(p)
    assert f.temperatures.tolist() == [0.9, 1.1, 1.4] and f.dataset == "sharegpt" and f.num_samples == 20000
    assert (f.ece_before, f.ece_after) == (0.061, 0.012)


def test_document_round_trip_and_weighted_ece(tmp_path):
    doc = sts_document([1.5, 2.0], dataset="d", num_samples=15, ece_before=[0.1, 0.4], ece_after=[0.05, 0.2],
                       counts=[10, 5])
    assert doc["ece_before"] == pytest.approx(0.2) and doc["ece_after_by_position"] == [0.05, 0.2]
    p = tmp_path / "sts.json"
    p.write_text(json.dumps(doc))
    f = read_sts_json(p)
    assert f.temperatures.tolist() == [1.5, 2.0] and f.ece_before == pytest.approx(0.2)
    assert f.extra["ece_before_by_position"] == [0.1, 0.4]


@pytest.mark.parametrize("doc, needle", [
    ([1.0], "must be a JSON object"),
    ({"dataset": "x"}, "field 'temperatures'"),
    ({"temperatures": [1.0, 0.0]}, "field 'temperatures'"),
    ({"temperatures": [1.0], "num_samples": -2}, "field 'num_samples'"),
    ({"temperatures": [1.0], "ece_before": "low"}, "field 'ece_before'"),
])
def test_bad_sts_files(tmp_path, doc, needle):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=needle):
        read_sts_json(p)


def test_fit_show_apply_through_the_cli(tmp_path):
    rounds = _overconfident_rounds(tmp_path / "rounds.jsonl")
    sts = tmp_path / "sts.json"
    runner = CliRunner()
    res = runner.invoke(main, ["calibration", "fit", str(rounds), "--dataset", "synthetic", "-o", str(sts)])
    assert res.exit_code == 0, res.output
    f = read_sts_json(sts)
    assert f.dataset == "synthetic" and f.num_samples == 2400
    assert np.all(np.abs(f.temperatures[:3] - 3.0) < 0.8)  # the overconfidence factor, recovered
    assert f.ece_after < f.ece_before / 4
    res = runner.invoke(main, ["calibration", "show", str(sts), "--rounds", str(rounds)])
    assert res.exit_code == 0 and "ECE before" in res.output, res.output
    cal = tmp_path / "calibrated.jsonl"
    res = runner.invoke(main, ["calibration", "apply", str(sts), str(rounds), "-o", str(cal)])
    assert res.exit_code == 0, res.output
    assert read_rounds(cal).accepted.tolist() == read_rounds(rounds).accepted.tolist()
    refit = tmp_path / "refit.json"
    assert runner.invoke(main, ["calibration", "fit", str(cal), "-o", str(refit)]).exit_code == 0
    again = read_sts_json(refit).temperatures
    assert np.all(np.abs(again - 1.0) < 0.35)  # calibrated confidences need no further scaling
    # negative control: the raw rounds are far from needing T = 1
    assert not np.all(np.abs(f.temperatures - 1.0) < 0.35)


def test_apply_checks_the_block(tmp_path):
    rounds = _overconfident_rounds(tmp_path / "rounds.jsonl", g=4, steps=5)
    sts = tmp_path / "sts.json"
    sts.write_text(json.dumps({"temperatures": [1.0, 1.0]}))
    res = CliRunner().invoke(main, ["calibration", "apply", str(sts), str(rounds), "-o", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 1 and "does not match" in res.output and not (tmp_path / "o.jsonl").exists()


def test_export_the_bundled_drafter(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "markov.json"
    res = CliRunner().invoke(main, ["calibration", "export", "--head", "markov", "-o", str(out)])
    assert res.exit_code == 0, res.output
    f = read_sts_json(out)
    assert f.temperatures.size == 7 and f.num_samples and f.ece_after <= f.ece_before
