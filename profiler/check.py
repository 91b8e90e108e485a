"""Accuracy of a profile's step-cost model on points it did not see, through `StepCost`.

Three hold-out tests, each on interior grid values (inside the measured range, so interpolation is
tested, not extrapolation), using only the rows that fit in memory:
- leave-one-tokens-out: drop every row with an interior tokens-per-request t, rebuild the cost from
  the rest and predict those rows at their own (n, B, L);
- leave-one-requests-out: the same for an interior request count n;
- leave-one-context-out: the same for an interior context L.
Error is |predicted - measured| / measured, with "measured" the mean of the rows at that (n, t, L).
A profile with one request count is priced by batch tokens: its "tokens" test leaves out batch sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparksched.cost import StepCost
from sparksched.profile import load_profile

TESTS = ("tokens", "requests", "context")


@dataclass(frozen=True)
class HeldOut:
    """One held-out prediction."""

    test: str  # "tokens", "requests" or "context"
    requests: float
    tokens: float  # batch tokens B
    context: float
    measured_s: float
    predicted_s: float

    @property
    def rel_error(self) -> float:
        return abs(self.predicted_s - self.measured_s) / self.measured_s


@dataclass(frozen=True)
class CheckReport:
    """All held-out predictions plus the profile's repeat noise."""

    points: list[HeldOut]
    repeat_cv: list[float] = field(default_factory=list)

    def errors(self, test: str | None = None) -> np.ndarray:
        return np.asarray([p.rel_error for p in self.points if test is None or p.test == test])

    def summary(self) -> dict[str, Any]:
        """median / max relative error per test and overall, and median / max repeat CV."""
        out: dict[str, Any] = {}
        for name, test in [*((t, t) for t in TESTS), ("all", None)]:
            e = self.errors(test)
            out[name] = ({"points": int(e.size), "median": float(np.median(e)), "max": float(e.max())}
                         if e.size else {"points": 0, "median": None, "max": None})
        cv = np.asarray(self.repeat_cv)
        out["repeat_cv"] = ({"median": float(np.median(cv)), "max": float(cv.max())} if cv.size else None)
        return out


def _key(r: dict[str, Any], by_batch: bool) -> tuple[float, float, float]:
    n, b = float(r["requests"]), float(r["tokens"])
    return n, (b if by_batch else b / n), float(r["context"])


def _without(profile: dict[str, Any], keep) -> dict[str, Any]:
    p = {k: v for k, v in profile.items() if not k.startswith("_")}
    p["verify"] = [r for r in profile["verify"] if keep(r)]
    return p


def check_profile(source: Any) -> CheckReport:
    """Hold-out accuracy of a profile (path, bundled name or parsed dict); ValueError if unusable."""
    profile = load_profile(source)
    rows = [r for r in profile["verify"] if r.get("fits", True) is not False]
    by_batch = len({float(r["requests"]) for r in rows}) == 1
    acc: dict[tuple[float, float, float], list[float]] = {}
    for r in rows:
        acc.setdefault(_key(r, by_batch), []).append(float(r["median_s"]))
    measured = {k: float(np.mean(v)) for k, v in acc.items()}
    points: list[HeldOut] = []
    for axis, test in enumerate(("requests", "tokens", "context")):
        values = sorted({k[axis] for k in measured})
        for v in values[1:-1]:
            rest = _without(profile, lambda r, v=v, a=axis: _key(r, by_batch)[a] != v)
            cost = StepCost.from_profile(rest)
            for (n, t, ctx), s in measured.items():
                if (n, t, ctx)[axis] == v:
                    b = t if by_batch else n * t
                    points.append(HeldOut(test, n, b, ctx, s, float(cost.verify_seconds(n, b, ctx))))
    if not points:
        raise ValueError(f"{profile.get('_source', 'profile')}: too few grid points to hold any out "
                         "(need 3 values of tokens per request, requests or context)")
    cv = [float(r["cv"]) for r in rows if "cv" in r and r.get("repeats", 0) and r["repeats"] > 1]
    return CheckReport(points, cv)


def format_report(report: CheckReport, worst: int = 5) -> str:
    """A short text report: summary lines and the worst points."""
    s = report.summary()
    lines = []
    labels = {"tokens": "leave-one-tokens-out", "requests": "leave-one-requests-out",
              "context": "leave-one-context-out", "all": "all held-out"}
    for name, label in labels.items():
        d = s[name]
        if d["points"]:
            lines.append(f"{label:23s} points={d['points']:4d}  median rel. error={d['median']:.2%}  "
                         f"max={d['max']:.2%}")
    if s["repeat_cv"]:
        lines.append(f"{'repeat CV':23s} median={s['repeat_cv']['median']:.2%}  max={s['repeat_cv']['max']:.2%}")
    lines.append(f"worst {min(worst, len(report.points))}:")
    for p in sorted(report.points, key=lambda p: -p.rel_error)[:worst]:
        lines.append(f"  {p.test:8s} n={p.requests:g} B={p.tokens:g} context={p.context:g}: measured "
                     f"{p.measured_s * 1e3:.4g} ms, predicted {p.predicted_s * 1e3:.4g} ms ({p.rel_error:.2%})")
    return "\n".join(lines)
