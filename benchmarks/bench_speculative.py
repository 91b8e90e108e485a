"""Tokens/s of the real speculative loop vs plain autoregressive decoding, same target, batch 1 and 16.

    python benchmarks/bench_speculative.py [--device cpu|cuda] [--threads 2] [--new-tokens 128] [--out f.json]

Bundled checkpoints (tiny target, DSpark drafter with the Markov head, g = 7). Prompts: held-out
windows of the code / prose / math text (64 tokens). Decode throughput = generated tokens (after
the first, which prefill emits) / decode wall time. Policies: dspark (the scheduler with this
target's step-time curve measured here at the same batch), static-3, verify-all. Sampling at
temperature 1 (and greedy with --greedy). The speed ratio printed is speculative / autoregressive.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np
import torch

from sparksched.speculative import autoregressive_generate, generate, measure_step_curve
from sparksched.training.checkpoint import BUNDLED, load_bundle, load_heldout


def prompts_from_heldout(heldout: dict, count: int, length: int = 64, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    doms = sorted(heldout)
    out = []
    for i in range(count):
        s = heldout[doms[i % len(doms)]]
        st = int(rng.integers(0, s.size - length))
        out.append(s[st:st + length].tolist())
    return out


def run(device: str, threads: int, new_tokens: int, batches: list[int], greedy: bool, head: str = "markov",
        directory=None, policies=("dspark", "static-3", "verify-all"), solo_prompts: int = 6) -> dict:
    torch.set_num_threads(threads)
    _, target, drafter = load_bundle(directory, head=head, device=device, tokenizer=False)
    heldout = load_heldout((directory or BUNDLED) / "heldout.npz")
    g = drafter.config.block
    res = {"curve_points": {},
           "device": device, "threads": threads, "new_tokens": new_tokens, "greedy": greedy, "head": head,
           "torch": str(torch.__version__), "python": platform.python_version(), "rows": []}
    if device.startswith("cuda"):
        res["gpu"] = torch.cuda.get_device_name(0)
    for batch in batches:
        prompts = prompts_from_heldout(heldout, max(batch, solo_prompts if batch == 1 else batch))
        groups = [prompts[i:i + batch] for i in range(0, len(prompts), batch)]
        curve = measure_step_curve(target, batch, 64 + new_tokens // 2, g, max_len=64 + new_tokens + g + 2,
                                   hidden_layers=drafter.target_layers)
        res["curve_points"][batch] = [round(float(x) * 1e3, 3) for x in curve.table(batch * (g + 1))[batch::batch]]
        autoregressive_generate(target, groups[0], 8, greedy=greedy)  # warm-up
        generate(target, drafter, groups[0], 8, "verify-all", greedy=greedy)

        def timed(fn, groups=groups):
            toks, secs, acc, rounds = 0, 0.0, [], 0
            for grp in groups:
                r = fn(grp)
                toks += sum(len(t) - 1 for t in r.tokens)
                secs += r.decode_seconds
                acc.extend(float(x) for rr in r.rounds for x in rr.accepted)
                rounds += len(r.rounds)
            return toks / secs, (float(np.mean(acc)) if acc else 0.0), rounds

        ar_tps, _, ar_rounds = timed(lambda p: autoregressive_generate(target, p, new_tokens, greedy=greedy, seed=1))
        row = {"batch": batch, "autoregressive_tps": ar_tps, "ar_steps": ar_rounds}
        for pol in policies:
            tps, acc, rounds = timed(lambda p, pol=pol, curve=curve: generate(
                target, drafter, p, new_tokens, pol, curve=curve, greedy=greedy, seed=1))
            row[f"{pol}_tps"] = tps
            row[f"{pol}_ratio"] = tps / ar_tps
            row[f"{pol}_accepted_per_round"] = acc
            row[f"{pol}_steps"] = rounds
        res["rows"].append(row)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--greedy", action="store_true")
    ap.add_argument("--head", default="markov")
    ap.add_argument("--checkpoints", default=None, help="checkpoint directory [default: bundled]")
    ap.add_argument("--out", default=None, help="write the results JSON here")
    a = ap.parse_args(argv)
    from pathlib import Path

    t0 = time.time()
    res = run(a.device, a.threads, a.new_tokens, [int(b) for b in a.batches.split(",")], a.greedy, a.head,
              Path(a.checkpoints) if a.checkpoints else None)
    res["wall_s"] = time.time() - t0
    print(f"{'batch':>5} {'AR tok/s':>9} " + " ".join(f"{p + ' tok/s (x)':>24}" for p in ("dspark", "static-3", "verify-all")))
    for r in res["rows"]:
        print(f"{r['batch']:>5} {r['autoregressive_tps']:>9.1f} " + " ".join(
            f"{r[p + '_tps']:>14.1f} ({r[p + '_ratio']:.2f}x)".rjust(24) for p in ("dspark", "static-3", "verify-all")))
    if a.out:
        from sparksched.io import write_json

        write_json(a.out, res, indent=1)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
