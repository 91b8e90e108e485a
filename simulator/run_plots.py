"""PNG figures of one simulation: the run over time, latency distributions, acceptance by position.

- `plot_timeseries`: running and waiting requests, free KV blocks and the verify budget over
  simulated time (four stacked panels sharing the time axis). Steps are averaged into time bins,
  each step weighted by its duration, so a panel reads as "what the engine held, on average, then".
- `plot_latency_cdfs`: the CDFs of TTFT and TPOT over completed requests (vLLM's definitions, in
  ms), with P50 / P90 / P99 marked.
- `plot_run_acceptance`: per domain, the conditional acceptance by block position (DSpark's view)
  and the unconditional per-position rate (vLLM's `spec_decode_per_position_acceptance_rates`).
- `plot_timeline_window`: a static picture of what timeline.json shows (simulator.timeline) for a
  short window: the engine's steps (coloured by kind, with the verify budget per request) above
  the requests in flight, each a lane of queued / prefill / decode.

Each function takes the simulator's polars tables and writes one PNG atomically (through
simulator.plots and sparksched.io), returning its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from simulator.plots import _figure, _save

PNG_NAMES = {"timeseries": "timeseries.png", "latency": "latency_cdf.png", "acceptance": "acceptance_by_position.png"}


def time_binned(t0: np.ndarray, dur: np.ndarray, values: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Duration-weighted mean of `values` per time bin; steps are assigned to the bin of their start.

    Returns (bin centres [b], means [b]) for the bins holding at least one step.
    """
    edges = np.linspace(float(t0.min()), float((t0 + dur).max()), bins + 1)
    which = np.clip(np.searchsorted(edges, t0, side="right") - 1, 0, bins - 1)
    w = np.bincount(which, weights=dur, minlength=bins)
    v = np.bincount(which, weights=dur * values, minlength=bins)
    keep = w > 0
    centres = 0.5 * (edges[:-1] + edges[1:])
    return centres[keep], v[keep] / w[keep]


def plot_timeseries(steps: pl.DataFrame, path: str | Path, *, bins: int = 600, title: str | None = None) -> Path:
    """Running, waiting, KV free blocks and verify budget per decoding request over time."""
    fig, axes = _figure(4, 1, figsize=(9.0, 8.5), sharex=True)
    if steps.height == 0:
        axes[0].set_title("(no steps)")
        return _save(fig, path)
    t = steps["t_start"].to_numpy().astype(np.float64)
    dur = np.maximum(steps["duration_s"].to_numpy().astype(np.float64), 1e-12)
    n = steps["decode_requests"].to_numpy().astype(np.float64)
    ver = steps["verified"].to_numpy().astype(np.float64)
    panels = [
        ("running", steps["running"].to_numpy().astype(np.float64), "running requests", "tab:blue"),
        ("waiting", steps["waiting"].to_numpy().astype(np.float64), "waiting requests", "tab:orange"),
        ("kv", steps["kv_free_blocks"].to_numpy().astype(np.float64), "free KV blocks", "tab:green"),
    ]
    for ax, (_, v, label, color) in zip(axes, panels):
        x, y = time_binned(t, dur, v, bins)
        ax.plot(x, y, color=color, lw=1)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    dec = n > 0
    ax = axes[3]
    if dec.any():
        x, y = time_binned(t[dec], dur[dec], 1.0 + ver[dec] / n[dec], bins)
        ax.plot(x, y, color="tab:red", lw=1)
    ax.axhline(2.0, ls=":", color="gray", lw=1)
    ax.set_ylabel("verify budget\n(tokens / request / step,\nanchor included)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_xlabel("simulated time, s (steps averaged per time bin, weighted by step time)")
    axes[0].set_title(title or "The run over time")
    return _save(fig, path)


def _cdf(ax, values_ms: np.ndarray, label: str, color: str) -> None:
    v = np.sort(values_ms[np.isfinite(values_ms)])
    if v.size == 0:
        ax.text(0.5, 0.5, "(no data)", transform=ax.transAxes, ha="center")
        return
    ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", color=color, lw=1.5)
    for q, ls in ((50, "-"), (90, "--"), (99, ":")):
        p = float(np.percentile(v, q))
        ax.axvline(p, color="gray", ls=ls, lw=1)
        ax.text(p, 0.02 + q / 400, f" P{q} {p:.1f}", fontsize=8, color="dimgray")
    ax.set_xlabel(f"{label}, ms")
    ax.set_ylabel("share of completed requests")
    ax.set_ylim(0, 1.01)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)


