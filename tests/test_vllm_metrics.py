"""result.json: vLLM bench serve's keys, consistent with the run's own Parquet tables and with vLLM's rules."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.config import SimConfig
from simulator.run import simulate
from simulator.vllm_metrics import (
    bench_result,
    good_requests,
    parse_goodput,
    peak_concurrency,
    percentile_word,
    spec_decode_counters,
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    res = simulate("chat", SimConfig(max_requests=150, goodput="ttft:150 tpot:4 e2el:2000", seed=3))
    res.write(out)
    return out


def _tables(d):
    return (pl.read_parquet(d / "requests.parquet"), pl.read_parquet(d / "steps.parquet"),
            pl.read_parquet(d / "rounds.parquet"), json.loads((d / "result.json").read_text()))


def test_latencies_match_the_requests_table(run_dir):
    req, _, _, res = _tables(run_dir)
    fin = req.filter(pl.col("status") == "finished")
    assert res["completed"] == fin.height and res["failed"] == req.height - fin.height
    ttft_ms = ((fin["first_token_s"] - fin["arrival_s"]) * 1000).to_numpy()
    e2el_ms = ((fin["finish_s"] - fin["arrival_s"]) * 1000).to_numpy()
    assert res["mean_ttft_ms"] == pytest.approx(ttft_ms.mean(), rel=1e-12)
    assert res["median_ttft_ms"] == pytest.approx(np.median(ttft_ms), rel=1e-12)
    assert res["p90_ttft_ms"] == pytest.approx(np.percentile(ttft_ms, 90), rel=1e-12)
    assert res["std_e2el_ms"] == pytest.approx(e2el_ms.std(), rel=1e-12)
    many = fin.filter(pl.col("emitted_tokens") > 1)
    tpot_ms = ((many["finish_s"] - many["first_token_s"]) / (many["emitted_tokens"] - 1) * 1000).to_numpy()
    assert res["mean_tpot_ms"] == pytest.approx(tpot_ms.mean(), rel=1e-9)
    assert res["p99_tpot_ms"] == pytest.approx(np.percentile(tpot_ms, 99), rel=1e-9)
    assert res["total_output_tokens"] == int(fin["emitted_tokens"].sum())
    assert res["total_input_tokens"] == int(fin["prompt_tokens"].sum())
    duration = float(fin["finish_s"].max() - req["arrival_s"].min())
    assert res["duration"] == pytest.approx(duration)
    assert res["output_throughput"] == pytest.approx(res["total_output_tokens"] / duration)


def test_acceptance_matches_the_rounds_table(run_dir):
    _, _, rounds, res = _tables(run_dir)
    drafts = rounds.filter(pl.col("verified") > 0)  # a request verifying no draft is not a vLLM draft
    acc = drafts["accepted"].to_numpy()
    assert res["spec_decode_num_drafts"] == drafts.height
    assert res["spec_decode_draft_tokens"] == int(rounds["verified"].sum())
    assert res["spec_decode_accepted_tokens"] == int(acc.sum())
    assert res["spec_decode_acceptance_length"] == pytest.approx(1 + acc.mean())
    assert res["spec_decode_acceptance_rate"] == pytest.approx(100 * acc.sum() / rounds["verified"].sum())
    per_pos = [float((acc >= k).mean()) for k in range(1, 8)]
    assert res["spec_decode_per_position_acceptance_rates"] == pytest.approx(per_pos)
    assert np.all(np.diff(res["spec_decode_per_position_acceptance_rates"]) <= 0)  # unconditional
    # negative control: the conditional rates (DSpark's own figure) are a different quantity
    assert not np.allclose(res["dspark_conditional_acceptance_by_position"], per_pos, atol=0.05)


def test_itl_is_every_chunk_gap_of_completed_requests(run_dir):
    req, steps, rounds, res = _tables(run_dir)
    end = (steps["t_start"] + steps["duration_s"]).to_numpy()
    first = req["first_token_s"].to_numpy()
    gaps = []
    for r, grp in rounds.filter(pl.col("emitted") > 0).group_by("request"):
        t = np.sort(end[grp["step"].to_numpy()])
        gaps.extend(np.diff(np.concatenate([[first[r[0]]], t])))
    assert res["mean_itl_ms"] == pytest.approx(1000 * np.mean(gaps), rel=1e-9)
    assert res["p99_itl_ms"] == pytest.approx(1000 * np.percentile(gaps, 99), rel=1e-9)


def test_goodput_follows_vllms_rule(run_dir):
    req, _, _, res = _tables(run_dir)
    fin = req.filter(pl.col("status") == "finished")
    ttft = (fin["first_token_s"] - fin["arrival_s"]).to_numpy()
    e2el = (fin["finish_s"] - fin["arrival_s"]).to_numpy()
    out = fin["emitted_tokens"].to_numpy()
    tpot = np.where(out > 1, (e2el - ttft) / np.maximum(out - 1, 1), 0.0)
    good = (ttft <= 0.150) & (tpot <= 0.004) & (e2el <= 2.0)
    assert 0 < good.sum() < fin.height  # the SLOs bite, so the check means something
    assert res["request_goodput"] == pytest.approx(good.sum() / res["duration"])
    assert res["dspark_slo_attainment"] == pytest.approx(good.sum() / req.height)


def _frames(arrival, first, finish, emitted, rounds_rows, steps_end):
    """Minimal tables: requests with given times; steps ending at steps_end; rounds (request, step, ...)."""
    n = len(arrival)
    req = pl.DataFrame({"arrival_s": arrival, "first_token_s": first, "finish_s": finish,
                        "emitted_tokens": emitted, "prompt_tokens": [10] * n, "status": ["finished"] * n})
    req = req.with_columns(ttft_s=pl.col("first_token_s") - pl.col("arrival_s"),
                           e2e_s=pl.col("finish_s") - pl.col("arrival_s"))
    steps = pl.DataFrame({"t_start": [t - 0.01 for t in steps_end], "duration_s": [0.01] * len(steps_end)})
    cols = ("request", "step", "drafted", "verified", "accepted", "emitted")
    rounds = pl.DataFrame({c: [r[i] for r in rounds_rows] for i, c in enumerate(cols)},
                          schema=dict.fromkeys(cols, pl.Int64))
    return req, steps, rounds


def test_hand_built_run():
    """Two requests: one streams 3 chunks, one finishes with its first token (TPOT 0 for goodput)."""
    req, steps, rounds = _frames(arrival=[0.0, 0.5], first=[0.1, 0.7], finish=[0.4, 0.7], emitted=[5, 1],
                                 rounds_rows=[(0, 0, 3, 2, 1, 2), (0, 1, 3, 3, 1, 2), (0, 2, 3, 0, 0, 1)],
                                 steps_end=[0.2, 0.3, 0.4])
    res = bench_result(req, steps, rounds, block=3, goodput={"tpot": 80.0})
    assert res["mean_ttft_ms"] == pytest.approx(150.0)
    assert res["mean_tpot_ms"] == pytest.approx(75.0)  # (0.4 - 0.1) / 4, only the 5-token request
    assert res["mean_itl_ms"] == pytest.approx(100.0)  # gaps 0.1, 0.1, 0.1
    assert res["max_concurrent_requests"] == 1  # [0, 0.4) and [0.5, 0.7) never overlap
    assert res["request_goodput"] == pytest.approx(2 / 0.7)  # the 1-token request counts TPOT 0
    assert res["spec_decode_num_drafts"] == 2 and res["spec_decode_draft_tokens"] == 5
    assert res["spec_decode_acceptance_length"] == pytest.approx(2.0)
    assert res["spec_decode_per_position_acceptance_rates"] == pytest.approx([1.0, 0.0, 0.0])
    assert res["dspark_rounds"] == 3 and res["dspark_drafted_tokens"] == 9
    assert bench_result(req, steps, rounds, block=3)["request_goodput"] is None


def _observe_draft_reference(verified, accepted, g):
    """vLLM's SpecDecodingStats, as a plain loop: one observe_draft per request with drafts scheduled."""
    drafts = draft_tokens = accepted_tokens = 0
    per_pos = [0] * g
    for v, a in zip(verified, accepted):
        if v == 0:  # no speculative entry scheduled for this request
            continue
        drafts += 1
        draft_tokens += v
        accepted_tokens += a
        for i in range(a):
            per_pos[i] += 1
    return drafts, draft_tokens, accepted_tokens, [p / drafts for p in per_pos] if drafts else None


