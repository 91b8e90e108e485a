"""HostSpeed: how much slower (or faster) than its profile the simulated host runs, by batch and over time.

Covers: a host whose speed is not the profile's: a noisy neighbour, thermal throttling, a shared
CPU, or the measured speed record of a real run being replayed (benchmarks/fidelity.py).

A profile-priced step costs `draft_s + table[b]` (simulator.engine). With a HostSpeed, a step that
starts at simulated time `now` with `n` decoding requests and `p` prefill tokens in its `b` batch
tokens costs

    f(now, n) * (draft_s + table[b - p]) + (table[b] - table[b - p]) * (f(now, n) if scale_prefill else 1)

with f(now, n) = by_requests[n] * factors[k], k the last piece with times[k] <= now (exactly
table[b] + draft_s at f = 1). Both are computed by the compiled `simulator.epoch.speed_factor` and
`step_seconds`, the same code in the step path and the epoch planner. The factor is
common to the whole decode part of a step, so a scheduler that compares candidate verify lengths
within one step by tokens per second (DSpark's greedy) makes the same choices at any factor: the
policies plan with the profile, the host just runs at its own speed. With `scale_prefill` False the
prefill chunk's marginal price stays the profile's (a replayed record whose prefill was priced by the
profile, not timed). The measured clock (`clock="measured"`) ignores it: wall times are the speed. The
steps table's `draft_s` stays the profile's drafter seconds (what the scheduler planned with).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class SpeedArrays(NamedTuple):
    """A HostSpeed as the compiled engine takes it (`HostSpeed.arrays`): factor by decoding requests
    `by_n` [N + 1], piece starts `times` [k] (s) and their `factors` [k], and whether the prefill
    chunk's price is scaled too."""

    by_n: np.ndarray
    times: np.ndarray
    factors: np.ndarray
    scale_prefill: bool


@dataclass(frozen=True)
class HostSpeed:
    """Step-time multipliers (1 = the profile) by decoding requests and over simulated time.

    Attributes:
        by_requests: factor by decoding requests n, [N + 1] (index n; n past the end takes the last
            entry); None: 1 for every n.
        times: piece starts in simulated seconds, [k] strictly increasing; None: one piece.
        factors: factor of each piece, [k] (before times[0]: factors[0]); None with times None.
        scale_prefill: whether the prefill chunk's marginal step time is scaled too.
    """

    by_requests: np.ndarray | None = None
    times: np.ndarray | None = None
    factors: np.ndarray | None = None
    scale_prefill: bool = True

    def __post_init__(self) -> None:
        if self.by_requests is not None:
            b = np.asarray(self.by_requests, dtype=np.float64)
            if b.ndim != 1 or b.size < 2 or not np.all(np.isfinite(b)) or np.any(b <= 0):
                raise ValueError("HostSpeed.by_requests must be a 1-D array [N + 1] of finite factors > 0 "
                                 f"(index = decoding requests), got {self.by_requests!r}")
            object.__setattr__(self, "by_requests", b)
        if (self.times is None) != (self.factors is None):
            raise ValueError("HostSpeed.times and HostSpeed.factors come together (both or neither)")
        if self.times is not None:
            t = np.asarray(self.times, dtype=np.float64)
            f = np.asarray(self.factors, dtype=np.float64)
            if t.ndim != 1 or t.size == 0 or t.shape != f.shape:
                raise ValueError(f"HostSpeed.times and .factors must be 1-D arrays of one length >= 1, "
                                 f"got shapes {t.shape} and {f.shape}")
            if not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
                raise ValueError(f"HostSpeed.times must be finite and strictly increasing, got {self.times!r}")
            if not np.all(np.isfinite(f)) or np.any(f <= 0):
                raise ValueError(f"HostSpeed.factors must be finite and > 0, got {self.factors!r}")
            object.__setattr__(self, "times", t)
            object.__setattr__(self, "factors", f)

    def factor(self, now: float, n: int) -> float:
        """f(now, n): the multiplier of a step starting at `now` (s) with `n` decoding requests (the engine's
        own compiled lookup, simulator.epoch.speed_factor)."""
        from simulator.epoch import speed_factor

        by_n, times, factors, _ = self.arrays(max(int(n), 1))
        return float(speed_factor(by_n, times, factors, float(now), int(n)))

    def arrays(self, max_running: int) -> SpeedArrays:
        """SpeedArrays (by_n [max_running + 1], times [k], factors [k], scale_prefill) as the compiled
        engine takes them (ones where unset)."""
        by_n = np.ones(max_running + 1)
        if self.by_requests is not None:
            by_n = self.by_requests[np.minimum(np.arange(max_running + 1), self.by_requests.size - 1)].copy()
        if self.times is None or self.factors is None:
            return SpeedArrays(by_n, np.zeros(1), np.ones(1), self.scale_prefill)
        return SpeedArrays(by_n, self.times.copy(), self.factors.copy(), self.scale_prefill)

    def fastest(self) -> float:
        """The smallest factor any step can get."""
        b = self.by_requests.min() if self.by_requests is not None else 1.0
        f = self.factors.min() if self.factors is not None else 1.0
        return float(b * f)
