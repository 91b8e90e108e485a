"""Exact losslessness of scheduled speculative decoding, by enumeration in float64.

The machinery (tests/helpers.py): a toy world of target / draft distributions and Markov
confidences; for one subject request every draft block is enumerated, the scheduling policy called
on the whole batch, rejection sampling enumerated exactly, and rounds chained until T >= 2 tokens
are emitted; the law of the first T tokens must equal the target's to 1e-12. Curves are arbitrary
non-decreasing step-time tables with flat stretches and jumps, and step-cost surfaces whose slice
moves with the batch's requests and context.

Negative controls use the same machinery and must FAIL: a retrospective global search over all
verify lengths, and a confidence computed from x_k itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import (
    APPENDIX_A_CURVE,
    FAST,
    FEW,
    TOL,
    World,
    appendix_a_law,
    cliff_cases,
    global_search,
    max_law_error,
    worlds_and_costs,
    worlds_and_curves,
)
from hypothesis import given
from hypothesis import strategies as st

from sparksched import ThroughputCurve, schedule, schedule_reference
from sparksched.async_scheduler import admit_top_k, plan_capacity
from sparksched.policies import conf_threshold, static, threshold, verify_all
from sparksched.scheduler import _SMALL, _schedule_vectorised


def _refuse_scalar_path(*args, **kwargs):
    raise AssertionError("schedule_numpy handed the batch to the scalar reference")
# ---------------------------------------------------------------------------------------- positive
@FAST
@given(worlds_and_curves())
def test_greedy_numpy_is_lossless(wc):
    world, curve, extra = wc
    policy = lambda conf: schedule(conf, curve, extra_tokens=extra)
    assert max_law_error(world, policy, tokens=2) < TOL


@FAST
@given(worlds_and_curves())
def test_greedy_vectorised_numpy_path_is_lossless(wc):
    """The vectorised numpy code itself (the small-batch hand-off to the scalar loop bypassed):
    these worlds hold at most 9 candidates, which `schedule` would give to the reference."""
    world, curve, extra = wc
    policy = lambda conf: _schedule_vectorised(conf, curve, None, extra)
    assert max_law_error(world, policy, tokens=2) < TOL


@FEW
@given(worlds_and_curves(max_vocab=3, max_block=3, min_block=2, min_others=16, max_others=24))
def test_greedy_is_lossless_in_batches_the_dispatch_sends_to_numpy(wc):
    """Crowded batches (> 32 candidates): `schedule` itself takes the vectorised path (the scalar
    reference is made to fail if called), and decoding stays exact."""
    from sparksched import scheduler

    world, curve, extra = wc
    assert (world.others + 1) * world.block > _SMALL
    policy = lambda conf: schedule(conf, curve, extra_tokens=extra)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scheduler, "schedule_reference", _refuse_scalar_path)
        assert max_law_error(world, policy, tokens=2) < TOL


@FEW
@given(worlds_and_curves(max_vocab=3, max_block=2, max_others=1))
def test_greedy_is_lossless_over_three_tokens(wc):
    world, curve, extra = wc
    policy = lambda conf: schedule_reference(conf, curve, extra_tokens=extra)
    assert max_law_error(world, policy, tokens=3) < TOL


@FEW
@given(worlds_and_curves(max_vocab=3, max_block=2))
def test_greedy_torch_is_lossless(wc):
    world, curve, extra = wc
    policy = lambda conf: schedule(torch.from_numpy(conf), curve, extra_tokens=extra).numpy()
    assert max_law_error(world, policy, tokens=2) < TOL


@FAST
@given(worlds_and_curves(), st.integers(0, 2**32 - 1), st.booleans())
def test_async_top_k_with_k_fixed_in_advance_is_lossless(wc, stale_seed, use_torch):
    world, curve, extra = wc
    # K from a global search on stale confidences (independent of the current draft tokens)
    stale = np.random.default_rng(stale_seed).random((world.others + 1, world.block))
    k_total = plan_capacity(stale, curve, extra_tokens=extra)
    if use_torch:
        policy = lambda conf: admit_top_k(torch.from_numpy(conf), torch.tensor(k_total)).numpy()
    else:
        policy = lambda conf: admit_top_k(conf, k_total)
    assert max_law_error(world, policy, tokens=2) < TOL


@FEW
@given(worlds_and_curves(), st.sampled_from(["static1", "static2", "threshold", "all"]))
def test_baseline_policies_are_lossless(wc, name):
    world, curve, extra = wc
    pol = {"static1": static(1), "static2": static(2), "threshold": threshold(0.3), "all": verify_all}[name]
    assert max_law_error(world, lambda conf: pol(conf, curve), tokens=2) < TOL


@FAST
@given(worlds_and_curves(max_block=4), st.sampled_from([0.0, 0.25, 0.5, 0.8, 1.0]), st.booleans())
def test_conf_threshold_is_lossless(wc, tau, use_torch):
    """The paper's static-threshold rule (verify while each own c_k >= tau) is exact: [l >= k] reads
    c_1..c_k only, and c_k reads x_{k-1}, never x_k."""
    world, curve, _ = wc
    pol = conf_threshold(tau)
    if use_torch:
        policy = lambda conf: pol(torch.from_numpy(conf)).numpy()
    else:
        policy = lambda conf: pol(conf)
    assert max_law_error(world, policy, tokens=2) < TOL


def test_negative_control_conf_threshold_on_a_confidence_that_reads_its_own_token():
    """The same rule fed a c_1 computed from x_1 itself (high for one token, low for the other)
    verifies x_1 only when it is that token: the output law is biased, and the exact test sees it.
    On the same table read as a Markov confidence (from the anchor) it is exact."""
    worst = 0.0
    pol = conf_threshold(0.5)
    for seed in range(20):
        world = World(seed, vocab=2, block=2, others=0, conf_mode="self")
        r = np.random.default_rng([seed, 13])
        world.conf_table[0] = r.permutation([r.uniform(0.6, 1.0), r.uniform(0.0, 0.4)])
        worst = max(worst, max_law_error(world, lambda c: pol(c), tokens=1))
        honest = World(seed, 2, 2, 0)
        honest.conf_table = world.conf_table
        assert max_law_error(honest, lambda c: pol(c), tokens=2) < TOL
    assert worst > 0.02, worst


def test_enumeration_exercises_token_dependent_lengths():
    """Guard against a vacuous pass: lengths vary across enumerated blocks and rounds, still exact."""
    varying = 0
    for seed in range(30):
        r = np.random.default_rng([seed, 5])
        world = World(seed, vocab=3, block=3, others=int(r.integers(0, 3)))
        b_max = (world.others + 1) * 4
        times = 1.0 + np.cumsum(r.choice([0.0, 0.0, 0.05, 0.3, 1.0], b_max))
        curve = ThroughputCurve.from_points(np.arange(1, b_max + 1), times, extrapolate="clamp")
        seen: list[int] = []

        def policy(conf, cv=curve, seen=seen):
            lengths = schedule(conf, cv)
            seen.append(int(lengths[0]))
            return lengths

        assert max_law_error(world, policy, tokens=2) < TOL
        varying += len(set(seen)) > 1
    assert varying >= 5, varying


# ---------------------------------------------------------------------------------------- negative
def test_negative_control_global_search_is_biased():
    """The retrospective global search fails the exact test the greedy passes on the same cases."""
    worst_global, worst_greedy = 0.0, 0.0
    for world, curve in cliff_cases(cheat=False):
        worst_global = max(worst_global, max_law_error(world, global_search(curve), tokens=1))
        worst_greedy = max(worst_greedy, max_law_error(world, lambda c, cv=curve: schedule(c, cv), tokens=1))
    assert worst_greedy < TOL
    assert worst_global > 0.05, worst_global


def test_negative_control_capacity_from_current_confidences_is_biased():
    """The async scheduler's global search over K is only safe on stale confidences: planning K on
    the current ones (which depend on x_1 through c_2) biases the output like the global search."""
    worst_now, worst_stale = 0.0, 0.0
    for world, curve in cliff_cases(cheat=False):
        now = lambda c, cv=curve: admit_top_k(c, plan_capacity(c, cv))
        stale_k = plan_capacity(np.array([[world.conf_table[0, 0], 0.9]]), curve)  # fixed in advance
        stale = lambda c, k=stale_k: admit_top_k(c, k)
        worst_now = max(worst_now, max_law_error(world, now, tokens=1))
        worst_stale = max(worst_stale, max_law_error(world, stale, tokens=1))
    assert worst_stale < TOL
    assert worst_now > 0.05, worst_now


def test_negative_control_confidence_from_own_token_is_biased():
    """c_k computed from x_k itself (an online estimator reading the drawn token) breaks losslessness."""
    worst, worst_markov = 0.0, 0.0
    for cheat, curve in cliff_cases(cheat=True):
        honest = World(cheat.seed, cheat.vocab, cheat.block, cheat.others)  # same p, q; Markov c
        honest.conf_table = cheat.conf_table
        worst = max(worst, max_law_error(cheat, lambda c, cv=curve: schedule(c, cv), tokens=1))
        worst_markov = max(worst_markov, max_law_error(honest, lambda c, cv=curve: schedule(c, cv), tokens=1))
    assert worst_markov < TOL
    assert worst > 0.05, worst


def test_confidence_from_own_token_design_example():
    """docs/method.md: target (0.75, 0.25), draft (0.5, 0.5), verify only when the drawn token is A."""
    p, q = np.array([0.75, 0.25]), np.array([0.5, 0.5])
    curve = ThroughputCurve.from_points([1, 2], [1.0, 1.0])
    law = np.zeros(2)
    for x in range(2):
        c = np.array([[1.0 if x == 0 else 0.0]])  # reads x_1 itself
        length = int(schedule(c, curve)[0])
        if length == 1:
            a = min(1.0, p[x] / q[x])
            law[x] += q[x] * a
            law += q[x] * (1 - a) * (np.maximum(p - q, 0) / np.maximum(p - q, 0).sum())
        else:
            law += q[x] * p
    assert law[0] == pytest.approx(0.875, abs=1e-12)


# ---------------------------------------------------------------------------------------- Appendix A
def test_appendix_a_global_search_emits_085():
    law = appendix_a_law(global_search(APPENDIX_A_CURVE))
    np.testing.assert_allclose(law, [0.85, 0.15], atol=1e-12)


@pytest.mark.parametrize("impl", ["reference", "numpy", "torch"])
def test_appendix_a_greedy_is_exact(impl):
    if impl == "reference":
        policy = lambda c: schedule_reference(c, APPENDIX_A_CURVE)
    elif impl == "numpy":
        policy = lambda c: schedule(c, APPENDIX_A_CURVE)
    else:
        policy = lambda c: schedule(torch.from_numpy(c), APPENDIX_A_CURVE).numpy()
    assert policy(np.array([[0.8, 0.9]]))[0] == 0  # stops at l = 0: R1 = 0.9 < R0 = 1.0
    law = appendix_a_law(policy)
    assert abs(law[0] - 0.7) < 1e-15 and abs(law[1] - 0.3) < 1e-15


def test_appendix_a_async_capacity_from_stale_confidences_is_exact():
    """The async scheduler's global search is harmless when K comes from stale confidences."""
    k_total = plan_capacity(np.array([[0.8, 0.9]]), APPENDIX_A_CURVE)  # stale: looks great
    assert k_total == 2
    law = appendix_a_law(lambda c: admit_top_k(c, k_total))
    np.testing.assert_allclose(law, [0.7, 0.3], atol=1e-15)


