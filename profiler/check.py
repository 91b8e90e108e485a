"""Accuracy of a profile's curve on points it did not see, through `ThroughputCurve`.

Two hold-out tests, both on interior points (inside the measured range, so interpolation is tested,
not extrapolation):
- leave-one-B-out: drop every row with batch tokens B (at all contexts, so the grid stays whole),
  rebuild the curve from the rest and predict B at each context;
- leave-one-context-out: drop an interior context L and predict its points by blending the
  neighbouring contexts (`ThroughputCurve.at_context`).
Error is |predicted - measured| / measured, with "measured" the mean of the rows at that (L, B).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparksched.curve import ThroughputCurve
from sparksched.profile import load_profile


@dataclass(frozen=True)
class HeldOut:
    """One held-out prediction."""

    test: str  # "B" or "context"
    context: float
    tokens: float
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
        for name, test in (("B", "B"), ("context", "context"), ("all", None)):
            e = self.errors(test)
            out[name] = ({"points": int(e.size), "median": float(np.median(e)), "max": float(e.max())}
                         if e.size else {"points": 0, "median": None, "max": None})
        cv = np.asarray(self.repeat_cv)
        out["repeat_cv"] = ({"median": float(np.median(cv)), "max": float(cv.max())} if cv.size else None)
        return out


def _means(rows: list[dict[str, Any]]) -> dict[tuple[float, float], float]:
    acc: dict[tuple[float, float], list[float]] = {}
    for r in rows:
        acc.setdefault((float(r["context"]), float(r["tokens"])), []).append(float(r["median_s"]))
    return {k: float(np.mean(v)) for k, v in acc.items()}


def _without(profile: dict[str, Any], keep) -> dict[str, Any]:
    p = {k: v for k, v in profile.items() if not k.startswith("_")}
    p["verify"] = [r for r in profile["verify"] if keep(r)]
    return p


def check_profile(source: Any) -> CheckReport:
    """Hold-out accuracy of a profile (path, bundled name or parsed dict); ValueError if unusable."""
    profile = load_profile(source)
    rows = profile["verify"]
    measured = _means(rows)
    contexts = sorted({c for c, _ in measured})
    tokens = sorted({b for _, b in measured})
    points: list[HeldOut] = []
    for b in tokens[1:-1]:
        curve = ThroughputCurve.from_profile(_without(profile, lambda r, b=b: float(r["tokens"]) != b))
        for c in contexts:
            if (c, b) in measured:
                points.append(HeldOut("B", c, b, measured[(c, b)], float(curve.step_time(b, c))))
    for c in contexts[1:-1]:
        curve = ThroughputCurve.from_profile(_without(profile, lambda r, c=c: float(r["context"]) != c))
        for b in tokens:
            if (c, b) in measured:
                points.append(HeldOut("context", c, b, measured[(c, b)], float(curve.step_time(b, c))))
    if not points:
        raise ValueError(f"{profile.get('_source', 'profile')}: too few grid points to hold any out "
                         "(need 3 batch sizes or 3 contexts)")
    cv = [float(r["cv"]) for r in rows if "cv" in r and r.get("repeats", 0) and r["repeats"] > 1]
    return CheckReport(points, cv)


def format_report(report: CheckReport, worst: int = 5) -> str:
    """A short text report: summary lines and the worst points."""
    s = report.summary()
    lines = []
    for name, label in (("B", "leave-one-B-out"), ("context", "leave-one-context-out"), ("all", "all held-out")):
        d = s[name]
        if d["points"]:
            lines.append(f"{label:22s} points={d['points']:4d}  median rel. error={d['median']:.2%}  "
                         f"max={d['max']:.2%}")
    if s["repeat_cv"]:
        lines.append(f"{'repeat CV':22s} median={s['repeat_cv']['median']:.2%}  max={s['repeat_cv']['max']:.2%}")
    lines.append(f"worst {min(worst, len(report.points))}:")
    for p in sorted(report.points, key=lambda p: -p.rel_error)[:worst]:
        lines.append(f"  {p.test:7s} context={p.context:g} B={p.tokens:g}: measured {p.measured_s * 1e3:.4g} ms, "
                     f"predicted {p.predicted_s * 1e3:.4g} ms ({p.rel_error:.2%})")
    return "\n".join(lines)
