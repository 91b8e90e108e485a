"""Exact-enumeration verdicts on the other engines' adaptive rules (issue 8, item 7).

Reuses the core's enumeration machinery (`tests/helpers.py`: a toy world with random target
/ draft distributions per context, Markov confidences c_k = f(x_{k-1}), other requests in the
batch, step-time curves with flat stretches and cliffs; the law of the emitted tokens is computed
exactly in float64 and compared with the target's to 1e-12).

The rules are the simulator's own policy objects (`simulator/policies.py`), called exactly as the
engine calls them. A stateful policy is warmed up on a random history, then deep-copied for every
enumerated draft block, so each block sees the same pre-step state: that is what "decided before
the current tokens exist" means.

Verdicts:
* vLLM-style adaptive verification (budget K from the *previous* step's confidences, global argmax
  over K with the drafter's time, plain-decoding fallback, then top-K by current survival):
  lossless. The budget is stale, and top-K by a non-increasing survival never looks past (i, k).
* The same rule with K searched on the *current* confidences (no early stop): NOT lossless; it is
  the retrospective global search of Appendix A (first-token law (0.85, 0.15) instead of (0.7, 0.3)).
* The stale-budget rule fed a confidence that reads the drawn token itself (an online acceptance
  estimator using x_k's own logit): NOT lossless; the budget being stale does not save it, because
  the ranking inside the step still compares x_k-dependent scores.
* SGLang-style adaptive step count (one depth for the batch from {1, 3, 7} by an EMA of past
  accepted lengths): lossless, it never reads the current tokens or confidences. A depth picked
  from the current block's c_3 (which reads x_2) is NOT: x_2's own value decides whether x_2 is
  verified (negative control).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from helpers import (
    APPENDIX_A_CURVE,
    FAST,
    TOL,
    World,
    appendix_a_law,
    cliff_cases,
    max_law_error,
    worlds_and_curves,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.config import SimConfig
from simulator.policies import make_policy
from sparksched.async_scheduler import admit_top_k
from sparksched.budget import plan_budget
from sparksched.cost import StepPrice


def _price(curve, extra: int = 0, draft_s: float = 0.0) -> StepPrice:
    """What the engine hands a policy: the verify slice, a prefill chunk's seconds (here 10 ms per
    `extra` token: any constant the current tokens cannot move) and the drafter's seconds."""
    return StepPrice(curve, 0.01 * extra, draft_s)


def _warmed(name: str, block: int, n: int, seed: int, steps: int = 12):
    """The simulator's policy `name` after `steps` random steps on slots 0..n-1."""
    pol = make_policy(SimConfig(policy=name, block=block, max_running=max(n, 1)))
    r = np.random.default_rng(seed)
    slots = np.arange(n)
    curve = APPENDIX_A_CURVE
    for _ in range(steps):
        conf = r.random((n, block))
        drafted = np.full(n, block)
        lengths = pol.lengths(slots, conf, drafted, _price(curve))
        pol.observe(slots, lengths, np.minimum(lengths, r.integers(0, block + 1, n)))
    return pol


def _frozen(pol, curve, extra: int, draft_s: float = 0.0):
    """conf -> lengths with the policy's state frozen at its pre-step value (deep copy per call)."""

    def policy(conf: np.ndarray) -> np.ndarray:
        p = copy.deepcopy(pol)
        n, g = conf.shape
        return p.lengths(np.arange(n), conf, np.full(n, g), _price(curve, extra, draft_s))

    return policy


# ----------------------------------------------------------------------------------- static threshold
@FAST
@given(worlds_and_curves(), st.sampled_from(["conf-threshold-0", "conf-threshold-0.45", "conf-threshold-0.9"]))
def test_simulator_conf_threshold_is_lossless(wc, name):
    """The simulator's conf-threshold-TAU policy object, called as the engine calls it: exact."""
    world, curve, extra = wc
    pol = make_policy(SimConfig(policy=name, block=world.block, max_running=world.others + 1))
    assert max_law_error(world, _frozen(pol, curve, extra), tokens=2) < TOL


# ----------------------------------------------------------------------------------- vLLM-style
@FAST
@given(worlds_and_curves(), st.integers(0, 2**32 - 1), st.sampled_from([0.0, 0.3]))
def test_vllm_adaptive_with_a_stale_budget_is_lossless(wc, seed, draft_s):
    world, curve, extra = wc
    pol = _warmed("vllm-adaptive", world.block, world.others + 1, seed)
    assert max_law_error(world, _frozen(pol, curve, extra, draft_s), tokens=2) < TOL


@FAST
@given(worlds_and_curves(), st.integers(0, 2**32 - 1))
def test_async_dspark_with_capacity_from_two_steps_back_is_lossless(wc, seed):
    world, curve, extra = wc
    pol = _warmed("async-dspark", world.block, world.others + 1, seed)
    assert max_law_error(world, _frozen(pol, curve, extra), tokens=2) < TOL


