"""HostSpeed: the host's speed against the profile, by batch and over time (simulator.speed)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from helpers import assert_same_run, make_trace, write_profile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simulator.engine as engine_mod
from simulator.config import SimConfig
from simulator.epoch import step_seconds
from simulator.run import simulate
from simulator.speed import HostSpeed


def burst(n: int, prompt: int, output, seed: int = 0) -> pl.DataFrame:
    """Every request at t = 0 (all admitted in the first step): the trajectory does not depend on timing."""
    return make_trace(n, 1e9, prompt, output, seed=seed).with_columns(pl.lit(0.0).alias("arrival_s"))


def sim(trace, tmp_path, speed=None, **kw):
    kw.setdefault("profile", write_profile(tmp_path))
    kw.setdefault("max_running", 16)
    return simulate(trace, SimConfig(**kw), speed=speed)


def decode_only(res) -> np.ndarray:
    return (res.steps["prefill_tokens"].to_numpy() == 0) & (res.steps["decode_requests"].to_numpy() > 0)


def test_a_uniform_factor_scales_every_step_and_leaves_dspark_s_choices_alone(tmp_path):
    trace = burst(12, 300, [40, 90, 130] * 4)
    base = sim(trace, tmp_path)
    slow = sim(trace, tmp_path, HostSpeed(times=np.array([0.0]), factors=np.array([2.0])))
    assert slow.rounds.equals(base.rounds)  # the same verify lengths and acceptance: decisions unchanged
    np.testing.assert_allclose(slow.steps["duration_s"].to_numpy(), 2 * base.steps["duration_s"].to_numpy(),
                               rtol=1e-12)
    assert slow.summary["throughput_tps"] == pytest.approx(base.summary["throughput_tps"] / 2, rel=1e-9)


def test_negative_control_a_reshaped_profile_changes_dspark_s_choices(tmp_path):
    """The equality above can fail: a profile of another shape (not a common factor) moves the choices."""
    import json

    trace = burst(12, 300, [40, 90, 130] * 4)
    base = sim(trace, tmp_path)
    prof = json.loads(open(write_profile(tmp_path)).read())
    for r in prof["verify"]:
        r["median_s"] = r["median_s"] * (1 + r["tokens"] / 16)  # steeper in batch tokens
    other = tmp_path / "steep.json"
    other.write_text(json.dumps(prof))
    steep = sim(trace, tmp_path, profile=str(other))
    assert not steep.rounds.equals(base.rounds)


def test_prefill_keeps_the_profile_price_when_asked(tmp_path):
    trace = burst(12, 300, [40, 90, 130] * 4)
    base = sim(trace, tmp_path, prefill_chunk=512)
    both = sim(trace, tmp_path, HostSpeed(times=np.array([0.0]), factors=np.array([3.0])), prefill_chunk=512)
    kept = sim(trace, tmp_path, HostSpeed(times=np.array([0.0]), factors=np.array([3.0]), scale_prefill=False),
               prefill_chunk=512)
    d0, d_both, d_kept = (r.steps["duration_s"].to_numpy() for r in (base, both, kept))
    dec = decode_only(base)
    assert dec.any() and (~dec).any()
    np.testing.assert_allclose(d_both, 3 * d0, rtol=1e-12)
    np.testing.assert_allclose(d_kept[dec], 3 * d0[dec], rtol=1e-12)
    assert np.all(d_kept[~dec] < 3 * d0[~dec])  # the prefill chunk's share stays at the profile's price
    assert np.all(d_kept[~dec] > d0[~dec])


def test_factors_by_requests_and_over_time(tmp_path):
    trace = burst(10, 200, [30, 60, 90, 120, 150] * 2)
    base = sim(trace, tmp_path, prefill_chunk=4096)
    by_n = np.linspace(0.5, 2.0, 17)
    res = sim(trace, tmp_path, HostSpeed(by_requests=by_n), prefill_chunk=4096)
    assert res.rounds.equals(base.rounds)
    dec = decode_only(base)
    n = base.steps["decode_requests"].to_numpy()[dec]
    ratio = res.steps["duration_s"].to_numpy()[dec] / base.steps["duration_s"].to_numpy()[dec]
    np.testing.assert_allclose(ratio, by_n[n], rtol=1e-12)
    assert len(set(n.tolist())) >= 3  # the batch shrank through several sizes
    # a piece from 40 % of the run on, 1.5x slower: steps starting before it keep the profile's time
    cut = 0.4 * float(base.steps["t_start"].max())
    timed = sim(trace, tmp_path, HostSpeed(times=np.array([0.0, cut]), factors=np.array([1.0, 1.5])),
                prefill_chunk=4096)
    start = timed.steps["t_start"].to_numpy()
    ratio = timed.steps["duration_s"].to_numpy() / base.steps["duration_s"].to_numpy()
    np.testing.assert_allclose(ratio[start < cut], 1.0, rtol=1e-12)
    np.testing.assert_allclose(ratio[start >= cut], 1.5, rtol=1e-12)
    assert (start >= cut).any() and (start < cut).any()


def test_factor_and_price():
    s = HostSpeed(by_requests=np.array([1.0, 2.0, 3.0]), times=np.array([1.0, 5.0]), factors=np.array([0.5, 4.0]))
    assert s.factor(0.0, 1) == 1.0  # before the first piece: its factor
    assert s.factor(1.0, 2) == 1.5
    assert s.factor(7.0, 9) == 12.0  # n past the end: the last entry
    assert s.fastest() == 0.5
    by_n, t, f, prefill = s.arrays(4)
    np.testing.assert_array_equal(by_n, [1.0, 2.0, 3.0, 3.0, 3.0])
    assert prefill is True
    # a step of verify 0.2 s, drafter 0.1 s and a prefill chunk of 0.1 s
    assert step_seconds(0.2, 0.1, 0.1, 1.0, False) == 0.2 + (0.1 + 0.1)
    assert step_seconds(0.2, 0.1, 0.1, 2.0, True) == pytest.approx(0.8)
    assert step_seconds(0.2, 0.1, 0.1, 2.0, False) == pytest.approx(0.7)  # prefill share 0.1 unscaled


def test_factor_one_is_bit_equal_to_no_speed(tmp_path):
    trace = make_trace(30, rate=20.0, prompt=[200, 900] * 15, output=[40, 120] * 15, seed=1)
    base = sim(trace, tmp_path, max_running=6)
    ones = sim(trace, tmp_path, HostSpeed(by_requests=np.ones(7), times=np.array([0.0, 1.0]),
                                          factors=np.array([1.0, 1.0])), max_running=6)
    assert ones.steps.equals(base.steps) and ones.rounds.equals(base.rounds)
    # negative control: a factor one ulp away from 1 moves the clock
    off = sim(trace, tmp_path, HostSpeed(times=np.array([0.0]), factors=np.array([np.nextafter(1.0, 2.0)])),
              max_running=6)
    assert not off.steps["duration_s"].equals(base.steps["duration_s"])


@pytest.mark.parametrize("kw,match", [
    (dict(by_requests=np.array([1.0, -1.0])), "by_requests"),
    (dict(by_requests=np.array([1.0])), "by_requests"),
    (dict(times=np.array([0.0, 0.0]), factors=np.array([1.0, 2.0])), "strictly increasing"),
    (dict(times=np.array([0.0]), factors=np.array([0.0])), "factors must be finite and > 0"),
    (dict(times=np.array([0.0])), "come together"),
    (dict(times=np.array([0.0, 1.0]), factors=np.array([1.0])), "one length"),
])
def test_bad_speed_is_a_one_line_error(kw, match):
    with pytest.raises(ValueError, match=match) as e:
        HostSpeed(**kw)
    assert "\n" not in str(e.value)


speeds = st.one_of(
    st.none(),
    st.builds(lambda b, t, f, p: HostSpeed(by_requests=np.array(b), times=np.cumsum(t) - t[0],
                                           factors=np.array(f[:len(t)] + [1.0] * (len(t) - len(f))),
                                           scale_prefill=p),
              st.lists(st.floats(0.3, 3.0), min_size=2, max_size=9),
              st.lists(st.floats(0.05, 4.0), min_size=1, max_size=5),
              st.lists(st.floats(0.3, 3.0), min_size=1, max_size=5), st.booleans()))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 12), rate=st.floats(1.0, 300.0), seed=st.integers(0, 5),
       policy=st.sampled_from(["dspark", "static-2", "verify-all", "none"]), max_running=st.integers(1, 7),
       chunk=st.sampled_from([64, 512]), layout=st.sampled_from(["flat", "padded"]), speed=speeds, data=st.data())
def test_property_planned_epochs_equal_the_step_path_at_any_host_speed(tmp_path, n, rate, seed, policy,
                                                                      max_running, chunk, layout, speed, data):
    prompts = data.draw(st.lists(st.integers(1, 700), min_size=n, max_size=n))
    outputs = data.draw(st.lists(st.integers(1, 150), min_size=n, max_size=n))
    trace = make_trace(n, rate, prompts, outputs, seed=seed)
    kw = dict(policy=policy, max_running=max_running, seed=seed, prefill_chunk=chunk, verify_layout=layout)
    fast = sim(trace, tmp_path, speed, **kw)
    engine_mod.Engine._epoch_plan, real = (lambda self, *a: None), engine_mod.Engine._epoch_plan
    try:
        slow = sim(trace, tmp_path, speed, **kw)
    finally:
        engine_mod.Engine._epoch_plan = real
    assert_same_run(fast, slow)


def test_negative_control_a_planner_blind_to_the_speed_differs_from_the_step_path(tmp_path, monkeypatch):
    trace = make_trace(40, rate=15.0, prompt=[200, 1500] * 20, output=[30, 160] * 20, domain="code")
    speed = HostSpeed(by_requests=np.linspace(0.5, 2.0, 7), times=np.array([0.0, 2.0]), factors=np.array([1.0, 2.0]))
    kw = dict(policy="dspark", max_running=6, kv_blocks=300)
    monkeypatch.setattr(engine_mod.Engine, "_epoch_plan", lambda self, *a: None)
    slow = sim(trace, tmp_path, speed, **kw)
    monkeypatch.undo()
    real = engine_mod.plan_epoch

    def blind(policy, state, arrivals, prices, limits, out):  # plans at the profile's speed
        speed = prices.speed._replace(by_n=np.ones_like(prices.speed.by_n), factors=np.ones_like(prices.speed.factors))
        return real(policy, state, arrivals, prices._replace(speed=speed), limits, out)

    monkeypatch.setattr(engine_mod, "plan_epoch", blind)
    wrong = sim(trace, tmp_path, speed, **kw)
    assert not np.allclose(wrong.steps["duration_s"].to_numpy()[:50], slow.steps["duration_s"].to_numpy()[:50])
