"""Two-phase budget: plan_budget (host, stale confidences, global search) + assign_budget (device top-K)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import JAGGED
from host_sync_guard import forbid_host_sync
from hypothesis import given, settings
from hypothesis import strategies as st

from sparksched.async_scheduler import admit_top_k, plan_capacity
from sparksched.budget import assign_budget, budget_rates, plan_budget
from sparksched.curve import ThroughputCurve
from sparksched.scheduler import schedule_reference

# flat, then a tile-boundary cliff, then flat again: the greedy's early stop halts before the cliff
SMOOTH = ThroughputCurve.from_points([1, 256], [0.010, 0.030])


def _reference_assign(conf: np.ndarray, budget: int, drafted: np.ndarray | None = None) -> list[int]:
    """Spec: sort candidates (i, k) with S > 0 by (-S, k, i); admit the first `budget`."""
    n, g = conf.shape
    d = [g] * n if drafted is None else list(drafted)
    cands = []
    for i in range(n):
        s = 1.0
        for k in range(d[i]):
            s = conf[i, k] if k == 0 else s * conf[i, k]
            if s > 0:
                cands.append((-s, k, i))
    cands.sort()
    lengths = [0] * n
    for _, k, i in cands[:budget]:
        lengths[i] = max(lengths[i], k + 1)
    return lengths


def _brute_force_budget(conf: np.ndarray, curve: ThroughputCurve, draft_s: float = 0.0) -> int:
    s = np.cumprod(conf, axis=1).ravel()
    s = np.sort(s[s > 0])[::-1]
    n = conf.shape[0]
    rates = [(n + s[:k].sum()) / (draft_s + float(curve.step_time(n + k))) for k in range(s.size + 1)]
    return int(np.argmax(rates))


confs = st.integers(0, 10_000).flatmap(lambda seed: st.tuples(
    st.just(seed), st.integers(1, 6), st.integers(1, 5)))


def _conf(seed: int, n: int, g: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if seed % 3 == 0:
        return rng.choice([0.0, 0.25, 0.5, 0.8, 1.0], size=(n, g))   # ties and exact 0 / 1
    return rng.random((n, g))


@settings(max_examples=60, deadline=None)
@given(confs, st.sampled_from([JAGGED, SMOOTH]), st.floats(0.0, 0.01))
def test_plan_budget_is_the_global_argmax(args, curve, draft_s):
    conf = _conf(*args)
    assert plan_budget(conf, curve, draft_seconds=draft_s) == _brute_force_budget(conf, curve, draft_s)


@settings(max_examples=40, deadline=None)
@given(confs, st.sampled_from([JAGGED, SMOOTH]), st.integers(0, 5))
def test_plan_budget_is_the_async_schedulers_plan_capacity_when_no_engine_options(args, curve, extra):
    """No duplicated logic: with no drafter cost / cap it is `plan_capacity`, and assign_budget is
    `admit_top_k`, exactly."""
    conf = _conf(*args)
    k = plan_budget(conf, curve, extra_tokens=extra)
    assert k == plan_capacity(conf, curve, extra_tokens=extra)
    assert assign_budget(torch.as_tensor(conf), k).tolist() == admit_top_k(conf, k).tolist()


def test_plan_budget_jumps_a_cliff_the_greedy_stops_at():
    """Section 5.2: the unconstrained search is not trapped by a cliff; the early stop is."""
    conf = np.full((6, 4), 0.95)
    greedy = int(schedule_reference(conf, JAGGED).sum())
    k = plan_budget(conf, JAGGED)
    rates = budget_rates(conf, JAGGED)
    assert greedy == 2 and k > greedy + 8           # n = 6: B = 8 is the last flat point
    assert rates[k] > rates[greedy]


def test_plan_budget_options():
    conf = np.full((2, 3), 0.9)
    assert plan_budget(conf, JAGGED, max_budget=1) == 1
    assert plan_budget(conf, JAGGED, max_drafted=np.array([0, 1])) == 1
    slow_drafter = dict(draft_seconds=0.05, plain_fallback=True)
    assert plan_budget(conf, JAGGED, **slow_drafter) == 0
    assert plan_budget(conf, JAGGED, draft_seconds=0.05) == 6     # without the fallback: best budget
    assert plan_budget(np.zeros((3, 2)), JAGGED) == 0             # no candidate has S > 0
    assert plan_budget(np.ones((0, 2)), JAGGED) == 0


def test_plan_budget_extra_tokens_move_the_base_batch():
    conf = np.full((2, 3), 0.9)
    # 6 prefill tokens + 2 anchors = 8: the next verified token crosses the cliff at 9
    assert plan_budget(conf, JAGGED, extra_tokens=6) == _brute_force_budget_extra(conf, JAGGED, 6)


def _brute_force_budget_extra(conf, curve, extra):
    s = np.sort(np.cumprod(conf, axis=1).ravel())[::-1]
    n = conf.shape[0]
    rates = [(n + s[:k].sum()) / float(curve.step_time(extra + n + k)) for k in range(s.size + 1)]
    return int(np.argmax(rates))


def test_plan_budget_refuses_device_tensors_and_bad_values():
    with pytest.raises(ValueError, match="must not read a device tensor"):
        plan_budget(torch.empty(2, 2, device="meta"), JAGGED)
    with pytest.raises(ValueError, match=r"conf\[0, 1\]"):
        plan_budget(np.array([[0.5, 1.5]]), JAGGED)
    with pytest.raises(ValueError, match="draft_seconds"):
        plan_budget(np.array([[0.5, 0.5]]), JAGGED, draft_seconds=-1.0)
    with pytest.raises(ValueError, match="drafted"):
        plan_budget(np.array([[0.5, 0.5]]), JAGGED, max_drafted=np.array([3]))
    with pytest.raises(ValueError, match="max_budget"):
        plan_budget(np.array([[0.5, 0.5]]), JAGGED, max_budget=-1)
    assert plan_budget(torch.full((2, 2), 0.9), JAGGED) == plan_budget(np.full((2, 2), 0.9), JAGGED)


@settings(max_examples=80, deadline=None)
@given(confs, st.integers(0, 40), st.booleans())
def test_assign_budget_is_top_k_by_current_survival(args, budget, ragged):
    conf = _conf(*args)
    n, g = conf.shape
    drafted = np.random.default_rng(args[0]).integers(0, g + 1, size=n) if ragged else None
    want = _reference_assign(conf, budget, drafted)
    dt = None if drafted is None else torch.as_tensor(drafted)
    got = assign_budget(torch.as_tensor(conf), budget, dt)
    assert got.dtype == torch.int64 and got.tolist() == want
    assert assign_budget(torch.as_tensor(conf), torch.tensor(budget), dt).tolist() == want  # tensor budget
    assert assign_budget(torch.as_tensor(conf, dtype=torch.float32),
                         budget, dt).tolist() == _reference_assign(
                             torch.as_tensor(conf, dtype=torch.float32).double().numpy(), budget, drafted)
    n_cand = sum(1 for i in range(n) for k in range(g if drafted is None else drafted[i])
                 if np.prod(conf[i, : k + 1]) > 0)
    assert sum(want) == min(budget, n_cand)


def _valid_admission(conf: np.ndarray, admitted: set[tuple[int, int]]) -> bool:
    """Prefix-closed per request, and no rejected candidate has a larger survival than an admitted one."""
    s = np.cumprod(conf, axis=1)
    if any((i, j) not in admitted for i, k in admitted for j in range(k)):
        return False
    rejected = [s[i, k] for i in range(conf.shape[0]) for k in range(conf.shape[1])
                if (i, k) not in admitted and s[i, k] > 0]
    return not admitted or not rejected or min(s[i, k] for i, k in admitted) >= max(rejected)


def _as_set(lengths: list[int]) -> set[tuple[int, int]]:
    return {(i, k) for i, li in enumerate(lengths) for k in range(li)}


def test_negative_control_ranking_by_conditional_confidence_is_caught():
    """Ranking by c_{i,k} instead of the survival S_{i,k} is not prefix-closed; the check sees it."""
    conf = np.array([[0.6, 0.99], [0.9, 0.1]])
    good = assign_budget(torch.as_tensor(conf), 2).tolist()
    top = np.argsort(-conf.ravel(), kind="stable")[:2]                 # c = 0.99 at (0, 1), 0.9 at (1, 0)
    wrong = {(int(t) // 2, int(t) % 2) for t in top}
    assert _valid_admission(conf, _as_set(good))
    assert not _valid_admission(conf, wrong)


def test_assign_budget_never_syncs_and_is_a_prefix():
    conf = torch.rand(8, 5, generator=torch.Generator().manual_seed(0))
    budget = torch.tensor(11)
    with forbid_host_sync():
        lengths = assign_budget(conf, budget, torch.full((8,), 4), validate=False)
    assert int(lengths.sum()) == 11 and bool((lengths <= 4).all())
    assert _valid_admission(conf.double().numpy()[:, :4], _as_set(lengths.tolist()))


def test_assign_budget_with_the_planned_budget_matches_the_greedy_on_a_smooth_curve():
    """On a concave-rate (smooth) curve the global argmax equals the greedy's stop, so planning on
    fresh confidences and assigning top-K reproduces Algorithm 1 exactly."""
    rng = np.random.default_rng(5)
    for _ in range(20):
        conf = rng.random((5, 4))
        k = plan_budget(conf, SMOOTH)
        assert assign_budget(torch.as_tensor(conf), k).tolist() == schedule_reference(conf, SMOOTH).tolist()


def test_assign_budget_bad_shapes():
    with pytest.raises(ValueError, match="conf"):
        assign_budget(torch.rand(3), 1)
    with pytest.raises(ValueError, match="budget"):
        assign_budget(torch.rand(3, 2), -1)
    with pytest.raises(ValueError, match="budget"):
        assign_budget(torch.rand(3, 2), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="drafted"):
        assign_budget(torch.rand(3, 2), 1, torch.tensor([1, 1]))
