"""Exact losslessness of scheduled speculative decoding, by enumeration in float64.

A toy "world" gives, for every context (a tuple of token ids), a target distribution p, a draft
distribution q (random, with zeros, equal pairs and disjoint supports), and Markov confidences
c_k = f(k, x_{k-1}) (exact 0 and 1 included). Other requests share the batch with their own
confidences (drawn from the context). For one subject request we enumerate every draft block,
call the scheduling policy on the whole batch, enumerate rejection sampling exactly, and chain
rounds until T >= 2 tokens are emitted; the law of the first T tokens must equal the target's
to 1e-12. Curves are arbitrary non-decreasing step-time tables with flat stretches and jumps.

Negative controls use the same machinery and must FAIL: a retrospective global search over all
verify lengths, and a confidence computed from x_k itself.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sparksched import ThroughputCurve, schedule, schedule_reference
from sparksched.async_scheduler import admit_top_k, plan_capacity
from sparksched.policies import conf_threshold, static, threshold, verify_all
from sparksched.scheduler import step_times

TOL = 1e-12
Policy = Callable[[np.ndarray], np.ndarray]  # conf [n, g] -> lengths [n]; the subject is row 0


class World:
    """Deterministic random target/draft/confidence model keyed by context."""

    def __init__(self, seed: int, vocab: int, block: int, others: int, conf_mode: str = "markov"):
        self.seed, self.vocab, self.block, self.others, self.conf_mode = seed, vocab, block, others, conf_mode
        r = np.random.default_rng([seed, 7])
        # Markov confidence table c[k][prev token]: a mix of exact 0, exact 1 and interior values
        self.conf_table = np.where(r.random((block, vocab)) < 0.2, r.integers(0, 2, (block, vocab)),
                                   r.random((block, vocab)))
        self._cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def dists(self, ctx: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(p, q) at context ctx: float64 [V] each, normalised."""
        if ctx not in self._cache:
            r = np.random.default_rng([self.seed, 1, len(ctx), *ctx])
            p = r.dirichlet(np.ones(self.vocab) * 0.7)
            kind = r.integers(0, 6)
            if kind == 0:
                q = p.copy()  # p = q: never rejected
            elif kind == 1 and self.vocab > 1:
                cut = r.integers(1, self.vocab)  # disjoint supports
                p[:cut] = 0.0
                q = np.zeros(self.vocab)
                q[:cut] = r.dirichlet(np.ones(cut))
            else:
                q = r.dirichlet(np.ones(self.vocab) * 0.7)
                if kind == 2:
                    q[r.integers(0, self.vocab)] = 0.0  # q = 0 where p > 0
                if kind == 3:
                    p[r.integers(0, self.vocab)] = 0.0  # p = 0 where q > 0
            if p.sum() == 0:
                p[-1] = 1.0
            if q.sum() == 0:
                q[0] = 1.0
            self._cache[ctx] = (p / p.sum(), q / q.sum())
        return self._cache[ctx]

    def confidence(self, k: int, ctx: tuple[int, ...], block: tuple[int, ...]) -> float:
        """c_{k+1} (0-based k) for the draft block `block` after context ctx."""
        if self.conf_mode == "markov":  # allowed: a function of x_{k-1} (the anchor for k = 0)
            prev = (ctx + block[:k])[-1]
        else:  # "self": reads x_k itself, which the contract forbids
            prev = block[k]
        return float(self.conf_table[k, prev])

    def other_conf(self, ctx: tuple[int, ...]) -> np.ndarray:
        """Confidences of the other requests in the batch this round: [others, g]."""
        r = np.random.default_rng([self.seed, 3, len(ctx), *ctx])
        c = r.random((self.others, self.block))
        return np.where(r.random(c.shape) < 0.15, np.round(c), c)


def round_law(world: World, ctx: tuple[int, ...], policy: Policy) -> dict[tuple[int, ...], float]:
    """Exact law of the tokens one round emits for the subject request after context ctx."""
    out: dict[tuple[int, ...], float] = defaultdict(float)
    v, g = world.vocab, world.block
    others = world.other_conf(ctx)
    for block in itertools.product(range(v), repeat=g):
        prob = 1.0
        for k in range(g):
            prob *= world.dists(ctx + block[:k])[1][block[k]]
        if prob == 0.0:
            continue
        conf = np.vstack([[world.confidence(k, ctx, block) for k in range(g)], others])
        length = int(policy(conf)[0])
        alive = prob
        for k in range(length):
            p, q = world.dists(ctx + block[:k])
            x = block[k]
            accept = 1.0 if q[x] <= 0 else min(1.0, p[x] / q[x])
            reject = alive * (1.0 - accept)
            if reject > 0.0:
                residual = np.maximum(p - q, 0.0)
                residual = residual / residual.sum() if residual.sum() > 0 else p
                for y in range(v):
                    out[block[:k] + (y,)] += reject * residual[y]
            alive *= accept
            if alive == 0.0:
                break
        else:
            p = world.dists(ctx + block[:length])[0]
            for y in range(v):
                out[block[:length] + (y,)] += alive * p[y]
    return out


