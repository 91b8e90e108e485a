"""The DSpark paper's Figure 5 view: a static confidence threshold swept, per domain, on the real loop
and on the simulator's synthetic presets.

    python benchmarks/threshold_sweep.py [--source real,synthetic] [--taus 0,0.1,...,0.9]
                                         [--out-dir docs/threshold_sweep] [--threads 1]

Policy `conf-threshold-TAU`: verify while each drafted position's own calibrated confidence c_k is
at least TAU, stop at the first one below (TAU = 0 verifies the whole block: fixed-length
verification). Per domain and TAU, over every round of every request:

    accepted per step   drafts accepted (the round's leading accepted run)
    rejected per step   drafts verified but not accepted (the first rejected one and all after it)
    acceptance rate     accepted / verified drafts

Sources:
  real       the real loop (`sparksched.speculative.generate`), bundled target + Markov drafter
             (STS-calibrated confidences), temperature 1, held-out prompts of each domain (the
             evaluation set of `sparksched train`, disjoint from STS fitting), batch 16.
  synthetic  the simulator (`simulator.run.simulate`) with policy conf-threshold-TAU on a trace of
             one domain at a time (chat, code, math presets of the dspark family, g = 7), at the
             default confidence model (ROC-AUC 0.85, ECE 1 %) and at the paper's AUC range ends
             (0.81, 0.90) and a raw head's ECE (5.5 %), to show what the sweep says about them.

Writes <out-dir>/sweep.json (every number), sweep.parquet (one row per source, model, domain, TAU)
and one PNG per source: tokens per step as stacked bars (accepted, rejected hatched) and the
acceptance rate as a line, the paper's rates at TAU = 0 and 0.9 marked on the synthetic panels
(same target family, Qwen3-4B, as the presets).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from sparksched.io import save_figure, write_parquet, write_text

# Figure 5 of the DSpark paper (Qwen3-4B): acceptance rate at threshold 0 and 0.9, from its text
PAPER_FIG5 = {"math": (0.769, 0.925), "code": (0.676, 0.920), "chat": (0.457, 0.957)}
TAUS = tuple(round(0.1 * i, 1) for i in range(10))
SYNTHETIC_MODELS = {  # name -> (conf_auc, conf_ece)
    "auc 0.85, ece 1% (default)": (0.85, 0.01),
    "auc 0.81, ece 1%": (0.81, 0.01),
    "auc 0.90, ece 1%": (0.90, 0.01),
    "auc 0.85, ece 5.5% (raw head)": (0.85, 0.055),
}


def _row(source: str, model: str, domain: str, tau: float, verified: np.ndarray, accepted: np.ndarray) -> dict:
    v, a = int(verified.sum()), int(accepted.sum())
    return {"source": source, "model": model, "domain": domain, "tau": tau, "rounds": int(verified.size),
            "verified_per_step": v / max(1, verified.size), "accepted_per_step": a / max(1, verified.size),
            "rejected_per_step": (v - a) / max(1, verified.size), "acceptance_rate": a / v if v else float("nan"),
            "emitted_per_step": (a + verified.size) / max(1, verified.size)}


def real_sweep(taus, per_domain: int, new_tokens: int, seed: int, threads: int, checkpoints=None) -> list[dict]:
    """Rows of the real loop's sweep (see the module docstring)."""
    import torch

    from sparksched.speculative import generate
    from sparksched.training.checkpoint import BUNDLED, load_bundle, load_heldout
    from sparksched.training.data import TokenData
    from sparksched.training.rounds import heldout_prompts

    torch.set_num_threads(threads)
    d = Path(checkpoints) if checkpoints else BUNDLED
    _, target, drafter = load_bundle(d, head="markov", tokenizer=False)
    held = load_heldout(d / "heldout.npz")
    prompts, domains = heldout_prompts(TokenData(held, held), per_domain, offset=1)
    rows = []
    for dom in sorted(set(domains)):
        ps = [p for p, x in zip(prompts, domains) if x == dom]
        for tau in taus:
            ver, acc = [], []
            for b0 in range(0, len(ps), 16):
                res = generate(target, drafter, ps[b0:b0 + 16], new_tokens, f"conf-threshold-{tau}", seed=seed + b0)
                for r in res.rounds:
                    ver.append(r.lengths)
                    acc.append(r.accepted)
            rows.append(_row("real", "bundled markov drafter (STS)", dom, tau, np.concatenate(ver), np.concatenate(acc)))
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}), flush=True)
    return rows


def synthetic_sweep(taus, requests: int, output_tokens: int, seed: int, models=SYNTHETIC_MODELS) -> list[dict]:
    """Rows of the simulator's sweep on the dspark presets, one domain per run (low load)."""
    import polars as pl

    from simulator.acceptance import build_preset
    from simulator.config import SimConfig
    from simulator.run import simulate

    rows = []
    for model, (auc, ece) in models.items():
        for dom in ("math", "code", "chat"):
            preset = build_preset("dspark", dom, 7, auc, ece)
            trace = pl.DataFrame({"id": [f"{dom}-{i:04d}" for i in range(requests)],
                                  "arrival_s": np.arange(requests, dtype=np.float64) * 0.05,
                                  "prompt_tokens": np.full(requests, 256), "output_tokens": np.full(requests, output_tokens),
                                  "domain": [dom] * requests})
            for tau in taus:
                cfg = SimConfig(policy=f"conf-threshold-{tau}", drafter="dspark", block=7, seed=seed, conf_auc=auc,
                                conf_ece=ece, max_running=32)
                r = simulate(trace, cfg).rounds
                row = _row("synthetic", model, dom, tau, r["verified"].to_numpy(), r["accepted"].to_numpy())
                row.update({"preset_auc": preset.auc, "preset_ece": preset.ece})
                rows.append(row)
            print(f"synthetic {model} {dom}: acceptance rate "
                  + " ".join(f"{x['tau']:g}:{x['acceptance_rate']:.3f}" for x in rows[-len(taus):]), flush=True)
    return rows


