"""scripts/gpu_check.sh: the CPU dry run runs every step of the GPU check and writes every result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _run(*args: str, out: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", str(SCRIPT), *args, "--out", str(out)], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


def test_dry_run_passes_and_writes_every_result(tmp_path):
    out = tmp_path / "check"
    tar = tmp_path / "check.tar.gz"
    proc = _run("--dry-run", "--tar", str(tar), out=out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for name in ("env.txt", "steps.txt", "summary.txt", "greedy.json", "profile.json", "roofline-vs-measured.json",
                 "speed.json", "schedule.json", "cuda-tests.log"):
        assert (out / name).is_file(), name
    assert tar.is_file() and tar.stat().st_size > 0
    steps = (out / "steps.txt").read_text()
    for step in ("cuda-tests", "greedy", "profile", "profile-check", "profile-compare", "speed", "schedule",
                 "engine-loop"):
        assert f"== {step}:" in steps, step
    assert "rc=0" in steps and "rc=1" not in steps
    greedy = json.loads((out / "greedy.json").read_text())["greedy"]
    assert all(v["identical"] == v["sequences"] > 0 for v in greedy.values())
    speed = json.loads((out / "speed.json").read_text())
    assert [(r["batch"], r["mode"]) for r in speed["rows"]] == [(1, "static"), (2, "static"), (2, "continuous")]
    assert speed["device"] == "cpu"
    assert json.loads((out / "schedule.json").read_text())["graph_us"] is None  # no graph on CPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_negative_control_real_run_without_cuda_stops_at_preflight(tmp_path):
    proc = _run(out=tmp_path / "check", timeout=120)
    assert proc.returncode == 1
    assert "no CUDA device visible" in (tmp_path / "check" / "env.txt").read_text()
    assert not (tmp_path / "check" / "profile.json").exists()


def test_unknown_argument_is_a_usage_error(tmp_path):
    proc = _run("--fast", out=tmp_path / "check", timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "gpu_check.sh: unknown argument '--fast' (see --help)"
