"""schedule_padded: DSpark for a verify pass padded to [n, 1 + max l] (the real loop's layout).

Optimal under the padded price among every vector of verify lengths (brute force), lossless by
exact enumeration, and the per-request greedy (which prices sum(1 + l_i)) as the negative control:
under the padded price it is beaten."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sparksched import ThroughputCurve, schedule, schedule_padded
from sparksched.scheduler import step_times
from tests.helpers import FAST, TOL, max_law_error, worlds_and_curves


def padded_goodput(conf: np.ndarray, lengths: np.ndarray, curve: ThroughputCurve) -> float:
    """Expected emitted tokens / seconds of one padded pass, computed independently of the scheduler."""
    n = conf.shape[0]
    expected = n + sum(float(np.prod(conf[i, :k])) for i in range(n) for k in range(1, int(lengths[i]) + 1))
    return expected / float(step_times(curve, np.asarray([n * (1 + int(lengths.max()))]))[0])


@st.composite
def cases(draw):
    n = draw(st.integers(1, 3))
    g = draw(st.integers(1, 4))
    conf = np.asarray(draw(st.lists(st.floats(0, 1), min_size=n * g, max_size=n * g))).reshape(n, g)
    drafted = np.asarray(draw(st.lists(st.integers(0, g), min_size=n, max_size=n)))
    steps = draw(st.lists(st.sampled_from([0.0, 0.0, 0.05, 0.4, 2.0]), min_size=n * (g + 1), max_size=n * (g + 1)))
    curve = ThroughputCurve.from_points(np.arange(1, n * (g + 1) + 1), 1.0 + np.cumsum(steps), extrapolate="clamp")
    return conf, drafted, curve


@FAST
@given(cases())
def test_best_of_every_length_vector_under_the_padded_price(case):
    conf, drafted, curve = case
    got = schedule_padded(conf, curve, drafted)
    assert np.all(got >= 0) and np.all(got <= drafted)
    best = max(padded_goodput(conf, np.asarray(ls), curve)
               for ls in itertools.product(*[range(int(d) + 1) for d in drafted]))
    assert padded_goodput(conf, got, curve) >= best * (1 - 1e-12)


def test_negative_control_the_ragged_greedy_loses_under_the_padded_price():
    """One confident request and one hopeless one: the ragged greedy cuts the hopeless row (saving
    nothing in a padded pass) and stops the confident one early; the padded choice verifies both."""
    conf = np.array([[0.95, 0.95, 0.95], [0.05, 0.05, 0.05]])
    curve = ThroughputCurve.from_points([1, 2, 3, 4, 5, 6, 7, 8], [1.0, 1.0, 1.0, 1.0, 1.3, 1.3, 1.6, 1.6])
    ragged = schedule(conf, curve)
    padded = schedule_padded(conf, curve)
    assert padded_goodput(conf, padded, curve) > padded_goodput(conf, ragged, curve) * 1.01


@FAST
@given(worlds_and_curves())
def test_padded_schedule_is_lossless(wc):
    world, curve, extra = wc
    assert max_law_error(world, lambda conf: schedule_padded(conf, curve), tokens=2) < TOL


def test_negative_control_verify_all_is_not_optimal_under_the_padded_price():
    """The property above rejects a policy that always verifies everything: past a cliff in the
    price, widening the block for drafts that will not be accepted costs more than it earns."""
    conf = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05]])
    curve = ThroughputCurve.from_points([1, 4, 5, 8], [1.0, 1.0, 3.0, 3.0])
    everything = np.array([3, 3])
    assert padded_goodput(conf, schedule_padded(conf, curve), curve) > padded_goodput(conf, everything, curve) * 1.5
