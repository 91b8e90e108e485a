"""Summarise a series of `benchmarks/fidelity.py` results (docs/fidelity/*.json) as markdown tables.

    python benchmarks/fidelity_table.py [docs/fidelity]
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

METRICS = ["aggregate output tok/s", "per-user tok/s (mean)", "per-user tok/s (P50)", "TPOT P50 (s)",
           "accepted drafts per round", "verify tokens per round"]
TARGET = METRICS[:3]  # the metrics the 5 % target is about


def _row(run: dict, label: str, metric: str) -> dict:
    return next(r for r in run["comparisons"][label]["rows"] if r["metric"] == metric)


def _pct(x: float) -> str:
    return f"{100 * x:+.1f} %"


def main(directory: str = "docs/fidelity") -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for f in sorted(Path(directory).glob("rate*_s*.json")):
        d = json.loads(f.read_text())
        groups[(d["rate"], d["policy"], d["requests"])].append(d)
    out = ["| rate (req/s) | policy | prediction | aggregate tok/s | per-user tok/s (mean) | per-user tok/s (P50) |",
           "|---|---|---|---|---|---|"]
    for (rate, policy, _n), runs in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        for label, comp in runs[0]["comparisons"].items():
            if "paired_errors" not in comp:
                continue
            cells = []
            for m in TARGET:
                med = [float(np.median(run["comparisons"][label]["paired_errors"][m])) for run in runs]
                paired = [e for run in runs for e in run["comparisons"][label]["paired_errors"][m]]
                cells.append(f"{', '.join(_pct(e) for e in med)} (runs {_pct(min(paired))} .. {_pct(max(paired))})")
            out.append(f"| {rate:g} | {policy} | {label.replace('loop-timed profile at the runs', 'at the runs')} | "
                       + " | ".join(cells) + " |")
    for (rate, policy, n), runs in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        r0 = runs[0]
        out.append(f"\n**{rate:g} requests/s, {n} requests, policy {policy}** ({len(runs)} seeds "
                   f"{', '.join(str(r['seed']) for r in runs)}; medians over {r0['repeats']} measured runs per seed; "
                   "error = predicted / measured - 1, per seed)\n")
        labels = list(r0["comparisons"])
        out.append("| metric | measured (per seed) | " + " | ".join(f"error, {lab}" for lab in labels) + " |")
        out.append("|---|---|" + "---|" * len(labels))
        for m in METRICS:
            meas = [_row(run, labels[0], m)["measured"] for run in runs]
            cells = [", ".join(_pct(_row(run, lab, m)["error"]) for run in runs) for lab in labels]
            fmt = "{:.4f}" if "TPOT" in m else "{:.2f}"
            out.append(f"| {m} | " + ", ".join(fmt.format(x) for x in meas) + " | " + " | ".join(cells) + " |")
        cells = [", ".join(f"{100 * run['comparisons'][lab]['per_request_abs_rel_error_mean']:.0f} %" for run in runs)
                 for lab in labels]
        out.append("| per-request per-user tok/s, mean abs error | | " + " | ".join(cells) + " |")
        out.append("\nPer measured run, error of the prediction at that run's own load level (paired), the load "
                   "levels, and the clock check (profile / measured - 1 summed over the measured steps):\n")
        out.append("| seed | level | aggregate tok/s, per run | per-user mean | per-user P50 | verify tokens per round "
                   "| load level per run | clock check (one level): draft, verify, step |")
        out.append("|---|---|---|---|---|---|---|---|")
        for run in runs:
            cc = run["clock_check"]
            for label in [lab for lab in labels if "paired_errors" in run["comparisons"][lab]]:
                pe = run["comparisons"][label]["paired_errors"]
                out.append(f"| {run['seed']} | {label.split(', ')[-1]} | "
                           + " | ".join(", ".join(_pct(e) for e in pe.get(m, [])) for m in TARGET + [METRICS[5]])
                           + f" | {', '.join(f'{x:.2f}' for x in run['load_levels'])} | {_pct(cc['draft_sum_error'])}, "
                           f"{_pct(cc['verify_sum_error'])}, {_pct(cc['step_sum_error'])} |")
        if all("acceptance_only" in run for run in runs):
            out.append("\nAcceptance model only (real loop vs recorded model, both on the calibration profile's clock):\n")
            out.append("| metric | real loop (per seed) | error |")
            out.append("|---|---|---|")
            for m in METRICS:
                rows = [next(r for r in run["acceptance_only"]["rows"] if r["metric"] == m) for run in runs]
                fmt = "{:.4f}" if "TPOT" in m else "{:.2f}"
                out.append(f"| {m} | " + ", ".join(fmt.format(r["measured"]) for r in rows) + " | "
                           + ", ".join(_pct(r["error"]) for r in rows) + " |")
    text = "\n".join(out)
    print(text)
    return text


if __name__ == "__main__":
    main(*sys.argv[1:])
