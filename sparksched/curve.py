"""ThroughputCurve: the target's measured step time as a function of verification batch tokens.

The scheduler reads one number per candidate batch size B (tokens in the step's verify pass):
`step_time(B)` in seconds; the paper's SPS(B) is its reciprocal. A curve is piecewise linear between
its points, exact at them, and non-decreasing (a bigger batch never finishes sooner). Beyond the
measured range the caller chooses what happens (`extrapolate`): raise, extend the last segment
linearly ("linear": above the range only; below it the first value is held, since a step's fixed
costs do not vanish), or hold the end values ("clamp").

A curve is one slice of a step's price: the price of a real step also depends on how many requests
it serves and on their context (`sparksched.cost.StepCost`). `ThroughputCurve.from_profile` takes
that slice at a given number of requests and context; `StepCost.curve(n, L)` is the same. A curve
may also carry a context axis of its own (one row per context L, `at_context(L)` blends the two
nearest linearly in L) for callers who build one from points.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Extrapolate = Literal["error", "linear", "clamp"]
_EXTRAPOLATE = ("error", "linear", "clamp")


def _check_points(tokens: np.ndarray, seconds: np.ndarray, where: str) -> None:
    if tokens.ndim != 1 or seconds.ndim != 1 or tokens.shape != seconds.shape:
        raise ValueError(f"{where}: batch_tokens and step_seconds must be 1-D of equal length, "
                         f"got shapes {tokens.shape} and {seconds.shape}")
    if tokens.size == 0:
        raise ValueError(f"{where}: a curve needs at least one point")
    if not np.all(np.isfinite(tokens)) or not np.all(np.isfinite(seconds)):
        raise ValueError(f"{where}: points must be finite, got batch_tokens={tokens.tolist()} "
                         f"step_seconds={seconds.tolist()}")
    if np.any(tokens <= 0):
        raise ValueError(f"{where}: batch_tokens must be > 0, got {tokens[tokens <= 0][0]}")
    if np.any(seconds <= 0):
        raise ValueError(f"{where}: step_seconds must be > 0, got {seconds[seconds <= 0][0]}")
    if np.any(np.diff(tokens) <= 0):
        i = int(np.argmax(np.diff(tokens) <= 0))
        raise ValueError(f"{where}: batch_tokens must be strictly increasing, got {tokens[i]} "
                         f"then {tokens[i + 1]}")
    if np.any(np.diff(seconds) < 0):
        i = int(np.argmax(np.diff(seconds) < 0))
        raise ValueError(f"{where}: step time decreases from {seconds[i]} s at B={tokens[i]:g} to "
                         f"{seconds[i + 1]} s at B={tokens[i + 1]:g}; a curve must be non-decreasing")


def isotonic_non_decreasing(y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares non-decreasing fit of `y` (pool-adjacent-violators); shape preserved.

    Used to turn noisy measured medians into a valid curve without the upward bias a running
    maximum would add.
    """
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    try:
        from scipy.optimize import isotonic_regression
    except ImportError:  # scipy < 1.12 or absent (e.g. a bare GPU box): same fit in numpy
        return _pav(np.asarray(y, dtype=np.float64), w)
    return np.asarray(isotonic_regression(np.asarray(y, dtype=np.float64), weights=w).x)


