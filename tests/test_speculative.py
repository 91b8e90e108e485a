"""The real loop: greedy speculative == plain greedy token for token; sampled tokens follow the
target's law (chi-square against exact probabilities, with an anticipating policy as negative control);
per-request randomness; recorded rounds in the simulator's format."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import TINY_DECODER
from scipy import stats

from sparksched.curve import ThroughputCurve
from sparksched.models.decoder import build_decoder
from sparksched.models.drafter import DrafterConfig, build_drafter
from sparksched.rounds import read_rounds, write_rounds
from sparksched.speculative import (
    SpeculativeDecoder,
    autoregressive_generate,
    generate,
    make_policy,
    measure_loop_price,
    rounds_rows,
    serve,
)
from sparksched.training.checkpoint import BUNDLED

V = 16
CFG = replace(TINY_DECODER, vocab_size=V)



pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _models(seed: int = 0, sharp: float = 40.0, head: str = "markov"):
    target = build_decoder(CFG, dtype=torch.float64, seed=seed)
    with torch.no_grad():
        target.lm_head.weight.mul_(sharp)  # peaked next-token laws: some drafts accepted, some rejected
    drafter = build_drafter(DrafterConfig(block=4, head=head, rank=4, heads=2, kv_heads=1, head_dim=16,
                                          intermediate=64), target, seed=seed + 1)
    with torch.no_grad():
        drafter.w1.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(3))
        if drafter.w2 is not None:
            drafter.w2.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(4))
    return target, drafter


PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10]]
CURVE = ThroughputCurve.from_points([1, 4, 8, 16, 32], [1.0, 1.1, 1.3, 1.8, 3.0])


@pytest.mark.parametrize("policy, head", [("verify-all", "markov"), ("static-2", "markov"), ("dspark", "markov"),
                                          ("threshold-0.3", "markov"), ("conf-threshold-0.4", "markov"),
                                          ("none", "markov"), ("verify-all", "rnn"), ("dspark", "none")])
def test_greedy_speculative_equals_greedy(policy, head):
    target, drafter = _models(head=head)
    ar = autoregressive_generate(target, PROMPTS, 30, greedy=True)
    sp = generate(target, drafter, PROMPTS, 30, policy, curve=CURVE, greedy=True)
    assert sp.tokens == ar.tokens
    if policy == "verify-all":
        acc = np.concatenate([r.accepted for r in sp.rounds])
        assert acc.min() == 0 and acc.max() > 0  # both rejections (rollback) and acceptances happened


def test_greedy_negative_control_without_rollback():
    """If the cache advanced over rejected drafts (no rollback), the output would differ."""
    target, drafter = _models()
    ar = autoregressive_generate(target, PROMPTS, 30, greedy=True)
    dec = SpeculativeDecoder(target, drafter, 3, 256, greedy=True)
    out = [[t] for t in dec.prefill(range(3), PROMPTS, range(3))]
    slots = np.arange(3)
    while min(map(len, out)) < 30:
        d, _ = dec.draft(slots)
        lengths = np.full(3, 4)
        acc, em, _ = dec.verify(slots, lengths)
        dec.cache.lengths += torch.as_tensor(lengths - acc)  # the bug: keep rejected positions
        dec.ctx.lengths += torch.as_tensor(lengths - acc)
        for i in range(3):
            out[i].extend(em[i])
    assert [o[:30] for o in out] != ar.tokens


@pytest.mark.skipif(not (BUNDLED / "drafter-markov.pt").exists(), reason="bundled checkpoints not built")
def test_bundled_greedy_identical():
    from sparksched.training.checkpoint import load_bundle

    tok, target, drafter = load_bundle(head="markov", dtype=torch.float64)
    prompts = [tok.encode(t).ids for t in ["def parse(self, text):\n    ", "Question: Maya has 12 books.",
                                            "Return the number of"]]
    ar = autoregressive_generate(target, prompts, 40, greedy=True)
    sp = generate(target, drafter, prompts, 40, "verify-all", greedy=True)
    assert sp.tokens == ar.tokens
    assert sp.accepted_per_round() > 0.3


def _first_tokens(target, drafter, n, policy, seed=0, rounds=2):
    """First two decode tokens after a fixed prompt + anchor, for n independent requests."""
    dec = SpeculativeDecoder(target, drafter, n, 32, seed=seed)
    prompt, anchor = [3, 1, 4, 1, 5], 9
    dec.prefill([0], [prompt], [0], anchors=[anchor])
    for name in ("k", "v"):  # every row starts from the same prefilled context
        getattr(dec.cache, name)[:, 1:] = getattr(dec.cache, name)[:, :1]
        getattr(dec.ctx, name)[:, 1:] = getattr(dec.ctx, name)[:, :1]
    dec.cache.lengths[:] = len(prompt)
    dec.ctx.lengths[:] = len(prompt)
    dec.anchor[:] = anchor
    from sparksched.speculative import request_generator
    dec.gens = [request_generator(seed, i) for i in range(n)]
    out = [[] for _ in range(n)]
    slots = np.arange(n)
    for _ in range(rounds):
        r = dec.step(slots, lambda c: policy(c, dec))
        for i in range(n):
            out[i].extend(r.emitted[i])
    return np.array([o[:2] for o in out]), prompt + [anchor]


def _exact(target, context):
    with torch.no_grad():
        p1 = torch.softmax(target(torch.tensor([context])).logits[0, -1], -1)
        ctxs = torch.tensor([context + [a] for a in range(V)])
        p2 = torch.softmax(target(ctxs).logits[:, -1], -1)  # [V, V]: p(b | a)
    return p1.numpy(), (p1[:, None] * p2).sum(0).numpy()


def _pvalue(samples, probs):
    counts = np.bincount(samples, minlength=V)
    exp = probs * samples.size
    big = exp >= 5
    obs = np.append(counts[big], counts[~big].sum())
    e = np.append(exp[big], exp[~big].sum())
    keep = e > 0
    o, e = obs[keep], e[keep] * obs[keep].sum() / e[keep].sum()
    return float(stats.chi2.sf(((o - e) ** 2 / e).sum(), o.size - 1))


def test_sampled_tokens_follow_target_law():
    target, drafter = _models(seed=2, sharp=15.0)
    policies = {"verify-all": lambda c, d: np.full(c.shape[0], c.shape[1]),
                "dspark": lambda c, d: make_policy("dspark", CURVE)(c)}
    for name, pol in policies.items():
        toks, ctx = _first_tokens(target, drafter, 3000, pol)
        p1, p2 = _exact(target, ctx)
        assert _pvalue(toks[:, 0], p1) > 1e-3, name
        assert _pvalue(toks[:, 1], p2) > 1e-3, name
    # negative control: verify x_1 only when it is the drafter's favourite (the policy peeks at x_1)
    def peeking(c, dec):
        d = dec._pending[1]
        fav = d.probs[:, 0].argmax(-1)
        return (d.tokens[:, 0] == fav).numpy().astype(np.int64)
    toks, ctx = _first_tokens(target, drafter, 3000, peeking)
    p1, _ = _exact(target, ctx)
    assert _pvalue(toks[:, 0], p1) < 1e-6


def test_request_independent_of_batch():
    target, drafter = _models(seed=4, sharp=10.0)
    dec = SpeculativeDecoder(target, drafter, 3, 64, seed=11)
    dec.prefill(range(3), PROMPTS, [7, 8, 9])
    batch = [dec.step(np.arange(3), make_policy("verify-all")).emitted for _ in range(4)]
    solo = SpeculativeDecoder(target, drafter, 1, 64, seed=11)
    solo.prefill([0], PROMPTS[1:2], [8])
    alone = [solo.step(np.arange(1), make_policy("verify-all")).emitted for _ in range(4)]
    assert [b[1] for b in batch] == [a[0] for a in alone]


def test_rounds_rows_in_recorded_format(tmp_path):
    target, drafter = _models()
    res = generate(target, drafter, PROMPTS, 12, "dspark", curve=CURVE, seed=1)
    rows = rounds_rows(res, ["a", "b", "c"], ["code", "math", "chat"])
    write_rounds(tmp_path / "r.jsonl", rows)
    rec = read_rounds(tmp_path / "r.jsonl")
    assert rec.conf.shape[1] == 4 and len(rec.accepted) == len(rows)
    assert np.all(rec.accepted <= rec.verified)


def test_bad_policy_name():
    with pytest.raises(ValueError, match="policy 'fastest' is not one of"):
        make_policy("fastest")
    with pytest.raises(ValueError, match="needs the price of a step"):
        make_policy("dspark")


def _backend(greedy=True, max_running=4):
    from simulator.model_backend import ModelBackend

    target, drafter = _models(seed=6, sharp=10.0)
    heldout = {"code": np.arange(500) % V, "prose": (np.arange(500) * 3) % V, "math": (np.arange(500) * 7) % V}
    return ModelBackend(target, drafter, None, heldout, max_running, max_len=128, max_prompt=16, seed=0, greedy=greedy)


def _requests(idx, emitted=0):
    from simulator.backend import Requests

    idx = np.asarray(idx, dtype=np.int64)
    m = idx.size
    return Requests(idx, [f"r{i}" for i in idx], ["code"] * m, np.full(m, 12), np.full(m, 40), np.full(m, emitted))


def test_model_backend_preemption_continues_the_sequence():
    """A request preempted and re-admitted in another slot continues exactly where it stopped."""
    plain = _backend()
    plain.join(np.array([1]), _requests([5]))
    for _ in range(8):
        d = plain.draft(np.array([1]), 4)
        plain.verify(np.array([1]), np.full(1, 3))
    straight = plain.history[5][1][:20]

    b = _backend()
    b.join(np.array([2, 0]), _requests([5, 6]))  # non-contiguous slots
    for step in range(8):
        slots = np.array([0, 2]) if step < 3 else np.array([3])
        d = b.draft(slots, 4)
        assert d.conf.shape == (slots.size, 4) and np.all((d.conf >= 0) & (d.conf <= 1))
        v = b.verify(slots, np.full(slots.size, 3))
        assert np.all(v.accepted <= 3) and v.seconds > 0
        if step == 2:  # preempt request 5 (slot 2), resume it in slot 3 behind a new idle request
            b.leave(np.array([2, 0]))
            b.join(np.array([1]), _requests([7]))  # decoder row 0; never stepped below
            b.join(np.array([3]), _requests([5], emitted=len(b.history[5][1])))  # row 1: steps use a copy
    assert b.history[5][1][:20] == straight
    assert len(b.rows) == 2 * 3 + 5 and {r["request"] for r in b.rows} == {"r5", "r6"}
    assert b.n_rows == 2 and b.row_of[3] == 1 and b.row_of[1] == 0


@pytest.mark.skipif(not (BUNDLED / "drafter-markov.pt").exists(), reason="bundled checkpoints not built")
def test_simulate_engine_model_runs_on_bundled_checkpoints(tmp_path):
    from click.testing import CliRunner

    from sparksched.commands.simulate import simulate

    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(f'{{"id": "q{i}", "arrival_s": {0.01 * i}, "prompt_tokens": {20 + i}, '
                             f'"output_tokens": {30 + 5 * i}, "domain": "{d}"}}\n'
                             for i, d in enumerate(["code", "math", "chat"])))
    r = CliRunner().invoke(simulate, ["--engine", "model", "--trace", str(trace), "--max-running", "2",
                                      "--no-progress", "-o", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert "3 finished" in r.output


def test_measure_loop_price_prices_every_padded_pass_and_drives_dspark():
    """The loop's own price: verify seconds at B = n, 2n, .., (g + 1) n (non-decreasing), the drafter's
    seconds apart; the DSpark policy takes it, and greedy decoding through it is still exact."""
    target, drafter = _models()
    price = measure_loop_price(target, drafter, n=3, context=12, repeats=2)
    g = drafter.config.block
    assert price.curve.tokens.tolist() == [3 * t for t in range(1, g + 2)]
    table = price.table(3 * (g + 1))
    assert np.all(np.diff(table[3:]) >= 0) and price.draft_seconds > 0
    assert np.allclose(price.table(3 * (g + 1), draft=False)[3:] + price.draft_seconds, table[3:])
    ar = autoregressive_generate(target, PROMPTS, 20, greedy=True)
    assert generate(target, drafter, PROMPTS, 20, "dspark", curve=price, greedy=True).tokens == ar.tokens


@pytest.mark.parametrize("name", ["conf-threshold-x", "conf-threshold-1.5", "threshold-", "static"])
def test_bad_policy_names_are_one_line_errors(name):
    with pytest.raises(ValueError) as e:
        make_policy(name)
    msg = str(e.value)
    assert "\n" not in msg and (name in msg or "tau must be a number in [0, 1]" in msg)


@pytest.mark.parametrize("policy", ["dspark", "verify-all"])
def test_serve_refills_slots_and_stays_greedy_identical(policy):
    """Continuous batching: 5 requests through 2 slots give each request the tokens plain greedy
    decoding gives it, and every request is served (refilled slots start from clean caches)."""
    target, drafter = _models()
    prompts = PROMPTS + PROMPTS[:2]
    ar = autoregressive_generate(target, prompts, 25, greedy=True)
    sp = serve(target, drafter, prompts, 25, 2, policy, curve=CURVE, greedy=True)
    assert sp.tokens == ar.tokens
    assert max(r.slots.size for r in sp.rounds) == 2 and sp.decode_seconds > 0 and sp.prefill_seconds > 0
    plain = serve(target, None, prompts, 25, 2, greedy=True)
    assert plain.tokens == ar.tokens


def test_serve_negative_control_a_refill_into_the_wrong_slot_is_caught():
    """If a refill landed one slot off (over a request still decoding), the identity above breaks."""
    target, drafter = _models()
    prompts = PROMPTS + PROMPTS[:2]
    ar = autoregressive_generate(target, prompts, 25, greedy=True)
    original = SpeculativeDecoder.prefill
    calls = []

    def off_by_one(self, slots, prompts_, request_ids, *a, **k):
        calls.append(1)
        if len(calls) > 1:  # the refills (the first call fills the empty batch)
            slots = [(s + 1) % len(self.gens) for s in slots]
        return original(self, slots, prompts_, request_ids, *a, **k)

    SpeculativeDecoder.prefill = off_by_one
    try:
        caught = serve(target, drafter, prompts, 25, 2, "verify-all", greedy=True).tokens != ar.tokens
    except ValueError:  # the overwritten request's cache overflows: caught as well
        caught = True
    finally:
        SpeculativeDecoder.prefill = original
    assert caught
