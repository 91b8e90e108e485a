"""Acceptance model fitted from recorded rounds (sparksched.rounds), written by a real loop or an engine.

Covers: replaying a real drafter's confidence and acceptance behaviour at scale without the model.

Fit. For each domain in the file, the pool of recorded confidence vectors (rows that drafted at
least `block` tokens). For each block position k, a calibration map P(draft k accepted | c_k), fitted
by isotonic regression (non-decreasing in c_k) on the rounds where position k was verified and
drafts 1..k-1 were accepted: exactly the observations a real verifier makes. Positions with fewer
than MIN_TRIALS observations use the map pooled over all positions.

Draw. Each simulated request r takes a recorded request as its donor (a cluster bootstrap; donors
are recorded requests with at least MIN_DONOR_ROUNDS usable rounds): a random one of its domain
chosen by r's own random stream (unknown domains: any donor in the file; a domain without donors
uses its pool), or with `match_ids=True` the recorded request with r's own trace id when there is
one (the recorded trace replayed; rounds of one id recorded in several runs make one donor). An easy
prompt stays easy: a real drafter's acceptance varies more from request to request than independent
rounds give. `per_request=False` draws every round from the whole domain pool instead.

Round t of r takes one of its donor's recorded rounds at random, also by r's stream: its confidence
vector and what the verifier saw. A round that verified l drafts and accepted a of them is replayed
as observed: with a < l its accepted prefix is a whatever the simulated policy verifies (draft a + 1
was rejected); with a = l drafts 1..l are accepted and each later draft k is accepted with
probability map_k(c_k), the leading run. So a request keeps its real acceptance, miscalibration
included, and the maps only price what the recording did not verify (`outcomes=False`: every draft
from the maps). Draws depend only on (seed, request, round), like the synthetic model
(simulator.predrawn).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulator.backend import Requests
from simulator.predrawn import SCRATCH, PredrawnBackend
from sparksched.rounds import Rounds, read_rounds

MIN_TRIALS = 20  # observations a position needs for its own calibration map
MIN_DONOR_ROUNDS = 8  # usable rounds a recorded request needs to be a donor


@dataclass(frozen=True)
class Reliability:
    """A non-decreasing map c -> P(accept | c), piecewise linear through (x, y) knots."""

    x: np.ndarray
    y: np.ndarray

    def __call__(self, c: np.ndarray) -> np.ndarray:
        return np.interp(c, self.x, self.y)


def fit_reliability(conf: np.ndarray, accepted: np.ndarray) -> Reliability:
    """Isotonic (non-decreasing) fit of accepted (0/1) against confidence; knots at unique confidences."""
    from scipy.optimize import isotonic_regression

    order = np.argsort(conf, kind="stable")
    c, a = conf[order], accepted[order].astype(np.float64)
    xs, start = np.unique(c, return_index=True)
    counts = np.diff(np.append(start, c.size))
    means = np.add.reduceat(a, start) / counts
    ys = np.asarray(isotonic_regression(means, weights=counts.astype(np.float64)).x)
    return Reliability(xs, np.clip(ys, 0.0, 1.0))


def position_trials(rounds: Rounds, k: int) -> np.ndarray:
    """Mask [m] of rounds that observed position k (1-based): verified >= k and accepted >= k - 1."""
    return (rounds.verified >= k) & (rounds.accepted >= k - 1)


class RecordedAcceptance(PredrawnBackend):
    """Backend resampling recorded rounds: their confidences and verifier outcomes, fitted maps past them."""

    def __init__(self, rounds: Rounds, block: int, slots: int, seed: int = 0, source: str = "rounds",
                 per_request: bool = True, match_ids: bool = False, outcomes: bool = True) -> None:
        if block > rounds.block:
            raise ValueError(f"{source}: recorded rounds have block {rounds.block}; cannot simulate block {block}")
        super().__init__(block, slots)
        self.seed = int(seed)
        self.name = f"recorded {source}"
        g = max(block, 1)
        usable = rounds.drafted >= g
        if not usable.any():
            raise ValueError(f"{source}: no recorded round drafted {g} or more tokens")
        pooled_trials = np.concatenate([position_trials(rounds, k) for k in range(1, g + 1)])
        pooled_conf = np.concatenate([rounds.conf[:, k - 1] for k in range(1, g + 1)])
        pooled_acc = np.concatenate([rounds.accepted >= k for k in range(1, g + 1)])
        if not pooled_trials.any():
            raise ValueError(f"{source}: no verified draft tokens to fit acceptance from")
        pooled = fit_reliability(pooled_conf[pooled_trials], pooled_acc[pooled_trials])
        self.maps: list[Reliability] = []
        self.trials: list[int] = []
        for k in range(1, g + 1):
            sel = position_trials(rounds, k)
            self.trials.append(int(sel.sum()))
            self.maps.append(fit_reliability(rounds.conf[sel, k - 1], rounds.accepted[sel] >= k)
                             if sel.sum() >= MIN_TRIALS else pooled)
        # recorded rounds: confidences [m, g]; verified and accepted drafts within the first g; pools and
        # donors below are row indices into these
        self._rec_conf = np.ascontiguousarray(rounds.conf[:, :g], dtype=np.float64)
        self._rec_ver = np.minimum(rounds.verified, g).astype(np.int64)
        self._rec_acc = np.minimum(rounds.accepted, g).astype(np.int64)
        self.outcomes = bool(outcomes)
        self._pool_all = np.flatnonzero(usable)
        self._pools: dict[str, np.ndarray] = {}
        self._donors: dict[str, list[np.ndarray]] = {}  # domain -> recorded requests' rounds
        self._by_id: dict[str, np.ndarray] = {}  # request id -> its rounds (match_ids)
        if match_ids and not per_request:
            raise ValueError(f"{source}: match_ids needs per_request donors")
        for d in np.unique(rounds.domain[usable]).tolist():
            in_d = np.flatnonzero(usable & (rounds.domain == d))
            self._pools[d] = in_d
            if per_request:  # group rows by request in one sort (file order kept within a request)
                ids, inverse, counts = np.unique(rounds.request[in_d], return_inverse=True, return_counts=True)
                order = np.argsort(inverse, kind="stable")
                groups = np.split(in_d[order], np.cumsum(counts)[:-1])
                self._donors[d] = [x for x, c in zip(groups, counts) if c >= MIN_DONOR_ROUNDS]
                if match_ids:
                    self._by_id.update((str(i), x) for i, x, c in zip(ids.tolist(), groups, counts)
                                       if c >= MIN_DONOR_ROUNDS)
        self._donors_all = [x for d in sorted(self._donors) for x in self._donors[d]]
        self._slot_pool: list[np.ndarray | None] = [None] * (slots + SCRATCH)

    @classmethod
    def from_file(cls, path: str | Path, block: int, slots: int, seed: int = 0,
                  match_ids: bool = False) -> RecordedAcceptance:
        """Fit from a rounds file (sparksched.rounds format)."""
        return cls(read_rounds(path), block, slots, seed, Path(path).name, match_ids=match_ids)

    def _bind(self, slots: np.ndarray, requests: Requests) -> None:
        for s, d, req, rid in zip(slots.tolist(), requests.domains, requests.index.tolist(), requests.ids):
            donors = self._donors.get(d, self._donors_all) if self._donors else []
            if rid in self._by_id:  # the same request, recorded: its own difficulty
                self._slot_pool[s] = self._by_id[rid]
            elif donors:  # the request's donor, from its own stream (the same after a preemption)
                pick = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, req, 0xD0]))).random()
                self._slot_pool[s] = donors[min(int(pick * len(donors)), len(donors) - 1)]
            else:
                self._slot_pool[s] = self._pools.get(d, self._pool_all)

    def _draw(self, slots: np.ndarray, rounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = max(self.block, 1)
        r, n_rounds = rounds.shape
        rows = np.empty((r, n_rounds), dtype=np.int64)
        u = np.empty((r, n_rounds, g))
        for j, (s, req, first) in enumerate(zip(slots.tolist(), self._req[slots].tolist(), rounds[:, 0].tolist())):
            bits = np.random.PCG64(np.random.SeedSequence([self.seed, req, 0x5EC0]))
            if first:
                bits.advance((g + 1) * first)
            draws = np.random.Generator(bits).random((n_rounds, g + 1))  # round-major: pick, then g uniforms
            pool = self._slot_pool[s]
            rows[j] = pool[np.minimum((draws[:, 0] * len(pool)).astype(np.int64), len(pool) - 1)]
            u[j] = draws[:, 1:]
        conf = self._rec_conf[rows]
        p = np.stack([self.maps[k](conf[:, :, k]) for k in range(g)], axis=2)
        accept = u < p
        if self.outcomes:  # what the recording verified is replayed: drafts 1..a accepted, a + 1 rejected if a < l
            ver, acc = self._rec_ver[rows][..., None], self._rec_acc[rows][..., None]
            k = np.arange(g)[None, None, :]  # draft k + 1
            accept = np.where(k < ver, k < acc, accept)
        lead = np.where(accept.all(axis=2), g, np.argmin(accept, axis=2))
        return conf, lead
