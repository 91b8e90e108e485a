"""Serving engine: invariants, determinism, closed forms, overload, preemption, fast path == step path."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from helpers import assert_same_run, check_invariants, make_trace, run, write_profile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simulator.engine as engine_mod
from simulator.backend import Draft, Requests, Verdict
from simulator.config import SimConfig
from simulator.run import simulate
from sparksched.cost import StepPrice
from sparksched.curve import ThroughputCurve

CURVE = ThroughputCurve.from_points([1, 64, 256, 1024, 4096], [0.008, 0.009, 0.012, 0.030, 0.110])


def test_invariants_and_determinism(tmp_path):
    trace = make_trace(60, rate=20.0, prompt=[300, 900, 2500] * 20, output=[5, 80, 200] * 20)
    a = run(trace, tmp_path, seed=3)
    check_invariants(a, trace)
    assert a.summary["finished"] == 60 and a.summary["unfinished"] == 0
    b = run(trace, tmp_path, seed=3)
    assert a.requests.equals(b.requests) and a.steps.equals(b.steps) and a.rounds.equals(b.rounds)
    c = run(trace, tmp_path, seed=4)
    assert not a.rounds.equals(c.rounds)


def test_negative_control_invariants_catch_a_lost_request_and_a_backwards_clock(tmp_path):
    trace = make_trace(20, rate=10.0, prompt=500, output=40)
    res = run(trace, tmp_path)
    check_invariants(res, trace)
    lost = type(res)(res.summary, res.requests.slice(1), res.steps, res.rounds, res.config)
    with pytest.raises(AssertionError, match="missing"):
        check_invariants(lost, trace)
    t = res.steps["t_start"].to_numpy().copy()
    t[5], t[6] = t[6], t[5]
    backwards = type(res)(res.summary, res.requests, res.steps.with_columns(pl.Series("t_start", t)),
                          res.rounds, res.config)
    with pytest.raises(AssertionError, match="backwards"):
        check_invariants(backwards, trace)
    short = res.requests.with_columns(pl.col("emitted_tokens") - 1)
    with pytest.raises(AssertionError, match="emitted"):
        check_invariants(type(res)(res.summary, short, res.steps, res.rounds, res.config), trace)


POLICIES = ["dspark", "mtp1", "static-3", "threshold-0.4", "conf-threshold-0.6", "verify-all", "none",
            "async-dspark", "vllm-adaptive", "sglang-adaptive"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 12), rate=st.floats(0.5, 200.0), seed=st.integers(0, 5),
       policy=st.sampled_from(POLICIES), max_running=st.integers(1, 6), kv=st.sampled_from([None, 60, 400]),
       data=st.data())
def test_property_random_traces_and_policies(tmp_path, n, rate, seed, policy, max_running, kv, data):
    prompts = data.draw(st.lists(st.integers(1, 700), min_size=n, max_size=n))
    outputs = data.draw(st.lists(st.integers(1, 150), min_size=n, max_size=n))
    trace = make_trace(n, rate, prompts, outputs, seed=seed)
    res = run(trace, tmp_path, policy=policy, max_running=max_running, kv_blocks=kv, seed=seed,
              prefill_chunk=256)
    check_invariants(res, trace)
    assert res.summary["finished"] + res.summary["rejected"] + res.summary["unfinished"] == n


class ConstantAcceptance:
    """Acceptance model with the same acceptance a at every position (per-request streams)."""

    name = "constant"

    def __init__(self, a: float, block: int, slots: int, seed: int = 0) -> None:
        self.a, self.block, self.seed = a, block, seed
        self.req = np.full(slots, -1)
        self.round = np.zeros(slots, dtype=np.int64)
        self.pending = None

    def join(self, slots, requests: Requests) -> None:
        self.req[slots] = requests.index
        self.round[slots] = 0

    def draft(self, slots, block) -> Draft:
        return Draft(np.full((slots.size, block), self.a), np.full(slots.size, block, dtype=np.int64))

    def verify(self, slots, lengths) -> Verdict:
        acc = np.zeros(slots.size, dtype=np.int64)
        for j, (s, n_ver) in enumerate(zip(slots.tolist(), lengths.tolist())):
            u = np.random.default_rng([self.seed, int(self.req[s]), int(self.round[s])]).random(self.block)
            ok = u[:n_ver] < self.a
            acc[j] = n_ver if ok.all() else int(np.argmin(ok))
        self.round[slots] += 1
        return Verdict(acc)

    def leave(self, slots) -> None:
        self.req[slots] = -1


@pytest.mark.parametrize("k,a", [(3, 0.7), (1, 0.85), (5, 0.8)])
def test_single_request_closed_form(tmp_path, k, a):
    out = 12000
    trace = make_trace(1, 1.0, 64, out)
    res = simulate(trace, SimConfig(policy=f"static-{k}", block=7, kv_blocks=20000), curve=CURVE,
                   backend=ConstantAcceptance(a, 7, 128, seed=k))
    per_round = res.rounds["emitted"].to_numpy()[:-1].astype(np.float64)  # the last round is clipped
    mean, se = per_round.mean(), per_round.std() / np.sqrt(per_round.size)
    closed = (1 - a ** (k + 1)) / (1 - a)
    assert abs(mean - closed) < 4 * se + 1e-9
    wrong = (1 - a**k) / (1 - a)  # negative control: forgetting the bonus token
    assert abs(mean - wrong) > 4 * se


def test_overload_completes_with_queueing_visible(tmp_path):
    trace = make_trace(150, rate=4.0, prompt=1000, output=120, seed=2)
    base = run(trace, tmp_path, max_running=16, kv_blocks=20000)
    over = run(trace, tmp_path, max_running=16, kv_blocks=20000, rate_scale=10.0)
    check_invariants(over, trace)
    assert over.summary["finished"] == 150
    assert over.summary["ttft_p90_s"] > 5 * base.summary["ttft_p90_s"]
    assert over.steps["waiting"].max() > 50


def test_preemption_is_counted_and_recovers(tmp_path):
    # 40 blocks of 16 tokens = 640 tokens of KV for requests that each grow to 400 tokens
    trace = make_trace(12, rate=50.0, prompt=200, output=200, seed=1)
    res = run(trace, tmp_path, kv_blocks=40, max_running=8, policy="static-3")
    check_invariants(res, trace)
    assert res.summary["preemptions"] > 0
    assert res.summary["finished"] == 12
    assert (res.steps["preempted"] > 0).any()


def test_prompt_larger_than_kv_is_rejected_with_reason(tmp_path):
    trace = make_trace(3, rate=1.0, prompt=[100, 5000, 100], output=10)
    res = run(trace, tmp_path, kv_blocks=64)
    check_invariants(res, trace)
    assert res.summary["rejected"] == 1
    row = res.requests.filter(pl.col("id") == "r1").row(0, named=True)
    assert row["status"] == "rejected" and "exceeds the KV cache" in row["reason"]


def test_horizon_reports_unfinished(tmp_path):
    trace = make_trace(40, rate=2.0, prompt=400, output=300)
    res = run(trace, tmp_path, horizon_s=5.0)
    assert res.summary["unfinished"] > 0
    assert res.summary["unfinished_reasons"] == {"horizon 5 s reached": res.summary["unfinished"]}


@pytest.mark.parametrize("policy,layout", [("dspark", "flat"), ("static-3", "flat"), ("threshold-0.5", "flat"),
                                           ("conf-threshold-0.7", "flat"), ("none", "flat"), ("dspark", "padded")])
def test_fast_path_equals_step_path(tmp_path, policy, layout, monkeypatch):
    trace = make_trace(40, rate=15.0, prompt=[200, 1500] * 20, output=[30, 160] * 20, domain="code")
    fast = run(trace, tmp_path, policy=policy, max_running=6, kv_blocks=300, verify_layout=layout)
    monkeypatch.setattr(engine_mod.Engine, "_epoch_plan", lambda self, *a: None)
    slow = run(trace, tmp_path, policy=policy, max_running=6, kv_blocks=300, verify_layout=layout)
    assert_same_run(fast, slow)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 14), rate=st.floats(1.0, 300.0), seed=st.integers(0, 5),
       policy=st.sampled_from(["dspark", "mtp1", "static-2", "threshold-0.4", "conf-threshold-0.6", "verify-all",
                               "none"]),
       max_running=st.integers(1, 7), kv=st.sampled_from([None, 60, 200]), chunk=st.sampled_from([64, 512]),
       layout=st.sampled_from(["flat", "padded"]), horizon=st.sampled_from([None, 3.0]), split=st.booleans(),
       data=st.data())
def test_property_planned_epochs_equal_the_step_path(tmp_path, n, rate, seed, policy, max_running, kv, chunk,
                                                      layout, horizon, split, data):
    prompts = data.draw(st.lists(st.integers(1, 700), min_size=n, max_size=n))
    outputs = data.draw(st.lists(st.integers(1, 150), min_size=n, max_size=n))
    trace = make_trace(n, rate, prompts, outputs, seed=seed)
    kw = dict(policy=policy, max_running=max_running, kv_blocks=kv, seed=seed, prefill_chunk=chunk,
              verify_layout=layout, horizon_s=horizon, disaggregated=split)
    fast = run(trace, tmp_path, **kw)
    engine_mod.Engine._epoch_plan, real = (lambda self, *a: None), engine_mod.Engine._epoch_plan
    try:
        slow = run(trace, tmp_path, **kw)
    finally:
        engine_mod.Engine._epoch_plan = real
    assert_same_run(fast, slow)


def test_negative_control_an_epoch_blind_to_arrivals_differs_from_the_step_path(tmp_path, monkeypatch):
    trace = make_trace(40, rate=15.0, prompt=[200, 1500] * 20, output=[30, 160] * 20, domain="code")
    monkeypatch.setattr(engine_mod.Engine, "_epoch_plan", lambda self, *a: None)
    slow = run(trace, tmp_path, policy="dspark", max_running=6, kv_blocks=300)
    monkeypatch.undo()
    real = engine_mod.plan_epoch

    def blind(policy, state, arrivals, prices, limits, out):  # plans past arrivals into free slots: admissions come late
        return real(policy, state._replace(free0=0), arrivals._replace(next_arrival_s=float("inf")), prices, limits,
                    out)

    monkeypatch.setattr(engine_mod, "plan_epoch", blind)
    wrong = run(trace, tmp_path, policy="dspark", max_running=6, kv_blocks=300)
    assert not wrong.requests["first_token_s"].equals(slow.requests["first_token_s"])


def test_padded_layout_charges_the_longest_verify_for_every_request(tmp_path):
    trace = make_trace(60, rate=20.0, prompt=300, output=80, seed=2)
    flat = run(trace, tmp_path, policy="verify-all", max_running=16)
    padded = run(trace, tmp_path, policy="verify-all", max_running=16, verify_layout="padded")
    assert flat.steps.equals(padded.steps)  # equal verify lengths: no padding, the same clock
    ds = run(trace, tmp_path, policy="dspark", max_running=16, verify_layout="padded")
    st_ = ds.steps.with_row_index("i").filter((pl.col("prefill_tokens") == 0) & (pl.col("decode_requests") > 0))
    per_req = ds.rounds.group_by("step").agg(pl.col("verified").max().alias("m"), pl.len().alias("n"))
    joined = st_.join(per_req, left_on=pl.col("i").cast(pl.Int32), right_on="step", how="inner")
    # the clock charged n * (1 + max l_i) tokens in every decode-only step
    assert joined.height > 0
    assert (joined["batch_tokens"] == joined["n"] * (1 + joined["m"])).all()
    assert (ds.steps["batch_tokens"] >= ds.steps["verified"] + ds.steps["decode_requests"]).all()


def test_dspark_beats_verify_all_under_load_and_budget_shrinks(tmp_path):
    trace = make_trace(300, rate=30.0, prompt=800, output=150, seed=5)
    ds = run(trace, tmp_path, policy="dspark", max_running=128)
    va = run(trace, tmp_path, policy="verify-all", max_running=128)
    assert ds.summary["mean_verify_budget"] < va.summary["mean_verify_budget"] == 8.0
    b = ds.budget_by_running()
    small = b.filter(pl.col("decode_requests") <= 4)["verify_budget"].mean()
    large = b.filter(pl.col("decode_requests") >= 40)["verify_budget"].mean()
    assert large < small  # the budget per request falls as the batch grows (Figure 8)


def test_config_errors_are_one_line():
    with pytest.raises(ValueError, match="policy 'bogus'"):
        SimConfig(policy="bogus")
    with pytest.raises(ValueError, match="block must be an integer"):
        SimConfig(block=0)
    with pytest.raises(ValueError, match="verifies more than the block"):
        SimConfig(policy="static-9", block=7)
    with pytest.raises(ValueError, match="recorded_donors 'trace' is not one of domain, request"):
        SimConfig(recorded_donors="trace")
    with pytest.raises(ValueError, match="threshold must lie"):
        SimConfig(policy="threshold-1.5")
    with pytest.raises(ValueError, match="threshold must lie"):
        SimConfig(policy="conf-threshold-2")
    assert SimConfig(policy="mtp1").draft_block == 1 and SimConfig(policy="none").draft_block == 0


def test_stale_capacity_depends_only_on_stale_confidences():
    """async-dspark / vllm-adaptive: K comes from confidences `staleness` steps old, never the current."""
    from simulator.policies import StaleCapacity
    from sparksched.async_scheduler import admit_top_k, plan_capacity

    seen = []

    def plan(stale, price):
        seen.append(stale.copy())
        return plan_capacity(stale, price.curve)

    steep = ThroughputCurve.from_points([1, 8], [0.010, 0.030])  # each draft costs ~3 %: K depends on S
    price = StepPrice(steep)
    pol = StaleCapacity("async-dspark", 8, 3, 2, plan, admit_top_k)
    slots, drafted = np.array([0, 1]), np.array([3, 3])
    rng = np.random.default_rng(0)
    history = [rng.uniform(0.3, 1.0, (2, 3)) for _ in range(6)]
    totals = []
    for t, conf in enumerate(history):
        totals.append(int(pol.lengths(slots, conf, drafted, price).sum()))
        if t >= 2:
            np.testing.assert_array_equal(seen[t], history[t - 2])
    # replaying with different current confidences (same history two steps back) keeps every K
    pol2 = StaleCapacity("async-dspark", 8, 3, 2, plan, admit_top_k)
    for t, conf in enumerate(history):
        other = np.clip(conf[::-1] * 0.9, 0.01, 1.0) if t >= 4 else conf
        k2 = int(pol2.lengths(slots, other, drafted, price).sum())
        if t >= 4:
            assert k2 == totals[t]
    # negative control: planning on the CURRENT confidences lets them change K
    cur = [int(plan_capacity(c, steep)) for c in history]
    assert cur != [int(plan_capacity(s, steep)) for s in history[:2] + history[:-2]]


def test_sglang_adaptive_depth_follows_accepted_length():
    from simulator.policies import SGLangAdaptive

    pol = SGLangAdaptive(block=7)
    slots, drafted = np.arange(4), np.full(4, 7)
    assert pol.depth == 7
    for _ in range(30):  # almost nothing accepted: depth falls to 3, then 1
        lengths = pol.lengths(slots, None, drafted, StepPrice(CURVE))
        pol.observe(slots, lengths, np.zeros(4, dtype=np.int64))
    assert pol.depth == 1
    for _ in range(30):  # everything accepted: depth climbs back
        lengths = pol.lengths(slots, None, drafted, StepPrice(CURVE))
        pol.observe(slots, lengths, lengths)
    assert pol.depth == 7
    assert SGLangAdaptive(block=5).depths == [1, 3, 5]


def test_vllm_adaptive_plain_fallback_skips_the_drafter(tmp_path, monkeypatch):
    """K = 0 planned before drafting: the step runs plain and pays no drafter time (vLLM's fallback)."""
    prof = json.loads(open(write_profile(tmp_path)).read())
    for r in prof["draft"]:
        r["median_s"] = 0.02  # a drafter as slow as two target steps: plain decoding often wins
    path = tmp_path / "slow_drafter.json"
    path.write_text(json.dumps(prof))
    trace = make_trace(30, rate=40.0, prompt=300, output=60, seed=4)

    def decode_steps():
        res = simulate(trace, SimConfig(policy="vllm-adaptive", profile=str(path), max_running=16))
        check_invariants(res, trace)
        return res, res.steps.filter(pl.col("decode_requests") > 0)

    res, dec = decode_steps()
    plain = dec.filter(pl.col("draft_s") == 0)
    assert plain.height > 0 and (plain["verified"] == 0).all()
    assert (res.rounds.filter(pl.col("drafted") == 0)["verified"] == 0).all()
    # negative control: without the skip every decode step pays the drafter, even when it verifies nothing
    import simulator.policies as pol

    monkeypatch.setattr(pol.StaleCapacity, "skips_draft", lambda self, *a: False)
    _, dec2 = decode_steps()
    assert (dec2["draft_s"] > 0).all()


def test_disaggregated_prefill_decodes_only(tmp_path, monkeypatch):
    """With prefill on other instances a request joins with its prompt's KV and first token: no step
    carries prefill tokens, every token is still emitted, TTFT is the wait to join, and the planned
    epochs equal the step path."""
    trace = make_trace(60, rate=25.0, prompt=[300, 1200, 2500] * 20, output=[1, 40, 150] * 20, seed=4)
    split = run(trace, tmp_path, disaggregated=True, max_running=8)
    check_invariants(split, trace)
    assert split.summary["finished"] == 60
    assert (split.steps["prefill_tokens"] == 0).all() and (split.steps["prefill_requests"] == 0).all()
    one = split.requests.filter(pl.col("output_tokens") == 1)
    assert one.height == 20 and (one["finish_s"] == one["first_token_s"]).all()  # done as they join
    monkeypatch.setattr(engine_mod.Engine, "_epoch_plan", lambda self, *a: None)
    slow = run(trace, tmp_path, disaggregated=True, max_running=8)
    monkeypatch.undo()
    assert_same_run(split, slow)
    # negative control: the same trace with prefill in the engine pays for it
    joint = run(trace, tmp_path, max_running=8)
    assert (joint.steps["prefill_tokens"] > 0).any()
    assert joint.requests["ttft_s"].mean() > split.requests["ttft_s"].mean()


def test_disaggregated_refuses_the_measured_clock():
    with pytest.raises(ValueError, match="disaggregated: the measured clock"):
        SimConfig(disaggregated=True, clock="measured")
