"""The greedy scheduler: three implementations agree exactly; structural properties; bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparksched import ThroughputCurve, schedule, schedule_numpy, schedule_reference, schedule_torch
from sparksched.scheduler import step_time_table, step_times

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@st.composite
def problems(draw, max_n: int = 12, max_g: int = 6):
    """(conf [n, g], drafted [n] or None, curve, extra): ties, exact 0/1, flat stretches and jumps."""
    n = draw(st.integers(1, max_n))
    g = draw(st.integers(1, max_g))
    seed = draw(st.integers(0, 2**32 - 1))
    r = np.random.default_rng(seed)
    mode = draw(st.sampled_from(["continuous", "grid", "mixed"]))
    if mode == "continuous":
        conf = r.beta(4, 1.5, (n, g))
    elif mode == "grid":  # many exact ties, 0 and 1
        conf = r.choice([0.0, 0.25, 0.5, 0.75, 1.0], (n, g))
    else:
        conf = np.where(r.random((n, g)) < 0.3, r.choice([0.0, 1.0, 0.5], (n, g)), r.random((n, g)))
    drafted = r.integers(0, g + 1, n) if draw(st.booleans()) else None
    extra = draw(st.integers(0, 5))
    b_max = extra + n * (g + 1)
    points = np.unique(np.concatenate(([1, b_max], r.integers(1, b_max + 1, draw(st.integers(0, 6))))))
    inc = r.choice([0.0, 0.0, 0.01, 0.1, 1.0], points.size)
    times = 0.5 + np.cumsum(inc)
    extrapolate = draw(st.sampled_from(["linear", "clamp"]))
    return conf, drafted, ThroughputCurve.from_points(points, times, extrapolate=extrapolate), extra


def _torch(conf, drafted, curve, extra, device="cpu"):
    n, g = conf.shape
    table = torch.as_tensor(step_time_table(curve, extra + n * (g + 1)), device=device)
    dr = None if drafted is None else torch.as_tensor(drafted, device=device)
    return schedule_torch(torch.as_tensor(conf, device=device), table, dr, extra).cpu().numpy()


def rate(conf, lengths, curve, extra=0) -> float:
    """R(l) = sum_i E_i / step_time(B), plain float64."""
    surv = np.cumprod(conf, axis=1)
    expected = conf.shape[0] + sum(surv[i, :lengths[i]].sum() for i in range(conf.shape[0]))
    return expected / float(step_times(curve, np.asarray([extra + conf.shape[0] + int(np.sum(lengths))]))[0])


# ---------------------------------------------------------------------------------------- agreement
@SETTINGS
@given(problems())
def test_numpy_torch_reference_agree_exactly(problem):
    conf, drafted, curve, extra = problem
    ref = schedule_reference(conf, curve, drafted, extra)
    np.testing.assert_array_equal(schedule_numpy(conf, curve, drafted, extra), ref)
    np.testing.assert_array_equal(_torch(conf, drafted, curve, extra), ref)
    np.testing.assert_array_equal(schedule(torch.as_tensor(conf), curve,
                                           None if drafted is None else torch.as_tensor(drafted), extra).numpy(), ref)
    assert ref.dtype == np.int64


def test_agreement_on_large_batches_with_early_and_late_stops():
    """Beyond Hypothesis' sizes: the partial-selection path (m < candidates) and its growth."""
    r = np.random.default_rng(0)
    for n, g, knee in [(256, 16, 256), (256, 16, 2048), (300, 7, 900), (1024, 8, 4096), (64, 16, 8192)]:
        conf = r.beta(8, 2, (n, g))
        conf[r.random((n, g)) < 0.05] = 1.0
        curve = ThroughputCurve.from_points([1, knee, 16384], [0.02, 0.02, 0.02 * 16384 / knee])
        drafted = r.integers(0, g + 1, n)
        for dr in (None, drafted):
            ref = schedule_reference(conf, curve, dr)
            np.testing.assert_array_equal(schedule_numpy(conf, curve, dr), ref)
            np.testing.assert_array_equal(_torch(conf, dr, curve, 0), ref)