def output_law(world: World, ctx: tuple[int, ...], tokens: int, policy: Policy,
               memo: dict | None = None) -> dict[tuple[int, ...], float]:
    """Exact law of the first `tokens` emitted tokens, chaining rounds."""
    memo = {} if memo is None else memo
    key = (ctx, tokens)
    if key in memo:
        return memo[key]
    law: dict[tuple[int, ...], float] = defaultdict(float)
    for seq, pr in round_law(world, ctx, policy).items():
        if pr == 0.0:
            continue
        if len(seq) >= tokens:
            law[seq[:tokens]] += pr
        else:
            for rest, pr2 in output_law(world, ctx + seq, tokens - len(seq), policy, memo).items():
                law[seq + rest] += pr * pr2
    memo[key] = law
    return law


def max_law_error(world: World, policy: Policy, tokens: int = 2, ctx: tuple[int, ...] = (0,)) -> float:
    """max over token sequences of |P_emitted - P_target| for the first `tokens` tokens."""
    law = output_law(world, ctx, tokens, policy)
    err = 0.0
    for seq in itertools.product(range(world.vocab), repeat=tokens):
        target = 1.0
        for t in range(tokens):
            target *= world.dists(ctx + seq[:t])[0][seq[t]]
        err = max(err, abs(law.get(seq, 0.0) - target))
    assert abs(sum(law.values()) - 1.0) < 1e-12
    return err


def global_search(curve: ThroughputCurve, extra: int = 0) -> Policy:
    """NEGATIVE CONTROL: the best R over every choice of verify lengths (retrospective, no early stop)."""

    def policy(conf: np.ndarray) -> np.ndarray:
        n, g = conf.shape
        surv = np.cumprod(conf, axis=1)
        best, best_l = -1.0, None
        for ls in itertools.product(range(g + 1), repeat=n):
            expected = n + sum(surv[i, :ls[i]].sum() for i in range(n))
            rate = expected / float(step_times(curve, np.asarray([extra + n + sum(ls)]))[0])
            if rate > best:
                best, best_l = rate, ls
        return np.asarray(best_l)

    return policy


# ---------------------------------------------------------------------------------------- strategies
@st.composite
def worlds_and_curves(draw, max_vocab: int = 4, max_block: int = 3, max_others: int = 2):
    vocab = draw(st.integers(1, max_vocab))
    block = draw(st.integers(1, max_block))
    others = draw(st.integers(0, max_others))
    extra = draw(st.integers(0, 2))
    seed = draw(st.integers(0, 2**32 - 1))
    b_max = extra + (others + 1) * (block + 1)
    # non-decreasing step times with flat stretches and jumps: increments in {0, small, cliff}
    steps = draw(st.lists(st.sampled_from([0.0, 0.0, 0.02, 0.1, 0.7, 2.0]), min_size=b_max, max_size=b_max))
    base = draw(st.sampled_from([0.5, 1.0, 3.0]))
    times = base + np.cumsum(steps)
    curve = ThroughputCurve.from_points(np.arange(1, b_max + 1), times, extrapolate="clamp")
    return World(seed, vocab, block, others), curve, extra


FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------- positive
@FAST
@given(worlds_and_curves())
def test_greedy_numpy_is_lossless(wc):
    world, curve, extra = wc
    policy = lambda conf: schedule(conf, curve, extra_tokens=extra)
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
def _cliff_cases(cheat: bool, n: int = 12):
    """Appendix-A-like worlds: the step time jumps right after the base batch, then stays flat.

    For the global-search control, c_2 swings with x_1 (high after one token, 0 after the other)
    and the jump J lies between what verifying x_1 alone and x_1 x_2 is worth. For the
    own-token control, c_1 itself swings with x_1 and J lies between its two values.
    """
    for seed in range(n):
        world = World(seed, vocab=2, block=2, others=0, conf_mode="self" if cheat else "markov")
        r = np.random.default_rng([seed, 99])
        hi = r.uniform(0.8, 1.0)
        if cheat:
            lo = r.uniform(0.0, 0.5)
            world.conf_table[0] = r.permutation([hi, lo])
            jump = r.uniform(lo, hi)
        else:
            c1 = r.uniform(0.6, 0.9)
            world.conf_table[0] = [c1, c1]
            world.conf_table[1] = r.permutation([hi, 0.0])
            jump = c1 * (1 + hi / 2)
        times = np.array([1.0, 1.0 + jump, 1.0 + jump + r.uniform(0.0, 0.05)])
        yield world, ThroughputCurve.from_points([1, 2, 3], times, extrapolate="clamp")


def test_negative_control_global_search_is_biased():
    """The retrospective global search fails the exact test the greedy passes on the same cases."""
    worst_global, worst_greedy = 0.0, 0.0
    for world, curve in _cliff_cases(cheat=False):
        worst_global = max(worst_global, max_law_error(world, global_search(curve), tokens=1))
        worst_greedy = max(worst_greedy, max_law_error(world, lambda c, cv=curve: schedule(c, cv), tokens=1))
    assert worst_greedy < TOL
    assert worst_global > 0.05, worst_global