def plot_latency_cdfs(requests: pl.DataFrame, path: str | Path, *, title: str | None = None) -> Path:
    """CDFs of TTFT and TPOT (ms) over completed requests; TPOT over requests with > 1 output token."""
    fin = requests.filter(pl.col("status") == "finished")
    ttft = (fin["ttft_s"].to_numpy().astype(np.float64)) * 1e3
    many = fin.filter(pl.col("emitted_tokens") > 1)
    tpot = ((many["e2e_s"] - many["ttft_s"]) / (many["emitted_tokens"] - 1)).to_numpy().astype(np.float64) * 1e3
    fig, (a, b) = _figure(1, 2, figsize=(10.0, 3.8))
    _cdf(a, ttft, "TTFT (first token - arrival)", "tab:blue")
    _cdf(b, tpot, "TPOT ((E2EL - TTFT) / (output tokens - 1))", "tab:red")
    fig.suptitle(title or f"Latency CDFs over {fin.height} completed requests", fontsize=10)
    return _save(fig, path)


def plot_run_acceptance(rounds: pl.DataFrame, domains: pl.Series, block: int, path: str | Path, *,
                        title: str | None = None) -> Path:
    """Per domain: conditional acceptance by position (solid) and vLLM's unconditional rate (dashed)."""
    from simulator.metrics import acceptance_by_position

    cond = acceptance_by_position(rounds, block, domains) if block else pl.DataFrame()
    names = cond["domain"].unique(maintain_order=True).to_list() if not cond.is_empty() else []
    fig, axes = _figure(1, max(1, len(names)), figsize=(4.2 * max(1, len(names)), 3.8), sharey=True, squeeze=False)
    dom = domains.to_numpy()[rounds["request"].to_numpy()] if rounds.height else np.zeros(0)
    if not names:
        axes[0][0].text(0.5, 0.5, "no drafting in this run", transform=axes[0][0].transAxes, ha="center")
    for ax, d in zip(axes[0], names):
        g = cond.filter(pl.col("domain") == d).sort("position")
        ax.plot(g["position"], g["acceptance"], "-o", color="tab:red", ms=4,
                label="P(k accepted | 1..k-1 accepted, k verified)")
        sel = (dom == d) & (rounds["verified"].to_numpy() > 0)
        acc = rounds["accepted"].to_numpy()[sel]
        if acc.size:
            k = np.arange(1, block + 1)
            ax.plot(k, [(acc >= j).mean() for j in k], "--s", color="tab:blue", ms=4,
                    label="vLLM per-position rate (unconditional)")
        ax.set_title(d)
        ax.set_xlabel("block position k")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("acceptance")
    if names:
        axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.suptitle(title or "Acceptance by block position and domain", fontsize=10, y=1.02)
    return _save(fig, path)


PHASE_COLORS = {"queued": "0.75", "prefill": "tab:orange", "decode": "tab:blue"}
STEP_COLORS = {"decode": "tab:blue", "prefill": "tab:orange", "prefill+decode": "tab:purple"}


def busiest_window(steps: pl.DataFrame, width_s: float) -> tuple[float, float]:
    """The `width_s` window starting at the step with the most running requests (a busy stretch to show)."""
    i = int(np.argmax(steps["running"].to_numpy())) if steps.height else 0
    t0 = float(steps["t_start"][i]) if steps.height else 0.0
    return max(t0 - width_s / 4, 0.0), max(t0 - width_s / 4, 0.0) + width_s


