"""The trace generator: arrival statistics, modulation, length distributions, determinism.

Tolerances are about five standard deviations of the estimator at the sample sizes used (measured
over 40 seeds: the relative s.d. of the sample CV of 100k gaps is at most 0.94 %, of their mean 0.76 %).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulator.generate import (
    DOMAINS,
    Modulation,
    QuantileSpline,
    arrival_times,
    generate_trace,
    interarrivals,
    parse_mix,
    weibull_shape_for_cv,
)


def sample_cv(x: np.ndarray) -> float:
    return float(x.std() / x.mean())


def check_renewal(gaps: np.ndarray, rate: float, cv: float) -> None:
    assert abs(gaps.mean() * rate - 1) < 0.04, gaps.mean() * rate
    assert abs(sample_cv(gaps) / cv - 1) < 0.05, sample_cv(gaps)


@pytest.mark.parametrize("arrival", ["gamma", "weibull"])
@pytest.mark.parametrize("cv", [0.5, 1.0, 2.0])
def test_interarrivals_match_rate_and_cv(arrival, cv):
    gaps = interarrivals(np.random.default_rng(7), 100_000, 4.0, cv, arrival)
    check_renewal(gaps, 4.0, cv)


def test_negative_control_poisson_fails_the_cv_check():
    wrong = np.random.default_rng(7).exponential(1 / 4.0, 100_000)  # ignores the requested burstiness
    with pytest.raises(AssertionError):
        check_renewal(wrong, 4.0, 2.0)


def test_weibull_shape_solves_cv():
    assert weibull_shape_for_cv(1.0) == pytest.approx(1.0, rel=1e-9)  # exponential
    k = weibull_shape_for_cv(0.5)
    g1, g2 = math.gamma(1 + 1 / k), math.gamma(1 + 2 / k)
    assert math.sqrt(g2 / g1**2 - 1) == pytest.approx(0.5, rel=1e-9)
    with pytest.raises(ValueError, match="cv must be in"):
        weibull_shape_for_cv(100.0)


@pytest.mark.parametrize("cv", [1.0, 2.0])
def test_duration_mode_request_count(cv):
    rate, duration = 5.0, 20_000.0
    t = arrival_times(np.random.default_rng(3), rate, cv, duration_s=duration)
    assert np.all(np.diff(t) >= 0) and t[0] >= 0 and t[-1] <= duration
    # a renewal count over a long window has variance ~ rate * T * cv^2
    assert abs(t.size - rate * duration) < 5 * math.sqrt(rate * duration) * cv


def phase_profile_error(t: np.ndarray, rate: float, mod: Modulation, duration: float, bins: int = 20) -> float:
    """Largest |observed - expected| / sd over phase bins of the modulation period (Poisson counts)."""
    periods = duration / mod.period_s
    phase = (t % mod.period_s) / mod.period_s
    observed, edges = np.histogram(phase, bins=bins, range=(0, 1))
    real = edges * mod.period_s
    expected = rate * periods * np.diff(mod.warp(real))
    return float(np.max(np.abs(observed - expected) / np.sqrt(expected)))


def test_sine_modulation_follows_the_rate_curve():
    mod = Modulation.named("sine", amplitude=0.6, period_s=1000.0)
    rate, duration = 5.0, 100_000.0
    t = arrival_times(np.random.default_rng(11), rate, 1.0, duration_s=duration, modulation=mod)
    assert phase_profile_error(t, rate, mod, duration) < 5.0
    assert abs(t.size - rate * duration) < 5 * math.sqrt(rate * duration)
    # negative control: the unmodulated process fails the same check
    flat = arrival_times(np.random.default_rng(11), rate, 1.0, duration_s=duration)
    assert phase_profile_error(flat, rate, mod, duration) > 20.0


def test_warp_inverts_and_diurnal_peaks_at_14h():
    mod = Modulation.named("diurnal", amplitude=0.5)
    s = np.linspace(0, 3 * 86400, 1001)
    assert np.allclose(mod.warp(mod.unwarp(s)), s, atol=1e-6)
    hours = np.arange(24) * 3600.0
    assert int(np.argmax(mod.rate_factor(hours))) == 14
    with pytest.raises(ValueError, match="amplitude"):
        Modulation(amplitude=1.0)
    with pytest.raises(ValueError, match="unknown kind"):
        Modulation.named("weekly")


def check_lengths(x: np.ndarray, spline: QuantileSpline, qs=(0.1, 0.5, 0.9, 0.99)) -> None:
    """The sample's CDF brackets each quantile of the (integer-rounded) spline within sampling error."""
    n = x.size
    for q in qs:
        v = float(np.rint(spline.quantile(q)))
        tol = 5 * math.sqrt(q * (1 - q) / n)
        assert np.mean(x < v + 0.5) >= q - tol, (q, v, np.mean(x < v + 0.5))
        assert np.mean(x < v - 0.5) <= q + tol, (q, v, np.mean(x < v - 0.5))
    assert abs(x.mean() - spline.mean()) < 5 * x.std() / math.sqrt(n) + 0.5


