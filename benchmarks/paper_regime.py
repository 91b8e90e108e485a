"""The paper's production regime in shape: DSpark vs MTP-1 on the bundled MoE roofline profiles.

    python benchmarks/paper_regime.py [--profiles NAME,NAME] [--loads 8,16,...] [--max-requests 600]
                                      [--trace chat] [--rate-scale 64] [--workers 2] [--out paper-regime]

For each profile (default: the bundled DeepSeek-V3-class MoE on 8 H200 with EP8 + DP attention in
FP8, and Qwen3-30B-A3B on one H100) it sweeps concurrency caps for the `dspark` policy (DSpark
drafter, gamma 5, the paper's production block) and `mtp1`, overloading the trace so each cap is
the concurrency (Figure 8's axis). The engine is a decode instance (`disaggregated`: prefill runs on
separate prefill instances, as in the paper's production deployment, whose Figures 7-8 measure
the decode engines); without it, every step a finishing request frees would carry a new 2,048-token
prefill chunk through all 61 MoE layers, and the curves would measure prefill interference. With DP attention the simulated engine is one attention group =
one GPU, so throughput is per GPU (Figure 7's axis). It prints and writes (report.txt,
frontier.parquet, budget.parquet, paper_regime.parquet in --out):

- the DSpark / MTP-1 frontier throughput ratio at 80 and 120 tok/s/user (median user), beside the
  paper's Figure 7 (V4-Flash: 1.51x at 80, 7.61x at 120);
- DSpark's verify budget per request (anchor included) against concurrency, beside Figure 8
  (V4-Flash: 4.88 at 25 requests down to 3.48 at 200).

Uses the step-cost model of this checkout (`simulator.sweep` / `simulator.analysis.analyse`);
numbers depend on it. About a minute per profile on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

PROFILES = ("h200x8-deepseek-v3-ep8-dp-fp8-roofline", "h100-qwen3-30b-a3b-roofline")
LOADS = (8, 16, 32, 64, 96, 128, 160, 192, 256)
SLAS = (35.0, 50.0, 80.0, 120.0)
# The paper's Figure 7 / 8 (digitised): frontier ratio at its SLA anchors (V4-Pro at 35 and 50
# tok/s/user, V4-Flash at 80 and 120) and DSpark's verification budget (tokens per request, anchor
# included) by concurrent requests (V4-Flash).
PAPER_RATIO = {35.0: 1.52, 50.0: 5.07, 80.0: 1.51, 120.0: 7.61}
PAPER_MODEL = {35.0: "V4-Pro", 50.0: "V4-Pro", 80.0: "V4-Flash", 120.0: "V4-Flash"}
PAPER_GAIN = "V4-Flash +60-85 %, V4-Pro +57-78 %"
PAPER_BUDGET = {25: 4.88, 50: 4.60, 75: 4.35, 100: 4.12, 150: 3.75, 200: 3.48}


def run_profile(profile: str, loads: list[int], trace: str, max_requests: int, rate_scale: float,
                seed: int, workers: int | None) -> dict:
    """Sweep dspark and mtp1 on one profile; the frontier, SLA ratios and budget by concurrency."""
    import polars as pl

    from simulator.analysis import analyse
    from simulator.config import SimConfig
    from simulator.sweep import run_sweep, sweep_configs

    base = SimConfig(profile=profile, drafter="dspark", block=5, seed=seed, max_requests=max_requests,
                     disaggregated=True)
    configs = sweep_configs(base, ["dspark", "mtp1"], loads, [rate_scale])
    t0 = time.perf_counter()
    result = run_sweep(trace, configs, workers=workers, progress=True)
    wall = time.perf_counter() - t0
    a = analyse(result.rows, SLAS[0], "mtp1", "user_tps_p50")
    slas = pl.concat([analyse(result.rows, s, "mtp1", "user_tps_p50").sla for s in SLAS])
    gain = a.gains[0].table if a.gains else None
    budget = (result.rows.filter(pl.col("policy") == "dspark")
              .select("max_running", "mean_running", "budget_per_request", "throughput_tps", "user_tps_p50")
              .sort("max_running"))
    return {"profile": profile, "front": a.front, "sla": slas, "budget": budget, "wall_s": wall,
            "rows": result.rows, "gain": gain}


def paper_budget_at(concurrency: float) -> float | None:
    """Figure 8's DSpark budget at `concurrency` (linear between digitised points; None outside 25-200)."""
    import numpy as np

    xs = np.array(sorted(PAPER_BUDGET), dtype=float)
    if not xs[0] <= concurrency <= xs[-1]:
        return None
    return float(np.interp(concurrency, xs, [PAPER_BUDGET[int(x)] for x in xs]))