def plot_timeline_window(requests: pl.DataFrame, steps: pl.DataFrame, path: str | Path, t0: float, t1: float, *,
                         title: str | None = None) -> Path:
    """Steps and request lifetimes between t0 and t1 (s), drawn as timeline.json lays them out."""
    from simulator.timeline import pack_lanes

    fig, (top, bot) = _figure(2, 1, figsize=(10.0, 6.0), sharex=True, gridspec_kw={"height_ratios": [1, 3]})
    win = steps.filter((pl.col("t_start") < t1) & (pl.col("t_start") + pl.col("duration_s") > t0))
    for r in win.iter_rows(named=True):
        kind = ("prefill+decode" if r["decode_requests"] else "prefill") if r["prefill_tokens"] else "decode"
        top.barh(0, r["duration_s"], left=r["t_start"], height=0.8, color=STEP_COLORS[kind], edgecolor="white", lw=0.3)
        if r["decode_requests"]:
            top.plot(r["t_start"] + r["duration_s"] / 2, 1 + r["verified"] / r["decode_requests"], "k.", ms=3)
    top.set_ylim(-0.6, 10.5)
    top.set_yticks([0, 2, 4, 6, 8])
    top.set_yticklabels(["steps", "2", "4", "6", "8"])
    top.set_ylabel("verify budget / request\n(dots, anchor incl.)", fontsize=8)
    top.grid(axis="y", alpha=0.3)
    for k, c in STEP_COLORS.items():
        top.barh(0, 0, color=c, label=k)
    top.legend(fontsize=7, loc="upper right", ncol=3)
    arrival = requests["arrival_s"].to_numpy().astype(np.float64)
    finish = requests["finish_s"].to_numpy().astype(np.float64)
    stop = np.where(np.isfinite(finish), finish, np.inf)
    lanes = pack_lanes(arrival, np.where(np.isfinite(stop), stop, arrival.max() + 1e9))
    show = (arrival < t1) & (stop > t0)
    bounds = np.stack([arrival, requests["admitted_s"].to_numpy().astype(np.float64),
                       requests["first_token_s"].to_numpy().astype(np.float64), stop])
    for i in np.flatnonzero(show):
        for j, phase in enumerate(("queued", "prefill", "decode")):
            a, b = float(bounds[j, i]), float(bounds[j + 1, i])
            if np.isfinite(a) and b > a:
                bot.barh(lanes[i], min(b, t1) - max(a, t0), left=max(a, t0), height=0.8,
                         color=PHASE_COLORS[phase], lw=0)
    for k, c in PHASE_COLORS.items():
        bot.barh(0, 0, color=c, label=k)
    bot.legend(fontsize=7, loc="upper right", ncol=3)
    bot.set_ylabel("requests in flight (one lane each)")
    bot.set_xlabel("simulated time, s")
    bot.set_xlim(t0, t1)
    bot.invert_yaxis()
    top.set_title(title or f"Timeline, {t1 - t0:.1f} s of the run (what timeline.json shows in ui.perfetto.dev)")
    return _save(fig, path)


def write_run_plots(result, directory: str | Path) -> dict[str, Path]:
    """The three PNGs of a `SimResult` into `directory`; {name: path}."""
    d = Path(directory)
    stats = getattr(result, "stats", None)
    if stats is None:
        return {
            "timeseries": plot_timeseries(result.steps, d / PNG_NAMES["timeseries"]),
            "latency": plot_latency_cdfs(result.requests, d / PNG_NAMES["latency"]),
            "acceptance": plot_run_acceptance(result.rounds, result.requests["domain"], result.config.draft_block,
                                              d / PNG_NAMES["acceptance"]),
        }
    # a streamed run: its steps table when small, else the step series binned per second as it ran;
    # acceptance from its round histogram
    small = "steps" in result.config.log and stats["steps"].steps <= 2_000_000
    return {
        "timeseries": plot_timeseries(result.steps if small else stats["steps"].timeseries(),
                                      d / PNG_NAMES["timeseries"]),
        "latency": plot_latency_cdfs(result.requests, d / PNG_NAMES["latency"]),
        "acceptance": plot_acceptance_table(stats["rounds"], stats["domains"], result.config.draft_block,
                                            d / PNG_NAMES["acceptance"]),
    }


def plot_acceptance_table(rounds: Any, names: list[str], block: int, path: str | Path) -> Path:
    """`plot_run_acceptance` from a run's round histogram (simulator.stats.RoundStats)."""
    cond = rounds.acceptance_table(names) if block else pl.DataFrame()
    shown = cond["domain"].unique(maintain_order=True).to_list() if not cond.is_empty() else []
    fig, axes = _figure(1, max(1, len(shown)), figsize=(4.2 * max(1, len(shown)), 3.8), sharey=True, squeeze=False)
    if not shown:
        axes[0][0].text(0.5, 0.5, "no drafting in this run", transform=axes[0][0].transAxes, ha="center")
    for ax, d in zip(axes[0], shown):
        g = cond.filter(pl.col("domain") == d).sort("position")
        ax.plot(g["position"], g["acceptance"], "-o", color="tab:red", ms=4,
                label="P(k accepted | 1..k-1 accepted, k verified)")
        rate = rounds.unconditional(names.index(d))
        if rate is not None:
            ax.plot(np.arange(1, block + 1), rate, "--s", color="tab:blue", ms=4,
                    label="vLLM per-position rate (unconditional)")
        ax.set_title(d)
        ax.set_xlabel("block position k")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("acceptance")
    if shown:
        axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.suptitle("Acceptance by block position and domain", fontsize=10, y=1.02)
    return _save(fig, path)
