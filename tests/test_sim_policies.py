"""The simulator's policy objects (simulator/policies.py): the stateless wrapper prices the whole step."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.config import SimConfig
from simulator.policies import Stateless, make_policy
from sparksched.cost import StepPrice
from sparksched.curve import ThroughputCurve
from sparksched.policies import parse_policy

CURVE = ThroughputCurve.from_points([1, 64, 256, 1024, 4096], [0.008, 0.009, 0.012, 0.030, 0.110])


def _batch(n: int = 48, g: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """slots, non-increasing confidences [n, g] in [0.45, 0.95], every block fully drafted."""
    conf = np.sort(np.random.default_rng(seed).random((n, g)) * 0.5 + 0.45, axis=1)[:, ::-1]
    return np.arange(n), np.ascontiguousarray(conf), np.full(n, g, dtype=np.int64)


class DropsTheDrafter(Stateless):
    """The old bug, kept as a negative control: the table without the drafter's seconds."""

    def lengths(self, slots, conf, drafted, price):  # noqa: D102
        n, g = conf.shape
        return np.asarray(self.fn(conf, price.table(n * (g + 1) + 1, draft=False), drafted), dtype=np.int64)


def _whole_step_reference(name: str, conf: np.ndarray, drafted: np.ndarray, price: StepPrice) -> np.ndarray:
    """The library policy on the whole step's table: verify slice + prefill + drafter, by batch tokens."""
    n, g = conf.shape
    table = CURVE.table(n * (g + 1) + 1) + price.fixed_seconds + price.draft_seconds
    spec, param = parse_policy(name)
    assert spec.make is not None
    return np.asarray(spec.make(param)(conf, table, drafted), dtype=np.int64)


@pytest.mark.parametrize("name", ["dspark", "static-3", "threshold-0.4", "conf-threshold-0.6", "verify-all"])
@pytest.mark.parametrize("draft_s,fixed_s", [(0.0, 0.0), (0.005, 0.0), (0.02, 0.003), (0.1, 0.0)])
def test_stateless_lengths_price_the_drafter(name, draft_s, fixed_s):
    slots, conf, drafted = _batch()
    pol = make_policy(SimConfig(policy=name, block=7))
    assert isinstance(pol, Stateless)
    price = StepPrice(CURVE, fixed_seconds=fixed_s, draft_seconds=draft_s)
    np.testing.assert_array_equal(pol.lengths(slots, conf, drafted, price),
                                  _whole_step_reference(name, conf, drafted, price))


def test_dspark_verifies_more_when_the_drafter_is_dearer():
    """A dearer constant part of the step makes longer verification pay (Θ = τ / step seconds)."""
    slots, conf, drafted = _batch()
    pol = make_policy(SimConfig(policy="dspark", block=7))
    totals = [int(pol.lengths(slots, conf, drafted, StepPrice(CURVE, draft_seconds=d)).sum())
              for d in (0.0, 0.005, 0.02, 0.1)]
    assert totals == sorted(totals) and totals[0] < totals[-1], totals


def test_negative_control_a_wrapper_that_drops_the_drafter_is_caught():
    slots, conf, drafted = _batch()
    pol = make_policy(SimConfig(policy="dspark", block=7))
    wrong = DropsTheDrafter(pol.name, pol.fn)
    price = StepPrice(CURVE, draft_seconds=0.02)
    want = _whole_step_reference("dspark", conf, drafted, price)
    assert not np.array_equal(wrong.lengths(slots, conf, drafted, price), want)
    # without a drafter the two agree: the control differs only in the drafter's seconds
    free = StepPrice(CURVE)
    np.testing.assert_array_equal(wrong.lengths(slots, conf, drafted, free),
                                  _whole_step_reference("dspark", conf, drafted, free))