@st.composite
def _rounds(draw):
    g = draw(st.integers(1, 6))
    n = draw(st.integers(1, 40))
    verified = draw(st.lists(st.integers(0, g), min_size=n, max_size=n))
    accepted = [draw(st.integers(0, v)) for v in verified]
    return g, verified, accepted


@settings(max_examples=60, deadline=None)
@given(_rounds())
def test_spec_decode_counters_equal_vllms_loop(case):
    g, verified, accepted = case
    rounds = pl.DataFrame({"verified": verified, "accepted": accepted})
    got = spec_decode_counters(rounds, g)
    drafts, draft_tokens, acc, per_pos = _observe_draft_reference(verified, accepted, g)
    if draft_tokens == 0:
        assert got == {}
        return
    assert (got["spec_decode_num_drafts"], got["spec_decode_draft_tokens"],
            got["spec_decode_accepted_tokens"]) == (drafts, draft_tokens, acc)
    assert got["spec_decode_per_position_acceptance_rates"] == pytest.approx(per_pos)
    assert got["spec_decode_acceptance_length"] == pytest.approx(1 + acc / drafts)


def test_reference_loop_negative_control():
    """The reference would catch counting 0-verify rounds as drafts (the DSpark round count)."""
    verified, accepted = [2, 0, 0], [2, 0, 0]
    wrong_length = 1 + sum(accepted) / len(verified)
    assert _observe_draft_reference(verified, accepted, 2)[0] == 1
    assert spec_decode_counters(pl.DataFrame({"verified": verified, "accepted": accepted}),
                                2)["spec_decode_acceptance_length"] != pytest.approx(wrong_length)