def test_negative_control_agreement_check_catches_wrong_tie_order():
    """A scheduler breaking ties by larger k first is caught by the same comparison."""

    def wrong(conf, curve):  # ties: larger i first (reversed rows)
        return schedule_reference(conf[::-1], curve)[::-1]

    conf = np.full((3, 2), 0.5)
    curve = ThroughputCurve.from_points([1, 4, 5, 9], [1.0, 1.0, 2.0, 2.0])
    assert not np.array_equal(wrong(conf, curve), schedule_reference(conf, curve))


# ---------------------------------------------------------------------------------------- structure
@SETTINGS
@given(problems())
def test_lengths_bounded_and_improve_rate(problem):
    conf, drafted, curve, extra = problem
    lengths = schedule_numpy(conf, curve, drafted, extra)
    bound = np.full(conf.shape[0], conf.shape[1]) if drafted is None else drafted
    assert np.all(lengths >= 0) and np.all(lengths <= bound)
    # verified tokens all have S > 0 (prefix closure: a length is a prefix of the block)
    surv = np.cumprod(conf, axis=1)
    for i, length in enumerate(lengths):
        assert np.all(surv[i, :length] > 0)
    # the admitted path only ever improves R: never worse than verifying nothing
    assert rate(conf, lengths, curve, extra) >= rate(conf, np.zeros_like(lengths), curve, extra) * (1 - 1e-12)


@SETTINGS
@given(problems(max_n=6, max_g=5), st.data())
def test_non_anticipation(problem, data):
    """[l_i >= k] never changes when c_{i,k+1..g} change arbitrarily."""
    conf, drafted, curve, extra = problem
    n, g = conf.shape
    i = data.draw(st.integers(0, n - 1))
    k = data.draw(st.integers(0, g - 1))
    before = schedule_numpy(conf, curve, drafted, extra)
    changed = conf.copy()
    r = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    changed[i, k + 1:] = r.choice([0.0, 1.0, r.random()], g - k - 1)
    after = schedule_numpy(changed, curve, drafted, extra)
    for kk in range(1, k + 2):
        assert (before[i] >= kk) == (after[i] >= kk)


def _global_search(conf, curve):
    n, g = conf.shape
    best, best_l = -1.0, None
    for ls in itertools.product(range(g + 1), repeat=n):
        rr = rate(conf, np.asarray(ls), curve)
        if rr > best:
            best, best_l = rr, np.asarray(ls)
    return best_l


def test_negative_control_non_anticipation_check_catches_global_search():
    """The same check applied to the retrospective global search finds a violation (Appendix A)."""
    curve = ThroughputCurve.from_points([1, 2, 3], [1 / 1.0, 1 / 0.5, 1 / 0.45])
    before = _global_search(np.array([[0.8, 0.9]]), curve)
    after = _global_search(np.array([[0.8, 0.0]]), curve)  # only c_2 changed
    assert (before[0] >= 1) != (after[0] >= 1)
    greedy = [schedule_numpy(np.array([[0.8, c2]]), curve)[0] >= 1 for c2 in (0.9, 0.0)]
    assert greedy[0] == greedy[1]


@SETTINGS
@given(problems(max_n=4, max_g=3))
def test_greedy_is_globally_optimal_on_a_linear_curve(problem):
    """With t(B) = a + b B, R along the sorted path is unimodal: the early stop finds the optimum."""
    conf, _, _, _ = problem
    n, g = conf.shape
    curve = ThroughputCurve.from_points([1, 1000], [0.3, 0.3 + 999 * 0.05])
    greedy = schedule_numpy(conf, curve)
    assert rate(conf, greedy, curve) >= rate(conf, _global_search(conf, curve), curve) * (1 - 1e-12)


def test_negative_control_greedy_is_not_optimal_on_a_cliff():
    """The optimality check is not vacuous: on a jagged curve the greedy stops before a cliff."""
    conf = np.array([[0.8, 0.9]])
    curve = ThroughputCurve.from_points([1, 2, 3], [1 / 1.0, 1 / 0.5, 1 / 0.45])
    greedy = schedule_numpy(conf, curve)
    assert rate(conf, greedy, curve) < rate(conf, _global_search(conf, curve), curve) - 0.1


