"""Synthetic and recorded acceptance models: Figure 2 / Table 1 anchors, confidence quality, streams."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.acceptance import (
    DOMAINS,
    ECE_RAW,
    FIGURE2,
    TABLE1_QWEN3_4B,
    SyntheticAcceptance,
    build_preset,
    conditional_rates,
    expected_accepted_length,
)
from simulator.backend import Requests
from simulator.recorded import RecordedAcceptance
from sparksched.calibration import expected_calibration_error
from sparksched.calibration import roc_auc as _roc_auc
from sparksched.rounds import RoundsWriter, read_rounds


def requests(idx, domain="chat", output=10_000):
    idx = np.asarray(idx, dtype=np.int64)
    return Requests(idx, [f"r{i}" for i in idx], [domain] * idx.size, np.full(idx.size, 100),
                    np.full(idx.size, output), np.zeros(idx.size, dtype=np.int64))


def rollout(backend, n, rounds, g, domain="chat", offset=0):
    """Verify-all rounds for n requests: conf [R, n, g], accepted [R, n]."""
    slots = np.arange(n)
    backend.join(slots, requests(np.arange(n) + offset, domain))
    confs, accs = [], []
    for _ in range(rounds):
        d = backend.draft(slots, g)
        confs.append(d.conf)
        accs.append(backend.verify(slots, np.full(n, g)).accepted)
    backend.leave(slots)
    return np.stack(confs), np.stack(accs)


@pytest.mark.parametrize("family", ["dspark", "dflash", "eagle3"])
def test_presets_land_on_the_papers_accepted_lengths(family):
    for domain in DOMAINS:
        want = np.mean(list(TABLE1_QWEN3_4B[family][domain].values()))  # the domain's macro average
        assert abs(expected_accepted_length(family, domain, 7) - want) < 0.1
        assert expected_accepted_length(family, domain, 7) == pytest.approx(
            1 + np.cumprod(FIGURE2[(family, domain)]).sum())


@pytest.mark.parametrize("family,domain", [("dspark", "chat"), ("eagle3", "chat"), ("dflash", "math")])
def test_sampled_rounds_reproduce_figure2(family, domain):
    b = SyntheticAcceptance(family, 7, 1500, seed=1)
    _, acc = rollout(b, 1500, 12, 7, domain)
    tau = (acc + 1).mean()
    assert tau == pytest.approx(expected_accepted_length(family, domain, 7), abs=0.06)
    trials = np.array([(acc >= k - 1).sum() for k in range(1, 8)])
    rates = np.array([(acc >= k).sum() for k in range(1, 8)]) / trials
    want = conditional_rates(family, domain, 7)
    assert np.all(np.abs(rates - want) < 4 * np.sqrt(want * (1 - want) / trials) + 0.005)


def test_mtp1_and_long_blocks():
    assert expected_accepted_length("mtp1", "chat", 1) == pytest.approx(1.85)
    assert expected_accepted_length("mtp1", "math", 1, mtp1_acceptance=0.6) == pytest.approx(1.6)
    r = conditional_rates("dspark", "code", 10)
    assert r.size == 10 and r[7] == r[6] == FIGURE2[("dspark", "code")][6]
    assert conditional_rates("dspark", "unknown-domain", 7).tolist() == list(FIGURE2[("dspark", "chat")])


@pytest.mark.parametrize("auc,ece", [(0.85, 0.01), (0.81, 0.01), (0.9, ECE_RAW)])
def test_confidence_hits_target_auc_and_calibration(auc, ece):
    b = SyntheticAcceptance("dspark", 7, 2000, seed=2, auc=auc, ece=ece)
    conf, acc = rollout(b, 2000, 6, 7, "code")
    k = np.arange(1, 8)[None, None, :]
    alive = acc[..., None] >= k - 1
    label = (acc[..., None] >= k)[alive]
    c = conf[alive]
    assert _roc_auc(c, label) == pytest.approx(auc, abs=0.015)
    assert expected_calibration_error(c, label) == pytest.approx(ece, abs=0.01)
    # negative control: a confidence that ignores the token (a constant) has no discrimination
    assert _roc_auc(np.full(c.size, 0.7) + 1e-9 * np.arange(c.size), label) == pytest.approx(0.5, abs=0.02)


def test_unreachable_auc_is_an_error():
    with pytest.raises(ValueError, match="conf_auc 0.999 is outside"):
        build_preset("dspark", "chat", 7, auc=0.999)


def test_streams_do_not_depend_on_batch_composition():
    a = SyntheticAcceptance("dspark", 7, 8, seed=5)
    conf_a, acc_a = rollout(a, 3, 40, 7, "chat")  # requests 0, 1, 2 together in slots 0..2
    b = SyntheticAcceptance("dspark", 7, 8, seed=5)
    slots = np.array([6])
    b.join(slots, requests([1], "chat"))  # request 1 alone, another slot, verifying less each round
    got_c, got_a = [], []
    for t in range(40):
        got_c.append(b.draft(slots, 7).conf[0])
        got_a.append(b.verify(slots, np.array([t % 8])).accepted[0])
    np.testing.assert_array_equal(np.stack(got_c), conf_a[:, 1])
    np.testing.assert_array_equal(np.asarray(got_a), np.minimum(acc_a[:, 1], np.arange(40) % 8))
    c = SyntheticAcceptance("dspark", 7, 8, seed=6)
    assert not np.array_equal(rollout(c, 3, 40, 7, "chat")[0], conf_a)


def test_negative_control_shared_generator_depends_on_batch():
    """A model drawing from one shared stream gives request 1 different numbers in another batch."""
    def shared(n_before):
        rng = np.random.default_rng(5)
        rng.random(n_before * 7)  # numbers consumed by other requests first
        return rng.random(7)
    assert not np.array_equal(shared(1), shared(0))


def test_peek_and_advance_equal_draft_and_verify():
    a = SyntheticAcceptance("dflash", 7, 4, seed=3)
    b = SyntheticAcceptance("dflash", 7, 4, seed=3)
    slots = np.array([0, 2])
    for x in (a, b):
        x.join(slots, requests([10, 11], "math", output=300))
    for _ in range(45):  # move into the stream, so the peek crosses a 64-round chunk boundary
        for x in (a, b):
            x.draft(slots, 7)
            x.verify(slots, np.full(2, 7))
    short_conf, short_lead = a.peek(slots, 5, 7)
    assert short_conf.shape == (5, 2, 7) and short_lead.shape == (5, 2)
    conf, lead = a.peek(slots, 32, 7)
    np.testing.assert_array_equal(conf[:5], short_conf)
    for t in range(32):
        np.testing.assert_array_equal(b.draft(slots, 7).conf, conf[t])
        np.testing.assert_array_equal(b.verify(slots, np.full(2, 7)).accepted, lead[t])
    a.advance(slots, 32)
    np.testing.assert_array_equal(a.draft(slots, 7).conf, b.draft(slots, 7).conf)


def test_preempted_request_resumes_its_stream():
    a = SyntheticAcceptance("dspark", 7, 4, seed=9)
    conf_a, _ = rollout(a, 1, 20, 7, "chat")
    b = SyntheticAcceptance("dspark", 7, 4, seed=9)
    b.join(np.array([0]), requests([0]))
    first = b.draft(np.array([0]), 7).conf[0]
    b.verify(np.array([0]), np.array([7]))
    b.leave(np.array([0]))
    b.join(np.array([3]), requests([0]))  # rejoins in another slot after a preemption
    rest = []
    for _ in range(19):
        rest.append(b.draft(np.array([3]), 7).conf[0])
        b.verify(np.array([3]), np.array([7]))
    np.testing.assert_array_equal(first, conf_a[0, 0])
    np.testing.assert_array_equal(np.stack(rest), conf_a[1:, 0])


def test_recorded_model_refits_a_synthetic_recording(tmp_path):
    src = SyntheticAcceptance("dspark", 7, 600, seed=4)
    conf, acc = rollout(src, 600, 10, 7, "code")
    path = tmp_path / "rounds.jsonl"
    with RoundsWriter(path) as w:
        for t in range(conf.shape[0]):
            w.add([f"r{i}" for i in range(600)], t, "code", conf[t], np.full(600, 7), np.full(600, 7), acc[t])
    rounds = read_rounds(path)
    assert len(rounds) == 6000 and rounds.block == 7
    rec = RecordedAcceptance(rounds, 7, 600, seed=1, source="rounds.jsonl")
    conf2, acc2 = rollout(rec, 600, 10, 7, "code")
    assert (acc2 + 1).mean() == pytest.approx((acc + 1).mean(), abs=0.12)
    k = np.arange(1, 8)[None, None, :]
    alive = acc2[..., None] >= k - 1
    assert _roc_auc(conf2[alive], (acc2[..., None] >= k)[alive]) > 0.75
    with pytest.raises(ValueError, match="block 7; cannot simulate block 9"):
        RecordedAcceptance(rounds, 9, 10)


def test_recorded_model_keeps_the_spread_between_requests(tmp_path):
    """Easy and hard recorded requests: simulated requests inherit a donor's difficulty, so per-request
    acceptance spreads as in the recording; drawing every round from the pool (negative control) does not."""
    rng = np.random.default_rng(0)
    n, rounds_per = 60, 12
    path = tmp_path / "rounds.jsonl"
    with RoundsWriter(path) as w:
        for t in range(rounds_per):
            easy = np.arange(n) % 2 == 0
            conf = np.where(easy[:, None], rng.uniform(0.85, 0.99, (n, 7)), rng.uniform(0.05, 0.3, (n, 7)))
            acc = np.where(easy, 6, 0)
            w.add([f"r{i}" for i in range(n)], t, "chat", conf, np.full(n, 7), np.full(n, 7), acc)
    rounds = read_rounds(path)
    m = 400

    def spread(per_request: bool) -> float:
        rec = RecordedAcceptance(rounds, 7, m, seed=2, per_request=per_request)
        _, acc = rollout(rec, m, 20, 7, "chat")
        return float(acc.mean(axis=0).std())  # spread of per-request mean accepted drafts

    recorded = float(np.asarray([rounds.accepted[rounds.request == f"r{i}"].mean() for i in range(n)]).std())
    assert spread(True) == pytest.approx(recorded, rel=0.15)  # about 3: half the requests easy, half hard
    assert spread(False) < 0.4 * recorded  # rounds drawn independently average the difference away


def test_recorded_model_replays_each_request_s_own_difficulty_with_matching_ids(tmp_path):
    """match_ids: simulated request r{i} takes recorded request r{i} as its donor, so the easy ones are the
    recorded easy ones; a random donor of the domain (negative control) loses which request was which."""
    rng = np.random.default_rng(1)
    n = 40
    easy = rng.random(n) < 0.5
    path = tmp_path / "rounds.jsonl"
    with RoundsWriter(path) as w:
        for t in range(12):
            conf = np.where(easy[:, None], rng.uniform(0.85, 0.99, (n, 7)), rng.uniform(0.05, 0.3, (n, 7)))
            w.add([f"r{i}" for i in range(n)], t, "chat", conf, np.full(n, 7), np.full(n, 7), np.where(easy, 6, 0))
    rounds = read_rounds(path)

    def per_request(match: bool) -> np.ndarray:
        rec = RecordedAcceptance(rounds, 7, n, seed=3, match_ids=match)
        return rollout(rec, n, 20, 7, "chat")[1].mean(axis=0)

    own = per_request(True)
    assert np.all(own[easy] > 4) and np.all(own[~easy] < 1)
    other = per_request(False)
    assert np.mean((other > 3) != easy) > 0.25  # about half the requests get another one's difficulty
    # unknown ids fall back to a random donor of the domain
    rec = RecordedAcceptance(rounds, 7, n, seed=3, match_ids=True)
    acc = rollout(rec, n, 20, 7, "chat", offset=1000)[1].mean(axis=0)
    assert 0.2 < np.mean(acc > 3) < 0.8
    with pytest.raises(ValueError, match="match_ids needs per_request"):
        RecordedAcceptance(rounds, 7, n, match_ids=True, per_request=False)


def test_recorded_model_replays_what_the_verifier_saw(tmp_path):
    """Two domains with the same confidences, one always accepted, one always rejected: replaying the recorded
    outcomes keeps each domain's acceptance; drawing every draft from the (pooled) confidence maps, the
    negative control, gives both the same middling acceptance. A recording that verified only 2 drafts
    leaves the rest to the maps."""
    rng = np.random.default_rng(2)
    n = 40
    dom = np.where(np.arange(n) % 2 == 0, "chat", "code")
    path = tmp_path / "rounds.jsonl"
    with RoundsWriter(path) as w:
        for t in range(10):
            conf = rng.uniform(0.85, 0.95, (n, 7))
            w.add([f"r{i}" for i in range(n)], t, dom.tolist(), conf, np.full(n, 7), np.full(n, 7),
                  np.where(dom == "chat", 7, 0))
    rounds = read_rounds(path)
    for outcomes, chat, code in ((True, 7.0, 0.0), (False, None, None)):
        rec = RecordedAcceptance(rounds, 7, 50, seed=1, outcomes=outcomes)
        a_chat = rollout(rec, 50, 10, 7, "chat")[1].mean()
        a_code = rollout(rec, 50, 10, 7, "code", offset=100)[1].mean()
        if outcomes:
            assert (a_chat, a_code) == (chat, code)
        else:
            assert abs(a_chat - a_code) < 0.5 and 1.5 < a_code < 5.5  # half fail draft 1, then all pass
    # censored: verified 2 of 7, both accepted; drafts 3..7 come from the maps fitted on drafts 1..2 (always
    # accepted at these confidences), so the simulated lead is 7 when all are verified
    with RoundsWriter(path) as w:
        for t in range(30):
            w.add([f"r{i}" for i in range(n)], t, "chat", rng.uniform(0.85, 0.95, (n, 7)), np.full(n, 7),
                  np.full(n, 2), np.full(n, 2))
    rec = RecordedAcceptance(read_rounds(path), 7, 50, seed=1)
    assert rollout(rec, 50, 10, 7, "chat")[1].mean() == 7.0


def test_rounds_file_errors_name_file_line_and_field(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"request": "a", "step": 0, "domain": "chat", "conf": [0.5, 0.4], "drafted": 2, '
                 '"verified": 2, "accepted": 1}\n'
                 '{"request": "a", "step": 1, "domain": "chat", "conf": [0.5, 0.4], "drafted": 2, '
                 '"verified": 1, "accepted": 2}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: line 2: field 'accepted'"):
        read_rounds(p)
    out = tmp_path / "never.jsonl"
    with pytest.raises(ValueError), RoundsWriter(out) as w:
        w.add(["a"], 0, "chat", [[1.5]], [1], [1], [0])
    assert not out.exists()
    pq = tmp_path / "ok.parquet"
    with RoundsWriter(pq) as w:
        w.add(["a", "b"], 3, ["chat", "code"], [[0.9, 0.5], [0.2, 0.1]], [2, 1], [2, 1], [1, 0])
    r = read_rounds(pq)
    assert r.domain.tolist() == ["chat", "code"] and r.conf.shape == (2, 2) and r.accepted.tolist() == [1, 0]