def _current_budget(curve, extra: int = 0):
    """NEGATIVE CONTROL: vLLM's rule with K planned on the *current* confidences."""

    def policy(conf: np.ndarray) -> np.ndarray:
        k = plan_budget(conf, curve, extra_tokens=extra)
        return admit_top_k(conf, k)

    return policy


def test_vllm_rule_on_current_confidences_is_the_biased_global_search():
    np.testing.assert_allclose(appendix_a_law(_current_budget(APPENDIX_A_CURVE)), [0.85, 0.15], atol=1e-12)
    worst = max(max_law_error(w, _current_budget(c), tokens=1) for w, c in cliff_cases(cheat=False))
    assert worst > 0.05, worst


def test_vllm_rule_with_a_stale_budget_is_exact_on_appendix_a():
    pol = _warmed("vllm-adaptive", 2, 1, seed=3)
    np.testing.assert_allclose(appendix_a_law(_frozen(pol, APPENDIX_A_CURVE, 0)), [0.7, 0.3], atol=1e-15)


def test_stale_budget_does_not_save_a_confidence_that_reads_its_own_token():
    """An online estimator scoring x_k by its own logit leaks x_k into the top-K ranking."""
    worst = 0.0
    for seed in range(40):
        world = World(seed, vocab=2, block=2, others=1, conf_mode="self")
        r = np.random.default_rng([seed, 11])
        world.conf_table[0] = r.permutation([r.uniform(0.8, 1.0), r.uniform(0.0, 0.3)])
        k_stale = 1                                                 # any budget fixed in advance
        policy = lambda conf, k=k_stale: admit_top_k(conf, k)
        worst = max(worst, max_law_error(world, policy, tokens=1))
        honest = World(seed, 2, 2, 1)
        honest.conf_table = world.conf_table
        assert max_law_error(honest, policy, tokens=1) < TOL       # same table read as Markov: exact
    assert worst > 0.02, worst


# ----------------------------------------------------------------------------------- SGLang-style
@FAST
@given(worlds_and_curves(), st.integers(0, 2**32 - 1), st.integers(0, 30))
def test_sglang_adaptive_depth_is_lossless(wc, seed, steps):
    world, curve, extra = wc
    pol = _warmed("sglang-adaptive", world.block, world.others + 1, seed, steps=steps)
    assert max_law_error(world, _frozen(pol, curve, extra), tokens=2) < TOL


def test_sglang_depth_moves_with_the_accepted_length():
    """Guard against a vacuous pass: the EMA does switch depth both ways."""
    pol = make_policy(SimConfig(policy="sglang-adaptive", block=7))
    slots, conf, drafted = np.arange(4), np.ones((4, 7)), np.full(4, 7)
    depths = []
    for accepted in [0] * 40 + [7] * 40:
        lengths = pol.lengths(slots, conf, drafted, _price(APPENDIX_A_CURVE))
        depths.append(int(lengths[0]))
        pol.observe(slots, lengths, np.minimum(lengths, accepted))
    assert depths[0] == 7 and min(depths) == 1 and depths[-1] > 1


def _depth_from_last_confidence(conf: np.ndarray) -> np.ndarray:
    """NEGATIVE CONTROL: depth 3 or 1 for the batch, chosen from the current block's c_3 = f(x_2).

    Whether x_2 is verified then depends on x_2 itself."""
    depth = 3 if conf[0, 2] >= 0.5 else 1
    return np.full(conf.shape[0], depth)


def test_negative_control_depth_from_a_later_confidence_is_biased():
    worst = 0.0
    for seed in range(20):
        world = World(seed, vocab=2, block=3, others=0)
        r = np.random.default_rng([seed, 12])
        world.conf_table[2] = r.permutation([r.uniform(0.6, 1.0), r.uniform(0.0, 0.4)])   # c_3 = f(x_2)
        worst = max(worst, max_law_error(world, _depth_from_last_confidence, tokens=2))
    assert worst > 0.02, worst


@pytest.mark.parametrize("name", ["vllm-adaptive", "sglang-adaptive", "async-dspark"])
def test_policies_respect_drafted_and_prefix(name):
    pol = _warmed(name, 4, 3, seed=1)
    conf = np.random.default_rng(2).random((3, 4))
    drafted = np.array([4, 2, 0])
    lengths = pol.lengths(np.arange(3), conf, drafted, _price(APPENDIX_A_CURVE))
    assert np.all(lengths <= drafted) and np.all(lengths >= 0)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 1000))
def test_warm_up_is_reproducible(seed):
    a = _warmed("vllm-adaptive", 3, 2, seed)
    b = _warmed("vllm-adaptive", 3, 2, seed)
    conf = np.random.default_rng(seed).random((2, 3))
    assert np.array_equal(_frozen(a, APPENDIX_A_CURVE, 0)(conf), _frozen(b, APPENDIX_A_CURVE, 0)(conf))