def report(res: dict) -> str:
    lines = [f"## {res['profile']} (sweep {res['wall_s']:.0f} s)", "",
             "Frontier throughput at the SLA (tok/s per simulated engine; per GPU with DP attention):",
             f"{'SLA tok/s/user':>15} {'dspark':>10} {'mtp1':>10} {'ratio':>8} {'paper':>8} {'':9}"]
    for s in SLAS:
        t = res["sla"].filter(res["sla"]["sla"] == s)
        row = {r["policy"]: r for r in t.iter_rows(named=True)}
        d, m = row.get("dspark", {}), row.get("mtp1", {})
        fmt = lambda r: "unreach." if r.get("throughput") is None else f"{r['throughput']:,.0f}"  # noqa: E731
        ratio = d.get("ratio")
        rs = "-" if ratio is None else ("inf" if ratio == float("inf") else f"{ratio:.2f}x")
        lines.append(f"{s:>15.0f} {fmt(d):>10} {fmt(m):>10} {rs:>8} {PAPER_RATIO[s]:>7.2f}x {PAPER_MODEL[s]:9}")
    g = res.get("gain")
    if g is not None and g.height:
        lines += ["", f"Per-user speed at matched throughput, dspark over mtp1 ({g['throughput'].min():,.0f}-"
                      f"{g['throughput'].max():,.0f} tok/s): " + ", ".join(f"{100 * x:+.0f} %" for x in g["gain"])
                  + f" (paper: {PAPER_GAIN})"]
    lines += ["", "DSpark verify budget per request (anchor included) by concurrency:",
              f"{'cap':>5} {'mean running':>13} {'budget':>7} {'paper':>6} {'tok/s':>9} {'user tok/s':>11}"]
    for r in res["budget"].iter_rows(named=True):
        p = paper_budget_at(r["mean_running"] or 0)
        lines.append(f"{r['max_running']:>5} {r['mean_running'] or 0:>13.1f} {r['budget_per_request'] or 0:>7.2f} "
                     f"{'-' if p is None else f'{p:.2f}':>6} {r['throughput_tps'] or 0:>9,.0f} "
                     f"{r['user_tps_p50'] or 0:>11.1f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--loads", default=",".join(map(str, LOADS)), help="Concurrency caps (max_running).")
    ap.add_argument("--trace", default="chat")
    ap.add_argument("--max-requests", type=int, default=600)
    ap.add_argument("--rate-scale", type=float, default=64.0, help="Arrival-rate multiplier (overload).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--out", default="paper-regime")
    args = ap.parse_args()

    import polars as pl

    from sparksched.io import write_parquet, write_text

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    loads = [int(x) for x in args.loads.split(",") if x.strip()]
    parts, fronts, budgets = [], [], []
    for prof in [p.strip() for p in args.profiles.split(",") if p.strip()]:
        res = run_profile(prof, loads, args.trace, args.max_requests, args.rate_scale, args.seed, args.workers)
        text = report(res)
        print(text + "\n", flush=True)
        parts.append(text)
        fronts.append(res["front"].with_columns(profile=pl.lit(prof)))
        budgets.append(res["budget"].with_columns(profile=pl.lit(prof)))
        write_parquet(out / f"sweep-{prof}.parquet", res["rows"].with_columns(profile=pl.lit(prof)))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    footer = (f"trace {args.trace}, first {args.max_requests} requests at {args.rate_scale:g}x their arrival rate, "
              f"seed {args.seed}; load average {load:.1f} while it ran")
    write_text(out / "report.txt", "\n\n".join(parts) + "\n\n" + footer + "\n")
    write_parquet(out / "frontier.parquet", pl.concat(fronts, how="diagonal_relaxed"))
    write_parquet(out / "budget.parquet", pl.concat(budgets, how="diagonal_relaxed"))
    print(footer)
    print(f"wrote {out}/report.txt, frontier.parquet, budget.parquet, sweep-*.parquet")


if __name__ == "__main__":
    main()