# ---------------------------------------------------------------------------------------- StepCost
@FAST
@given(worlds_and_costs())
def test_greedy_on_a_step_cost_surface_is_lossless(wcc):
    """The slice at the step's own n (from the batch) and context (fixed before drafting) keeps the
    greedy exact: the slice never reads a draft token."""
    world, cost, ctx = wcc
    policy = lambda conf: schedule(conf, cost, context=ctx)
    assert max_law_error(world, policy, tokens=2) < TOL


@FEW
@given(worlds_and_costs(max_vocab=3, max_block=2), st.integers(0, 2**32 - 1))
def test_async_top_k_on_a_step_cost_surface_is_lossless(wcc, stale_seed):
    world, cost, ctx = wcc
    stale = np.random.default_rng(stale_seed).random((world.others + 1, world.block))
    k_total = plan_capacity(stale, cost, context=ctx)
    assert max_law_error(world, lambda conf: admit_top_k(conf, k_total), tokens=2) < TOL


def test_negative_control_global_search_on_a_step_cost_slice_is_biased():
    """The same surface does not save a search that looks past a non-improving candidate."""
    from sparksched import StepCost

    worst_global, worst_greedy = 0.0, 0.0
    for world, curve in cliff_cases(cheat=False):
        # a surface whose slice at n = 1 is the cliff curve, and a dearer one at n = 2
        rows = [{"requests": n, "tokens": n * t, "tokens_per_request": t, "context": 16,
                 "median_s": float(s * n)} for n in (1, 2) for t, s in zip((1, 2, 3), curve.seconds[0])]
        cost = StepCost.from_profile({"schema": 1, "device": {}, "model": {}, "dtype": "x", "verify": rows})
        sliced = cost.curve(1, 16.0)
        np.testing.assert_array_equal(sliced.seconds[0], curve.seconds[0])
        worst_global = max(worst_global, max_law_error(world, global_search(sliced), tokens=1))
        worst_greedy = max(worst_greedy, max_law_error(world, lambda c, k=cost: schedule(c, k, context=16.0),
                                                       tokens=1))
    assert worst_greedy < TOL
    assert worst_global > 0.05, worst_global
