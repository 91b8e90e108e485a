"""Asynchronous top-K scheduler: plan_capacity (global search) and admit_top_k (numpy and torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparksched import ThroughputCurve, admit_top_k, plan_capacity, schedule_numpy, schedule_reference
from sparksched.scheduler import step_time_table, step_times

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@st.composite
def problems(draw):
    n = draw(st.integers(1, 10))
    g = draw(st.integers(1, 6))
    r = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    conf = np.where(r.random((n, g)) < 0.3, r.choice([0.0, 0.5, 1.0], (n, g)), r.random((n, g)))
    drafted = r.integers(0, g + 1, n) if draw(st.booleans()) else None
    extra = draw(st.integers(0, 4))
    b_max = extra + n * (g + 1)
    times = 0.5 + np.cumsum(r.choice([0.0, 0.0, 0.01, 0.3, 1.0], b_max))
    curve = ThroughputCurve.from_points(np.arange(1, b_max + 1), times, extrapolate="clamp")
    return conf, drafted, curve, extra


def sorted_candidates(conf, drafted):
    """Plain-Python candidate list in admission order: (S, k, i), S > 0."""
    n, g = conf.shape
    dr = [g] * n if drafted is None else list(drafted)
    cands = []
    for i in range(n):
        s = 1.0
        for k in range(dr[i]):
            s = conf[i, k] if k == 0 else s * conf[i, k]
            if s > 0:
                cands.append((-s, k, i))
    return sorted(cands)


def top_k_reference(conf, k_total, drafted):
    lengths = np.zeros(conf.shape[0], dtype=np.int64)
    for _, k, i in sorted_candidates(conf, drafted)[:k_total]:
        lengths[i] = max(lengths[i], k + 1)
    return lengths


def rates_along_path(conf, curve, drafted, extra):
    """R after admitting the top j candidates, j = 0..#candidates (the scheduler's arithmetic)."""
    n = conf.shape[0]
    cands = sorted_candidates(conf, drafted)
    rates, numer = [], n * 2**40
    for j in range(len(cands) + 1):
        if j:
            numer += int(np.floor(-cands[j - 1][0] * 2.0**40))
        rates.append(float(numer) / float(step_times(curve, np.asarray([extra + n + j]))[0]))
    return rates


def capacity_reference(conf, curve, drafted, extra):
    rates = rates_along_path(conf, curve, drafted, extra)
    return max(range(len(rates)), key=lambda j: (rates[j], -j))  # best R, smallest K on ties


@SETTINGS
@given(problems(), st.integers(0, 70))
def test_admit_top_k_numpy_torch_reference(problem, k_total):
    conf, drafted, _, _ = problem
    ref = top_k_reference(conf, k_total, drafted)
    np.testing.assert_array_equal(admit_top_k(conf, k_total, drafted), ref)
    out = admit_top_k(torch.as_tensor(conf), torch.tensor(k_total),
                      None if drafted is None else torch.as_tensor(drafted))
    np.testing.assert_array_equal(out.numpy(), ref)
    positives = len(sorted_candidates(conf, drafted))
    assert ref.sum() == min(k_total, positives)


@SETTINGS
@given(problems())
def test_plan_capacity_is_the_global_maximum(problem):
    conf, drafted, curve, extra = problem
    k_total = plan_capacity(conf, curve, extra_tokens=extra, max_drafted=drafted)
    assert k_total == capacity_reference(conf, curve, drafted, extra)
    n, g = conf.shape
    table = torch.as_tensor(step_time_table(curve, extra + n * (g + 1)))
    k_torch = plan_capacity(torch.as_tensor(conf), table, extra_tokens=extra,
                            max_drafted=None if drafted is None else torch.as_tensor(drafted))
    assert k_torch.dim() == 0 and int(k_torch) == k_total
    # never worse than the synchronous greedy's stopping point (one of the K it scans)
    greedy = int(schedule_reference(conf, curve, drafted, extra).sum())
    rates = rates_along_path(conf, curve, drafted, extra)
    assert rates[k_total] >= rates[greedy]