def _pav(y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Pool-adjacent-violators: weighted least-squares non-decreasing fit of y [m] (numpy only)."""
    w = np.ones_like(y) if w is None else w
    means: list[float] = []
    weights: list[float] = []
    counts: list[int] = []
    for yi, wi in zip(y.tolist(), w.tolist()):
        means.append(yi)
        weights.append(wi)
        counts.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            m2, w2, c2 = means.pop(), weights.pop(), counts.pop()
            tot = weights[-1] + w2
            means[-1] = (means[-1] * weights[-1] + m2 * w2) / tot
            weights[-1] = tot
            counts[-1] += c2
    return np.repeat(np.asarray(means), counts)


@dataclass(frozen=True)
class ThroughputCurve:
    """Step time (s) against verification batch tokens B, optionally at several context lengths.

    Attributes:
        tokens: [m] float64, strictly increasing batch sizes B (tokens per step).
        seconds: [c, m] float64, step time at each (context, B); non-decreasing along B.
        contexts: [c] float64, strictly increasing context lengths (tokens); [0.0] when the curve
            has no context axis.
        extrapolate: what `step_time` does outside [tokens[0], tokens[-1]].
        meta: free-form facts about where the curve came from (device, model, estimated or not).

    Example:
        >>> curve = ThroughputCurve.from_points([1, 64, 128], [0.010, 0.012, 0.020])
        >>> float(curve.step_time(96)), float(curve.steps_per_second(64))
        (0.016, 83.33333333333333)
    """

    tokens: np.ndarray
    seconds: np.ndarray
    contexts: np.ndarray = field(default_factory=lambda: np.zeros(1))
    extrapolate: Extrapolate = "linear"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        tokens = np.asarray(self.tokens, dtype=np.float64)
        seconds = np.atleast_2d(np.asarray(self.seconds, dtype=np.float64))
        contexts = np.atleast_1d(np.asarray(self.contexts, dtype=np.float64))
        if self.extrapolate not in _EXTRAPOLATE:
            raise ValueError(f"extrapolate must be one of {_EXTRAPOLATE}, got {self.extrapolate!r}")
        if seconds.shape != (contexts.size, tokens.size):
            raise ValueError(f"seconds must have shape (contexts, tokens) = ({contexts.size}, "
                             f"{tokens.size}), got {seconds.shape}")
        if np.any(np.diff(contexts) <= 0) or not np.all(np.isfinite(contexts)) or np.any(contexts < 0):
            raise ValueError(f"contexts must be finite, >= 0 and strictly increasing, got {contexts.tolist()}")
        for c, row in zip(contexts, seconds):
            _check_points(tokens, row, f"ThroughputCurve(context={c:g})")
        # read-only copies: a curve is a value (the schedulers cache tables per curve object)
        tokens, seconds, contexts = tokens.copy(), seconds.copy(), contexts.copy()
        for a in (tokens, seconds, contexts):
            a.setflags(write=False)
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "seconds", seconds)
        object.__setattr__(self, "contexts", contexts)

    def __eq__(self, other: object) -> bool:
        # the generated dataclass __eq__ compares arrays with ==, which raises for more than one point
        if not isinstance(other, ThroughputCurve):
            return NotImplemented
        return (self.extrapolate == other.extrapolate and np.array_equal(self.tokens, other.tokens)
                and np.array_equal(self.seconds, other.seconds) and np.array_equal(self.contexts, other.contexts))

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_points(cls, batch_tokens: Sequence[float] | np.ndarray,
                    step_seconds: Sequence[float] | np.ndarray,
                    extrapolate: Extrapolate = "linear") -> ThroughputCurve:
        """A 1-D curve through the given points, exact at them.

        Args:
            batch_tokens: [m] strictly increasing batch sizes B (tokens), > 0.
            step_seconds: [m] step time (s) at each B, > 0 and non-decreasing (ValueError otherwise).
            extrapolate: "error" | "linear" (extend the end segment) | "clamp" (hold the end value).
        """
        tokens = np.asarray(batch_tokens, dtype=np.float64)
        seconds = np.asarray(step_seconds, dtype=np.float64)
        _check_points(tokens, seconds, "ThroughputCurve.from_points")
        return cls(tokens, seconds[None, :], np.zeros(1), extrapolate)

    @classmethod
    def from_profile(cls, source: str | Path | dict[str, Any], extrapolate: Extrapolate = "linear", *,
                     requests: float | None = None, context: float | None = None) -> ThroughputCurve:
        """The verify slice of a profile (path, bundled name or parsed dict) at `requests` decoding
        requests and mean context `context` (tokens): `StepCost.from_profile(source).curve(requests,
        context)`, the paper's SPS(B) for a step of that size.

        A profile prices a step by requests, batch tokens and context; averaging its rows of equal B
        into one curve would misprice every draft, so both are required.
        """
        from sparksched.cost import StepCost

        if requests is None or context is None:
            raise ValueError("a profile prices a step by requests and context: pass requests= and context= "
                             "(or use sparksched.cost.StepCost.from_profile for the whole surface)")
        curve = StepCost.from_profile(source).curve(requests, context)
        if extrapolate == curve.extrapolate:
            return curve
        return ThroughputCurve(curve.tokens, curve.seconds, curve.contexts, extrapolate, curve.meta)

    # ---------------------------------------------------------------- queries
    @property
    def has_context(self) -> bool:
        """True when the curve was measured at more than one context length."""
        return self.contexts.size > 1

    @property
    def max_tokens(self) -> float:
        """Largest measured batch size B (tokens)."""
        return float(self.tokens[-1])

    def at_context(self, context: float) -> ThroughputCurve:
        """The 1-D curve at context length `context` (tokens), linear in L between measured contexts.

        Outside the measured contexts the same `extrapolate` rule as for B applies.
        """
        if not self.has_context:
            return self
        cs = self.contexts
        if not math.isfinite(context) or context < 0:
            raise ValueError(f"context must be a finite length >= 0, got {context}")
        if (context < cs[0] or context > cs[-1]) and self.extrapolate == "error":
            raise ValueError(f"context {context:g} outside the measured range [{cs[0]:g}, {cs[-1]:g}] "
                             "and extrapolate='error'")
        if self.extrapolate == "clamp" or cs.size == 1:
            context = float(np.clip(context, cs[0], cs[-1]))
        j = int(np.clip(np.searchsorted(cs, context, side="right") - 1, 0, cs.size - 2))
        w = (context - cs[j]) / (cs[j + 1] - cs[j])
        row = (1 - w) * self.seconds[j] + w * self.seconds[j + 1]
        # extrapolating in L can only push a row down at small B; keep it valid
        row = np.maximum.accumulate(np.maximum(row, 1e-12))
        return ThroughputCurve(self.tokens, row[None, :], np.zeros(1), self.extrapolate, self.meta)

    def step_time(self, batch_tokens: float | np.ndarray, context: float | None = None) -> np.ndarray:
        """Step time in seconds at batch size(s) B (tokens), vectorised; shape follows the input.

        Args:
            batch_tokens: scalar or array of B (tokens in the verify pass, anchors included).
            context: context length for a curve with a context axis; None uses its first context.
        """
        curve = self if context is None or not self.has_context else self.at_context(context)
        x = np.asarray(batch_tokens, dtype=np.float64)
        xs, ys = curve.tokens, curve.seconds[0]
        if self.extrapolate == "error" and (np.any(x < xs[0]) or np.any(x > xs[-1])):
            bad = x[(x < xs[0]) | (x > xs[-1])].ravel()[0]
            raise ValueError(f"batch tokens {bad:g} outside the measured range [{xs[0]:g}, {xs[-1]:g}] "
                             "and extrapolate='error'")
        y = np.interp(x, xs, ys)  # below the first point: its value (fixed costs do not vanish)
        if self.extrapolate == "linear" and xs.size >= 2:
            hi_slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
            y = np.where(x > xs[-1], ys[-1] + hi_slope * (x - xs[-1]), y)
        return y

    def steps_per_second(self, batch_tokens: float | np.ndarray, context: float | None = None) -> np.ndarray:
        """The paper's SPS(B) = 1 / step_time(B), steps per second."""
        return 1.0 / self.step_time(batch_tokens, context)

    def table(self, max_tokens: int, context: float | None = None) -> np.ndarray:
        """step_time at B = 0, 1, ..., max_tokens as a float64 lookup table [max_tokens + 1].

        Entries below the first point hold its value; the vectorised schedulers index this table
        instead of interpolating per candidate.
        """
        b = np.arange(max_tokens + 1, dtype=np.float64)
        if self.extrapolate == "error":
            lo, hi = self.tokens[0], self.tokens[-1]
            inside = (b >= lo) & (b <= hi)
            out = np.full(b.shape, np.inf)
            out[inside] = self.step_time(b[inside], context)
            return out
        return self.step_time(b, context)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (points and extrapolation rule)."""
        return {"tokens": self.tokens.tolist(), "seconds": self.seconds.tolist(),
                "contexts": self.contexts.tolist(), "extrapolate": self.extrapolate,
                "meta": self.meta}

    def __repr__(self) -> str:
        ctx = f", contexts={self.contexts.tolist()}" if self.has_context else ""
        return (f"ThroughputCurve({self.tokens.size} points, B in [{self.tokens[0]:g}, {self.tokens[-1]:g}]"
                f"{ctx}, extrapolate={self.extrapolate!r})")


def curve_from_json(text: str) -> ThroughputCurve:
    """Inverse of `json.dumps(curve.to_dict())`."""
    d = json.loads(text)
    return ThroughputCurve(np.asarray(d["tokens"]), np.asarray(d["seconds"]), np.asarray(d["contexts"]),
                           d["extrapolate"], d.get("meta", {}))
