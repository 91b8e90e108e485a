"""STS calibration and its metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, logit

from sparksched.calibration import (
    apply_sts,
    calibration_report,
    expected_calibration_error,
    fit_sts,
    roc_auc,
)


def synthetic_rounds(n=20000, g=5, true_temp=(2.0, 1.0, 0.5, 2.0, 1.5), seed=0, ragged=True):
    """Rounds whose true conditional acceptance is sigmoid(z_k); the recorded confidence is
    sigmoid(z_k * t_k), i.e. miscalibrated by temperature t_k (STS should find t_k)."""
    r = np.random.default_rng(seed)
    z = r.normal(0.8, 1.3, (n, g))
    truth = expit(z)
    conf = expit(z * np.asarray(true_temp))
    drafted = r.integers(0, g + 1, n) if ragged else np.full(n, g)
    accepted = np.zeros(n, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    for k in range(g):
        ok = alive & (k < drafted) & (r.random(n) < truth[:, k])
        accepted += ok
        alive = ok
    return conf, accepted, drafted


def test_sts_recovers_temperatures_and_cuts_ece():
    conf, accepted, drafted = synthetic_rounds()
    temps = fit_sts(conf, accepted, drafted)
    # the deep positions see small products, where ECE barely identifies t: check the first four
    np.testing.assert_allclose(temps[:4], [2.0, 1.0, 0.5, 2.0], rtol=0.2)
    rep = calibration_report(conf, accepted, drafted, temps)
    assert np.all(rep.ece_after < 0.02), rep.to_text()
    assert np.all(rep.ece_after[[0, 2, 3]] < rep.ece_before[[0, 2, 3]] / 2), rep.to_text()
    assert "ECE before" in rep.to_text()


def test_auc_of_each_confidence_is_unchanged():
    conf, accepted, drafted = synthetic_rounds(n=5000, seed=1)
    temps = fit_sts(conf, accepted, drafted)
    cal = apply_sts(conf, temps)
    for k in range(conf.shape[1]):
        rows = (drafted >= k + 1) & (accepted >= k)
        label = accepted[rows] >= k + 1
        assert roc_auc(cal[rows, k], label) == roc_auc(conf[rows, k], label)


def test_negative_control_auc_check_catches_a_non_monotone_map():
    conf, accepted, drafted = synthetic_rounds(n=5000, seed=1)
    rows = (drafted >= 1)
    label = accepted[rows] >= 1
    scrambled = np.abs(conf[rows, 0] - 0.5)  # not order-preserving
    assert roc_auc(scrambled, label) != roc_auc(conf[rows, 0], label)


def test_rows_beyond_drafted_are_excluded():
    """Garbage confidences past each row's drafted length do not change the fit."""
    conf, accepted, drafted = synthetic_rounds(n=5000, seed=2)
    junk = conf.copy()
    beyond = np.arange(conf.shape[1])[None, :] >= drafted[:, None]
    junk[beyond] = np.random.default_rng(0).random(beyond.sum())
    np.testing.assert_array_equal(fit_sts(junk, accepted, drafted), fit_sts(conf, accepted, drafted))


def test_negative_control_treating_unverified_as_rejected_biases_the_fit():
    """Counting positions past drafted as 'not accepted' (no exclusion) gives other temperatures."""
    conf, accepted, drafted = synthetic_rounds(n=5000, seed=2)
    right = fit_sts(conf, accepted, drafted)
    wrong = fit_sts(conf, accepted, None)  # pretends every row verified all g positions
    assert np.max(np.abs(np.log(wrong) - np.log(right))) > 0.2


def test_apply_sts_torch_matches_numpy_and_keeps_0_and_1():
    conf = np.array([[0.0, 0.3, 1.0], [0.9, 0.5, 0.2]])
    temps = np.array([0.5, 2.0, 1.3])
    out = apply_sts(conf, temps)
    assert out[0, 0] == 0.0 and out[0, 2] == 1.0
    assert out[1, 1] == pytest.approx(0.5)
    np.testing.assert_allclose(apply_sts(torch.as_tensor(conf), temps).numpy(), out, rtol=1e-12)
    np.testing.assert_allclose(out[1, 0], expit(logit(0.9) / 0.5))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.1, 0.5, 0.5, 0.9, 1.0]), st.booleans()), min_size=2, max_size=40))
def test_roc_auc_matches_pairwise_definition(pairs):
    s = np.array([p[0] for p in pairs])
    y = np.array([p[1] for p in pairs])
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        assert np.isnan(roc_auc(s, y))
        return
    expect = np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])
    assert roc_auc(s, y) == pytest.approx(expect, abs=1e-12)


def test_ece_definition():
    assert expected_calibration_error([0.2, 0.2, 0.8, 0.8], [0, 1, 1, 1], n_bins=10) == pytest.approx(
        0.5 * abs(0.2 - 0.5) + 0.5 * abs(0.8 - 1.0))
    assert expected_calibration_error([1.0, 0.0], [1, 0]) == 0.0
    assert np.isnan(expected_calibration_error([], []))


@pytest.mark.parametrize("call, match", [
    (lambda: fit_sts([[0.5, 1.2]], [0]), r"conf\[0, 1\] = 1.2"),
    (lambda: fit_sts([[0.5, 0.5]], [3]), r"accepted\[0\] = 3: must be in \[0, drafted\[0\]=2\]"),
    (lambda: fit_sts([[0.5, 0.5]], [0], [5]), r"drafted\[0\] = 5"),
    (lambda: fit_sts([[0.5, 0.5]], [0, 1]), r"accepted must have shape \(1,\)"),
    (lambda: fit_sts([[0.5, 0.5]], [0], grid=[0.0, 1.0]), "grid must be"),
    (lambda: apply_sts([[0.5, 0.5]], [1.0, -1.0]), "temps must be"),
    (lambda: apply_sts([[0.5, 0.5]], [1.0]), r"conf must be \[N, 1\]"),
    (lambda: expected_calibration_error([0.5], [1, 0]), "same length"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
