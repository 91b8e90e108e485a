"""Trace tools: summary statistics, rate scaling, length clipping and domain mixing.

All functions take and return polars DataFrames in the trace schema (simulator/trace.py); none of
them changes its input.

Statistics conventions: span = last minus first arrival (s); mean rate = requests / span; peak rate
= the most requests arriving in any window of `window_s` seconds (default 60 s, windows starting at
an arrival) divided by `window_s`; inter-arrival CV = population standard deviation / mean of the
gaps between consecutive arrivals; percentiles are order statistics (inverted CDF, no interpolation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from simulator.trace import OPTIONAL, REQUIRED

PEAK_WINDOW_S = 60.0
PERCENTILES = (50, 90, 99)


def _rates(t: np.ndarray, window_s: float) -> tuple[float, float, float, float]:
    """span (s), mean rate, peak rate over window_s, inter-arrival CV of sorted arrivals t (s)."""
    n = t.size
    span = float(t[-1] - t[0]) if n else 0.0
    mean_rate = n / span if span > 0 else float("nan")
    peak = int(np.max(np.searchsorted(t, t + window_s, side="left") - np.arange(n))) if n else 0
    gaps = np.diff(t)
    cv = float(gaps.std() / gaps.mean()) if gaps.size > 1 and gaps.mean() > 0 else float("nan")
    return span, mean_rate, peak / window_s, cv


def _row(name: str, part: pl.DataFrame, window_s: float) -> dict[str, object]:
    t = part["arrival_s"].to_numpy()
    span, mean_rate, peak_rate, cv = _rates(t, window_s)
    row: dict[str, object] = {"domain": name, "requests": part.height, "span_s": span, "mean_rate": mean_rate,
                              "peak_rate": peak_rate, "ia_cv": cv}
    for col, label in (("prompt_tokens", "prompt"), ("output_tokens", "output")):
        x = part[col].to_numpy()
        row[f"{label}_mean"] = float(x.mean())
        for p, v in zip(PERCENTILES, np.percentile(x, PERCENTILES, method="inverted_cdf")):
            row[f"{label}_p{p}"] = int(v)
    return row


def trace_stats(df: pl.DataFrame, window_s: float = PEAK_WINDOW_S) -> pl.DataFrame:
    """One row for the whole trace ('all') and one per domain (sorted by name).

    Columns: domain, requests, span_s, mean_rate (req/s), peak_rate (req/s over window_s), ia_cv,
    prompt_mean, prompt_p50/p90/p99, output_mean, output_p50/p90/p99.
    """
    if df.height == 0:
        raise ValueError("stats: the trace holds no requests")
    if not window_s > 0:
        raise ValueError(f"stats: peak window must be > 0 s (got {window_s})")
    df = df.sort("arrival_s", maintain_order=True)
    rows = [_row("all", df, window_s)]
    domains = sorted(df["domain"].unique().to_list())
    if len(domains) > 1:
        rows += [_row(d, df.filter(pl.col("domain") == d), window_s) for d in domains]
    else:
        rows[0]["domain"] = f"all ({domains[0]})"
    return pl.DataFrame(rows)


def scale_rate(df: pl.DataFrame, factor: float) -> pl.DataFrame:
    """Multiply the arrival rate by `factor` (> 0): arrival times divided by it, lengths unchanged."""
    if not factor > 0 or not np.isfinite(factor):
        raise ValueError(f"rate scale must be a finite number > 0 (got {factor})")
    return df.with_columns(pl.col("arrival_s") / factor)


def clip_lengths(df: pl.DataFrame, max_prompt: int | None = None,
                 max_output: int | None = None) -> tuple[pl.DataFrame, dict[str, int]]:
    """Cap prompt / output tokens; returns the frame and counts {'prompt', 'output', 'requests'} clipped.

    A request with its prompt clipped keeps the first max_prompt tokens (prefix_blocks and prompt text,
    when present, are left as they are).
    """
    counts = {"prompt": 0, "output": 0, "requests": 0}
    hit = pl.repeat(False, df.height, eager=True)
    out = df
    for col, cap, key in (("prompt_tokens", max_prompt, "prompt"), ("output_tokens", max_output, "output")):
        if cap is None:
            continue
        if cap < 1:
            raise ValueError(f"clip: max {key} tokens must be >= 1 (got {cap})")
        over = df[col] > cap
        counts[key] = int(over.sum())
        hit = hit | over
        out = out.with_columns(pl.col(col).clip(upper_bound=cap))
    counts["requests"] = int(hit.sum())
    return out, counts


def mix(frames: Sequence[pl.DataFrame], weights: Sequence[float] | None = None, seed: int = 0,
        align: bool = True) -> pl.DataFrame:
    """Superpose several traces into one (arrivals merged in time order).

    align: first cut every trace to the shortest span, so that no domain runs alone at the end.
    weights: target shares of requests per input; each input is thinned independently (seeded
    Bernoulli, keeping as many requests as the shares allow). Ids stay as they are when unique
    across the inputs, else get the prefix '<input index>/'.
    """
    if not frames:
        raise ValueError("mix: give at least one trace")
    if weights is not None:
        if len(weights) != len(frames):
            raise ValueError(f"mix: {len(weights)} weights for {len(frames)} traces")
        if any(not w >= 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"mix: weights must be >= 0 and not all zero (got {list(weights)})")
    parts = [f.with_columns(pl.col("arrival_s") - pl.col("arrival_s").min()) for f in frames]
    if align:
        horizon = min(float(p["arrival_s"].to_numpy().max()) for p in parts)
        if horizon > 0:
            parts = [p.filter(pl.col("arrival_s") <= horizon) for p in parts]
    if weights is not None:
        rng = np.random.default_rng(seed)
        w = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
        n = np.array([p.height for p in parts], dtype=np.float64)
        scale = min(n[k] / w[k] for k in range(len(parts)) if w[k] > 0)
        thinned = []
        for k, p in enumerate(parts):
            keep = rng.random(p.height) < min(1.0, w[k] * scale / n[k])
            thinned.append(p.filter(pl.Series(keep)))
        parts = thinned
    ids = pl.concat([p["id"] for p in parts])
    if ids.n_unique() != ids.len():
        parts = [p.with_columns((pl.lit(f"{k}/") + pl.col("id")).alias("id")) for k, p in enumerate(parts)]
    merged = pl.concat(parts, how="diagonal_relaxed")
    cols = [c for c in REQUIRED + OPTIONAL if c in merged.columns]
    merged = merged.select(cols).sort("arrival_s", maintain_order=True)
    if merged.height == 0:
        raise ValueError("mix: no request left after thinning")
    return merged
