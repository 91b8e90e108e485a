"""The engine's compiled policies equal the library's step-by-step policies, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.epoch import policy_code, step_lengths
from sparksched import schedule
from sparksched.cost import StepPrice
from sparksched.curve import ThroughputCurve
from sparksched.policies import conf_threshold, static, threshold, verify_all


@st.composite
def batches(draw):
    n = draw(st.integers(1, 9))
    g = draw(st.integers(1, 8))
    # a grid of confidences with many ties (exercises the (k, i) tie order) and some zeros
    levels = draw(st.sampled_from([np.array([0.0, 0.5, 0.9, 1.0]), np.linspace(0.0, 1.0, 11)]))
    idx = np.asarray(draw(st.lists(st.integers(0, levels.size - 1), min_size=n * g, max_size=n * g)))
    conf = levels[idx].reshape(n, g)
    drafted = np.asarray(draw(st.lists(st.integers(0, g), min_size=n, max_size=n)), dtype=np.int64)
    prefill_s = draw(st.sampled_from([0.0, 0.002, 0.0173]))
    draft_s = draw(st.sampled_from([0.0, 0.003, 0.0101]))
    # flat, then a cliff, then flat again: the shape where the early stop matters; sometimes a
    # KV limit inside the block (inf past it)
    cliff = draw(st.integers(2, 60))
    xs = [1.0, float(cliff), float(cliff + 1), 4096.0]
    ys = [0.010, 0.010, draw(st.sampled_from([0.011, 0.02, 0.05])), 0.6]
    cap = draw(st.sampled_from([np.inf, float(n + draw(st.integers(0, n * g)))]))
    return conf, drafted, StepPrice(ThroughputCurve.from_points(xs, ys), prefill_s, draft_s, cap)


def compiled(kind, param, conf, drafted, price):
    n, g = conf.shape
    code = policy_code(kind, param, g)
    out = np.full(n, -1, dtype=np.int64)
    c = price.curve
    step_lengths(code[0], code[1], conf, drafted, np.arange(n, dtype=np.int64), c.tokens, c.seconds[0],
                 c.extrapolate == "linear", price.max_tokens, price.draft_seconds + price.fixed_seconds, out)
    return out


@settings(max_examples=200, deadline=None)
@given(batches())
def test_compiled_dspark_equals_library_schedule(case):
    """The engine's compiled greedy on the step's price == the library's schedule on its table."""
    conf, drafted, price = case
    n, g = conf.shape
    want = schedule(conf, price.table(n * (g + 1) + 1), drafted)  # prefill and drafter: constant in B
    np.testing.assert_array_equal(compiled("dspark", None, conf, drafted, price), want)


@settings(max_examples=80, deadline=None)
@given(batches(), st.sampled_from([0.0, 0.3, 0.5, 0.81, 1.0]), st.integers(0, 8))
def test_compiled_baselines_equal_library_policies(case, tau, k):
    conf, drafted, price = case
    curve, extra = price.curve, 0
    np.testing.assert_array_equal(compiled("threshold", tau, conf, drafted, price),
                                  threshold(tau)(conf, curve, drafted, extra))
    np.testing.assert_array_equal(compiled("conf-threshold", tau, conf, drafted, price),
                                  conf_threshold(tau)(conf, curve, drafted, extra))
    np.testing.assert_array_equal(compiled("static", k, conf, drafted, price),
                                  static(k)(conf, curve, drafted, extra))
    np.testing.assert_array_equal(compiled("verify-all", None, conf, drafted, price),
                                  verify_all(conf, curve, drafted, extra))
    np.testing.assert_array_equal(compiled("none", None, conf, drafted, price), np.zeros(conf.shape[0]))


def _no_early_stop(conf, drafted, table, extra):
    """Negative control: the retrospective global argmax (what the early stop forbids)."""
    n, g = conf.shape
    out = np.zeros(n, dtype=np.int64)
    s = np.cumprod(conf, axis=1)
    s[np.arange(g)[None, :] >= drafted[:, None]] = 0.0
    flat = s.T.ravel()
    order = np.argsort(-flat, kind="stable")
    vals = flat[order]
    vals = vals[vals > 0]
    rate = (n + np.concatenate([[0.0], np.cumsum(vals)])) / table[extra + n: extra + n + vals.size + 1]
    np.add.at(out, order[:int(np.argmax(rate))] % n, 1)
    return out


def test_negative_control_global_search_differs_from_library():
    # Appendix-A-like curve: flat, then a cliff; the global search jumps past it, the greedy stops
    curve = ThroughputCurve.from_points([1, 2, 3, 64], [1.0, 2.0, 2.0, 2.0])
    conf = np.array([[0.8, 0.9]])
    drafted = np.array([2])
    want = schedule(conf, curve, drafted)
    assert np.array_equal(compiled("dspark", None, conf, drafted, StepPrice(curve)), want)
    assert not np.array_equal(_no_early_stop(conf, drafted, curve.table(8), 0), want)


def test_negative_control_the_two_thresholds_differ_compiled():
    """The compiled conf-threshold is not the survival threshold under another name."""
    conf = np.array([[0.9, 0.9, 0.9]])
    drafted = np.array([3])
    price = StepPrice(ThroughputCurve.from_points([1, 64], [0.01, 0.02]))
    assert compiled("conf-threshold", 0.8, conf, drafted, price).tolist() == [3]
    assert compiled("threshold", 0.8, conf, drafted, price).tolist() == [2]


def test_stateful_kind_is_an_error():
    with pytest.raises(ValueError, match="no compiled form"):
        policy_code("async-dspark", None, 7)
