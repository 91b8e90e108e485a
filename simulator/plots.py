"""PNG figures for sweeps, readable without the table (the DSpark paper's Figures 2, 7 and 8).

- `plot_frontier`: aggregate throughput against per-user speed, every operating point and the
  frontier per policy, with the SLA line and the throughput each policy sells at it (Figure 7).
- `plot_budget_vs_concurrency`: throughput (top) and verify budget per request, anchor included
  (bottom), against the number of running requests (Figure 8: DSpark's budget expands when the
  target is idle and contracts under load; MTP-1 stays at 2).
- `plot_acceptance`: conditional acceptance per block position, one panel per domain (Figure 2).
- `plot_step_time`: the profile's step price by batch tokens at several request counts, with each
  sweep point's operating point.

Every function takes polars frames (or a ThroughputCurve), writes one PNG atomically
(sparksched.io.save_figure) and returns its path. Matplotlib runs headless (Agg).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from simulator.frontier import X_DEFAULT, Y_DEFAULT

_KNOWN = {"dspark": "tab:red", "async-dspark": "tab:orange", "mtp1": "tab:blue", "static-3": "tab:green",
          "verify-all": "tab:purple", "none": "tab:gray"}
_CYCLE = ["tab:brown", "tab:pink", "tab:olive", "tab:cyan", "black", "gold"]


def policy_colors(policies: list[str]) -> dict[str, str]:
    """A stable colour per policy: known names fixed, others from a cycle in order of appearance."""
    out, k = {}, 0
    for p in policies:
        if p in _KNOWN:
            out[p] = _KNOWN[p]
        else:
            out[p] = _CYCLE[k % len(_CYCLE)]
            k += 1
    return out


def _figure(nrows: int = 1, ncols: int = 1, **kw: Any):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, **kw)


def _save(fig: Any, path: str | Path) -> Path:
    """The figure as a PNG at `path`, all or nothing (`sparksched.io`); the figure is closed."""
    from sparksched.io import save_figure

    return save_figure(path, fig, dpi=120, bbox_inches="tight")


def _col_max(df: pl.DataFrame, col: str) -> float:
    """Largest finite value of a column, 0.0 when there is none."""
    v = df.get_column(col).cast(pl.Float64).to_numpy() if not df.is_empty() else np.zeros(0)
    v = v[np.isfinite(v)]
    return float(v.max()) if v.size else 0.0


def _policies(df: pl.DataFrame) -> list[str]:
    return df.get_column("policy").unique(maintain_order=True).to_list() if "policy" in df.columns else []


def plot_frontier(rows: pl.DataFrame, front: pl.DataFrame, path: str | Path, *, sla: float | None = None,
                  sla_rows: pl.DataFrame | None = None, x: str = X_DEFAULT, y: str = Y_DEFAULT,
                  title: str | None = None) -> Path:
    """Throughput (tokens/s) against per-user speed (tokens/s/user), one colour per policy.

    Args:
        rows: all sweep rows (drawn as faint points).
        front: `frontier(rows)` (drawn as lines with markers).
        sla: per-user SLA (tokens/s/user), drawn as a vertical dashed line.
        sla_rows: `sla_table(front, sla)`: each policy's throughput at the SLA, marked and labelled
            ("unreachable" in the legend where the SLA lies beyond its frontier).
    """
    fig, ax = _figure(figsize=(7.5, 5.0))
    colors = policy_colors(_policies(rows))
    at_sla = {} if sla_rows is None else {r["policy"]: r for r in sla_rows.to_dicts()}
    for p, c in colors.items():
        g = rows.filter(pl.col("policy") == p)
        ax.scatter(g.get_column(x), g.get_column(y), color=c, alpha=0.35, s=18)
        f = front.filter(pl.col("policy") == p).sort(x)
        label = p
        r = at_sla.get(p)
        if r is not None:
            label += (f": {r['throughput']:,.0f} tok/s at SLA" + (" (lower bound)" if r["status"] == "lower_bound" else "")
                      if r["throughput"] is not None else ": SLA unreachable")
        ax.plot(f.get_column(x), f.get_column(y), "-o", color=c, ms=4, lw=2, label=label)
        if r is not None and r["throughput"] is not None and sla is not None:
            ax.plot([sla], [r["throughput"]], marker="*", ms=14, color=c, mec="black", zorder=5)
    if sla is not None:
        ax.axvline(sla, ls="--", color="black", lw=1)
        ax.text(sla, ax.get_ylim()[1], f" SLA {sla:g} tok/s/user", va="top", ha="left", fontsize=9)
    ax.set_xlabel(f"per-user speed, tokens/s/user ({x})")
    ax.set_ylabel(f"aggregate throughput, tokens/s ({y})")
    ax.set_title(title or "Serving frontier: throughput vs per-user speed (points: sweep; lines: frontier)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=9)
    return _save(fig, path)


def plot_budget_vs_concurrency(rows: pl.DataFrame, budget: pl.DataFrame, path: str | Path, *,
                               bins: int = 16, title: str | None = None) -> Path:
    """Throughput (top) and verify budget per request incl. the anchor (bottom) vs concurrency.

    Concurrency is the number of decoding requests in a step (prefilling requests hold a slot but
    verify nothing). Lines: one point per sweep run (its time-weighted mean concurrency, its
    throughput and budget). Faint dots: the budget of all steps pooled by concurrency bin.

    Args:
        rows: sweep rows with policy, time_weighted_decode_requests (or mean_running), throughput_tps
            and budget_per_request.
        budget: per-step aggregates with policy, decode_requests (decoding requests in the step),
            steps and verify_budget (mean verified tokens per request, anchor included).
    """
    fig, (top, bot) = _figure(2, 1, figsize=(7.5, 7.0), sharex=True)
    colors = policy_colors(_policies(rows) or _policies(budget))
    x_col = "time_weighted_decode_requests" if "time_weighted_decode_requests" in rows.columns else "mean_running"
    for p, c in colors.items():
        g = rows.filter(pl.col("policy") == p).sort(x_col)
        top.plot(g.get_column(x_col), g.get_column("throughput_tps"), "-o", color=c, ms=4, label=p)
        if "budget_per_request" in g.columns:
            bot.plot(g.get_column(x_col), g.get_column("budget_per_request"), "-o", color=c, ms=5, label=p)
        b = budget.filter((pl.col("policy") == p) & (pl.col("steps") > 0))
        if b.is_empty():
            continue
        run = b.get_column("decode_requests").to_numpy().astype(float)
        w = b.get_column("steps").to_numpy().astype(float)
        val = b.get_column("verify_budget").to_numpy().astype(float)
        edges = np.unique(np.geomspace(max(run.min(), 1.0), max(run.max(), 1.0) + 1.0, bins + 1).round())
        which = np.clip(np.searchsorted(edges, run, side="right") - 1, 0, max(edges.size - 2, 0))
        xs, ys = [], []
        for j in np.unique(which):
            m = which == j
            xs.append(float(np.average(run[m], weights=w[m])))
            ys.append(float(np.average(val[m], weights=w[m])))
        bot.plot(xs, ys, ".", color=c, alpha=0.35, ms=6)
    top.set_ylabel("throughput, tokens/s")
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    top.legend(fontsize=9)
    top.set_title(title or "Load-adaptive verification: throughput and verify budget vs concurrency")
    bot.axhline(2.0, ls=":", color="gray", lw=1)
    bot.text(bot.get_xlim()[1], 2.0, "MTP-1: anchor + 1 draft = 2 ", va="bottom", ha="right", fontsize=8,
             color="gray")
    bot.set_ylabel("verify budget per request\n(tokens per step, anchor included)")
    bot.set_xlabel("concurrent decoding requests per step (lines: per run, time-weighted; dots: steps pooled)")
    bot.set_ylim(bottom=0)
    bot.grid(alpha=0.3)
    return _save(fig, path)


def plot_acceptance(acc: pl.DataFrame, path: str | Path, *, title: str | None = None) -> Path:
    """Conditional acceptance per block position, one panel per domain, one line per series.

    Args:
        acc: columns domain, series (e.g. policy or drafter), position (1-based), acceptance
            (P(x_k accepted | x_1..x_{k-1} accepted), in [0, 1]) and optionally n (trials).
    """
    domains = acc.get_column("domain").unique(maintain_order=True).to_list() if not acc.is_empty() else []
    ncols = max(1, len(domains))
    fig, axes = _figure(1, ncols, figsize=(4.2 * ncols, 3.8), sharey=True, squeeze=False)
    series = acc.get_column("series").unique(maintain_order=True).to_list() if not acc.is_empty() else []
    colors = policy_colors(series)
    vals = acc.get_column("acceptance").cast(pl.Float64).to_numpy() if not acc.is_empty() else np.ones(1)
    vals = vals[np.isfinite(vals)]
    lo = max(0.0, min(0.5, np.floor(10 * (float(vals.min()) if vals.size else 1.0)) / 10 - 0.1))
    for ax, d in zip(axes[0], domains or ["(no data)"]):
        for s in series:
            g = acc.filter((pl.col("domain") == d) & (pl.col("series") == s)).sort("position")
            if g.is_empty():
                continue
            preset = "preset" in s  # a drafter's raw rates (reference), drawn dashed black
            ax.plot(g.get_column("position"), g.get_column("acceptance"), "--" if preset else "-o",
                    color="black" if preset else colors[s], ms=4, label=s)
        ax.set_title(d)
        ax.set_xlabel("block position k")
        ax.set_ylim(lo, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("P(draft k accepted | drafts 1..k-1 accepted)")
    if series:
        axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.suptitle(title or "Conditional acceptance per block position\n(observed on verified drafts: a "
                          "confidence scheduler verifies the likelier ones)", fontsize=10, y=1.06)
    return _save(fig, path)


def plot_step_time(cost: Any, rows: pl.DataFrame, path: str | Path, *, context: float | None = None,
                   title: str | None = None) -> Path:
    """The step's price (ms vs verify batch tokens B) at several request counts, with each sweep
    point's operating point.

    Args:
        cost: a `sparksched.cost.StepCost` (or anything `as_step_cost` takes); one line per request
            count n (the sweep's mean decoding requests, rounded to the profile's grid), each over B
            from n (anchors only) to 8 n, at `context` (default: the profile's middle context).
        rows: sweep rows with policy, max_running, mean_batch_tokens, time_weighted_decode_requests and
            mean_verify_s (step time less drafting, so comparable with the curve; mean_step_s when
            absent).
    """
    from sparksched.cost import as_step_cost

    cost = as_step_cost(cost)
    ctxs = cost.arrays.ctxs
    ctx = float(ctxs[ctxs.size // 2]) if context is None else float(context)
    fig, ax = _figure(figsize=(7.5, 4.8))
    t_col = "mean_verify_s" if "mean_verify_s" in rows.columns else "mean_step_s"
    top = _col_max(rows, "mean_batch_tokens")
    if "time_weighted_decode_requests" in rows.columns and rows.height:
        want = rows.get_column("time_weighted_decode_requests").to_numpy()
        grid = cost.arrays.reqs
        ns = sorted({float(grid[np.argmin(np.abs(grid - w))]) for w in want if np.isfinite(w) and w > 0})
    else:
        ns = [float(x) for x in cost.arrays.reqs[:: max(1, cost.arrays.reqs.size // 4)]]
    ns = ns[:: max(1, len(ns) // 6)] or [1.0]
    hi = max(top * 1.1, 8.0 * max(ns), 8.0)
    y_top = 0.0
    for n, shade in zip(ns, np.linspace(0.0, 0.6, len(ns))):
        b = np.linspace(n, 8.0 * n, 200)
        y = 1e3 * cost.verify_seconds(n, b, ctx)
        ok = np.isfinite(y)
        if ok.any():
            ax.plot(b[ok], y[ok], color=str(shade), lw=1.3, label=f"profile, n = {n:g} requests")
            y_top = max(y_top, float(y[ok].max()))
    colors = policy_colors(_policies(rows))
    for p, c in colors.items():
        g = rows.filter(pl.col("policy") == p)
        xs, ys = g.get_column("mean_batch_tokens").to_numpy(), 1e3 * g.get_column(t_col).to_numpy()
        ax.scatter(xs, ys, color=c, s=30, edgecolor="black", lw=0.5, zorder=4, label=f"{p}: operating points")
        if "max_running" in g.columns and p == next(iter(colors)):  # label one policy: caps coincide
            for x_, y_, m in zip(xs, ys, g.get_column("max_running").to_list()):
                ax.annotate(f"{m}", (x_, y_), textcoords="offset points", xytext=(4, -9), fontsize=7, color=c)
    y_top = max(y_top, 1e3 * _col_max(rows, t_col))
    ax.set_xlim(0, hi)
    ax.set_ylim(0, 1.15 * y_top)
    ax.set_xlabel("verify batch tokens B per step (anchors + verified drafts + prefill), mean per run")
    ax.set_ylabel(f"step time, ms ({'verify pass, drafting excluded' if t_col == 'mean_verify_s' else 'step'})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title or f"Step price by batch tokens at context {ctx:g}, one line per request count,\n"
                          "and the sweep's operating points (labels: max_running)", fontsize=10)
    return _save(fig, path)
