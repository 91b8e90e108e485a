"""examples/engine_loop.py runs from a fresh checkout, on the public API, and stays lossless.

The `--check` mode decodes greedily in float64 and compares the speculative output token for token
with plain greedy decoding of the same target: any mistake in scheduling, verification or KV
rollback shows up as a mismatch (the script exits non-zero).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import sparksched

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "engine_loop.py"


def _run(*args: str) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--device", "cpu", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.parametrize("policy", ["sync", "async"])
def test_engine_loop_greedy_equals_plain_decoding(policy):
    out = _run("--check", "--policy", policy, "--tokens", "24", "--requests", "3")
    assert "equals plain greedy decoding" in out
    assert "verified" in out


def test_engine_loop_sampling_runs():
    out = _run("--tokens", "16", "--requests", "2")
    assert "tokens/step" in out


def test_engine_loop_uses_only_the_public_api():
    """sparksched imports in the example: names from `sparksched` itself must be public; model
    loading goes through `sparksched.models` / `sparksched.training` (the bundled checkpoints)."""
    tree = ast.parse(EXAMPLE.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sparksched"):
            if node.module == "sparksched":
                assert {a.name for a in node.names} <= set(sparksched.__all__)
            else:
                assert node.module.split(".")[1] in {"models", "training"}, node.module