def test_global_capacity_crosses_a_cliff_the_greedy_stops_at():
    """Appendix A curve: the greedy stops at 0, the global search (on stale confidences) picks 2."""
    curve = ThroughputCurve.from_points([1, 2, 3], [1 / 1.0, 1 / 0.5, 1 / 0.45])
    conf = np.array([[0.8, 0.9]])
    assert schedule_numpy(conf, curve).sum() == 0
    assert plan_capacity(conf, curve) == 2


@SETTINGS
@given(problems(), st.integers(0, 40), st.data())
def test_admit_top_k_is_non_anticipating(problem, k_total, data):
    conf, drafted, _, _ = problem
    n, g = conf.shape
    i, k = data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, g - 1))
    before = admit_top_k(conf, k_total, drafted)
    changed = conf.copy()
    changed[i, k + 1:] = np.random.default_rng(k).choice([0.0, 1.0, 0.3], g - k - 1)
    after = admit_top_k(changed, k_total, drafted)
    for kk in range(1, k + 2):
        assert (before[i] >= kk) == (after[i] >= kk)


def test_negative_control_capacity_from_current_confidences_anticipates():
    """K planned on the *current* confidences leaks x_1 through c_2 (Appendix A): the same
    non-anticipation check fails, which is why K must come from stale confidences."""
    curve = ThroughputCurve.from_points([1, 2, 3], [1 / 1.0, 1 / 0.5, 1 / 0.45])
    lengths = [admit_top_k(c, plan_capacity(c, curve)) for c in (np.array([[0.8, 0.9]]), np.array([[0.8, 0.0]]))]
    assert (lengths[0][0] >= 1) != (lengths[1][0] >= 1)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"k_total must be >= 0, got -1"):
        admit_top_k(np.ones((1, 2)), -1)
    with pytest.raises(ValueError, match=r"conf\[0, 1\] = nan"):
        plan_capacity([[0.5, float("nan")]], ThroughputCurve.from_points([1, 9], [1.0, 2.0]))
    with pytest.raises(ValueError, match="table must be 1-D with at least 5 entries"):
        plan_capacity(torch.ones(1, 3), torch.ones(2))


@pytest.mark.parametrize("conf, drafted, match", [
    ([[0.5, float("nan")]], None, r"conf\[0, 1\] = nan"),
    ([[0.5, 0.5]], [-1], r"drafted\[0\] = -1"),
    ([[0.5, 0.5]], [3], r"drafted\[0\] = 3: must be in \[0, g=2\]"),
])
def test_torch_paths_check_values_like_the_numpy_paths(conf, drafted, match):
    """Issue 15, 10f: NaN confidences gave K = 0 and bad drafted counts came back as lengths."""
    c = torch.as_tensor(conf, dtype=torch.float64)
    d = None if drafted is None else torch.as_tensor(drafted)
    table = torch.ones(8, dtype=torch.float64)
    with pytest.raises(ValueError, match=match):
        admit_top_k(c, torch.tensor(2), d)
    with pytest.raises(ValueError, match=match):
        admit_top_k(conf, 2, drafted)
    with pytest.raises(ValueError, match=match):
        plan_capacity(c, table, max_drafted=d)
    with pytest.raises(ValueError, match=match):
        plan_capacity(conf, table.numpy(), max_drafted=drafted)


@pytest.mark.parametrize("k_total", [2.7, 2.0, True, "2", torch.tensor(2.5), torch.tensor([2])])
def test_admit_top_k_refuses_a_k_that_is_not_an_integer(k_total):
    """Issue 15, 10g: admit_top_k(K=2.7) truncated to 2 silently."""
    for conf in (np.full((2, 3), 0.5), torch.full((2, 3), 0.5)):
        if isinstance(k_total, torch.Tensor) and not isinstance(conf, torch.Tensor):
            continue
        with pytest.raises(ValueError, match="k_total must be"):
            admit_top_k(conf, k_total)
    assert admit_top_k(np.full((2, 3), 0.5), np.int64(2)).sum() == 2


def test_torch_paths_skip_value_checks_when_told():
    """validate=False: no host reads (CUDA-graph capture), shapes still checked."""
    from host_sync_guard import forbid_host_sync

    conf = torch.full((4, 3), 0.5, dtype=torch.float64)
    table = torch.ones(4 * 4 + 1, dtype=torch.float64)
    with forbid_host_sync():
        k = plan_capacity(conf, table, validate=False)
        admit_top_k(conf, k, torch.full((4,), 3), validate=False)
    with pytest.raises(ValueError, match="k_total must be a 0-dim integer tensor"):
        admit_top_k(conf, torch.tensor([1, 2]), validate=False)