@SETTINGS
@given(problems(), st.data())
def test_steeper_curve_never_verifies_more(problem, data):
    """t2(b+1)/t2(b) >= t1(b+1)/t1(b) for every b => sum l under t2 <= sum l under t1."""
    conf, drafted, curve, extra = problem
    n, g = conf.shape
    t1 = step_time_table(curve, extra + n * (g + 1))
    # t2 = t1 * h with h >= 1 non-decreasing: every step ratio grows
    h = 1.0 + np.cumsum(np.asarray(data.draw(st.lists(st.sampled_from([0.0, 0.0, 0.01, 0.5]),
                                                       min_size=t1.size, max_size=t1.size))))
    t2 = t1 * h
    assert np.all(t2[2:] / t2[1:-1] >= t1[2:] / t1[1:-1] * (1 - 1e-15))  # B = 0 is never used
    assert schedule_numpy(conf, t2, drafted, extra).sum() <= schedule_numpy(conf, t1, drafted, extra).sum()


def test_negative_control_monotonicity_check_can_fail():
    """Swapping the two curves makes the same comparison fail: the property has content."""
    conf = np.full((4, 4), 0.9)
    flat = np.full(4 * 5 + 1, 1.0)
    steep = 0.01 + 1.0 * np.arange(flat.size)  # each extra token costs as much as a request
    assert schedule_numpy(conf, flat).sum() > schedule_numpy(conf, steep).sum()


@SETTINGS
@given(problems())
def test_extra_tokens_shift_the_curve(problem):
    """extra_tokens = e is the same as a table shifted by e (B counts the extra tokens)."""
    conf, drafted, curve, extra = problem
    n, g = conf.shape
    table = step_time_table(curve, extra + n * (g + 1))
    np.testing.assert_array_equal(schedule_numpy(conf, table, drafted, extra),
                                  schedule_numpy(conf, table[extra:], drafted, 0))
    np.testing.assert_array_equal(schedule_numpy(conf, curve, drafted, extra),
                                  schedule_numpy(conf, table, drafted, extra))


def test_load_adaptive_more_requests_fewer_tokens_each():
    """A flat-then-linear curve: a light batch verifies long blocks, a heavy one short ones."""
    curve = ThroughputCurve.from_points([1, 256, 8192], [0.02, 0.02, 0.02 * 8192 / 256])
    r = np.random.default_rng(1)
    light = schedule_numpy(r.beta(8, 2, (8, 8)), curve)
    heavy = schedule_numpy(r.beta(8, 2, (512, 8)), curve)
    assert light.mean() > 4 and heavy.mean() < 1


def test_extrapolate_error_curve_is_infeasible_outside():
    curve = ThroughputCurve.from_points([1, 6], [1.0, 1.0], extrapolate="error")
    conf = np.ones((2, 4))  # B could reach 10, the curve stops at 6
    lengths = schedule_numpy(conf, curve)
    assert lengths.sum() == 4
    np.testing.assert_array_equal(lengths, schedule_reference(conf, curve))
    np.testing.assert_array_equal(_torch(conf, None, curve, 0), lengths)
    with pytest.raises(ValueError, match="base batch B = 7"):
        schedule_numpy(np.ones((7, 1)), curve)


def test_empty_and_degenerate_inputs():
    curve = ThroughputCurve.from_points([1, 100], [1.0, 2.0])
    assert schedule_numpy(np.zeros((0, 4)), curve).shape == (0,)
    assert schedule_reference(np.zeros((0, 4)), curve).shape == (0,)
    np.testing.assert_array_equal(schedule_numpy(np.zeros((3, 4)), curve), [0, 0, 0])
    np.testing.assert_array_equal(schedule_numpy(np.ones((3, 0)), curve), [0, 0, 0])
    assert _torch(np.zeros((0, 4)), None, curve, 0).shape == (0,)
    flat = ThroughputCurve.from_points([1, 100], [1.0, 1.0])
    np.testing.assert_array_equal(schedule_numpy(np.ones((3, 4)), flat, drafted=[4, 0, 2]), [4, 0, 2])


def test_docstring_example():
    curve = ThroughputCurve.from_points([1, 64, 512], [0.010, 0.010, 0.040])
    assert schedule(np.array([[0.9, 0.8, 0.1], [0.5, 0.2, 0.2]]), curve).tolist() == [3, 3]


# ---------------------------------------------------------------------------------------- bad input
CURVE = ThroughputCurve.from_points([1, 100], [1.0, 2.0])


@pytest.mark.parametrize("fn", [schedule_numpy, schedule_reference,
                                lambda c, cv, d=None, e=0: schedule(torch.as_tensor(np.asarray(c, dtype=float)), cv,
                                                                    None if d is None else torch.as_tensor(d), e)])