@pytest.mark.parametrize("domain", ["chat", "code", "math"])
def test_generated_lengths_follow_the_domain_tables(domain):
    df = generate_trace(domain, requests=40_000, seed=5)
    check_lengths(df["prompt_tokens"].to_numpy(), DOMAINS[domain].prompt)
    check_lengths(df["output_tokens"].to_numpy(), DOMAINS[domain].output)


def test_negative_control_lognormal_chat_prompt_fails_the_length_check():
    # a lognormal through the chat prompt p50 / p90 overshoots the tail (p99 ~ 6100 vs 4142)
    lognormal = QuantileSpline.lognormal(p50=1020, p90=2735, lo=1, hi=10**6)
    x = lognormal.sample(np.random.default_rng(0), 40_000)
    with pytest.raises(AssertionError):
        check_lengths(x, DOMAINS["chat"].prompt)


def test_domain_tables_reproduce_the_public_statistics():
    chat, code, math_ = DOMAINS["chat"], DOMAINS["code"], DOMAINS["math"]
    assert chat.prompt.quantile([0.5, 0.9, 0.99]).tolist() == [1020, 2735, 4142]
    assert chat.output.quantile([0.5, 0.9, 0.99]).tolist() == [129, 424, 601]
    assert chat.prompt.mean() == pytest.approx(1155, rel=0.01)
    assert chat.output.mean() == pytest.approx(211, rel=0.02)
    assert code.prompt.quantile([0.5, 0.99]).tolist() == [1469, 7436]
    assert code.output.quantile([0.5, 0.9, 0.99]).tolist() == [13, 55, 252]
    assert code.prompt.mean() == pytest.approx(2048, rel=0.02)
    assert code.output.mean() == pytest.approx(28, rel=0.1)  # 30.2: the spline's tail above p99 is fatter
    assert math_.output.quantile([0.5, 0.9]).tolist() == pytest.approx([1000, 2100], abs=1)


def test_mixed_domain_shares_and_ids():
    df = generate_trace("mixed", requests=20_000, seed=1, mix=parse_mix("chat=0.5,code=0.3,math=0.2"))
    shares = df["domain"].value_counts(normalize=True).sort("domain")
    for (domain, share), want in zip(shares.iter_rows(), (0.5, 0.3, 0.2)):
        assert abs(share - want) < 5 * math.sqrt(want * (1 - want) / 20_000), domain
    assert df["id"].n_unique() == df.height
    assert df["arrival_s"].is_sorted()


def test_seeded_determinism():
    a = generate_trace("mixed", duration_s=300, seed=42, arrival="weibull", modulation=Modulation(0.3, 100.0))
    b = generate_trace("mixed", duration_s=300, seed=42, arrival="weibull", modulation=Modulation(0.3, 100.0))
    c = generate_trace("mixed", duration_s=300, seed=43, arrival="weibull", modulation=Modulation(0.3, 100.0))
    assert a.equals(b)
    assert not a.equals(c)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"domain": "poetry", "requests": 5}, "unknown domain"),
    ({"domain": "chat", "requests": 5, "rate": 0.0}, "rate must be > 0"),
    ({"domain": "chat", "requests": 5, "cv": -1.0}, "cv must be > 0"),
    ({"domain": "chat", "requests": 5, "duration_s": 5.0}, "exactly one"),
    ({"domain": "chat", "requests": 5, "arrival": "pareto"}, "unknown inter-arrival"),
    ({"domain": "chat", "duration_s": 0.001, "rate": 0.001}, "no request arrived"),
])
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_trace(**kwargs)


def test_parse_mix_errors():
    assert parse_mix("chat=1,math=3") == {"chat": 1.0, "math": 3.0}
    for bad in ("chat", "chat=x", "poetry=1", "chat=0", "chat=-1"):
        with pytest.raises(ValueError, match="mix"):
            parse_mix(bad)
