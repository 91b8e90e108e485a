"""Serving metrics on hand-built tables whose answers are known."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.metrics import (
    acceptance_by_position,
    budget_by_running,
    itl,
    meets_sla,
    request_latencies,
    summarize,
    weighted_percentile,
)


def requests_table():
    # r0: arrives 0, first token 0.5, finishes 2.5 with 21 tokens -> TPOT 0.1, 10 tok/s
    # r1: arrives 1, first token 1.2, finishes 1.7 with 6 tokens -> TPOT 0.1, 10 tok/s (TTFT 0.2)
    # r2: arrives 2, first token 5.0 (queued), finishes 5.0 with 1 token -> no TPOT
    # r3: rejected
    df = pl.DataFrame({
        "id": ["r0", "r1", "r2", "r3"], "domain": ["chat", "code", "chat", "chat"],
        "arrival_s": [0.0, 1.0, 2.0, 3.0], "prompt_tokens": [10, 10, 10, 10**6],
        "output_tokens": [21, 6, 1, 5], "emitted_tokens": [21, 6, 1, 0],
        "status": ["finished", "finished", "finished", "rejected"],
        "reason": [None, None, None, "prefill exceeds the KV cache"],
        "admitted_s": [0.0, 1.0, 4.0, None], "first_token_s": [0.5, 1.2, 5.0, None],
        "finish_s": [2.5, 1.7, 5.0, None], "rounds": [5, 2, 0, 0], "drafted": [35, 14, 0, 0],
        "verified": [20, 8, 0, 0], "accepted": [15, 3, 0, 0], "preemptions": [0, 1, 0, 0],
    })
    return request_latencies(df)


def test_request_latencies():
    r = request_latencies(requests_table())
    assert r["ttft_s"].to_list()[:3] == pytest.approx([0.5, 0.2, 3.0])
    assert r["tpot_s"].to_list()[:2] == pytest.approx([0.1, 0.1])
    assert r["tpot_s"][2] is None and r["user_tps"][2] is None
    assert r["user_tps"].to_list()[:2] == pytest.approx([10.0, 10.0])


def test_goodput_counts_misses_and_uses_per_request_slo():
    r = requests_table()
    ok = meets_sla(r, sla_tps=8.0, sla_ttft_s=1.0).to_list()
    assert ok == [True, True, False, False]  # r2 queued 3 s; r3 rejected
    ok = meets_sla(r.with_columns(slo_tps=pl.Series([None, 50.0, None, None], dtype=pl.Float64)), 8.0, 1.0)
    assert ok.to_list() == [True, False, False, False]


def test_itl_per_step_and_per_token():
    req = requests_table()
    # r0 rounds end at steps ending 1.0 (3 tokens), 2.0 (5 tokens), 2.5 (12 tokens); first token 0.5
    steps = pl.DataFrame({"t_start": [0.5, 1.5, 2.0], "duration_s": [0.5, 0.5, 0.5]})
    rounds = pl.DataFrame({"step": [0, 1, 2], "request": [0, 0, 0], "verified": [4, 6, 7],
                           "accepted": [2, 4, 7], "emitted": [3, 5, 12]})
    got = itl(rounds, steps, req)
    gaps = np.array([0.5, 1.0, 0.5])
    assert got["itl_step_p50_s"] == pytest.approx(np.percentile(gaps, 50))
    per_token = np.repeat(gaps / [3, 5, 12], [3, 5, 12])
    assert got["itl_token_p50_s"] == pytest.approx(np.percentile(per_token, 50, method="inverted_cdf"))
    assert got["itl_token_p99_s"] == pytest.approx(np.percentile(per_token, 99, method="inverted_cdf"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 10), st.integers(1, 6)), min_size=1, max_size=30),
       st.sampled_from([1, 50, 90, 99, 100]))
def test_weighted_percentile_equals_repeated_samples(pairs, q):
    v = np.array([p[0] for p in pairs])
    w = np.array([p[1] for p in pairs])
    want = np.percentile(np.repeat(v, w), q, method="inverted_cdf")
    assert weighted_percentile(v, w.astype(float), q) == pytest.approx(want)
    # negative control: ignoring the weights is a different estimator on skewed weights
    if q == 50:
        skew = np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 10.0])
        assert weighted_percentile(*skew, 50) == 3.0 != np.percentile(skew[0], 50)


def test_acceptance_by_position_and_budget():
    rounds = pl.DataFrame({"step": [0, 0, 1, 1], "request": [0, 1, 0, 1], "verified": [3, 1, 2, 0],
                           "accepted": [1, 1, 2, 0], "emitted": [2, 2, 3, 1]})
    pos = acceptance_by_position(rounds, 3)
    # k=1: 3 rounds verified it, 3 accepted; k=2: verified >= 2 and accepted >= 1 in 2, accepted in 1; k=3: none
    assert pos["trials"].to_list() == [3, 2, 0] and pos["accepted"].to_list() == [3, 1, 0]
    by_dom = acceptance_by_position(rounds, 3, pl.Series(["chat", "code"]))
    assert by_dom.filter(pl.col("domain") == "code")["trials"].to_list() == [1, 0, 0]
    steps = pl.DataFrame({"decode_requests": [2, 2, 1, 0], "verified": [4, 2, 7, 0], "accepted": [2, 2, 3, 0]})
    b = budget_by_running(steps)
    assert b["decode_requests"].to_list() == [1, 2]
    assert b["verify_budget"].to_list() == pytest.approx([8.0, (4 + 2 + 4) / 4])


def test_summary_headlines():
    req = requests_table()
    req = req.with_columns(meets_sla(req, 8.0, 1.0))
    steps = pl.DataFrame({"t_start": [0.5, 1.5, 2.0], "duration_s": [0.5, 0.5, 0.5], "decode_requests": [1, 1, 1],
                          "running": [1, 1, 1], "batch_tokens": [5, 7, 8]})
    rounds = pl.DataFrame({"step": [0, 1, 2], "request": [0, 0, 0], "verified": [4, 6, 7],
                           "accepted": [2, 4, 7], "emitted": [3, 5, 12]})
    s = summarize(req, steps, rounds, block=7, sla_tps=8.0, sla_ttft_s=1.0)
    assert s["finished"] == 3 and s["rejected"] == 1 and s["unfinished_reasons"] == {"prefill exceeds the KV cache": 1}
    assert s["throughput_tps"] == pytest.approx(28 / 5.0)
    assert s["goodput_share"] == pytest.approx(0.5)
    assert s["mean_accepted_per_round"] == pytest.approx((3 + 5 + 8) / 3)
    assert s["mean_verify_budget"] == pytest.approx((5 + 7 + 8) / 3)
    assert s["mean_verify_budget_excl"] == pytest.approx((4 + 6 + 7) / 3)
    assert s["user_tps_p50"] == pytest.approx(10.0)
    assert s["preemptions"] == 1
