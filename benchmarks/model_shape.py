"""Which target / drafter shapes make speculation pay on this machine: the loop's own calls, timed.

    python benchmarks/model_shape.py [--shapes 128x2,64x16,...] [--batches 1,16] [--threads 1] [--out f.json]

For each target shape (width x layers, vocabulary --vocab, random weights: step time does not
depend on weight values) and a one-layer DSpark drafter (Markov head, g = 7) built for it, the real
loop's calls are timed at each batch size n, interleaved round robin so that load drift on a shared
host hits every call alike:

    plain      one autoregressive step (the target's pass over n x 1 tokens + sampling)
    draft      the drafter's backbone pass + the sequential head's g sampling steps
    verify l   the target's pass over n x (1 + l) tokens + rejection sampling + the drafter's
               context update (l = 1..g)

Each call runs at a fixed context (`--context` cached tokens per request; caches are rolled back
after every call). From these, the speedup a drafter with per-position acceptance alpha would give:

    speedup(l) = E_l * plain / (draft + verify l),   E_l = 1 + alpha + ... + alpha^l

(E_l tokens per round for l verified drafts when each draft survives with probability alpha given
the earlier ones), printed for the best l and for l = g. A shape is worth training when this
speedup is high at the acceptance a drafter can reach; the acceptance itself comes from training
(`sparksched train`) and `benchmarks/ablation.py`. Prints one row per (shape, batch) and the load
average before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from sparksched.io import write_json
from sparksched.models.decoder import build_decoder
from sparksched.models.drafter import DrafterConfig, build_drafter
from sparksched.models.presets import DecoderConfig
from sparksched.speculative import SpeculativeDecoder


def shape_config(width: int, layers: int, vocab: int) -> DecoderConfig:
    """A Qwen3-style decoder (head_dim 32, 2 query heads per KV head, SwiGLU 3x width, tied embeddings)."""
    heads = max(2, width // 32)
    return DecoderConfig(f"d{width}-L{layers}-v{vocab}", vocab, width, layers, heads, max(1, heads // 2), 32,
                         3 * width, 10000.0, True, True, 1e-6, 4096)


def drafter_for(target, width: int = 0, block: int = 7, head: str = "markov", rank: int = 64):
    """The one-layer drafter `sparksched train drafter` builds for this target (same conditioning layers)."""
    tl = target.config.layers
    layers = tuple(sorted({0, tl // 2, tl - 1})) if tl > 2 else tuple(range(tl))
    return build_drafter(DrafterConfig(block=block, width=width, head=head, rank=rank, target_layers=layers), target)


def time_calls(target, drafter, n: int, context: int, repeats: int, seed: int = 0) -> dict[str, float]:
    """Median seconds of plain / draft / verify-l calls of the real loop at n requests (interleaved)."""
    g = drafter.config.block
    dec = SpeculativeDecoder(target, drafter, n, context + g + 4, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    prompts = torch.randint(1, target.config.vocab_size, (n, context), generator=gen).tolist()
    dec.prefill(range(n), prompts, range(n))
    slots = np.arange(n)

    def rollback(keep: np.ndarray) -> None:
        k = torch.as_tensor(keep)
        dec.cache.lengths -= k
        assert dec.ctx is not None
        dec.ctx.lengths -= k

    def plain() -> float:
        acc, _, s = dec.verify(slots, np.zeros(n, dtype=np.int64))
        rollback(acc + 1)
        return s

    def draft() -> float:
        return dec.draft(slots)[1]

    def verify(length: int) -> float:
        dec.draft(slots)
        acc, _, s = dec.verify(slots, np.full(n, length, dtype=np.int64))
        rollback(acc + 1)
        return s

    calls = {"plain": plain, "draft": draft} | {f"verify{k}": (lambda k=k: verify(k)) for k in range(1, g + 1)}
    for fn in calls.values():  # warm-up
        fn()
    samples: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for k, fn in calls.items():
            samples[k].append(fn())
    return {k: float(np.median(v)) for k, v in samples.items()}


def speedups(t: dict[str, float], g: int, alphas=(0.6, 0.7, 0.8)) -> dict[str, dict[str, float]]:
    """Predicted speedup over plain decoding at each per-position acceptance alpha: best l and l = g."""
    out = {}
    for a in alphas:
        vals = {k: sum(a**j for j in range(k + 1)) * t["plain"] / (t["draft"] + t[f"verify{k}"]) for k in range(1, g + 1)}
        best = max(vals, key=lambda k: vals[k])
        out[f"{a:g}"] = {"best_l": best, "best": vals[best], "all": vals[g]}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="128x2,128x8,64x16,64x24,96x16,128x16",
                    help="target shapes WIDTHxLAYERS, comma separated")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--drafter-width", type=int, default=0, help="drafter width (0: the target's)")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--context", type=int, default=128, help="cached tokens per request")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    load0 = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else []
    rows = []
    print(f"{'shape':>16} {'n':>3} {'plain ms':>8} {'draft':>6} {'ver1':>6} {'ver3':>6} {'ver7':>6}  "
          f"speedup best-l / all at alpha 0.6, 0.7, 0.8")
    with torch.no_grad():
        for spec in a.shapes.split(","):
            w, layers = (int(x) for x in spec.lower().split("x"))
            target = build_decoder(shape_config(w, layers, a.vocab))
            drafter = drafter_for(target, a.drafter_width)
            for n in (int(b) for b in a.batches.split(",")):
                t = time_calls(target, drafter, n, a.context, a.repeats)
                sp = speedups(t, drafter.config.block)
                row = {"shape": target.config.name, "width": w, "layers": layers, "vocab": a.vocab, "batch": n,
                       "target_params": target.config.parameters(),
                       "drafter_params": sum(p.numel() for p in drafter.parameters()),
                       "ms": {k: round(v * 1e3, 3) for k, v in t.items()}, "speedup": sp}
                rows.append(row)
                ms = row["ms"]
                print(f"{row['shape']:>16} {n:>3} {ms['plain']:>8.2f} {ms['draft']:>6.2f} {ms['verify1']:>6.2f} "
                      f"{ms['verify3']:>6.2f} {ms['verify7']:>6.2f}  " + "  ".join(
                          f"{v['best']:.2f}(l={v['best_l']})/{v['all']:.2f}" for v in sp.values()), flush=True)
    load1 = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else []
    print(f"load average before {' '.join(load0)}, after {' '.join(load1)}")
    if a.out:
        write_json(a.out, {"rows": rows, "threads": a.threads, "context": a.context, "repeats": a.repeats,
                           "loadavg_before": load0, "loadavg_after": load1, "torch": torch.__version__,
                           "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}, indent=1)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