@pytest.mark.parametrize("conf, drafted, extra, match", [
    ([[0.5, float("nan")]], None, 0, r"conf\[0, 1\] = nan"),
    ([[0.5, 1.5]], None, 0, r"conf\[0, 1\] = 1.5"),
    ([[-0.1, 0.5]], None, 0, r"conf\[0, 0\] = -0.1"),
    ([0.5, 0.5], None, 0, r"conf must be 2-D"),
    ([[0.5, 0.5]], [1, 2], 0, r"drafted must have shape \(1,\)"),
    ([[0.5, 0.5]], [-1], 0, r"drafted\[0\] = -1"),
    ([[0.5, 0.5]], [3], 0, r"drafted\[0\] = 3: must be in \[0, g=2\]"),
    ([[0.5, 0.5]], None, -2, r"extra_tokens must be an integer >= 0, got -2"),
])
def test_bad_input_names_argument_and_value(fn, conf, drafted, extra, match):
    with pytest.raises(ValueError, match=match):
        fn(conf, CURVE, drafted, extra)


def test_bad_curve_and_table():
    with pytest.raises(ValueError, match="step time decreases"):
        ThroughputCurve.from_points([1, 2, 3], [1.0, 0.5, 2.0])
    with pytest.raises(ValueError, match=r"step-time table decreases from 2.0 at B=2 to 1.0 at B=3"):
        schedule_numpy([[0.5]], np.array([1.0, 1.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="table must be 1-D with at least"):
        schedule_torch(torch.ones(2, 3), torch.ones(5))
    with pytest.raises(ValueError, match=r"step-time table\[1\] = nan"):
        schedule_numpy([[0.5]], np.array([1.0, float("nan"), 2.0]))
    with pytest.raises(ValueError, match="curve must be a ThroughputCurve"):
        schedule_numpy([[0.5]], "fast")
    with pytest.raises(ValueError, match=r"drafted\[0\] = 1.5"):
        schedule_numpy([[0.5, 0.5]], CURVE, drafted=[1.5])


# ---------------------------------------------------------------------------------------- edge cases
def test_inf_gap_in_a_table_numpy_agrees_with_the_reference():
    """A table may mark any B infeasible (inf); the vectorised path must not assume the times are
    sorted (issue 15, 10a: numpy gave [5]*8, the reference [1, 1, 0, ...])."""
    conf = np.full((8, 5), 0.9)
    table = np.ones(8 * 6 + 1)
    table[11] = np.inf
    ref = schedule_reference(conf, table)
    assert ref.tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    np.testing.assert_array_equal(schedule_numpy(conf, table), ref)
    np.testing.assert_array_equal(schedule_torch(torch.as_tensor(conf), torch.as_tensor(table)).numpy(), ref)


@SETTINGS
@given(problems(), st.data())
def test_tables_with_inf_gaps_all_paths_agree(problem, data):
    conf, drafted, curve, extra = problem
    n, g = conf.shape
    table = step_time_table(curve, extra + n * (g + 1))
    gaps = data.draw(st.lists(st.integers(extra + n + 1, table.size - 1), max_size=4))
    table[gaps] = np.inf  # never the base batch: it must stay feasible
    ref = schedule_reference(conf, table, drafted, extra)
    np.testing.assert_array_equal(schedule_numpy(conf, table, drafted, extra), ref)
    np.testing.assert_array_equal(_vectorised(conf, table, drafted, extra), ref)
    dr = None if drafted is None else torch.as_tensor(drafted)
    np.testing.assert_array_equal(schedule_torch(torch.as_tensor(conf), torch.as_tensor(table), dr, extra).numpy(),
                                  ref)


def _vectorised(conf, curve, drafted=None, extra=0):
    """The numpy path without the small-batch hand-off to the scalar loop."""
    from sparksched.scheduler import _schedule_vectorised

    return _schedule_vectorised(np.asarray(conf, dtype=np.float64), curve, drafted, extra)


@SETTINGS
@given(problems(max_n=5, max_g=4))
def test_vectorised_path_agrees_on_small_batches_too(problem):
    """Batches of <= 32 candidates go to the scalar loop; the vectorised code must still be right."""
    conf, drafted, curve, extra = problem
    np.testing.assert_array_equal(_vectorised(conf, curve, drafted, extra),
                                  schedule_reference(conf, curve, drafted, extra))


@pytest.mark.parametrize("n, g", [(1 << 22, 1), (1 << 20, 7)])
def test_candidate_limit_leaves_int64_headroom(n, g):
    """The fixed-point numerator reaches n * (g + 1) * 2**40: 2**23 candidates would be 2**63,
    one past int64 (issue 15, 10e). The size check must refuse it, not overflow."""
    from sparksched.scheduler import _MAX_CANDIDATES, SCALE

    assert (_MAX_CANDIDATES - 1) * SCALE <= np.iinfo(np.int64).max  # the largest allowed fits
    assert n * (g + 1) == _MAX_CANDIDATES
    conf = np.ones((n, g))
    flat = ThroughputCurve.from_points([1, 2 * n * (g + 1)], [1.0, 1.0])
    for fn in (schedule_numpy, schedule_reference):
        with pytest.raises(ValueError, match=r"n \* \(g \+ 1\) must be <"):
            fn(conf, flat)
    with pytest.raises(ValueError, match=r"n \* \(g \+ 1\) must be <"):
        schedule_torch(torch.ones(n, g, dtype=torch.float64), torch.ones(n * (g + 1) + 1, dtype=torch.float64),
                       validate=False)
    from sparksched import admit_top_k, plan_capacity

    with pytest.raises(ValueError, match=r"n \* \(g \+ 1\) must be <"):
        plan_capacity(conf, flat)
    with pytest.raises(ValueError, match=r"n \* \(g \+ 1\) must be <"):
        plan_capacity(torch.ones(n, g, dtype=torch.float64), torch.ones(n * (g + 1) + 1, dtype=torch.float64),
                      validate=False)
    with pytest.raises(ValueError, match=r"n \* \(g \+ 1\) must be <"):
        admit_top_k(torch.ones(n, g, dtype=torch.float64), 1, validate=False)


def test_cached_table_follows_a_mutated_curve():
    """The per-curve table cache must never serve a stale table (issue 15, 10h): after the curve's
    points change (if they can change at all), schedule() sees the new curve."""
    conf = np.full((40, 4), 0.9)
    curve = ThroughputCurve.from_points([1, 1000], [1.0, 1.0])
    before = schedule(conf, curve)
    assert before.sum() == 160  # a flat curve verifies everything
    with pytest.raises(ValueError, match="read-only"):
        curve.seconds[0, 1] = 1000.0  # a curve is a value: its points cannot change under a cache
    # the cache's own guard still holds for an array mutated behind its back (negative control of
    # the read-only flag: a writeable copy of the points, swapped in)
    points = curve.seconds.copy()
    points[0, 1] = 1000.0  # a cliff right after the base batch
    object.__setattr__(curve, "seconds", points)
    after = schedule(conf, curve)
    np.testing.assert_array_equal(after, schedule_reference(conf, curve))
    assert after.sum() < 160


# ---------------------------------------------------------------------------------------- GPU
@cuda
@pytest.mark.gpu
def test_cuda_matches_cpu_and_captures_in_a_graph():
    r = np.random.default_rng(3)
    n, g = 256, 16
    curve = ThroughputCurve.from_points([1, 1024, 8192], [0.02, 0.02, 0.16])
    table = torch.as_tensor(step_time_table(curve, n * (g + 1)), device="cuda")
    for _ in range(5):
        conf = r.beta(8, 2, (n, g))
        conf[r.random((n, g)) < 0.1] = 0.5  # ties
        ref = schedule_reference(conf, curve)
        np.testing.assert_array_equal(_torch(conf, None, curve, 0, device="cuda"), ref)
    static_conf = torch.as_tensor(r.beta(8, 2, (n, g)), device="cuda")
    schedule_torch(static_conf, table, validate=False)  # warm-up (allocations, kernels)
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation raises
    try:
        schedule_torch(static_conf, table, torch.full((n,), g, device="cuda"), validate=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        schedule_torch(static_conf, table, validate=False)  # warm-up outside the graph
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = schedule_torch(static_conf, table, validate=False)
    for _ in range(3):
        new = r.beta(8, 2, (n, g))
        static_conf.copy_(torch.as_tensor(new, device="cuda"))
        graph.replay()
        torch.cuda.synchronize()
        np.testing.assert_array_equal(out.cpu().numpy(), schedule_reference(new, curve))
