"""Serving Pareto frontier and SLA questions on sweep results (the DSpark paper's Figure 7).

Covers: an operator sweeps load (concurrency cap, arrival rate) for each policy and gets one
operating point per (policy, load): per-user speed x (tokens/s/user) and aggregate throughput y
(output tokens/s). Both are "more is better", so the frontier of a policy is its set of points
that no other point of the same policy beats on both axes. Sorted by x ascending, a frontier's y
is strictly decreasing: faster users cost throughput.

Questions answered here, all pure functions of arrays or polars frames:
- `pareto_mask` / `frontier`: which points survive (dominated and non-finite points dropped);
- `throughput_at_sla`: the most throughput a policy sells while every point on the way keeps the
  per-user speed >= the SLA, interpolated linearly between neighbouring frontier points (linear
  between points of a monotone sequence is monotone, so the answer never overshoots a
  neighbour). An SLA faster than the frontier's fastest point is *unreachable* (None, never
  extrapolated); an SLA slower than its slowest point gives only a lower bound (the sweep did
  not push the load far enough to find where throughput stops growing);
- `speed_at_throughput` / `speed_gain`: per-user speed at a matched throughput and the gain of one
  policy over another (the paper's "+57-85 % TPS at matched throughput");
- `sla_breaking_load`: the load at which a policy stops meeting an SLA at all.

Units: x in tokens/s/user, y in tokens/s (aggregate), loads in the sweep's own units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

Status = Literal["exact", "interpolated", "lower_bound", "unreachable", "no_data"]

X_DEFAULT = "user_tps_p50"
Y_DEFAULT = "throughput_tps"


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Which points are on the frontier when both x and y are maximised.

    A point is dominated when another point has x' >= x and y' >= y with at least one strict.
    Exact duplicates keep only their first occurrence. Non-finite points are never on it.

    Args:
        x: [n] per-user speed (tokens/s/user).
        y: [n] aggregate throughput (tokens/s).
    Returns:
        [n] bool, True on the frontier.

    Example: x = [1, 2, 2, 3], y = [5, 4, 2, 4] -> [True, False, False, True]
    ((2, 4) is beaten by (3, 4); (2, 2) by both).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got shapes {x.shape} and {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y)
    keep = np.zeros(x.shape, dtype=bool)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return keep
    # sweep by x descending (ties: y descending, then original order); a point survives when its y
    # is strictly above every y seen so far (all of which have x' >= x)
    order = idx[np.lexsort((idx, -y[idx], -x[idx]))]
    best = -np.inf
    for i in order:
        if y[i] > best:
            keep[i] = True
            best = y[i]
    return keep


def frontier(rows: pl.DataFrame, x: str = X_DEFAULT, y: str = Y_DEFAULT,
             by: str = "policy") -> pl.DataFrame:
    """The frontier of each group (policy) of sweep rows, sorted by (`by`, x ascending).

    Keeps every column of the surviving rows (loads included) so a frontier point can be traced
    back to the configuration that produced it.
    """
    for col in (x, y, by):
        if col not in rows.columns:
            raise ValueError(f"frontier: column {col!r} not in rows (columns: {rows.columns})")
    parts = []
    for key in rows.get_column(by).unique(maintain_order=True).to_list():
        g = rows.filter(pl.col(by) == key)
        m = pareto_mask(g.get_column(x).cast(pl.Float64).to_numpy(),
                        g.get_column(y).cast(pl.Float64).to_numpy())
        parts.append(g.filter(pl.Series(m)).sort(x))
    if not parts:
        return rows.clear()
    return pl.concat(parts)


def _front_arrays(fx: Sequence[float] | np.ndarray,
                  fy: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a frontier: x strictly increasing, y strictly decreasing, finite."""
    fx = np.asarray(fx, dtype=np.float64)
    fy = np.asarray(fy, dtype=np.float64)
    if fx.shape != fy.shape or fx.ndim != 1:
        raise ValueError(f"frontier x and y must be 1-D of equal length, got {fx.shape} and {fy.shape}")
    if not (np.all(np.isfinite(fx)) and np.all(np.isfinite(fy))):
        raise ValueError("frontier points must be finite")
    if np.any(np.diff(fx) <= 0) or np.any(np.diff(fy) >= 0):
        raise ValueError(f"not a frontier: x must increase and y decrease strictly, got x={fx.tolist()} "
                         f"y={fy.tolist()} (use pareto_mask first)")
    return fx, fy


