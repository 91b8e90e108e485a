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
TOLERANCE = 0.05


def _row(comp: dict, metric: str) -> dict:
    return next(r for r in comp["rows"] if r["metric"] == metric)


def _pct(x: float) -> str:
    return f"{100 * x:+.1f} %"


def _short(label: str) -> str:
    return label.replace("host speed ", "")


def main(directory: str = "docs/fidelity") -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for f in sorted(Path(directory).glob("rate*_s*.json")):
        d = json.loads(f.read_text())
        groups[(d["rate"], d["policy"], d["requests"])].append(d)
    order = sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1]))
    labels = [lab for lab in order[0][1][0]["comparisons"]]
    paired = [lab for lab in labels if "paired_errors" in order[0][1][0]["comparisons"][lab]]
    out = [f"**Within {100 * TOLERANCE:.0f} %**, per prediction: seeds whose error of the medians is within on all "
           "three target metrics (aggregate, per-user mean, per-user P50), and measured runs whose paired errors "
           "are; the worst error of the medians over all seeds and the three metrics.\n",
           "| prediction | seeds within | runs within (paired) | worst error of the medians |", "|---|---|---|---|"]
    for lab in labels:
        seeds = runs_in = runs_all = 0
        worst = 0.0
        n_seeds = 0
        for _, series in order:
            for run in series:
                comp = run["comparisons"][lab]
                errs = [_row(comp, m)["error"] for m in TARGET]
                n_seeds += 1
                seeds += all(abs(e) <= TOLERANCE for e in errs)
                worst = max(worst, *(abs(e) for e in errs))
                if "paired_errors" in comp:
                    per_run = np.array([comp["paired_errors"][m] for m in TARGET])  # [3, runs]
                    runs_in += int(np.all(np.abs(per_run) <= TOLERANCE, axis=0).sum())
                    runs_all += per_run.shape[1]
        out.append(f"| {_short(lab)} | {seeds} of {n_seeds} | "
                   f"{f'{runs_in} of {runs_all}' if runs_all else '-'} | {100 * worst:.1f} % |")
    out += ["\n**Error of the medians** (median prediction over the measured runs' host speeds vs the median "
            "measurement; per seed):\n",
            "| rate (req/s) | requests | policy | prediction | aggregate tok/s | per-user tok/s (mean) | "
            "per-user tok/s (P50) |", "|---|---|---|---|---|---|---|"]
    for (rate, policy, n), series in order:
        for lab in labels:
            cells = [", ".join(_pct(_row(run["comparisons"][lab], m)["error"]) for run in series) for m in TARGET]
            out.append(f"| {rate:g} | {n} | {policy} | {_short(lab)} | " + " | ".join(cells) + " |")
    out += ["\n**Paired errors** (each measured run vs the prediction at its own host speed; median over the "
            "runs of a seed, per seed, and in brackets the range over all runs):\n",
            "| rate (req/s) | policy | prediction | aggregate tok/s | per-user tok/s (mean) | per-user tok/s (P50) |",
            "|---|---|---|---|---|---|"]
    for (rate, policy, _n), series in order:
        for lab in paired:
            cells = []
            for m in TARGET:
                med = [float(np.median(run["comparisons"][lab]["paired_errors"][m])) for run in series]
                every = [e for run in series for e in run["comparisons"][lab]["paired_errors"][m]]
                cells.append(f"{', '.join(_pct(e) for e in med)} ({_pct(min(every))} .. {_pct(max(every))})")
            out.append(f"| {rate:g} | {policy} | {_short(lab)} | " + " | ".join(cells) + " |")
    for (rate, policy, n), series in order:
        r0 = series[0]
        out.append(f"\n**{rate:g} requests/s, {n} requests, policy {policy}** ({len(series)} seeds "
                   f"{', '.join(str(r['seed']) for r in series)}; {r0['repeats']} measured runs per seed, "
                   f"started {', '.join(r['started_utc'][11:16] for r in series)} UTC)\n")
        out.append("| metric | measured, median of the runs (per seed) | measured runs (per seed) |")
        out.append("|---|---|---|")
        for m in METRICS:
            fmt = "{:.4f}" if "TPOT" in m else "{:.2f}"
            rows = [_row(run["comparisons"][labels[0]], m) for run in series]
            out.append(f"| {m} | " + ", ".join(fmt.format(r["measured"]) for r in rows) + " | "
                       + "; ".join(", ".join(fmt.format(x) for x in r["measured_repeats"]) for r in rows) + " |")
        out.append("\nHost load level per run (twin samples / calibration profile), and the clock check: each "
                   "speed model's price of the measured steps / their measured time - 1 (draft, verify, step), "
                   "summed over all runs of the seed:\n")
        models = list(r0["clock_check"])
        out.append("| seed | load levels | " + " | ".join(models) + " | calibration profile alone |")
        out.append("|---|---|" + "---|" * (len(models) + 1))
        for run in series:
            checks = [run["clock_check"][m] for m in models] + [run["clock_check_calib"]]
            out.append(f"| {run['seed']} | {', '.join(f'{x:.2f}' for x in run['load_levels'])} | "
                       + " | ".join(f"{_pct(c['draft_sum_error'])}, {_pct(c['verify_sum_error'])}, "
                                    f"{_pct(c['step_sum_error'])}" for c in checks) + " |")
        out.append("\nAcceptance model only (the real loop once more, and the recorded model, both on the "
                   "calibration profile's clock; error per seed):\n")
        donors = list(r0["acceptance_only"])
        out.append("| metric | real loop (per seed) | " + " | ".join(f"error, {d} donors" for d in donors) + " |")
        out.append("|---|---|" + "---|" * len(donors))
        for m in METRICS:
            fmt = "{:.4f}" if "TPOT" in m else "{:.2f}"
            real = [_row(run["acceptance_only"][donors[0]], m)["measured"] for run in series]
            cells = [", ".join(_pct(_row(run["acceptance_only"][d], m)["error"]) for run in series) for d in donors]
            out.append(f"| {m} | " + ", ".join(fmt.format(x) for x in real) + " | " + " | ".join(cells) + " |")
    text = "\n".join(out)
    print(text)
    return text


if __name__ == "__main__":
    main(*sys.argv[1:])
