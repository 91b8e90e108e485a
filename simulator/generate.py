"""Synthetic production-style traces: renewal arrivals and per-domain request lengths.

Covers:
- arrivals: a renewal process with mean rate `rate` (requests/s) and inter-arrival coefficient of
  variation `cv`, inter-arrival times Gamma (shape 1/cv^2) or Weibull (shape solved from cv), both
  scaled to mean 1/rate; cv = 1 with Gamma is Poisson. Optional rate modulation by *time warping*:
  the renewal process runs in operational time s and each arrival is mapped to real time
  t = Lambda^-1(s), where Lambda(t) = integral of rate(u)/rate du. Warping (unlike thinning) keeps
  the burstiness (cv) of the process within each stretch of time and keeps the mean rate exact.
  `sine`: rate(t) = rate * (1 + A sin(2 pi t / period)); `diurnal`: the same with a 24 h period,
  peaking at 14:00 when the trace starts at midnight.
- lengths: prompt and output tokens drawn independently per request by inverse-CDF sampling from a
  quantile spline (piecewise-linear quantile function through tabulated percentiles), rounded to
  integers >= 1. The chat and code tables are percentiles of the public Azure LLM inference trace
  2023 (conversation / code); math uses a lognormal fitted to reasoning-model output statistics.
  traces/README.md lists every table's source and the figures the bundled traces reach.

Every draw comes from a numpy Generator seeded by `seed` (separate streams for arrivals, lengths
and domain choice), so the same arguments give the same trace.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy import optimize, special, stats

from simulator.trace import bundled_dir, write_trace

ARRIVALS = ("gamma", "weibull")
MODULATIONS = ("none", "sine", "diurnal")
DAY_S = 86400.0
MAX_REQUESTS = 10_000_000  # per generated trace: about 1 GB of JSON Lines, a few hundred MB in memory
DIURNAL_PEAK_HOUR = 14.0  # diurnal modulation peaks at 14:00 (trace starts at 00:00)


@dataclass(frozen=True)
class QuantileSpline:
    """A distribution given by its quantile function, linear between knots (u_k, x_k).

    u: (K,) increasing probabilities from 0 to 1; x: (K,) non-decreasing values. Sampling is
    x(U) with U ~ Uniform(0, 1), so every tabulated percentile is reproduced exactly in the limit.
    """

    u: tuple[float, ...]
    x: tuple[float, ...]

    def __post_init__(self) -> None:
        u, x = np.asarray(self.u), np.asarray(self.x)
        if u.shape != x.shape or u.size < 2 or u[0] != 0.0 or u[-1] != 1.0 or np.any(np.diff(u) <= 0):
            raise ValueError(f"quantile spline: u must rise from 0 to 1 (got {self.u})")
        if np.any(np.diff(x) < 0):
            raise ValueError(f"quantile spline: x must not decrease (got {self.x})")

    def quantile(self, q: float | np.ndarray) -> np.ndarray:
        """Inverse CDF at probabilities q in [0, 1]."""
        return np.asarray(np.interp(q, self.u, self.x))

    def mean(self) -> float:
        """Exact mean of the continuous spline distribution (before rounding to integers)."""
        u, x = np.asarray(self.u), np.asarray(self.x)
        return float(np.sum(np.diff(u) * (x[1:] + x[:-1]) / 2))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n,) int64 token counts >= 1."""
        values = np.rint(self.quantile(rng.random(n))).astype(np.int64)
        return np.maximum(values, 1)

    @classmethod
    def lognormal(cls, p50: float, p90: float, lo: float, hi: float) -> QuantileSpline:
        """A lognormal through the given median and 90th percentile, truncated to [lo, hi]."""
        sigma = math.log(p90 / p50) / stats.norm.ppf(0.9)
        inner = np.array([0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999])
        xs = np.clip(p50 * np.exp(sigma * stats.norm.ppf(inner)), lo, hi)
        return cls((0.0, *inner.tolist(), 1.0), (float(lo), *np.round(xs).tolist(), float(hi)))


# Percentile grid of the tables measured from public traces.
_U = (0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999, 1.0)


@dataclass(frozen=True)
class DomainProfile:
    """Length distributions and default arrival parameters of one traffic domain."""

    name: str
    prompt: QuantileSpline
    output: QuantileSpline
    rate: float  # default mean arrival rate, requests/s
    cv: float  # default inter-arrival coefficient of variation
    source: str


