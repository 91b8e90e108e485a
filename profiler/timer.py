"""One timing function for every profiled pass: warm-up, repeats, and robust statistics.

On CUDA each repeat is bracketed by CUDA events (device time, no host jitter) and the host waits
once at the end; on CPU each repeat is bracketed by `perf_counter` with a device synchronisation
before reading the clock (a no-op on CPU, kept so one code path serves both). On CPU one sample is
the fastest of `CPU_INNER` back-to-back calls: preemption by other processes only ever adds time,
and on a busy host a single call is often preempted (the median over samples is then still a
median of per-sample minima, and the CV reflects what noise is left).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

CPU_INNER = 3  # calls per CPU sample; the sample is their minimum


@dataclass(frozen=True)
class Timing:
    """Statistics of `repeats` timed runs, in seconds. cv = std / mean (dimensionless)."""

    median_s: float
    p10_s: float
    p90_s: float
    cv: float
    repeats: int

    def row(self) -> dict[str, float | int]:
        return {"median_s": self.median_s, "p10_s": self.p10_s, "p90_s": self.p90_s, "cv": self.cv,
                "repeats": self.repeats}


def summarize(samples: Sequence[float]) -> Timing:
    """Median, 10th / 90th percentile and coefficient of variation of positive samples (s)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0 or not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise ValueError(f"timing samples must be a non-empty list of finite values > 0, got {x.tolist()}")
    mean = float(x.mean())
    cv = float(x.std(ddof=1) / mean) if x.size > 1 else 0.0
    return Timing(float(np.median(x)), float(np.percentile(x, 10)), float(np.percentile(x, 90)), cv,
                  int(x.size))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sample_fn(fn: Callable[[], object], device: torch.device | str, warmup: int = 3,
              repeats: int = 10, inner: int | None = None) -> list[float]:
    """Run `fn` `warmup` times untimed, then `repeats` times timed; the timed durations (s).

    Args:
        fn: the pass to time (no arguments; its result is discarded).
        device: where `fn` runs; CUDA uses events, anything else perf_counter.
        warmup: untimed runs first (allocator, autotuning, caches), >= 0.
        repeats: timed runs, >= 1.
        inner: CPU only: calls per sample, the sample being the fastest (default CPU_INNER).
    """
    device = torch.device(device)
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        for s, e in zip(starts, ends):
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)]
    samples = []
    for _ in range(repeats):
        best = math.inf
        for _ in range(CPU_INNER if inner is None else max(1, inner)):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            best = min(best, time.perf_counter() - t0)
        samples.append(best)
    return samples


def time_fn(fn: Callable[[], object], device: torch.device | str, warmup: int = 3,
            repeats: int = 10) -> Timing:
    """`summarize(sample_fn(...))`: statistics of `repeats` timed runs after `warmup` untimed ones."""
    return summarize(sample_fn(fn, device, warmup, repeats))