def plot(rows: list[dict], source: str, model: str, path: Path) -> None:
    """Figure 5's view for one source and model: a panel per domain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = [r for r in rows if r["source"] == source and r["model"] == model]
    doms = [d for d in ("math", "code", "chat", "prose") if any(r["domain"] == d for r in sel)]
    fig, axes = plt.subplots(1, len(doms), figsize=(4.2 * len(doms), 3.6), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, dom in zip(axes, doms):
        rs = sorted((r for r in sel if r["domain"] == dom), key=lambda r: r["tau"])
        x = np.arange(len(rs))
        acc = np.array([r["accepted_per_step"] for r in rs])
        rej = np.array([r["rejected_per_step"] for r in rs])
        ax.bar(x, acc, color="#4c72b0", label="accepted tokens")
        ax.bar(x, rej, bottom=acc, color="white", edgecolor="#c44e52", hatch="///", label="rejected tokens")
        ax.set_xticks(x, [f"{r['tau']:.1f}" for r in rs], fontsize=8)
        ax.set_title(dom)
        ax.set_xlabel("confidence threshold")
        tw = ax.twinx()
        rate = np.array([r["acceptance_rate"] for r in rs])
        tw.plot(x, rate * 100, color="#dd8452", marker="o", ms=3, label="acceptance rate")
        for i in (0, len(rs) - 1):
            tw.annotate(f"{rate[i] * 100:.1f}%", (x[i], rate[i] * 100), textcoords="offset points", xytext=(0, 6),
                        ha="center", fontsize=8)
        paper_dom = "chat" if dom == "prose" else dom
        if source == "synthetic" and paper_dom in PAPER_FIG5:
            lo, hi = PAPER_FIG5[paper_dom]
            idx9 = next((i for i, r in enumerate(rs) if abs(r["tau"] - 0.9) < 1e-9), None)
            tw.scatter([0], [lo * 100], marker="x", color="black", zorder=5, label="paper (Fig. 5)")
            if idx9 is not None:
                tw.scatter([idx9], [hi * 100], marker="x", color="black", zorder=5)
        tw.set_ylim(0, 105)
        if ax is axes[-1]:
            tw.set_ylabel("acceptance rate (%)")
        else:
            tw.set_yticklabels([])
    axes[0].set_ylabel("drafts verified per step")
    handles = [h for a in (axes[0], axes[0].figure.axes[-1]) for h in a.get_legend_handles_labels()[0]]
    labels = [lab for a in (axes[0], axes[0].figure.axes[-1]) for lab in a.get_legend_handles_labels()[1]]
    fig.legend(handles, labels, loc="upper center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"{source}: {model}", y=0.02, fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 0.92))
    save_figure(path, fig, dpi=120)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="real,synthetic")
    ap.add_argument("--taus", default=",".join(f"{t:g}" for t in TAUS))
    ap.add_argument("--per-domain", type=int, default=48, help="real: held-out prompts per domain")
    ap.add_argument("--new-tokens", type=int, default=64, help="real: tokens per request")
    ap.add_argument("--requests", type=int, default=200, help="synthetic: requests per domain")
    ap.add_argument("--output-tokens", type=int, default=128, help="synthetic: tokens per request")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--checkpoints", default=None, help="real: checkpoint directory [default: bundled]")
    ap.add_argument("--out-dir", default="docs/threshold_sweep")
    a = ap.parse_args(argv)
    sources = {s.strip() for s in a.source.split(",") if s.strip()}
    if not sources or sources - {"real", "synthetic"}:
        ap.error(f"--source: expected real and/or synthetic, got {a.source!r}")
    taus = [float(t) for t in a.taus.split(",")]
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    rows: list[dict] = []
    if "synthetic" in sources:
        rows += synthetic_sweep(taus, a.requests, a.output_tokens, a.seed)
    if "real" in sources:
        rows += real_sweep(taus, a.per_domain, a.new_tokens, a.seed, a.threads, a.checkpoints)
    import polars as pl

    write_text(out / "sweep.json", json.dumps({"rows": rows, "paper_fig5": PAPER_FIG5, "taus": taus, "args": vars(a),
                                               "wall_s": round(time.time() - t0, 1)}, indent=1) + "\n")
    write_parquet(out / "sweep.parquet", pl.DataFrame(rows))
    for source in sorted(sources):
        for model in dict.fromkeys(r["model"] for r in rows if r["source"] == source):
            slug = "default" if "default" in model else model.replace(" ", "").replace(",", "_").replace("%", "")
            name = f"{source}.png" if source == "real" or "default" in model else f"{source}-{slug}.png"
            plot(rows, source, model, out / name)
    print(f"{'source':>9} {'model':>30} {'domain':>6} " + " ".join(f"{t:>5g}" for t in taus))
    for (src, model, dom) in dict.fromkeys((r["source"], r["model"], r["domain"]) for r in rows):
        rates = [r["acceptance_rate"] for r in rows if (r["source"], r["model"], r["domain"]) == (src, model, dom)]
        print(f"{src:>9} {model[:30]:>30} {dom:>6} " + " ".join(f"{x * 100:>5.1f}" for x in rates))
    print(f"wrote {out}/sweep.json, sweep.parquet and PNGs in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
