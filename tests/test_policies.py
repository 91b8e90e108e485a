"""Baseline policies: static-k, survival threshold, per-position confidence threshold, verify-all (numpy and torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparksched import ThroughputCurve, conf_threshold, static, threshold, verify_all

CURVE = ThroughputCurve.from_points([1, 1000], [1.0, 2.0])


def threshold_reference(conf, tau, drafted):
    out = []
    for row, d in zip(conf, drafted):
        s, length = 1.0, 0
        for k in range(d):
            s *= row[k]
            if s >= tau:
                length = k + 1
            else:
                break
        out.append(length)
    return np.asarray(out)


def conf_threshold_reference(conf, tau, drafted):
    """The paper's static-threshold rule, one position at a time: stop at the first c_k < tau."""
    out = []
    for row, d in zip(conf, drafted):
        length = 0
        while length < d and row[length] >= tau:
            length += 1
        out.append(length)
    return np.asarray(out)


@st.composite
def inputs(draw):
    n = draw(st.integers(1, 20))
    g = draw(st.integers(1, 8))
    r = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    conf = np.where(r.random((n, g)) < 0.3, r.choice([0.0, 0.5, 1.0], (n, g)), r.random((n, g)))
    drafted = r.integers(0, g + 1, n) if draw(st.booleans()) else None
    return conf, drafted


def both(policy, conf, drafted):
    """Run numpy and torch; assert they agree and return the numpy result."""
    a = policy(conf, CURVE, drafted)
    b = policy(torch.as_tensor(conf), CURVE, None if drafted is None else torch.as_tensor(drafted))
    assert isinstance(b, torch.Tensor) and b.dtype == torch.int64
    np.testing.assert_array_equal(a, b.numpy())
    assert a.dtype == np.int64
    return a


@settings(max_examples=60, deadline=None)
@given(inputs(), st.integers(0, 9), st.sampled_from([0.0, 0.3, 0.5, 0.9, 1.0]))
def test_policies_match_their_definitions(data, k, tau):
    conf, drafted = data
    n, g = conf.shape
    dr = np.full(n, g) if drafted is None else drafted
    np.testing.assert_array_equal(both(static(k), conf, drafted), np.minimum(k, dr))
    np.testing.assert_array_equal(both(verify_all, conf, drafted), dr)
    np.testing.assert_array_equal(both(threshold(tau), conf, drafted), threshold_reference(conf, tau, dr))
    np.testing.assert_array_equal(both(conf_threshold(tau), conf, drafted), conf_threshold_reference(conf, tau, dr))


@settings(max_examples=40, deadline=None)
@given(inputs(), st.data(), st.sampled_from(["threshold", "conf-threshold"]))
def test_threshold_is_non_anticipating(data, draw, which):
    conf, drafted = data
    n, g = conf.shape
    i, k = draw.draw(st.integers(0, n - 1)), draw.draw(st.integers(0, g - 1))
    pol = threshold(0.4) if which == "threshold" else conf_threshold(0.4)
    before = pol(conf, CURVE, drafted)
    changed = conf.copy()
    changed[i, k + 1:] = np.random.default_rng(k).random(g - k - 1)
    after = pol(changed, CURVE, drafted)
    for kk in range(1, k + 2):
        assert (before[i] >= kk) == (after[i] >= kk)


def test_negative_control_definition_check_catches_a_wrong_threshold():
    """Thresholding c_k instead of the cumulative S_k gives different lengths: the check has teeth."""
    conf = np.array([[0.9, 0.9, 0.9, 0.9]])
    per_token = (conf >= 0.7).cumprod(axis=1).sum(axis=1)
    assert not np.array_equal(per_token, threshold(0.7)(conf, CURVE))


def test_conf_threshold_differs_from_survival_threshold():
    """Per-position vs product: c = (0.9, 0.9, 0.9) clears 0.8 at every position, S_3 = 0.729 does not;
    and a definition check that compared S_k would fail on it (negative control)."""
    conf = np.array([[0.9, 0.9, 0.9], [0.7, 0.99, 0.99]])
    assert conf_threshold(0.8)(conf, CURVE).tolist() == [3, 0]
    assert threshold(0.8)(conf, CURVE).tolist() == [2, 0]
    assert not np.array_equal(threshold_reference(conf, 0.8, [3, 3]), conf_threshold(0.8)(conf, CURVE))


def test_mtp1_is_static_one():
    conf = np.array([[0.9], [0.1]])
    np.testing.assert_array_equal(static(1)(conf, CURVE), [1, 1])


@pytest.mark.parametrize("make, match", [
    (lambda: static(-1), r"static\(k\): k must be an integer >= 0, got -1"),
    (lambda: static(1.5), r"got 1.5"),
    (lambda: threshold(1.2), r"threshold\(tau\): tau must be a number in \[0, 1\], got 1.2"),
    (lambda: threshold(float("nan")), r"got nan"),
    (lambda: conf_threshold(-0.1), r"conf_threshold\(tau\): tau must be a number in \[0, 1\], got -0.1"),
    (lambda: conf_threshold(True), r"got True"),
])
def test_bad_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"conf\[0, 0\] = 2.0"):
        verify_all([[2.0]], CURVE)
    with pytest.raises(ValueError, match=r"drafted\[0\] = 5"):
        static(1)([[0.5, 0.5]], CURVE, [5])
    with pytest.raises(ValueError, match=r"drafted must have shape \(1,\)"):
        threshold(0.5)(torch.ones(1, 2), CURVE, torch.ones(2, dtype=torch.int64))


@pytest.mark.parametrize("policy", [static(2), threshold(0.5), verify_all])
@pytest.mark.parametrize("conf, drafted, match", [
    ([[0.5, float("nan")]], None, r"conf\[0, 1\] = nan"),
    ([[0.5, 1.5]], None, r"conf\[0, 1\] = 1.5"),
    ([[0.5, 0.5]], [-1], r"drafted\[0\] = -1"),
    ([[0.5, 0.5]], [3], r"drafted\[0\] = 3: must be in \[0, g=2\]"),
])
def test_torch_path_checks_values_like_the_numpy_path(policy, conf, drafted, match):
    """Issue 15, 10f: on tensors the policies returned negative lengths or lengths > g."""
    c = torch.as_tensor(conf, dtype=torch.float64)
    d = None if drafted is None else torch.as_tensor(drafted)
    with pytest.raises(ValueError, match=match):
        policy(conf, CURVE, drafted)
    with pytest.raises(ValueError, match=match):
        policy(c, CURVE, d)
    policy(torch.full_like(c, 0.5), CURVE, None, validate=False)  # hot loop: no host reads