def _peak_brute(start, end):
    """Most intervals [s, e) containing some instant: check just after every start."""
    best = 0
    for t in start:
        best = max(best, sum(1 for s, e in zip(start, end) if s <= t < e))
    return best


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(1, 10)), min_size=1, max_size=30))
def test_peak_concurrency_matches_brute_force(spans):
    start = np.array([float(s) for s, _ in spans])
    end = start + np.array([float(d) for _, d in spans])
    assert peak_concurrency(start, end) == _peak_brute(start, end)


def test_peak_concurrency_negative_control():
    """Back-to-back intervals do not overlap; an arrival-first tie order would count 2."""
    start, end = np.array([0.0, 1.0]), np.array([1.0, 2.0])
    assert peak_concurrency(start, end) == 1
    times = np.concatenate([start, end])
    delta = np.array([1, 1, -1, -1])
    wrong = int(np.max(np.cumsum(delta[np.lexsort((-delta, times))])))
    assert wrong == 2


def test_parse_goodput():
    assert parse_goodput("ttft:500 tpot:50") == {"ttft": 500.0, "tpot": 50.0}
    assert parse_goodput(["ttft:500", "e2el:3000"]) == {"ttft": 500.0, "e2el": 3000.0}
    assert parse_goodput("ttft:1,tpot:2") == {"ttft": 1.0, "tpot": 2.0}
    assert parse_goodput({"tpot": 20}) == {"tpot": 20.0}
    for bad, needle in (("ttft", "KEY:VALUE"), ("itl:5", "not one of"), ("ttft:-1", ">= 0"),
                        ("ttft:abc", "not a number")):
        with pytest.raises(ValueError, match=needle):
            parse_goodput(bad)


def test_good_requests_uses_tpot_zero_for_one_token_outputs():
    s = {"ttft": np.array([0.1, 0.1]), "tpot_all": np.array([0.0, 0.2]), "e2el": np.array([0.1, 1.0])}
    assert good_requests(s, {"tpot": 100.0}).tolist() == [True, False]


def test_percentile_word():
    assert percentile_word(99) == "99" and percentile_word(99.9) == "99.9" and percentile_word(50.0) == "50"