def test_negative_control_capacity_from_current_confidences_is_biased():
    """The async scheduler's global search over K is only safe on stale confidences: planning K on
    the current ones (which depend on x_1 through c_2) biases the output like the global search."""
    worst_now, worst_stale = 0.0, 0.0
    for world, curve in _cliff_cases(cheat=False):
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
    for cheat, curve in _cliff_cases(cheat=True):
        honest = World(cheat.seed, cheat.vocab, cheat.block, cheat.others)  # same p, q; Markov c
        honest.conf_table = cheat.conf_table
        worst = max(worst, max_law_error(cheat, lambda c, cv=curve: schedule(c, cv), tokens=1))
        worst_markov = max(worst_markov, max_law_error(honest, lambda c, cv=curve: schedule(c, cv), tokens=1))
    assert worst_markov < TOL
    assert worst > 0.05, worst


def test_confidence_from_own_token_design_example():
    """DESIGN.md: target (0.75, 0.25), draft (0.5, 0.5), verify only when the drawn token is A."""
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
def _appendix_a_law(policy: Policy) -> np.ndarray:
    """First-token law in the paper's Appendix A (g = 2, one request, vocabulary {A, B})."""
    p, q = np.array([0.7, 0.3]), np.array([0.5, 0.5])
    p2 = np.array([0.6, 0.4])  # anything: the second position does not affect the first token
    law = np.zeros(2)
    for x1, x2 in itertools.product(range(2), repeat=2):
        prob = q[x1] * q[x2]
        conf = np.array([[0.8, 0.9 if x1 == 0 else 0.0]])
        length = int(policy(conf)[0])
        if length == 0:
            law += prob * p
            continue
        a = min(1.0, p[x1] / q[x1])
        law[x1] += prob * a
        residual = np.maximum(p - q, 0.0)
        law += prob * (1 - a) * residual / residual.sum()
        _ = p2
    return law


APPENDIX_A_CURVE = ThroughputCurve.from_points([1, 2, 3], [1 / 1.0, 1 / 0.5, 1 / 0.45])


def test_appendix_a_global_search_emits_085():
    law = _appendix_a_law(global_search(APPENDIX_A_CURVE))
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
    law = _appendix_a_law(policy)
    assert abs(law[0] - 0.7) < 1e-15 and abs(law[1] - 0.3) < 1e-15


def test_appendix_a_async_capacity_from_stale_confidences_is_exact():
    """The async scheduler's global search is harmless when K comes from stale confidences."""
    k_total = plan_capacity(np.array([[0.8, 0.9]]), APPENDIX_A_CURVE)  # stale: looks great
    assert k_total == 2
    law = _appendix_a_law(lambda c: admit_top_k(c, k_total))
    np.testing.assert_allclose(law, [0.7, 0.3], atol=1e-15)


# ---------------------------------------------------------------------------------------- StepCost
@st.composite
def worlds_and_costs(draw, max_vocab: int = 4, max_block: int = 3, max_others: int = 2):
    """A world and a step-cost surface whose slice depends on the batch's request count and on a
    context drawn for the world (known before the round drafts): flat stretches and cliffs in t,
    a different shape at each n and L, sometimes a KV limit inside the batch."""
    from sparksched import StepCost

    vocab = draw(st.integers(1, max_vocab))
    block = draw(st.integers(1, max_block))
    others = draw(st.integers(0, max_others))
    seed = draw(st.integers(0, 2**32 - 1))
    per = list(range(1, block + 2))
    rows = []
    for ctx in (8, 64):
        for n in (1, 2, 3):
            steps = draw(st.lists(st.sampled_from([0.0, 0.0, 0.02, 0.1, 0.7, 2.0]), min_size=len(per),
                                  max_size=len(per)))
            base = draw(st.sampled_from([0.5, 1.0, 3.0])) * (1 + n / 4) * (1 + ctx / 64)
            rows += [{"requests": n, "tokens": n * t, "tokens_per_request": t, "context": ctx, "median_s": float(s)}
                     for t, s in zip(per, base + np.cumsum(steps))]
    prof = {"schema": 1, "device": {"name": "toy"}, "model": {"preset": "toy"}, "dtype": "float32", "verify": rows}
    if draw(st.booleans()):  # a KV limit: some wide steps at the long context do not fit
        limit = draw(st.integers(3 * 8 + 3, 3 * 64 + 3 * len(per)))
        for r in rows:
            r["fits"] = r["requests"] * r["context"] + r["tokens"] <= max(limit, 64 + len(per))
    context = draw(st.sampled_from([8.0, 20.0, 64.0, 100.0]))
    cost = StepCost.from_profile(prof)
    assume(cost.max_batch_tokens(others + 1, context) >= others + 1)  # the anchors alone must fit
    return World(seed, vocab, block, others), cost, context


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
    for world, curve in _cliff_cases(cheat=False):
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