def throughput_at_sla(fx: Sequence[float] | np.ndarray, fy: Sequence[float] | np.ndarray,
                      sla: float) -> tuple[float | None, Status]:
    """Throughput (tokens/s) a policy sells while keeping per-user speed >= `sla`.

    Args:
        fx: [m] frontier per-user speeds, strictly increasing.
        fy: [m] frontier throughputs, strictly decreasing.
        sla: minimum per-user speed (tokens/s/user).
    Returns:
        (throughput, status): "exact" on a frontier point, "interpolated" between two,
        "lower_bound" (the largest measured throughput) when the SLA is slower than every frontier
        point, (None, "unreachable") when faster than every one, (None, "no_data") when empty.
    """
    fx, fy = _front_arrays(fx, fy)
    if not np.isfinite(sla):
        raise ValueError(f"sla must be finite, got {sla}")
    if fx.size == 0:
        return None, "no_data"
    if sla > fx[-1]:
        return None, "unreachable"
    if sla < fx[0]:
        return float(fy[0]), "lower_bound"
    hit = np.flatnonzero(fx == sla)
    if hit.size:
        return float(fy[hit[0]]), "exact"
    return float(np.interp(sla, fx, fy)), "interpolated"


def speed_at_throughput(fx: Sequence[float] | np.ndarray, fy: Sequence[float] | np.ndarray,
                        throughput: float) -> tuple[float | None, Status]:
    """Per-user speed (tokens/s/user) on the frontier at aggregate `throughput` (tokens/s).

    The inverse of `throughput_at_sla` on the same frontier. Throughput above the frontier's
    largest is "unreachable"; below its smallest the answer is a "lower_bound" (the fastest
    measured speed: at a lighter load users would be at least that fast).
    """
    fx, fy = _front_arrays(fx, fy)
    if fx.size == 0:
        return None, "no_data"
    if throughput > fy[0]:
        return None, "unreachable"
    if throughput < fy[-1]:
        return float(fx[-1]), "lower_bound"
    hit = np.flatnonzero(fy == throughput)
    if hit.size:
        return float(fx[hit[0]]), "exact"
    # fy is decreasing: interpolate on the reversed (increasing) arrays
    return float(np.interp(throughput, fy[::-1], fx[::-1])), "interpolated"