DOMAINS: dict[str, DomainProfile] = {
    # Azure LLM inference trace 2023, conversation (AzureLLMInferenceTrace_conv.csv, 19,366 requests,
    # 1 h): prompt mean 1155 / p50 1020 / p90 2735 / p99 4142, output 211 / 129 / 424 / 601,
    # 5.53 req/s, inter-arrival CV 1.09.
    "chat": DomainProfile(
        "chat",
        QuantileSpline(_U, (2, 29, 181, 207, 387, 403, 703, 1020, 1071, 1130, 1315, 2735, 4083, 4098, 4142,
                            6212, 14050)),
        QuantileSpline(_U, (7, 16, 41, 54, 77, 91, 103, 129, 177, 384, 400, 424, 451, 540, 601, 954, 1000)),
        rate=5.5, cv=1.1,
        source="Azure LLM inference trace 2023, conversation (percentiles of all 19,366 requests)",
    ),
    # Azure 2023 code (AzureLLMInferenceTrace_code.csv, 8,819 requests): prompt 2048 / 1469 / 5188 /
    # 7436, output 28 / 13 / 55 / 252, 2.57 req/s, CV 13.2.
    "code": DomainProfile(
        "code",
        QuantileSpline(_U, (3, 17, 75, 147, 385, 770, 1075, 1469, 1909, 2433, 3193, 5194, 7315, 7436, 7436,
                            7437, 7437)),
        QuantileSpline(_U, (6, 6, 6, 7, 8, 9, 11, 13, 16, 20, 29, 55, 90, 172, 252, 831, 1899)),
        rate=2.6, cv=13.0,
        source="Azure LLM inference trace 2023, code completion (percentiles of all 8,819 requests)",
    ),
    # Reasoning-model math traffic. Output: lognormal through p50 1000 / p90 2100 tokens (reasoning
    # models' chains of thought, figures from the project issue), capped at 8192 (a max_tokens limit).
    # Prompt: an assumption, not a measurement: a short problem statement plus instruction
    # (lognormal, p50 120 / p90 300, 20..2048).  Arrivals: Poisson at 1 req/s (assumed).
    "math": DomainProfile(
        "math",
        QuantileSpline.lognormal(p50=120, p90=300, lo=20, hi=2048),
        QuantileSpline.lognormal(p50=1000, p90=2100, lo=32, hi=8192),
        rate=1.0, cv=1.0,
        source="output: lognormal p50 1000 / p90 2100 (reasoning models); prompt: assumed lognormal p50 120 / p90 300",
    ),
}

DEFAULT_MIX: dict[str, float] = {"chat": 0.6, "code": 0.25, "math": 0.15}
ID_PREFIX = {"chat": "c", "code": "k", "math": "m"}


def weibull_shape_for_cv(cv: float) -> float:
    """Weibull shape k whose coefficient of variation is `cv` (0.05 <= cv <= 50)."""
    if not 0.05 <= cv <= 50:
        raise ValueError(f"weibull arrivals: cv must be in [0.05, 50] (got {cv})")

    def gap(log_k: float) -> float:
        k = math.exp(log_k)
        g1, g2 = special.gammaln(1 + 1 / k), special.gammaln(1 + 2 / k)
        return 0.5 * math.log(math.expm1(g2 - 2 * g1)) - math.log(cv)

    return math.exp(optimize.brentq(gap, math.log(0.05), math.log(100.0), xtol=1e-12))


def interarrivals(rng: np.random.Generator, n: int, rate: float, cv: float, arrival: str = "gamma") -> np.ndarray:
    """(n,) inter-arrival times in s with mean 1/rate and coefficient of variation cv."""
    if rate <= 0 or not math.isfinite(rate):
        raise ValueError(f"arrivals: rate must be > 0 requests/s (got {rate})")
    if cv <= 0 or not math.isfinite(cv):
        raise ValueError(f"arrivals: cv must be > 0 (got {cv})")
    if arrival == "gamma":
        shape = 1.0 / cv**2
        return rng.gamma(shape, 1.0 / (shape * rate), size=n)
    if arrival == "weibull":
        k = weibull_shape_for_cv(cv)
        scale = 1.0 / (rate * math.exp(special.gammaln(1 + 1 / k)))
        return scale * rng.weibull(k, size=n)
    raise ValueError(f"arrivals: unknown inter-arrival distribution {arrival!r} (choose from {', '.join(ARRIVALS)})")


