"""ThroughputCurve: exact at its points, non-decreasing, explicit extrapolation, context axis."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparksched import ThroughputCurve
from sparksched.curve import curve_from_json
from sparksched.profile import load_profile


@st.composite
def curves(draw, extrapolate=None):
    m = draw(st.integers(1, 8))
    tokens = np.cumsum(draw(st.lists(st.integers(1, 300), min_size=m, max_size=m))).astype(float)
    seconds = 0.001 + np.cumsum(draw(st.lists(st.sampled_from([0.0, 0.0, 0.001, 0.02, 0.5]),
                                              min_size=m, max_size=m)))
    ex = extrapolate or draw(st.sampled_from(["linear", "clamp"]))
    return ThroughputCurve.from_points(tokens, seconds, extrapolate=ex)


@settings(max_examples=80, deadline=None)
@given(curves())
def test_exact_at_points_and_non_decreasing(curve):
    np.testing.assert_array_equal(curve.step_time(curve.tokens), curve.seconds[0])
    b = np.linspace(0, curve.tokens[-1] * 2 + 10, 500)
    t = curve.step_time(b)
    assert np.all(np.diff(t) >= 0)
    assert np.all(t >= 0)
    np.testing.assert_array_equal(curve.steps_per_second(curve.tokens), 1.0 / curve.seconds[0])


@settings(max_examples=40, deadline=None)
@given(curves())
def test_table_matches_step_time(curve):
    max_b = int(curve.tokens[-1]) + 20
    np.testing.assert_array_equal(curve.table(max_b), curve.step_time(np.arange(max_b + 1.0)))


def test_negative_control_monotonicity_check_catches_a_decreasing_interpolant():
    """The same diff check rejects a curve that is not monotone (built bypassing validation)."""
    t = np.interp(np.linspace(1, 3, 50), [1, 2, 3], [1.0, 2.0, 1.5])
    assert np.any(np.diff(t) < 0)


def test_interpolation_is_linear_between_points():
    curve = ThroughputCurve.from_points([10, 20], [1.0, 3.0])
    assert curve.step_time(15) == pytest.approx(2.0)
    assert curve.step_time(np.array([[12.5]])).shape == (1, 1)


def test_extrapolation_modes():
    pts = ([10, 20, 40], [1.0, 1.0, 2.0])
    lin = ThroughputCurve.from_points(*pts, extrapolate="linear")
    clamp = ThroughputCurve.from_points(*pts, extrapolate="clamp")
    err = ThroughputCurve.from_points(*pts, extrapolate="error")
    assert lin.step_time(60) == pytest.approx(3.0)  # last segment's slope 1/20
    assert lin.step_time(5) == pytest.approx(1.0)  # first segment is flat
    assert clamp.step_time(60) == 2.0 and clamp.step_time(1) == 1.0
    assert err.step_time(40) == 2.0
    with pytest.raises(ValueError, match="batch tokens 41 outside the measured range"):
        err.step_time([20, 41])
    table = err.table(45)
    assert np.isinf(table[:10]).all() and np.isinf(table[41:]).all() and table[40] == 2.0
    steep_start = ThroughputCurve.from_points([10, 20], [1.0, 3.0], extrapolate="linear")
    # below the measured range the first value holds: extending the first segment would price a
    # 1-token step near 0 s, as if a pass's fixed costs (weights, launches) vanished
    assert steep_start.step_time(0) == 1.0 and steep_start.step_time(5) == 1.0
    assert steep_start.table(3).tolist() == [1.0] * 4


def _profile(contexts, seconds_by_context, tokens=(1, 64, 256)):
    rows = [{"requests": 1, "tokens": b, "context": c, "median_s": s}
            for c, secs in zip(contexts, seconds_by_context) for b, s in zip(tokens, secs)]
    return {"schema": 1, "device": {"name": "test"}, "model": {"preset": "toy"}, "dtype": "float32",
            "verify": rows}


def _context_curve(extrapolate="linear"):
    return ThroughputCurve([1, 64, 256], [[0.01, 0.01, 0.02], [0.02, 0.03, 0.06]], [512, 4096], extrapolate)


def test_context_axis_blends_linearly_and_is_exact_at_measured_contexts():
    curve = _context_curve()
    assert curve.has_context
    np.testing.assert_allclose(curve.at_context(512).seconds[0], [0.01, 0.01, 0.02])
    np.testing.assert_allclose(curve.at_context(4096).seconds[0], [0.02, 0.03, 0.06])
    mid = (512 + 4096) / 2
    np.testing.assert_allclose(curve.at_context(mid).seconds[0], [0.015, 0.02, 0.04])
    assert curve.step_time(64, context=mid) == pytest.approx(0.02)
    assert curve.step_time(64) == pytest.approx(0.01)  # no context: the first measured one (documented)
    assert not curve.at_context(mid).has_context


def test_context_extrapolation_stays_valid():
    curve = ThroughputCurve([1, 64, 256], [[0.02, 0.02, 0.02], [0.01, 0.03, 0.06]], [512, 1024])
    far = curve.at_context(100_000)  # linear in L would drive small B below 0: must stay valid
    assert np.all(np.diff(far.seconds[0]) >= 0) and np.all(far.seconds[0] > 0)
    pts = [[0.01, 0.02, 0.03], [0.02, 0.03, 0.04]]
    clamp = ThroughputCurve([1, 64, 256], pts, [512, 1024], "clamp")
    np.testing.assert_allclose(clamp.at_context(10_000).seconds[0], [0.02, 0.03, 0.04])
    err = ThroughputCurve([1, 64, 256], pts, [512, 1024], "error")
    with pytest.raises(ValueError, match="context 2000 outside the measured range"):
        err.at_context(2000)


def test_from_profile_is_the_slice_at_requests_and_context():
    """A profile's curve is the StepCost slice at one (n, L): exact at the grid, not a B-average."""
    from sparksched.cost import StepCost

    curve = ThroughputCurve.from_profile("h100-qwen3-8b-roofline", requests=64, context=2048)
    assert curve == StepCost.from_profile("h100-qwen3-8b-roofline").curve(64, 2048)
    assert curve.tokens.tolist() == [64.0, 128.0, 256.0, 512.0]
    rows = {(r["requests"], r["tokens"]): r["median_s"] for r in load_profile("h100-qwen3-8b-roofline")["verify"]
            if r["context"] == 2048}
    np.testing.assert_array_equal(curve.seconds[0], [rows[(64, b)] for b in (64, 128, 256, 512)])
    with pytest.raises(ValueError, match="pass requests= and context="):
        ThroughputCurve.from_profile("h100-qwen3-8b-roofline")
    assert ThroughputCurve.from_profile("h100-qwen3-8b-roofline", "clamp", requests=64, context=2048).extrapolate == "clamp"


