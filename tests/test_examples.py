"""examples/engine_loop.py runs from a fresh checkout, on the public API, and stays lossless.

The `--check` mode decodes greedily in float64 and compares the speculative output token for token
with plain greedy decoding of the same target: any mistake in scheduling, verification or KV
rollback shows up as a mismatch (the script exits non-zero). One run goes through a subprocess,
exactly as a user runs it; the others import the script and call `run` (cheaper).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sparksched
from sparksched import read_rounds
from sparksched.models.decoder import KVCache

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "engine_loop.py"


def _module():
    spec = importlib.util.spec_from_file_location("engine_loop", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def test_engine_loop_script_runs_checks_and_records(tmp_path):
    rounds = tmp_path / "rounds.jsonl"
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--device", "cpu", "--check", "--policy", "async",
                           "--tokens", "24", "--requests", "3", "--record", str(rounds)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "equals plain greedy decoding" in proc.stdout
    r = read_rounds(rounds)
    m = re.search(r"DSpark drafter \(g = (\d+)\)", proc.stdout)    # a bundled drafter sets its own g
    block = int(m.group(1)) if m else 5
    assert r.conf.shape[1] == block and (r.accepted <= r.verified).all() and (r.verified <= r.drafted).all()


@pytest.mark.parametrize("drafter", ["toy", "dspark"])
def test_sync_greedy_equals_plain_decoding_and_rejects_some_drafts(drafter):
    """Both model paths: the toy self-drafter, and the DSpark drafter API (its context cache rolls
    back by length like the target's KV cache; the bundled checkpoint when present)."""
    mod = _module()
    torch.set_num_threads(1)
    res = mod.run(requests=3, new_tokens=24, policy="sync", greedy=True, dtype=torch.float64, drafter=drafter)
    assert res["tokens"] == mod.plain_greedy(res["target"], res["prompts"], 24)
    assert res["accepted"] < res["verified"]             # rollback after a rejection is exercised


def _fake_bundle(directory: Path) -> Path:
    """A checkpoint directory in the bundled layout with random (untrained) tiny models."""
    import shutil

    from sparksched.models.decoder import build_decoder
    from sparksched.models.drafter import DrafterConfig, build_drafter
    from sparksched.models.presets import get_preset
    from sparksched.training.checkpoint import BUNDLED, save_drafter, save_target

    target = build_decoder(get_preset("tiny"), seed=1)
    save_target(target, directory / "target.pt")
    save_drafter(build_drafter(DrafterConfig(block=4, target_layers=(0, 1)), target, seed=2),
                 directory / "drafter-markov.pt")
    shutil.copy(BUNDLED / "tokenizer.json", directory / "tokenizer.json")
    return directory


def test_checkpoint_path_loads_tokenizer_target_and_drafter(tmp_path):
    """The path the bundled checkpoints take (load_bundle, real-text prompts, the drafter's own block)."""
    mod = _module()
    torch.set_num_threads(1)
    res = mod.run(requests=2, new_tokens=12, greedy=True, dtype=torch.float64,
                  checkpoints=str(_fake_bundle(tmp_path)))
    assert "DSpark drafter (g = 4)" in res["models"] and res["tokenizer"] is not None
    assert res["tokens"] == mod.plain_greedy(res["target"], res["prompts"], 12)
    assert res["tokenizer"].decode(res["prompts"][0].tolist()).endswith("def fibonacci(n):\n    ")


def test_negative_control_a_broken_rollback_is_caught():
    """Advancing the cache by one token too many must break the equality the check relies on."""
    mod = _module()
    torch.set_num_threads(1)
    original = KVCache.advance

    def leaky(self, counts):
        original(self, counts + (counts > 1).long())

    KVCache.advance = leaky
    try:
        res = mod.run(requests=2, new_tokens=16, policy="sync", greedy=True, dtype=torch.float64, drafter="toy")
    finally:
        KVCache.advance = original
    assert res["tokens"] != mod.plain_greedy(res["target"], res["prompts"], 16)


def test_sampling_runs():
    res = _module().run(requests=2, new_tokens=12, policy="async")
    assert all(len(t) == 12 for t in res["tokens"])


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