@dataclass(frozen=True)
class Modulation:
    """Relative rate m(t) = 1 + amplitude * sin(2 pi t / period_s + phase); mean 1 over a period."""

    amplitude: float = 0.0
    period_s: float = 3600.0
    phase: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.amplitude < 1.0:
            raise ValueError(f"modulation: amplitude must be in [0, 1) (got {self.amplitude})")
        if not self.period_s > 0:
            raise ValueError(f"modulation: period must be > 0 s (got {self.period_s})")

    @classmethod
    def named(cls, kind: str, amplitude: float = 0.5, period_s: float = 3600.0) -> Modulation:
        """`none`, `sine` (given period) or `diurnal` (24 h, peak at 14:00)."""
        if kind == "none":
            return cls()
        if kind == "sine":
            return cls(amplitude, period_s)
        if kind == "diurnal":
            return cls(amplitude, DAY_S, math.pi / 2 - 2 * math.pi * DIURNAL_PEAK_HOUR / 24)
        raise ValueError(f"modulation: unknown kind {kind!r} (choose from {', '.join(MODULATIONS)})")

    def rate_factor(self, t: np.ndarray) -> np.ndarray:
        """m(t) at real times t (s)."""
        return 1.0 + self.amplitude * np.sin(2 * np.pi * t / self.period_s + self.phase)

    def warp(self, t: np.ndarray) -> np.ndarray:
        """Lambda(t) = integral_0^t m(u) du: real time -> operational time (s)."""
        w = 2 * np.pi / self.period_s
        return t + self.amplitude / w * (math.cos(self.phase) - np.cos(w * t + self.phase))

    def unwarp(self, s: np.ndarray) -> np.ndarray:
        """Lambda^-1(s): operational time -> real time, by bisection-refined interpolation."""
        s = np.asarray(s, dtype=np.float64)
        if self.amplitude == 0.0 or s.size == 0:
            return s.copy()
        hi = float(s.max()) / (1 - self.amplitude) + self.period_s
        grid = np.linspace(0.0, hi, int(min(1_000_000, max(2, hi / self.period_s * 2048 + 2))))
        t = np.interp(s, self.warp(grid), grid)
        for _ in range(6):  # Newton steps on Lambda(t) = s; m(t) >= 1 - A > 0
            t = t - (self.warp(t) - s) / self.rate_factor(t)
        return np.maximum(t, 0.0)