def test_from_profile_makes_noisy_medians_monotone_and_averages_repeats():
    prof = _profile([0], [[0.02, 0.018, 0.03]])
    prof["verify"].append({"requests": 1, "tokens": 256, "context": 0, "median_s": 0.05})
    curve = ThroughputCurve.from_profile(prof, requests=1, context=0)
    s = curve.seconds[0]
    assert np.all(np.diff(s) >= 0)
    assert s[0] == pytest.approx(0.019) and s[1] == pytest.approx(0.019)  # pooled, not max'ed
    assert s[2] == pytest.approx(0.04)  # mean of 0.03 and 0.05


def test_json_round_trip():
    curve = ThroughputCurve.from_points([1, 8, 64], [0.01, 0.012, 0.05], extrapolate="clamp")
    back = curve_from_json(json.dumps(curve.to_dict()))
    assert back == curve
    assert "3 points" in repr(curve)


@pytest.mark.parametrize("tokens, seconds, match", [
    ([1, 2, 3], [1.0, 0.5, 2.0], r"step time decreases from 1.0 s at B=1 to 0.5 s at B=2"),
    ([1, 1, 3], [1.0, 1.0, 2.0], r"strictly increasing, got 1.0 then 1.0"),
    ([0, 2], [1.0, 2.0], r"batch_tokens must be > 0, got 0"),
    ([1, 2], [0.0, 2.0], r"step_seconds must be > 0, got 0"),
    ([1, 2], [1.0, float("nan")], r"must be finite"),
    ([1, 2], [1.0], r"1-D of equal length"),
    ([], [], r"at least one point"),
])
def test_bad_points(tokens, seconds, match):
    with pytest.raises(ValueError, match=match):
        ThroughputCurve.from_points(tokens, seconds)


def test_bad_options_and_profiles():
    with pytest.raises(ValueError, match="extrapolate must be one of"):
        ThroughputCurve.from_points([1, 2], [1.0, 2.0], extrapolate="cubic")
    with pytest.raises(ValueError, match="context must be a finite length >= 0, got -1"):
        _context_curve().at_context(-1)
    with pytest.raises(ValueError, match="missing field 'verify'"):
        ThroughputCurve.from_profile({"schema": 1, "device": {}, "model": {}, "dtype": "x"}, requests=1, context=0)
