"""Frontier maths on hand-made operating points (simulator/frontier.py)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from simulator.frontier import (
    frontier,
    pareto_mask,
    sla_breaking_load,
    sla_table,
    speed_at_throughput,
    speed_gain,
    throughput_at_sla,
)


def frontier_violations(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> list[str]:
    """Everything wrong with `mask` as a Pareto frontier of (x, y), both maximised."""
    bad = []
    for i in range(x.size):
        beats_i = (x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i]))
        if mask[i] and beats_i.any():
            bad.append(f"kept dominated point {i}")
        if not mask[i]:
            same_kept = mask & (x == x[i]) & (y == y[i])
            if not beats_i.any() and not same_kept.any():
                bad.append(f"dropped undominated point {i}")
    kept = np.flatnonzero(mask)
    pairs = {(x[i], y[i]) for i in kept}
    if len(pairs) != kept.size:
        bad.append("duplicate point kept twice")
    return bad


def wrong_pareto_strict_only(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Negative control: drops a point only when beaten on BOTH axes strictly (keeps ties)."""
    return np.array([not np.any((x > x[i]) & (y > y[i])) for i in range(x.size)])


def test_hand_made_points_dominated_dropped():
    # (2, 4) is beaten by (3, 4) on x; (2, 2) by both; (0.5, 5) by (1, 5) on x
    x = np.array([1.0, 2.0, 2.0, 3.0, 0.5])
    y = np.array([5.0, 4.0, 2.0, 4.0, 5.0])
    m = pareto_mask(x, y)
    assert m.tolist() == [True, False, False, True, False]
    assert frontier_violations(x, y, m) == []
    # negative control: the strict-only rule keeps (2, 4) and (0.5, 5), and the checker sees it
    wrong = wrong_pareto_strict_only(x, y)
    assert wrong.tolist() != m.tolist()
    assert frontier_violations(x, y, wrong)


def test_non_finite_and_duplicates():
    x = np.array([1.0, np.nan, 1.0, 2.0])
    y = np.array([3.0, 9.0, 3.0, np.inf])
    assert pareto_mask(x, y).tolist() == [True, False, False, False]
    assert not pareto_mask(np.array([]), np.array([])).any()
    with pytest.raises(ValueError, match="1-D of equal length"):
        pareto_mask(np.zeros(2), np.zeros(3))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=25))
def test_pareto_property(points):
    """On small integer grids (many ties), the mask is exactly the frontier; the wrong rule is not."""
    x = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    assert frontier_violations(x, y, pareto_mask(x, y)) == []


def test_pareto_property_negative_control():
    """The same check rejects the strict-only rule on some input of the property's domain."""
    x = np.array([1.0, 1.0])
    y = np.array([2.0, 1.0])  # (1, 1) is dominated by (1, 2) (tie on x)
    assert frontier_violations(x, y, wrong_pareto_strict_only(x, y))


def _rows() -> pl.DataFrame:
    # two policies; load = concurrency cap; speeds fall and throughput rises with load
    return pl.DataFrame({
        "policy": ["a"] * 5 + ["b"] * 4,
        "max_running": [1, 2, 4, 8, 16, 1, 2, 4, 8],
        "user_tps_p50": [200.0, 180.0, 150.0, 100.0, 60.0, 120.0, 110.0, 90.0, 60.0],
        "throughput_tps": [200.0, 360.0, 600.0, 800.0, 700.0, 120.0, 220.0, 360.0, 480.0],
    })


def test_frontier_frame_drops_dominated_and_sorts():
    f = frontier(_rows())
    a = f.filter(pl.col("policy") == "a")
    # (60, 700) at load 16 is dominated by (100, 800)
    assert a.get_column("max_running").to_list() == [8, 4, 2, 1]
    assert a.get_column("user_tps_p50").to_list() == [100.0, 150.0, 180.0, 200.0]
    assert f.filter(pl.col("policy") == "b").height == 4
    with pytest.raises(ValueError, match="column 'nope'"):
        frontier(_rows(), x="nope")


def test_throughput_at_sla_interpolates_exact_and_bounds():
    fx, fy = [100.0, 150.0, 180.0, 200.0], [800.0, 600.0, 360.0, 200.0]
    # halfway between (150, 600) and (180, 360) -> 480
    thr, status = throughput_at_sla(fx, fy, 165.0)
    assert status == "interpolated" and thr == pytest.approx(480.0)
    assert throughput_at_sla(fx, fy, 150.0) == (600.0, "exact")
    # faster than the fastest point: no answer, reported as such (never extrapolated)
    assert throughput_at_sla(fx, fy, 200.0001) == (None, "unreachable")
    assert throughput_at_sla(fx, fy, 500.0) == (None, "unreachable")
    # slower than the slowest point: only a lower bound (the sweep stopped before saturation)
    assert throughput_at_sla(fx, fy, 50.0) == (800.0, "lower_bound")
    assert throughput_at_sla([], [], 10.0) == (None, "no_data")
    # negative control: unsorted / dominated input is not a frontier
    with pytest.raises(ValueError, match="not a frontier"):
        throughput_at_sla([100.0, 150.0], [600.0, 800.0], 120.0)