def arrival_times(rng: np.random.Generator, rate: float, cv: float, arrival: str = "gamma", *,
                  duration_s: float | None = None, requests: int | None = None,
                  modulation: Modulation | None = None) -> np.ndarray:
    """Sorted arrival times (s) of a renewal process, up to `duration_s` or exactly `requests` of them.

    With a modulation, the process runs in operational time and is mapped through Lambda^-1.
    """
    if (duration_s is None) == (requests is None):
        raise ValueError("arrivals: give exactly one of duration and requests")
    mod = modulation or Modulation()
    if requests is not None:
        if requests < 1:
            raise ValueError(f"arrivals: requests must be >= 1 (got {requests})")
        if requests > MAX_REQUESTS:
            raise ValueError(f"arrivals: {requests:,} requests is more than {MAX_REQUESTS:,} (split the trace)")
        times = np.cumsum(interarrivals(rng, requests, rate, cv, arrival))
        return mod.unwarp(times)
    assert duration_s is not None
    if not duration_s > 0 or not math.isfinite(duration_s):
        raise ValueError(f"arrivals: duration must be > 0 s (got {duration_s})")
    horizon = float(mod.warp(np.array([duration_s]))[0])
    expected = rate * horizon
    if not expected <= MAX_REQUESTS:  # refuse before allocating (1000 req/s x 1e9 s asked for 8.7 TiB)
        raise ValueError(f"arrivals: {rate:g} requests/s over {duration_s:g} s is about {expected:.3g} requests, "
                         f"more than {MAX_REQUESTS:,} (shorten --duration or lower --rate)")
    parts: list[np.ndarray] = []
    last = 0.0
    block = max(16, int(rate * horizon * 1.2) + 16)
    while last <= horizon:
        chunk = last + np.cumsum(interarrivals(rng, block, rate, cv, arrival))
        parts.append(chunk)
        last = float(chunk[-1])
    times = np.concatenate(parts)
    times = times[times <= horizon]
    return np.minimum(mod.unwarp(times), duration_s)


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators for arrivals, lengths and domain choice."""
    a, b, c = np.random.SeedSequence(seed).spawn(3)
    return np.random.default_rng(a), np.random.default_rng(b), np.random.default_rng(c)


def _frame(times: np.ndarray, domains: np.ndarray, prompt: np.ndarray, output: np.ndarray) -> pl.DataFrame:
    order = np.argsort(times, kind="stable")
    times, domains, prompt, output = times[order], domains[order], prompt[order], output[order]
    times = np.round(times, 6)  # microseconds keep files small; rounding keeps the order
    ids = [f"{ID_PREFIX.get(d, d)}-{i:06d}" for i, d in enumerate(domains.tolist(), start=1)]
    return pl.DataFrame({"id": ids, "arrival_s": times, "prompt_tokens": prompt, "output_tokens": output,
                         "domain": domains.tolist()},
                        schema={"id": pl.Utf8, "arrival_s": pl.Float64, "prompt_tokens": pl.Int64,
                                "output_tokens": pl.Int64, "domain": pl.Utf8})


def parse_mix(text: str) -> dict[str, float]:
    """'chat=0.6,code=0.3,math=0.1' -> weights (normalised later)."""
    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"mix: expected domain=weight, got {part!r}") from None
        if not sep or name not in DOMAINS or not weight >= 0 or not math.isfinite(weight):
            raise ValueError(f"mix: expected domain=weight with domain in {', '.join(DOMAINS)} and "
                             f"weight >= 0, got {part!r}")
        out[name] = weight
    if sum(out.values()) <= 0:
        raise ValueError(f"mix: weights must not all be zero (got {text!r})")
    return out


def generate_trace(domain: str = "chat", *, rate: float | None = None, duration_s: float | None = None,
                   requests: int | None = None, seed: int = 0, cv: float | None = None,
                   arrival: str = "gamma", modulation: Modulation | None = None,
                   mix: Mapping[str, float] | None = None) -> pl.DataFrame:
    """A synthetic trace as a DataFrame in the trace schema (traces/README.md).

    domain: chat | code | math | mixed. rate (requests/s) and cv default to the domain's measured
    values. `mixed` draws each request's domain independently with weights `mix` (default
    chat 0.6 / code 0.25 / math 0.15) on one renewal process (default rate: the weighted mean of
    the domains' rates; default cv 1.5).
    """
    if domain == "mixed":
        weights = dict(mix or DEFAULT_MIX)
        names = [d for d in weights if weights[d] > 0]
        p = np.array([weights[d] for d in names], dtype=np.float64)
        p /= p.sum()
        rate = rate if rate is not None else float(sum(pi * DOMAINS[d].rate for pi, d in zip(p, names)))
        cv = cv if cv is not None else 1.5
    elif domain in DOMAINS:
        names, p = [domain], np.ones(1)
        rate = rate if rate is not None else DOMAINS[domain].rate
        cv = cv if cv is not None else DOMAINS[domain].cv
    else:
        raise ValueError(f"generate: unknown domain {domain!r} (choose from {', '.join([*DOMAINS, 'mixed'])})")
    rng_arrival, rng_length, rng_domain = _streams(seed)
    times = arrival_times(rng_arrival, rate, cv, arrival, duration_s=duration_s, requests=requests,
                          modulation=modulation)
    n = times.size
    if n == 0:
        raise ValueError(f"generate: no request arrived within {duration_s} s at {rate} req/s; "
                         f"raise the rate or the duration")
    which = rng_domain.choice(len(names), size=n, p=p) if len(names) > 1 else np.zeros(n, dtype=np.int64)
    prompt = np.empty(n, dtype=np.int64)
    output = np.empty(n, dtype=np.int64)
    for k, name in enumerate(names):  # fixed order: draws depend only on the seed
        idx = np.flatnonzero(which == k)
        prompt[idx] = DOMAINS[name].prompt.sample(rng_length, idx.size)
        output[idx] = DOMAINS[name].output.sample(rng_length, idx.size)
    domains = np.array(names, dtype=object)[which]
    return _frame(times, domains, prompt, output)


# The bundled traces: (file stem, domain, requests, seed). Rates and cvs are the domains' defaults.
BUNDLE: tuple[tuple[str, str, int, int], ...] = (
    ("chat", "chat", 3000, 1),
    ("code", "code", 3000, 2),
    ("math", "math", 2000, 3),
    ("mixed", "mixed", 4000, 4),
)


def bundle(out_dir: str | Path | None = None) -> list[Path]:
    """(Re)write the bundled traces into `out_dir` (default: the `traces` package directory)."""
    out = Path(out_dir) if out_dir is not None else bundled_dir()
    paths = []
    for stem, domain, requests, seed in BUNDLE:
        path = out / f"{stem}.jsonl"
        write_trace(generate_trace(domain, requests=requests, seed=seed), path)
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m simulator.generate --bundle [DIR]`: regenerate the bundled traces."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "--bundle":
        raise SystemExit("usage: python -m simulator.generate --bundle [DIR]  (or: sparksched trace generate --help)")
    for path in bundle(args[1] if len(args) > 1 else None):
        print(path)


if __name__ == "__main__":
    main()
