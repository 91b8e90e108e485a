"""The drafter ablation from the bundled checkpoints' evaluation (train_log.json), as tables and a plot.

    python benchmarks/ablation.py [--log sparksched/data/checkpoints/train_log.json] [--png docs/acceptance_by_position.png]

Every drafter was trained with the same block (g = 7), steps, batch and learning rate; evaluated by
the real loop (verify-all, temperature 1) on 64 held-out prompts per domain x 48 new tokens, disjoint
from the prompts its STS temperatures were fitted on (`sparksched train drafter`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HEADS = {"none": "backbone only (DFlash-like)", "markov": "+ Markov head", "rnn": "+ RNN head"}


def tables(log: dict) -> str:
    doms = sorted(log["drafter-markov"]["eval"]["accepted"])
    out = ["| drafter | params | " + " | ".join(doms) + " | all | vs backbone only |",
           "|---|---|" + "---|" * (len(doms) + 2)]
    base = log["drafter-none"]["eval"]["accepted_all"]
    for h, name in HEADS.items():
        e = log[f"drafter-{h}"]["eval"]
        out.append(f"| {name} | {log[f'drafter-{h}']['params'] / 1e6:.2f} M | "
                   + " | ".join(f"{e['accepted'][d]:.3f}" for d in doms)
                   + f" | {e['accepted_all']:.3f} | {100 * (e['accepted_all'] / base - 1):+.0f}% |")
    out += ["", "Teacher-forced expected accepted length on held-out windows (sum_k prod_j<=k (1 - TV_j)):", "",
            "| drafter | " + " | ".join(doms) + " |", "|---|" + "---|" * len(doms)]
    for h, name in HEADS.items():
        tf = log[f"drafter-{h}"]["heldout_teacher_forced_tau"]
        out.append(f"| {name} | " + " | ".join(f"{tf[d]:.3f}" for d in doms) + " |")
    g = len(log["drafter-markov"]["eval"]["conditional_all"])
    out += ["", "Conditional acceptance P(x_k accepted | x_1..x_{k-1} accepted), all domains:", "",
            "| drafter | " + " | ".join(f"k={k + 1}" for k in range(g)) + " |", "|---|" + "---|" * g]
    for h, name in HEADS.items():
        c = log[f"drafter-{h}"]["eval"]["conditional_all"]
        out.append(f"| {name} | " + " | ".join(f"{x:.3f}" for x in c) + " |")
    out += ["", "Confidence calibration (cumulative S_k vs 'first k accepted'): ECE raw -> after STS, and ROC-AUC of c_k:",
            "", "| drafter | " + " | ".join(f"k={k + 1}" for k in range(g)) + " | mean |", "|---|" + "---|" * (g + 1)]
    for h, name in HEADS.items():
        e = log[f"drafter-{h}"]["eval"]
        cells = [f"{100 * a:.1f} -> {100 * b:.1f}" for a, b in zip(e["ece_before"], e["ece_after"])]
        mb = 100 * sum(e["ece_before"]) / g
        ma = 100 * sum(e["ece_after"]) / g
        out.append(f"| {name} ECE % | " + " | ".join(cells) + f" | {mb:.1f} -> {ma:.1f} |")
        auc = e["auc_conditional"]
        out.append(f"| {name} AUC | " + " | ".join(f"{x:.3f}" for x in auc) + f" | {sum(auc) / g:.3f} |")
    return "\n".join(out)


def plot(log: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doms = sorted(log["drafter-markov"]["eval"]["conditional"])
    fig, axes = plt.subplots(1, len(doms) + 1, figsize=(4 * (len(doms) + 1), 3.4), sharey=True)
    for ax, dom in zip(axes, ["all", *doms]):
        for h, name in HEADS.items():
            e = log[f"drafter-{h}"]["eval"]
            c = e["conditional_all"] if dom == "all" else e["conditional"][dom]
            ax.plot(range(1, len(c) + 1), c, marker="o", label=name)
        ax.set_title(dom)
        ax.set_xlabel("block position k")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("P(x_k accepted | prefix accepted)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Conditional acceptance per block position (tiny target, g = 7, same training budget)")
    fig.tight_layout()
    from sparksched.io import save_figure

    save_figure(path, fig, dpi=110)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", default=str(Path(__file__).resolve().parent.parent / "sparksched/data/checkpoints/train_log.json"))
    ap.add_argument("--png", default="docs/acceptance_by_position.png")
    a = ap.parse_args(argv)
    log = json.loads(Path(a.log).read_text())
    print(tables(log))
    plot(log, Path(a.png))
    print(f"\nplot: {a.png}")


if __name__ == "__main__":
    main()