def sla_violations(fx: np.ndarray, fy: np.ndarray, sla: float, answer) -> list[str]:
    """Everything wrong with `answer(fx, fy, sla) -> (throughput, status)` on one frontier."""
    thr, status = answer(fx, fy, sla)
    bad = []
    if sla > fx[-1]:
        if thr is not None or status != "unreachable":
            bad.append(f"SLA {sla} beyond the fastest point {fx[-1]} must be unreachable, got {thr}")
        return bad
    if thr is None:
        return [f"SLA {sla} within reach, got None"]
    if not fy[-1] - 1e-9 <= thr <= fy[0] + 1e-9:
        bad.append(f"throughput {thr} outside the frontier's range")
    j = int(np.searchsorted(fx, sla))
    if 0 < j < fx.size:
        # (sla, thr) lies on the segment between the two neighbouring frontier points
        expect = fy[j - 1] + (fy[j] - fy[j - 1]) * (sla - fx[j - 1]) / (fx[j] - fx[j - 1])
        if abs(thr - expect) > 1e-6 * max(1.0, abs(expect)):
            bad.append(f"throughput {thr} is not on the segment ({expect})")
    # a stricter SLA never sells more throughput
    thr2, _ = answer(fx, fy, min(sla * 1.01, fx[-1]))
    if thr2 is None or thr2 > thr + 1e-6:
        bad.append("a stricter SLA sold more")
    return bad


def wrong_extrapolating(fx, fy, sla):
    """Negative control: extends the last segment past the fastest point instead of refusing."""
    if sla > fx[-1]:
        return float(fy[-1] + (fy[-1] - fy[-2]) * (sla - fx[-1]) / (fx[-1] - fx[-2])), "interpolated"
    return throughput_at_sla(fx, fy, sla)


def wrong_step(fx, fy, sla):
    """Negative control: the slower neighbour's throughput (a point that misses the SLA)."""
    if sla > fx[-1]:
        return None, "unreachable"
    j = int(np.searchsorted(fx, sla))
    return float(fy[max(j - 1, 0)]), "interpolated"


frontiers = st.integers(2, 8).flatmap(lambda m: st.tuples(
    st.lists(st.floats(1, 1000), min_size=m, max_size=m, unique=True),
    st.lists(st.floats(1, 1e5), min_size=m, max_size=m, unique=True)))


@settings(max_examples=50, deadline=None)
@given(frontiers, st.floats(1, 1000))
def test_interpolation_is_on_the_frontier(front, sla):
    fx = np.sort(np.asarray(front[0]))
    fy = np.sort(np.asarray(front[1]))[::-1]
    # a segment flat to rounding makes speed-at-throughput ill-conditioned: not a frontier input
    assume(np.all(-np.diff(fy) > 1e-6 * fy[:-1]))
    assert sla_violations(fx, fy, sla, throughput_at_sla) == []
    thr, status = throughput_at_sla(fx, fy, sla)
    if thr is not None:
        # round trip: the speed at that throughput is at least the SLA (equal when interpolated)
        sp, _ = speed_at_throughput(fx, fy, thr)
        assert sp is not None and sp >= min(sla, fx[-1]) - 1e-6 * max(1.0, sla)


def test_interpolation_negative_controls():
    fx, fy = np.array([100.0, 150.0, 180.0, 200.0]), np.array([800.0, 600.0, 360.0, 200.0])
    assert sla_violations(fx, fy, 165.0, throughput_at_sla) == []
    assert sla_violations(fx, fy, 250.0, throughput_at_sla) == []
    assert sla_violations(fx, fy, 250.0, wrong_extrapolating)
    assert sla_violations(fx, fy, 165.0, wrong_step)


def test_speed_at_throughput():
    fx, fy = [100.0, 150.0, 180.0, 200.0], [800.0, 600.0, 360.0, 200.0]
    assert speed_at_throughput(fx, fy, 480.0)[0] == pytest.approx(165.0)
    assert speed_at_throughput(fx, fy, 800.0) == (100.0, "exact")
    assert speed_at_throughput(fx, fy, 801.0) == (None, "unreachable")
    assert speed_at_throughput(fx, fy, 100.0) == (200.0, "lower_bound")


