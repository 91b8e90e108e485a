"""The simulator's batched policies equal the library's step-by-step policies, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.fastpath import batched_lengths, dspark_lengths
from sparksched import schedule
from sparksched.curve import ThroughputCurve
from sparksched.policies import static, threshold, verify_all


@st.composite
def batches(draw):
    t = draw(st.integers(1, 4))
    n = draw(st.integers(1, 9))
    g = draw(st.integers(1, 8))
    # a grid of confidences with many ties (exercises the (k, i) tie order) and some zeros
    levels = draw(st.sampled_from([np.array([0.0, 0.5, 0.9, 1.0]), np.linspace(0.0, 1.0, 11)]))
    idx = np.asarray(draw(st.lists(st.integers(0, levels.size - 1), min_size=t * n * g, max_size=t * n * g)))
    conf = levels[idx].reshape(t, n, g)
    drafted = np.asarray(draw(st.lists(st.integers(0, g), min_size=n, max_size=n)), dtype=np.int64)
    extra = draw(st.integers(0, 40))
    # flat, then a cliff, then flat again: the shape where the early stop matters
    cliff = draw(st.integers(2, 60))
    xs = [1.0, float(cliff), float(cliff + 1), 4096.0]
    ys = [0.010, 0.010, draw(st.sampled_from([0.011, 0.02, 0.05])), 0.6]
    return conf, drafted, extra, ThroughputCurve.from_points(xs, ys)


def _lib_rows(fn, conf, drafted, curve, extra):
    return np.stack([np.asarray(fn(conf[t], curve, drafted, extra)) for t in range(conf.shape[0])])


@settings(max_examples=150, deadline=None)
@given(batches())
def test_batched_dspark_equals_library_schedule(case):
    conf, drafted, extra, curve = case
    n, g = conf.shape[1:]
    table = curve.table(extra + n * (g + 1) + 1)
    got = dspark_lengths(conf, drafted, table, extra)
    want = _lib_rows(schedule, conf, drafted, curve, extra)
    np.testing.assert_array_equal(got, want)


@settings(max_examples=80, deadline=None)
@given(batches(), st.sampled_from([0.0, 0.3, 0.5, 0.81, 1.0]), st.integers(0, 8))
def test_batched_baselines_equal_library_policies(case, tau, k):
    conf, drafted, extra, curve = case
    n, g = conf.shape[1:]
    table = curve.table(extra + n * (g + 1) + 1)
    np.testing.assert_array_equal(batched_lengths("threshold", tau, conf, drafted, table, extra),
                                  _lib_rows(threshold(tau), conf, drafted, curve, extra))
    np.testing.assert_array_equal(batched_lengths("static", k, conf, drafted, table, extra),
                                  _lib_rows(static(k), conf, drafted, curve, extra))
    np.testing.assert_array_equal(batched_lengths("verify-all", None, conf, drafted, table, extra),
                                  _lib_rows(verify_all, conf, drafted, curve, extra))


def _no_early_stop(conf, drafted, table, extra):
    """Negative control: the retrospective global argmax (what the early stop forbids)."""
    t, n, g = conf.shape
    out = np.zeros((t, n), dtype=np.int64)
    for r in range(t):
        s = np.cumprod(conf[r], axis=1)
        s[np.arange(g)[None, :] >= drafted[:, None]] = 0.0
        flat = s.T.ravel()
        order = np.argsort(-flat, kind="stable")
        vals = flat[order]
        vals = vals[vals > 0]
        rate = (n + np.concatenate([[0.0], np.cumsum(vals)])) / table[extra + n: extra + n + vals.size + 1]
        best = int(np.argmax(rate))
        np.add.at(out[r], order[:best] % n, 1)
    return out


def test_negative_control_global_search_differs_from_library():
    # Appendix-A-like curve: flat, then a cliff; the global search jumps past it, the greedy stops
    curve = ThroughputCurve.from_points([1, 2, 3, 64], [1.0, 2.0, 2.0, 2.0])
    conf = np.array([[[0.8, 0.9]]])
    drafted = np.array([2])
    table = curve.table(8)
    want = _lib_rows(schedule, conf, drafted, curve, 0)
    assert np.array_equal(dspark_lengths(conf, drafted, table), want)
    assert not np.array_equal(_no_early_stop(conf, drafted, table, 0), want)


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="no batched form"):
        batched_lengths("async-dspark", None, np.zeros((1, 1, 1)), np.ones(1, dtype=np.int64), np.ones(4))