# ---------------------------------------------------------------------------------------- drafts that stop early
APPENDIX_A = ThroughputCurve.from_points([1, 2, 3], [1 / 1.0, 1 / 0.5, 1 / 0.45])


def _eos_first_token_law(plan) -> np.ndarray:
    """Exact first-token law of one round (one request, g = 2, tokens {EOS = 0, other = 1}).

    Target (0.7, 0.3), draft (0.5, 0.5) at every position. The drafter stops after drafting EOS,
    so drafted = 1 when x_1 = EOS and 2 otherwise: the drafted count depends on x_1. K comes from
    `plan(drafted)` with fixed (stale) confidences; the step then admits the top K by its current
    confidences.
    """
    p, q = np.array([0.7, 0.3]), np.array([0.5, 0.5])
    law = np.zeros(2)
    for x1 in range(2):
        drafted = np.array([1 if x1 == 0 else 2])
        conf = np.array([[0.8, 0.0 if x1 == 0 else 0.9]])
        length = int(admit_top_k(conf, plan(drafted), drafted)[0])
        if length == 0:
            law += q[x1] * p
            continue
        a = min(1.0, p[x1] / q[x1])
        law[x1] += q[x1] * a
        residual = np.maximum(p - q, 0.0)
        law += q[x1] * (1 - a) * residual / residual.sum()
    return law


def test_capacity_must_not_see_the_current_drafted_counts():
    """Issue 15, 10i. With an EOS-stopping drafter the current drafted counts carry x_1: a K that
    sees them emits EOS with probability 0.55 instead of 0.7 (negative control, through the caps
    argument misused). The planners' `drafted` argument, where engines pass this step's counts,
    is ignored (with a DeprecationWarning), so K planned through it is exact."""
    stale = np.array([[0.8, 0.9]])
    leaked = _eos_first_token_law(lambda d: plan_capacity(stale, APPENDIX_A, max_drafted=d))
    np.testing.assert_allclose(leaked, [0.55, 0.45], atol=1e-12)
    from sparksched.budget import plan_budget

    table = torch.as_tensor(step_time_table(APPENDIX_A, 3))
    for plan in (lambda d: plan_capacity(stale, APPENDIX_A, d), lambda d: plan_budget(stale, APPENDIX_A, d),
                 lambda d: int(plan_capacity(torch.as_tensor(stale), table, torch.as_tensor(d)))):
        with pytest.warns(DeprecationWarning, match="max_drafted"):
            exact = _eos_first_token_law(plan)
        np.testing.assert_allclose(exact, [0.7, 0.3], atol=1e-15)


@cuda
@pytest.mark.gpu
def test_cuda_top_k_matches_and_captures():
    r = np.random.default_rng(0)
    n, g = 128, 8
    conf = torch.as_tensor(r.beta(8, 2, (n, g)), device="cuda")
    curve = ThroughputCurve.from_points([1, 512, 4096], [0.02, 0.02, 0.16])
    table = torch.as_tensor(step_time_table(curve, n * (g + 1)), device="cuda")
    plan_capacity(conf, table, validate=False)
    admit_top_k(conf, torch.tensor(5, device="cuda"), validate=False)  # warm-up
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation raises
    try:
        k_total = plan_capacity(conf, table, validate=False)
        admit_top_k(conf, k_total, validate=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert int(k_total) == plan_capacity(conf.cpu().numpy(), curve)
    np.testing.assert_array_equal(admit_top_k(conf, k_total).cpu().numpy(),
                                  admit_top_k(conf.cpu().numpy(), int(k_total)))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        admit_top_k(conf, k_total, validate=False)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = admit_top_k(conf, k_total, validate=False)
    new = r.beta(8, 2, (n, g))
    conf.copy_(torch.as_tensor(new, device="cuda"))
    graph.replay()
    torch.cuda.synchronize()
    np.testing.assert_array_equal(out.cpu().numpy(), admit_top_k(new, int(k_total)))