def test_sla_table_ratio_and_unreachable_baseline():
    f = frontier(_rows())
    t = sla_table(f, 100.0, baseline="b")
    a = t.row(by_predicate=pl.col("policy") == "a", named=True)
    b = t.row(by_predicate=pl.col("policy") == "b", named=True)
    assert a["throughput"] == 800.0 and a["status"] == "exact"
    # b: frontier (60, 480), (90, 360), (110, 220), (120, 120); at 100 -> 360 + (220-360)*10/20 = 290
    assert b["throughput"] == pytest.approx(290.0) and b["status"] == "interpolated"
    assert a["ratio"] == pytest.approx(800.0 / 290.0) and b["ratio"] == pytest.approx(1.0)
    # 150 tok/s/user is beyond b's frontier: no throughput, and a's ratio is infinite (b cannot)
    t = sla_table(f, 150.0, baseline="b")
    b = t.row(by_predicate=pl.col("policy") == "b", named=True)
    a = t.row(by_predicate=pl.col("policy") == "a", named=True)
    assert b["throughput"] is None and b["status"] == "unreachable" and b["ratio"] is None
    assert a["throughput"] == 600.0 and math.isinf(a["ratio"])
    # beyond both: both unreachable, no ratio
    t = sla_table(f, 1000.0, baseline="b")
    assert t.get_column("status").to_list() == ["unreachable", "unreachable"]
    assert t.get_column("ratio").null_count() == 2


def test_speed_gain_at_matched_throughput():
    f = frontier(_rows())
    g = speed_gain(f, "a", "b", levels=3)
    # overlap of throughput ranges: a [200, 800], b [120, 480] -> [200, 480]
    assert g.overlap == (200.0, 480.0)
    rows = g.table.to_dicts()
    assert [r["throughput"] for r in rows] == [200.0, 340.0, 480.0]
    # at 480: a is 165 (interpolated), b is 60 (its heaviest point)
    assert rows[2]["speed"] == pytest.approx(165.0) and rows[2]["baseline_speed"] == 60.0
    assert rows[2]["gain"] == pytest.approx(165.0 / 60.0 - 1)
    assert g.min_gain is not None and g.min_gain > 0
    # a policy against itself gains exactly nothing (negative control for the sign)
    assert speed_gain(f, "a", "a").max_gain == pytest.approx(0.0)
    # disjoint throughput ranges -> no overlap, empty table
    far = pl.DataFrame({"policy": ["a", "b"], "user_tps_p50": [10.0, 10.0],
                        "throughput_tps": [100.0, 5000.0]})
    g = speed_gain(frontier(far), "a", "b")
    assert g.overlap is None and g.table.is_empty() and g.min_gain is None


def test_sla_breaking_load():
    rows = _rows()
    t = sla_breaking_load(rows, 120.0)
    a = t.row(by_predicate=pl.col("policy") == "a", named=True)
    b = t.row(by_predicate=pl.col("policy") == "b", named=True)
    # a: 150 at load 4, 100 at load 8 -> crossing at 4 + 4 * (150-120)/(150-100) = 6.4
    assert a["status"] == "crossing" and a["crossing_load"] == pytest.approx(6.4)
    assert (a["last_ok_load"], a["first_fail_load"]) == (4.0, 8.0)
    # b: 120 at load 1 meets it (>=), 110 at load 2 does not -> crossing at exactly 1
    assert b["status"] == "crossing" and b["crossing_load"] == pytest.approx(1.0)
    t = sla_breaking_load(rows, 10.0)
    assert t.get_column("status").to_list() == ["met_at_all_loads"] * 2
    t = sla_breaking_load(rows, 500.0)
    assert t.get_column("status").to_list() == ["never_met"] * 2
    assert t.get_column("crossing_load").null_count() == 2
    # a recovery after a failure does not count: the SLA has to hold all the way up
    wobbly = pl.DataFrame({"policy": ["a"] * 3, "max_running": [1, 2, 4],
                           "user_tps_p50": [100.0, 50.0, 90.0]})
    r = sla_breaking_load(wobbly, 80.0).row(0, named=True)
    assert r["first_fail_load"] == 2.0 and r["crossing_load"] == pytest.approx(1.4)


def test_goodput_table_answers_per_policy():
    from simulator.frontier import goodput_table

    rows = pl.DataFrame({
        "policy": ["a", "a", "a", "b", "b"], "max_running": [4, 16, 64, 4, 16], "rate_scale": [1.0] * 5,
        "request_goodput": [5.0, 8.0, 6.0, 4.0, 3.0], "dspark_slo_attainment": [0.99, 0.92, 0.5, 0.95, 0.6],
        "output_throughput": [1000.0, 1900.0, 2500.0, 900.0, 1500.0]})
    t = goodput_table(rows, attainment=0.9, baseline="b")
    a, b = (t.filter(pl.col("policy") == p).row(0, named=True) for p in ("a", "b"))
    assert a["best_goodput"] == 8.0 and a["best_max_running"] == 16 and a["attainment_there"] == 0.92
    assert a["throughput_at_slo"] == 1900.0 and a["slo_max_running"] == 16  # 2500 misses the attainment
    assert b["throughput_at_slo"] == 900.0 and a["ratio"] == pytest.approx(1900 / 900) and b["ratio"] is None
    strict = goodput_table(rows, attainment=0.999, baseline="b")
    assert strict["throughput_at_slo"].to_list() == [None, None]
    with pytest.raises(ValueError, match="sweep with --goodput"):
        goodput_table(rows.drop("request_goodput"))