def _policy_front(front: pl.DataFrame, policy: str, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    g = front.filter(pl.col("policy") == policy).sort(x)
    return g.get_column(x).cast(pl.Float64).to_numpy(), g.get_column(y).cast(pl.Float64).to_numpy()


def sla_table(front: pl.DataFrame, sla: float, baseline: str | None = None,
              x: str = X_DEFAULT, y: str = Y_DEFAULT) -> pl.DataFrame:
    """Throughput at the SLA for every policy of a `frontier` frame, with the ratio to `baseline`.

    Columns: policy, sla, throughput (null when unreachable), status, ratio (throughput / the
    baseline's; null when either is missing; +inf when only the baseline is unreachable).
    """
    out = []
    for p in front.get_column("policy").unique(maintain_order=True).to_list():
        thr, st = throughput_at_sla(*_policy_front(front, p, x, y), sla)
        out.append({"policy": p, "sla": float(sla), "throughput": thr, "status": st})
    base = next((r for r in out if r["policy"] == baseline), None)
    for r in out:
        r["ratio"] = None
        if base is None:
            continue
        if r["throughput"] is not None and base["throughput"] is not None and base["throughput"] > 0:
            r["ratio"] = r["throughput"] / base["throughput"]
        elif r["throughput"] is not None and base["status"] == "unreachable":
            r["ratio"] = float("inf")
    schema = {"policy": pl.Utf8, "sla": pl.Float64, "throughput": pl.Float64, "status": pl.Utf8,
              "ratio": pl.Float64}
    return pl.DataFrame(out, schema=schema)


@dataclass(frozen=True)
class SpeedGain:
    """Per-user speed of `policy` over `baseline` at matched aggregate throughput.

    Attributes:
        table: rows (throughput, speed, baseline_speed, gain) at `levels` throughputs spread over
            the range both frontiers cover; gain = speed / baseline_speed - 1.
        overlap: (low, high) throughput range both frontiers cover, or None when they do not meet.
    """

    policy: str
    baseline: str
    table: pl.DataFrame
    overlap: tuple[float, float] | None

    @property
    def min_gain(self) -> float | None:
        return None if self.table.is_empty() else float(np.min(self.table.get_column("gain").to_numpy()))

    @property
    def max_gain(self) -> float | None:
        return None if self.table.is_empty() else float(np.max(self.table.get_column("gain").to_numpy()))


def speed_gain(front: pl.DataFrame, policy: str, baseline: str, levels: int = 5,
               x: str = X_DEFAULT, y: str = Y_DEFAULT) -> SpeedGain:
    """Per-user speed gain of `policy` over `baseline` at matched throughput (no extrapolation).

    Throughput levels are `levels` evenly spaced values over the overlap of both frontiers'
    throughput ranges (both ends included), so every speed is read inside a measured range.
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    ax, ay = _policy_front(front, policy, x, y)
    bx, by_ = _policy_front(front, baseline, x, y)
    schema = {"throughput": pl.Float64, "speed": pl.Float64, "baseline_speed": pl.Float64,
              "gain": pl.Float64}
    if ax.size == 0 or bx.size == 0:
        return SpeedGain(policy, baseline, pl.DataFrame(schema=schema), None)
    lo, hi = max(ay.min(), by_.min()), min(ay.max(), by_.max())
    if lo > hi:
        return SpeedGain(policy, baseline, pl.DataFrame(schema=schema), None)
    rows = []
    for t in (np.linspace(lo, hi, levels) if levels > 1 else np.array([(lo + hi) / 2])):
        sa, _ = speed_at_throughput(ax, ay, float(t))
        sb, _ = speed_at_throughput(bx, by_, float(t))
        assert sa is not None and sb is not None  # t lies inside both ranges
        rows.append({"throughput": float(t), "speed": sa, "baseline_speed": sb, "gain": sa / sb - 1.0})
    return SpeedGain(policy, baseline, pl.DataFrame(rows, schema=schema), (float(lo), float(hi)))


def sla_breaking_load(rows: pl.DataFrame, sla: float, load: str = "max_running",
                      x: str = X_DEFAULT, by: str = "policy") -> pl.DataFrame:
    """The load at which each policy stops meeting a per-user speed SLA.

    For each policy, sweep rows are sorted by `load`; the SLA breaks at the first load whose
    per-user speed is below `sla` (later recoveries are not trusted: the SLA has to hold all the
    way up). Between the last load that meets it and the first that does not, the crossing is
    interpolated linearly in speed.

    Columns: policy, last_ok_load, first_fail_load, crossing_load (all null where not
    applicable), status: "crossing" | "met_at_all_loads" (never broke in the range swept) |
    "never_met" (even the lightest load is too slow).
    """
    for col in (load, x, by):
        if col not in rows.columns:
            raise ValueError(f"sla_breaking_load: column {col!r} not in rows (columns: {rows.columns})")
    out = []
    for p in rows.get_column(by).unique(maintain_order=True).to_list():
        g = rows.filter(pl.col(by) == p).sort(load)
        ls = g.get_column(load).cast(pl.Float64).to_numpy()
        xs = g.get_column(x).cast(pl.Float64).to_numpy()
        fail = np.flatnonzero(~(xs >= sla))  # NaN speed (nothing finished) counts as a failure
        r: dict[str, object] = {"policy": p, "last_ok_load": None, "first_fail_load": None,
                                "crossing_load": None}
        if fail.size == 0:
            r["status"] = "met_at_all_loads"
            r["last_ok_load"] = float(ls[-1])
        elif fail[0] == 0:
            r["status"] = "never_met"
            r["first_fail_load"] = float(ls[0])
        else:
            j = int(fail[0])
            l0, l1, x0, x1 = ls[j - 1], ls[j], xs[j - 1], xs[j]
            r["status"] = "crossing"
            r["last_ok_load"], r["first_fail_load"] = float(l0), float(l1)
            r["crossing_load"] = float(l0 + (l1 - l0) * (x0 - sla) / (x0 - x1)) if np.isfinite(x1) else float(l0)
        out.append(r)
    schema = {"policy": pl.Utf8, "last_ok_load": pl.Float64, "first_fail_load": pl.Float64,
              "crossing_load": pl.Float64, "status": pl.Utf8}
    return pl.DataFrame(out, schema=schema).select(list(schema))


def goodput_table(rows: pl.DataFrame, attainment: float = 0.9, baseline: str | None = None) -> pl.DataFrame:
    """Goodput-style SLO answers per policy, from sweep rows carrying vLLM's goodput columns.

    Rows need `request_goodput` (vLLM: completed requests meeting every --goodput SLO, per second),
    `dspark_slo_attainment` (share of all requests meeting them), `output_throughput` (tok/s) and the
    load columns. Per policy:
        best_goodput          the most request_goodput of any swept point (req/s), and its load
        attainment_there      the SLO attainment at that point
        throughput_at_slo     the most output throughput of the points where at least `attainment` of
                              the requests meet every SLO (tok/s; None when no point does), its load
        ratio                 throughput_at_slo / the baseline's (None for the baseline itself, or
                              when either is missing)

    Example: two loads of one policy, goodput 5 and 8 req/s, attainment 0.95 and 0.5, output
    throughput 1000 and 1900 tok/s: best_goodput 8 (attainment 0.5); at attainment 0.9 the most
    throughput is 1000 tok/s.
    """
    if not 0 < attainment <= 1:
        raise ValueError(f"attainment must lie in (0, 1], got {attainment}")
    need = {"policy", "request_goodput", "dspark_slo_attainment", "output_throughput"}
    missing = need - set(rows.columns)
    if missing:
        raise ValueError(f"goodput needs sweep rows with {sorted(missing)}: sweep with --goodput")
    out = []
    for p in rows.get_column("policy").unique(maintain_order=True).to_list():
        g = rows.filter((pl.col("policy") == p) & pl.col("request_goodput").is_not_null())
        rec: dict = {"policy": p, "best_goodput": None, "best_max_running": None, "best_rate_scale": None,
                     "attainment_there": None, "throughput_at_slo": None, "slo_max_running": None,
                     "slo_rate_scale": None}
        if g.height:
            best = g.sort("request_goodput", descending=True).row(0, named=True)
            rec.update(best_goodput=best["request_goodput"], best_max_running=best.get("max_running"),
                       best_rate_scale=best.get("rate_scale"), attainment_there=best["dspark_slo_attainment"])
            ok = g.filter(pl.col("dspark_slo_attainment") >= attainment)
            if ok.height:
                top = ok.sort("output_throughput", descending=True).row(0, named=True)
                rec.update(throughput_at_slo=top["output_throughput"], slo_max_running=top.get("max_running"),
                           slo_rate_scale=top.get("rate_scale"))
        out.append(rec)
    base = next((r["throughput_at_slo"] for r in out if r["policy"] == baseline), None)
    for r in out:
        r["ratio"] = (r["throughput_at_slo"] / base if r["policy"] != baseline and base and
                      r["throughput_at_slo"] is not None else None)
    schema = {"policy": pl.Utf8, "best_goodput": pl.Float64, "best_max_running": pl.Int64,
              "best_rate_scale": pl.Float64, "attainment_there": pl.Float64, "throughput_at_slo": pl.Float64,
              "slo_max_running": pl.Int64, "slo_rate_scale": pl.Float64, "ratio": pl.Float64}
    return pl.DataFrame(out, schema=schema)


def smallest_fleet(rows: pl.DataFrame, attainment: float = 0.9, column: str = "goodput_share") -> pl.DataFrame:
    """Per policy and arrival rate: the smallest fleet (`replicas`) of a fleet sweep that meets the SLA.

    A run meets it when `column` (default the summary's goodput_share: the share of requests with
    TTFT within the SLA and per-user speed at or above it; `dspark_slo_attainment` for vLLM's
    --goodput SLOs) is at least `attainment`. Rows: policy, rate_scale, replicas (null when no
    swept size meets it), the share it reached, its per-user speed P50, TTFT P90 and throughput, and
    the largest size swept.
    """
    out = []
    for (policy, rate), g in rows.group_by(["policy", "rate_scale"], maintain_order=True):
        g = g.sort("replicas")
        ok = g.filter(pl.col(column).fill_null(0.0) >= attainment)
        best = ok.row(0, named=True) if ok.height else None
        out.append({"policy": policy, "rate_scale": float(rate),
                    "replicas": None if best is None else int(best["replicas"]),
                    "share": None if best is None else best[column],
                    "user_tps_p50": None if best is None else best.get("user_tps_p50"),
                    "ttft_p90_s": None if best is None else best.get("ttft_p90_s"),
                    "throughput_tps": None if best is None else best.get("throughput_tps"),
                    "largest_swept": int(g["replicas"].to_numpy().max()),
                    "share_at_largest": g.row(g.height - 1, named=True)[column]})
    return pl.DataFrame(out, schema={"policy": pl.Utf8, "rate_scale": pl.Float64, "replicas": pl.Int64,
                                     "share": pl.Float64, "user_tps_p50": pl.Float64, "ttft_p90_s": pl.Float64,
                                     "throughput_tps": pl.Float64, "largest_swept": pl.Int64,
                                     "share_at_largest": pl.Float64})
