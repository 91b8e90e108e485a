"""Synthetic acceptance model: per-family, per-domain presets anchored to the DSpark paper's Figure 2.

Covers: how many drafted tokens the target accepts, and what the drafter's confidence head says
about them, without running any model.

Scenario. Request i in round t drafts g tokens. Token k's true acceptance probability is
alpha = sigmoid(b_k + z_i + e_{i,t,k}): b_k is the preset's base logit at block position k, z_i ~
N(0, SIGMA_REQUEST^2) the request's difficulty (drawn once per request), e ~ N(0, SIGMA_TOKEN^2)
per-token variation (token-level acceptance is strongly bimodal in practice, hence a wide spread).
The target accepts token k when a uniform draw falls below alpha; the round accepts the leading run.

Presets. `FIGURE2` is the paper's Figure 2 digitised (Qwen3-4B, position-wise conditional
acceptance r_k: among rounds whose first k-1 drafts survived, the share whose k-th survived, pooled
over the domain's benchmarks). The prefix survival of the population is S_k = r_1 * ... * r_k
whatever the heterogeneity, so b_k is solved (position by position, Gauss-Hermite over z) to make
E_z[prod_j E_e sigmoid(b_j + z + e_j)] equal S_k exactly: the preset reproduces Figure 2's
conditional acceptance and hence the mean accepted length per round 1 + S_1 + ... + S_g with a fixed
block and no scheduler, which the paper's Table 1 reports per benchmark (e.g. DSpark, chat:
3.51 from Figure 2 against 3.64 MT-Bench / 3.54 Alpaca / 3.29 Arena-Hard). Blocks longer than 7
repeat position 7's rate. MTP-1 is a one-token drafter with acceptance `MTP1` (DeepSeek reports
85-90 % for its second-token MTP; we put chat at the low end and math at the high end).

Confidence. The head observes o = logit(alpha) + eta, eta ~ N(0, s^2), and knows the request's
prior mean b_k + z_i; it reports the posterior mean of alpha (a calibrated estimate of the
conditional acceptance), then an overconfidence temperature T >= 1 is applied:
c = sigmoid(T * logit(c_calibrated)). The noise s is solved so that the ROC-AUC of c against
acceptance (pooled over positions whose prefix survived) hits `auc`, and T so that the expected
calibration error (15 equal-width bins, same pool) hits `ece`; the paper reports AUC 0.81-0.90,
ECE 3-8 % raw and about 1 % after STS (defaults: auc 0.85, ece 0.01; use ECE_RAW for raw heads).

Randomness is per request: a request's difficulty is a fixed entry of a PCG64 stream seeded by
(seed, request // 256), the numbers of its round t one of a stream seeded by (seed, request // 256,
t // 64) (by (seed, request, t // 64) past round 128), so a request's acceptance does not depend on which other requests share its batch or when it runs, and
results are identical for the same seed on any batch schedule.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import expit, logit

from simulator.backend import Requests
from simulator.predrawn import SCRATCH, PredrawnBackend
from sparksched.calibration import expected_calibration_error, roc_auc

# Figure 2 of the DSpark paper, digitised (+-0.005): conditional acceptance at block positions 1..7,
# Qwen3-4B target, temperature 1. Keys (family, domain).
FIGURE2: dict[tuple[str, str], tuple[float, ...]] = {
    ("dflash", "math"): (0.885, 0.827, 0.820, 0.834, 0.841, 0.839, 0.828),
    ("eagle3", "math"): (0.811, 0.823, 0.838, 0.844, 0.851, 0.856, 0.850),
    ("dspark", "math"): (0.905, 0.890, 0.888, 0.885, 0.887, 0.891, 0.882),
    ("dflash", "code"): (0.865, 0.815, 0.797, 0.801, 0.810, 0.801, 0.777),
    ("eagle3", "code"): (0.771, 0.774, 0.781, 0.791, 0.787, 0.794, 0.784),
    ("dspark", "code"): (0.886, 0.872, 0.860, 0.861, 0.858, 0.859, 0.851),
    ("dflash", "chat"): (0.718, 0.648, 0.638, 0.661, 0.682, 0.692, 0.688),
    ("eagle3", "chat"): (0.534, 0.589, 0.642, 0.678, 0.709, 0.729, 0.733),
    ("dspark", "chat"): (0.735, 0.738, 0.740, 0.744, 0.758, 0.766, 0.761),
}
# MTP-1 (one-token drafter): acceptance of its single draft token per domain (DeepSeek: 85-90 %)
MTP1: dict[str, float] = {"chat": 0.85, "code": 0.88, "math": 0.90}
# The paper's Table 1, Qwen3-4B, accepted length per round (bonus included), fixed block 7:
# {family: {domain: (benchmark values...)}}; the preset targets each domain's macro average.
TABLE1_QWEN3_4B: dict[str, dict[str, dict[str, float]]] = {
    "dspark": {"math": {"GSM8K": 6.11, "MATH": 5.70, "AIME25": 4.89},
               "code": {"MBPP": 5.13, "HumanEval": 5.38, "LCB": 4.86},
               "chat": {"MT-Bench": 3.64, "Alpaca": 3.54, "Arena-Hard": 3.29}},
    "dflash": {"math": {"GSM8K": 5.40, "MATH": 4.85, "AIME25": 4.15},
               "code": {"MBPP": 4.40, "HumanEval": 4.74, "LCB": 4.18},
               "chat": {"MT-Bench": 3.07, "Alpaca": 2.96, "Arena-Hard": 2.83}},
    "eagle3": {"math": {"GSM8K": 5.14, "MATH": 4.62, "AIME25": 3.92},
               "code": {"MBPP": 3.69, "HumanEval": 4.16, "LCB": 3.77},
               "chat": {"MT-Bench": 2.39, "Alpaca": 2.26, "Arena-Hard": 2.55}},
}
FAMILIES = ("dspark", "dflash", "eagle3", "mtp1")
DOMAINS = ("chat", "code", "math")
FALLBACK_DOMAIN = "chat"  # trace domains without a preset use chat (the hardest, most conservative)

SIGMA_REQUEST = 0.5  # logit std of per-request difficulty z
SIGMA_TOKEN = 3.0  # logit std of per-token variation e (oracle ROC-AUC about 0.92 with this spread)
ECE_RAW = 0.055  # calibration error of a raw (uncalibrated) head, middle of the paper's 3-8 %
RAW_BLOCK = 256  # requests whose random numbers are drawn together
RAW_CHUNK = 128  # rounds per drawn chunk
BLOCK_CHUNKS = 2  # round chunks drawn for a whole block of requests at once
BLOCK_CACHE = 12  # cached (block, chunk) entries (about 2 MB each at g = 7)
CHUNK_CACHE = 256  # cached later chunks of single requests (about 8 KB each)
_MC_ROUNDS = 6000  # Monte Carlo rounds used to fit the confidence noise and temperature
_ECE_BINS = 15

_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(48)  # probabilists' Gauss-Hermite
_GH_W = _GH_W / _GH_W.sum()


def domain_key(domain: str) -> str:
    """The preset domain used for a trace domain (unknown domains fall back to FALLBACK_DOMAIN)."""
    return domain if domain in DOMAINS else FALLBACK_DOMAIN


def conditional_rates(family: str, domain: str, block: int, mtp1_acceptance: float | None = None) -> np.ndarray:
    """Preset conditional acceptance r_k at positions 1..block ([block] float64).

    Figure 2 values for dspark/dflash/eagle3 (position 7's value repeated past 7); MTP-1's single
    acceptance (repeated, as for a chain of MTP heads) for mtp1.
    """
    if family not in FAMILIES:
        raise ValueError(f"drafter {family!r} is not one of {', '.join(FAMILIES)}")
    d = domain_key(domain)
    if family == "mtp1":
        a = MTP1[d] if mtp1_acceptance is None else float(mtp1_acceptance)
        return np.full(block, a)
    r = np.asarray(FIGURE2[(family, d)], dtype=np.float64)
    return np.concatenate([r, np.full(max(block - r.size, 0), r[-1])])[:block]


def expected_accepted_length(family: str, domain: str, block: int, mtp1_acceptance: float | None = None) -> float:
    """Mean tokens per round (bonus included) verifying the full block: 1 + S_1 + ... + S_g."""
    return float(1.0 + np.cumprod(conditional_rates(family, domain, block, mtp1_acceptance)).sum())


class _LogisticNormalMean:
    """x -> E[sigmoid(x + sd * Z)], Z ~ N(0, 1), tabulated on a fine grid (vectorised lookup).

    With `temperature` T != 1 the table holds sigmoid(T * logit(mean)) (an overconfident head).
    """

    LO, HI, STEP = -40.0, 40.0, 0.01

    def __init__(self, sd: float, temperature: float = 1.0) -> None:
        self.grid = np.arange(round((self.HI - self.LO) / self.STEP) + 1) * self.STEP + self.LO
        self.values = expit(self.grid[:, None] + sd * _GH_X[None, :]) @ _GH_W if sd > 0 else expit(self.grid)
        if temperature != 1.0:
            self.values = expit(temperature * logit(np.clip(self.values, 1e-300, 1 - 1e-16)))
        self.slopes = np.append(np.diff(self.values), 0.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Linear interpolation on the uniform grid (O(1) per value; clamped outside [LO, HI])."""
        pos = (np.clip(x, self.LO, self.HI) - self.LO) * (1.0 / self.STEP)
        i = np.minimum(pos.astype(np.int64), self.grid.size - 1)
        return self.values[i] + (pos - i) * self.slopes[i]


@dataclass(frozen=True)
class Preset:
    """A solved synthetic preset for one (family, domain, block).

    Attributes:
        family, domain: the preset's drafter family and domain.
        rates: [g] target conditional acceptance r_k (Figure 2 / MTP-1).
        base_logit: [g] b_k solved so the population survival equals prod(r_1..r_k).
        obs_noise: std of the confidence head's observation noise on logit(alpha).
        temperature: overconfidence temperature T applied to the calibrated confidence.
        auc, ece: the ROC-AUC and calibration error measured on the fitting sample.
    """

    family: str
    domain: str
    rates: np.ndarray
    base_logit: np.ndarray
    obs_noise: float
    temperature: float
    auc: float
    ece: float

    @property
    def shrink(self) -> float:
        """Posterior weight on the observation: SIGMA_TOKEN^2 / (SIGMA_TOKEN^2 + s^2)."""
        return SIGMA_TOKEN**2 / (SIGMA_TOKEN**2 + self.obs_noise**2)

    @property
    def posterior_sd(self) -> float:
        """Posterior std of logit(alpha) given the observation."""
        return float(np.sqrt(self.shrink * self.obs_noise**2))


def solve_base_logits(rates: np.ndarray) -> np.ndarray:
    """b [g] with E_z[prod_{j<=k} E_e sigmoid(b_j + z + e_j)] = prod_{j<=k} r_j for every k."""
    from scipy.optimize import brentq

    mean_e = _LogisticNormalMean(SIGMA_TOKEN)
    z = SIGMA_REQUEST * _GH_X
    prefix = np.ones_like(z)  # prod over earlier positions, per quadrature node
    target, out = 1.0, []
    for r in rates:
        target *= r
        f = lambda b, prefix=prefix, target=target: float(_GH_W @ (prefix * mean_e(b + z))) - target
        b = brentq(f, -39.0, 39.0, xtol=1e-10)
        out.append(b)
        prefix = prefix * mean_e(b + z)
    return np.asarray(out)


@lru_cache(maxsize=128)
def build_preset(family: str, domain: str, block: int, auc: float = 0.85, ece: float = 0.01,
                 mtp1_acceptance: float | None = None) -> Preset:
    """Solve the preset for (family, domain, block) with confidences at the target AUC and ECE.

    Deterministic (fixed Monte Carlo seed). ValueError when the AUC is out of reach of the preset's
    acceptance spread.
    """
    d = domain_key(domain)
    rates = conditional_rates(family, d, block, mtp1_acceptance)
    b = solve_base_logits(rates)
    rng = np.random.default_rng(20260123)
    m = _MC_ROUNDS
    z = SIGMA_REQUEST * rng.standard_normal((m, 1))
    e = SIGMA_TOKEN * rng.standard_normal((m, block))
    eta_unit = rng.standard_normal((m, block))
    prior = b[None, :] + z
    x = prior + e
    accept = rng.random((m, block)) < expit(x)
    alive = np.ones((m, block), dtype=bool)  # prefix 1..k-1 survived
    alive[:, 1:] = np.cumprod(accept[:, :-1], axis=1).astype(bool)
    label = accept[alive]

    def calibrated(s: float) -> np.ndarray:
        w = SIGMA_TOKEN**2 / (SIGMA_TOKEN**2 + s**2)
        post = prior + w * (e + s * eta_unit)
        return _posterior_mean(float(np.sqrt(w * s**2)))(post)

    e_alive, eta_alive, prior_alive = e[alive], eta_unit[alive], prior[alive]

    def auc_at(s: float) -> float:  # the posterior mean is monotone in `post`: rank that directly
        w = SIGMA_TOKEN**2 / (SIGMA_TOKEN**2 + s**2)
        return roc_auc(prior_alive + w * (e_alive + s * eta_alive), label)

    hi_auc, lo_auc = auc_at(0.0), auc_at(30.0)
    where = f"synthetic preset {family}/{d}"
    if not lo_auc <= auc <= hi_auc:
        raise ValueError(f"{where}: conf_auc {auc} is outside what its acceptance spread allows "
                         f"[{lo_auc:.3f}, {hi_auc:.3f}]")
    lo, hi = 0.0, 30.0
    for _ in range(24):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if auc_at(mid) > auc else (lo, mid)
    s = 0.5 * (lo + hi)
    cal = calibrated(s)[alive]
    lcal = logit(np.clip(cal, 1e-12, 1 - 1e-12))
    ece_at = lambda t: expected_calibration_error(expit(t * lcal), label, _ECE_BINS)
    t_lo, t_hi = 1.0, 1.0
    if ece_at(1.0) < ece:
        while ece_at(t_hi) < ece and t_hi < 64:
            t_hi *= 2.0
        for _ in range(30):
            mid = 0.5 * (t_lo + t_hi)
            t_lo, t_hi = (mid, t_hi) if ece_at(mid) < ece else (t_lo, mid)
    t = 0.5 * (t_lo + t_hi)
    return Preset(family, d, rates, b, s, t, roc_auc(cal, label), ece_at(t))


class SyntheticAcceptance(PredrawnBackend):
    """Backend drawing acceptance and confidences from the presets (see the module docstring).

    Pre-drawn (simulator.predrawn): each slot holds CHUNK rounds, drawn vectorised from
    counter-based uniforms, so `draft`/`verify` are gathers and the engine can `peek` ahead.
    """

    def __init__(self, family: str, block: int, slots: int, seed: int = 0, auc: float = 0.85,
                 ece: float = 0.01, mtp1_acceptance: float | None = None) -> None:
        if family not in FAMILIES:
            raise ValueError(f"drafter {family!r} is not one of {', '.join(FAMILIES)}")
        super().__init__(block, slots)
        self.family, self.seed = family, int(seed)
        self.auc, self.ece, self.mtp1_acceptance = auc, ece, mtp1_acceptance
        self.name = f"synthetic {family} (auc {auc:g}, ece {ece:g})"
        self._presets: list[Preset] = []
        self._preset_index: dict[str, int] = {}
        self._preset = np.zeros(self.slots + SCRATCH, dtype=np.int64)
        self._cache: OrderedDict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._chunk_cache: OrderedDict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._zcache: dict[int, np.ndarray] = {}
        self._last_key: tuple[int, int, int] | None = None  # the block entry `_rounds` returned last
        self._last: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))

    def preset(self, domain: str) -> Preset:
        """The solved preset for a trace domain (built on first use, cached)."""
        d = domain_key(domain)
        if d not in self._preset_index:
            self._preset_index[d] = len(self._presets)
            self._presets.append(build_preset(self.family, d, max(self.block, 1), self.auc, self.ece,
                                              self.mtp1_acceptance))
        return self._presets[self._preset_index[d]]

    def _bind(self, slots: np.ndarray, requests: Requests) -> None:
        for d in set(requests.domains):
            self.preset(d)
        self._preset[slots] = [self._preset_index[domain_key(d)] for d in requests.domains]

    def _difficulty(self, block: int) -> np.ndarray:
        """Standard normal difficulty draws [K] of requests block*K.. (own PCG64 stream, cached)."""
        z = self._zcache.get(block)
        if z is None:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, block, 0xD1F])))
            z = self._zcache[block] = rng.standard_normal(RAW_BLOCK)
        return z

    def _transform(self, preset: int, z: np.ndarray, normal: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Confidences [..., R, g] and leading-accept counts [..., R] from difficulty z [...] and draws."""
        g = max(self.block, 1)
        pr = self._presets[preset]
        prior = pr.base_logit + z[..., None, None]
        e = SIGMA_TOKEN * normal[..., 0, :]
        accept = u < expit(prior + e)
        post = prior + pr.shrink * (e + pr.obs_noise * normal[..., 1, :])
        conf = _posterior_mean(pr.posterior_sd, pr.temperature)(post)
        lead = np.where(accept.all(axis=-1), g, np.argmin(accept, axis=-1))
        return conf, lead

    def _rounds(self, request: int, chunk: int, preset: int) -> tuple[np.ndarray, np.ndarray]:
        """Rounds chunk*C..(chunk+1)*C - 1 of one request: conf [C, g], lead [C] (views).

        The first BLOCK_CHUNKS chunks (which most requests use) are drawn for RAW_BLOCK requests at
        once from one PCG64 stream per (seed, block, chunk) and transformed per preset for the whole
        block; later chunks (long outputs only) come from a stream per (seed, request, chunk). Either
        way an entry is a pure function of (seed, request, round). Both are cached (LRU).
        """
        block, row = divmod(request, RAW_BLOCK)
        whole = chunk < BLOCK_CHUNKS
        key = (block, chunk, preset) if whole else (-1 - request, chunk, preset)
        if whole and key == self._last_key:  # consecutive requests share a block: skip the LRU bookkeeping
            conf, lead = self._last
            return conf[row], lead[row]
        g = max(self.block, 1)
        cache, limit = (self._cache, BLOCK_CACHE) if whole else (self._chunk_cache, CHUNK_CACHE)
        hit = cache.get(key)
        if hit is None:
            if whole:
                seq = np.random.SeedSequence([self.seed, block, chunk, 0xACC])
                shape: tuple[int, ...] = (RAW_BLOCK, RAW_CHUNK)
                z = SIGMA_REQUEST * self._difficulty(block)
            else:
                seq = np.random.SeedSequence([self.seed, request, chunk, 0xACD])
                shape = (RAW_CHUNK,)
                z = np.asarray(SIGMA_REQUEST * self._difficulty(block)[row])
            rng = np.random.Generator(np.random.PCG64(seq))
            normal = rng.standard_normal((*shape, 2, g))
            u = rng.random((*shape, g))
            hit = cache[key] = self._transform(preset, z, normal, u)
            if len(cache) > limit:
                cache.popitem(last=False)
        else:
            cache.move_to_end(key)
        conf, lead = hit
        if whole:
            self._last_key, self._last = key, hit
            return conf[row], lead[row]
        return conf, lead

    def _draw(self, slots: np.ndarray, rounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rounds [r, R] of each slot: confidences [r, R, g] and the leading-accept count [r, R]."""
        g = max(self.block, 1)
        r, n_rounds = rounds.shape
        conf = np.empty((r, n_rounds, g))
        lead = np.empty((r, n_rounds), dtype=np.int64)
        for j, (req, first, p) in enumerate(zip(self._req[slots].tolist(), rounds[:, 0].tolist(),
                                                self._preset[slots].tolist())):
            done = 0
            while done < n_rounds:
                chunk, off = divmod(first + done, RAW_CHUNK)
                take = min(RAW_CHUNK - off, n_rounds - done)
                c, ld = self._rounds(req, chunk, p)
                conf[j, done:done + take] = c[off:off + take]
                lead[j, done:done + take] = ld[off:off + take]
                done += take
        return conf, lead


@lru_cache(maxsize=64)
def _posterior_mean(sd: float, temperature: float = 1.0) -> _LogisticNormalMean:
    return _LogisticNormalMean(sd, temperature)
