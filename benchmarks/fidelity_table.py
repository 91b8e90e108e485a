"""Summarise a series of `benchmarks/fidelity.py` results (docs/fidelity/*.json) as markdown tables.

    python benchmarks/fidelity_table.py [docs/fidelity]
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

METRICS = ["aggregate output tok/s", "per-user tok/s (mean)", "per-user tok/s (P50)", "TPOT P50 (s)",
           "accepted drafts per round", "verify tokens per round"]


def main(directory: str = "docs/fidelity") -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for f in sorted(Path(directory).glob("rate*_s*.json")):
        d = json.loads(f.read_text())
        groups[(d["rate"], d["policy"], d["requests"])].append(d)
    out = []
    for (rate, policy, n), runs in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        out.append(f"\n**{rate:g} requests/s, {n} requests, policy {policy}** ({len(runs)} seeds; "
                   "error = predicted / measured - 1, per seed)\n")
        labels = list(runs[0]["comparisons"])
        out.append("| metric | measured (per seed) | " + " | ".join(f"error, {lab}" for lab in labels) + " |")
        out.append("|---|---|" + "---|" * len(labels))
        for m in METRICS:
            meas = [next(r for r in run["comparisons"][labels[0]]["rows"] if r["metric"] == m)["measured"] for run in runs]
            cells = []
            for lab in labels:
                errs = [next(r for r in run["comparisons"][lab]["rows"] if r["metric"] == m)["error"] for run in runs]
                cells.append(", ".join(f"{100 * e:+.1f} %" for e in errs))
            fmt = "{:.4f}" if "TPOT" in m else "{:.2f}"
            out.append(f"| {m} | " + ", ".join(fmt.format(x) for x in meas) + " | " + " | ".join(cells) + " |")
        cells = [", ".join(f"{100 * run['comparisons'][lab]['per_request_abs_rel_error_mean']:.0f} %" for run in runs)
                 for lab in labels]
        out.append("| per-request per-user tok/s, mean abs error | | " + " | ".join(cells) + " |")
        if all("acceptance_only" in run for run in runs):
            out.append("\nAcceptance model only (real loop vs recorded model, both on the loop-timed profile clock):\n")
            out.append("| metric | real loop (per seed) | error |")
            out.append("|---|---|---|")
            for m in METRICS:
                rows = [next(r for r in run["acceptance_only"]["rows"] if r["metric"] == m) for run in runs]
                fmt = "{:.4f}" if "TPOT" in m else "{:.2f}"
                out.append(f"| {m} | " + ", ".join(fmt.format(r["measured"]) for r in rows) + " | "
                           + ", ".join(f"{100 * r['error']:+.1f} %" for r in rows) + " |")
    text = "\n".join(out)
    print(text)
    return text


if __name__ == "__main__":
    main(*sys.argv[1:])
