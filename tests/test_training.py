"""Training pipeline on tiny budgets: corpora, tokenizer, target and drafter training, the paper's
losses, checkpoints (atomic, round trip) and the `sparksched train` CLI's error handling."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import TINY_DECODER

from sparksched.commands.train import train
from sparksched.models.decoder import build_decoder
from sparksched.models.drafter import DrafterConfig, build_drafter
from sparksched.training import corpus as C
from sparksched.training.checkpoint import load_drafter, load_target, save_drafter, save_target
from sparksched.training.data import TokenData, sample_windows
from sparksched.training.drafter import block_losses, sample_anchors, total_loss, train_drafter
from sparksched.training.target import train_target
from sparksched.training.tokenizer import train_tokenizer

SRC = '''"""A module docstring that is long enough to be kept as prose for the corpus."""

# A comment paragraph that explains what the next function does,
# spread over two lines so that it forms one block of prose text.
def add(a, b):
    """Return the sum of a and b, a docstring that is long enough to keep."""
    return a + b  # short


class Thing:
    """A class docstring, also long enough to be extracted by the ast walk."""
''' + "\n".join(f"VALUE_{i} = {i}" for i in range(30))

CFG = TINY_DECODER


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def fake_stdlib(tmp_path):
    root = tmp_path / "lib"
    for i, name in enumerate(["a.py", "pkg/b.py", "pkg/c.py", "test/skip.py", "site-packages/x/y.py"]):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(SRC.replace("add", f"add{i}"))
    return root


def test_corpus_domains_split_and_determinism(fake_stdlib):
    files = C.stdlib_files(str(fake_stdlib))
    assert files == ["a.py", "pkg/b.py", "pkg/c.py"]  # tests and site-packages left out
    a = C.build_corpus(max_chars=20_000, seed=1, root=str(fake_stdlib))
    b = C.build_corpus(max_chars=20_000, seed=1, root=str(fake_stdlib))
    assert a == b
    assert all(a.train[d] for d in C.DOMAINS)
    prose = " ".join(a.train["prose"] + a.heldout["prose"])
    assert "module docstring" in prose and "comment paragraph" in prose and "#" not in prose
    assert "short" not in prose  # one-word comments are dropped
    assert C.build_corpus(max_chars=20_000, seed=2, root=str(fake_stdlib)).train["math"] != a.train["math"]


_ATOM = r"(?:\d+|\(\d+ [-+*/] \d+\))"
_TERM = rf"{_ATOM}(?: [-+*/] {_ATOM})*"
CHAIN = re.compile(rf"{_TERM}(?: = {_TERM})+")


def _chains_ok(text: str) -> tuple[int, bool]:
    """(arithmetic chains 'a op b = c = ...' found, all of them true)."""
    found, ok = 0, True
    for chain in CHAIN.findall(text):
        vals = [eval(part.strip().replace("/", "//")) for part in chain.split(" = ")]  # noqa: S307 (digits only)
        found += 1
        ok &= len(set(vals)) == 1
    return found, ok


def test_math_answers_are_correct():
    checked = 0
    for p in C.math_problems(300, seed=0):
        n, ok = _chains_ok(p)
        assert ok, p
        checked += n
    assert checked >= 300
    # negative control: the same check catches a wrong worked answer
    bad = "Answer: Together they have 12 + 30 = 43 apples."
    assert _chains_ok(bad) == (1, False)


def test_tokenizer_round_trip():
    texts = ["def f(x):\n    return x * 2\n", "Question: Ana has 3 apples. Answer: 3 + 4 = 7.", "ünïcødé ✓"] * 20
    tok = train_tokenizer(texts, vocab_size=300)
    assert tok.get_vocab_size() <= 300 and tok.token_to_id("<|endoftext|>") == 0
    for t in texts[:3] + ["never seen: ∑ λ 🙂"]:
        assert tok.decode(tok.encode(t).ids) == t


def _data(seed=0, n=4000):
    rng = np.random.default_rng(seed)
    # a learnable stream: token t+1 = (t * 5 + 3) % 64 most of the time
    s = [1]
    for _ in range(n):
        s.append((s[-1] * 5 + 3) % 64 if rng.random() < 0.9 else int(rng.integers(64)))
    s = np.array(s)
    return TokenData({"code": s, "math": s[::-1].copy()}, {"code": s[:500], "math": s[500:1000]})


def test_train_target_learns_and_is_seeded():
    data = _data()
    m1, log1 = train_target(CFG, data, steps=30, batch=8, length=32, lr=1e-2, seed=3)
    _, log2 = train_target(CFG, data, steps=30, batch=8, length=32, lr=1e-2, seed=3)
    assert log1.losses == log2.losses
    assert np.mean(log1.losses[-5:]) < np.mean(log1.losses[:5]) - 0.5
    assert set(log1.heldout) == {"code", "math"} and all(math.isfinite(v) and v > 1 for v in log1.heldout.values())


def test_block_losses_match_the_paper():
    target = build_decoder(CFG, seed=1)
    drafter = build_drafter(DrafterConfig(block=4, rank=8, heads=2, kv_heads=1, head_dim=16, intermediate=64), target)
    x = sample_windows(_data().train, 2, 24, np.random.default_rng(0))
    anc = sample_anchors(2, 24, 4, 3, np.random.default_rng(1))
    assert anc.min() >= 1 and anc.max() <= 24 - 4 - 1
    t = block_losses(drafter, target, x, anc)
    # recompute by hand for block (0, 0)
    a = int(anc[0, 0])
    with torch.no_grad():
        out = target(x, hidden_layers=drafter.target_layers)
        bb = drafter.train_forward(x, out.hidden, anc)
        one = type(bb)(bb.base_logits[0:1, 0], bb.hidden[0:1, 0])  # [1, g, V], [1, g, w]
        logits, _ = drafter.score(one, x[0:1, a:a + 4])
    q = torch.softmax(logits[0], -1)
    p = torch.softmax(out.logits[0, a:a + 4], -1)
    l1 = (q - p).abs().sum(-1)
    torch.testing.assert_close(t["label"][0, 0], (1 - 0.5 * l1).clamp(0, 1), atol=1e-5, rtol=1e-5)
    w = torch.exp(-torch.arange(4.0) / 4)
    assert torch.isclose(w[0], torch.tensor(1.0)) and torch.isclose(w[3], torch.exp(torch.tensor(-0.75)))
    terms = {k: t[k] for k in ("ce", "tv", "conf")}
    torch.testing.assert_close(total_loss(t), 0.1 * terms["ce"] + 0.9 * terms["tv"] + 1.0 * terms["conf"])
    assert bool(((t["alpha"] >= 0) & (t["alpha"] <= 1)).all())


def test_train_drafter_improves_acceptance():
    data = _data(1)
    target, _ = train_target(CFG, data, steps=40, batch=8, length=32, lr=1e-2, seed=0)
    cfg = DrafterConfig(block=4, rank=8, heads=2, kv_heads=1, head_dim=16, intermediate=64)
    d0, log0 = train_drafter(target, cfg, data, steps=1, batch=8, length=32, anchors=4, seed=0)
    d1, log1 = train_drafter(target, cfg, data, steps=40, batch=8, length=32, anchors=4, lr=5e-3, seed=0)
    assert np.mean(log1.losses[-5:]) < log1.losses[0]
    assert np.mean(list(log1.heldout.values())) > np.mean(list(log0.heldout.values()))
    assert not any(p.requires_grad for p in target.parameters())  # the target stayed frozen


def test_checkpoint_round_trip(tmp_path):
    target = build_decoder(CFG, seed=5)
    save_target(target, tmp_path / "t.pt", meta={"x": 1})
    back = load_target(tmp_path / "t.pt")
    toks = torch.randint(0, 64, (1, 9))
    torch.testing.assert_close(back(toks).logits, target(toks).logits, atol=2e-2, rtol=2e-2)  # fp16 storage
    d = build_drafter(DrafterConfig(block=3, head="rnn", rank=8, heads=2, kv_heads=1, head_dim=16, intermediate=64),
                      back, seed=2)
    d.sts_temps.fill_(1.7)
    save_drafter(d, tmp_path / "d.pt")
    d2 = load_drafter(tmp_path / "d.pt", back)
    assert d2.config == d.config and torch.allclose(d2.sts_temps, d.sts_temps)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.pt", "t.pt"]  # no temp files left
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_target(tmp_path / "bad.pt")


def test_cli_errors_are_one_line(tmp_path):
    r = CliRunner().invoke(train, ["drafter", "--out", str(tmp_path / "empty")])
    assert r.exit_code != 0 and "Traceback" not in r.output and "train target" in r.output
    r = CliRunner().invoke(train, ["drafter", "--out", str(tmp_path), "--head", "lstm"])
    assert r.exit_code != 0 and "lstm" in r.output
    assert not any(tmp_path.iterdir())
