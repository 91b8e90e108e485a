"""Tokens/s of the real speculative loop vs plain autoregressive decoding, same target, same run.

    python benchmarks/bench_speculative.py [--device cpu|cuda] [--threads 1] [--new-tokens 128]
                                           [--batches 1,16] [--repeats 3] [--out f.json]

Bundled checkpoints (target + DSpark drafter with the Markov head). Prompts: held-out windows of
the code / math / prose text (64 tokens, the domains in turn). Decode throughput = generated tokens
(after the first, which prefill emits) / decode wall time. Policies: dspark (the scheduler pricing
each step with the loop's own verify time by verified tokens and drafter time, measured here at the
same batch: `sparksched.speculative.measure_loop_price`; the loop verifies a padded [n, 1 + max l]
block, so dspark chooses one width for the batch, `schedule_padded`), dspark-ragged (the per-request
greedy of `schedule`, which prices sum(1 + l_i) as a ragged engine would pay), static-3, verify-all
(--policies to change). Sampling at
temperature 1 (greedy with --greedy). Batch 1 decodes --solo-prompts prompts one after another.

Two ways to run a batch B > 1: `static`, one fixed batch of B prompts decoded until every request
has --new-tokens tokens (its last rounds run for the slowest requests alone, at small batch), and
`continuous` (--continuous K), K x B requests served through B slots, each refilled from the queue
as its request finishes (`sparksched.speculative.serve`, what a serving engine does); prefill time
is left out of both.

Plain and speculative decoding are interleaved: each of --repeats rounds runs every method once on
the same prompts, so load drift on a shared host hits all of them alike; the ratio printed is
speculative / plain tokens/s pooled over the rounds, with the per-round range beside it. The load
average before and after is printed and stored.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

from sparksched.speculative import autoregressive_generate, generate, make_policy, measure_loop_price, serve
from sparksched.training.checkpoint import BUNDLED, load_bundle, load_heldout


def loadavg() -> list[str]:
    """The 1, 5 and 15 minute load averages (empty where /proc is absent)."""
    return open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else []


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
        directory=None, policies=("dspark", "dspark-ragged", "static-3", "verify-all"), solo_prompts: int = 6,
        repeats: int = 3, continuous: int = 3) -> dict:
    torch.set_num_threads(threads)
    _, target, drafter = load_bundle(directory, head=head, device=device, tokenizer=False)
    heldout = load_heldout((directory or BUNDLED) / "heldout.npz")
    g = drafter.config.block
    res = {"curve_points": {}, "draft_ms": {}, "loadavg_before": loadavg(), "policies": list(policies),
           "device": device, "threads": threads, "new_tokens": new_tokens, "greedy": greedy, "head": head,
           "repeats": repeats, "target": target.config.name, "target_layers": target.config.layers,
           "torch": str(torch.__version__), "python": platform.python_version(), "rows": [],
           "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    if device.startswith("cuda"):
        res["gpu"] = torch.cuda.get_device_name(0)
    for batch, mode in [(b, m) for b in batches for m in (("static", "continuous") if b > 1 and continuous
                                                         else ("static",))]:
        if mode == "continuous":  # `continuous` x batch requests through `batch` slots, refilled as they finish
            prompts = prompts_from_heldout(heldout, continuous * batch, seed=1)
            groups = [prompts]
        else:
            prompts = prompts_from_heldout(heldout, max(batch, solo_prompts if batch == 1 else batch))
            groups = [prompts[i:i + batch] for i in range(0, len(prompts), batch)]
        price = measure_loop_price(target, drafter, batch, 64 + new_tokens // 2, max_len=64 + new_tokens + g + 2)
        res["curve_points"][batch] = [round(float(x) * 1e3, 3)
                                      for x in price.curve.table(batch * (g + 1))[batch::batch]]
        res["draft_ms"][batch] = round(price.draft_seconds * 1e3, 3)
        autoregressive_generate(target, groups[0], 8, greedy=greedy)  # warm-up
        generate(target, drafter, groups[0], 8, "verify-all", greedy=greedy)
        if mode == "continuous":
            methods = {"autoregressive": lambda p, seed, b=batch: serve(target, None, p, new_tokens, b, greedy=greedy,
                                                                        seed=seed)}
        else:
            methods = {"autoregressive": lambda p, seed: autoregressive_generate(target, p, new_tokens, greedy=greedy,
                                                                                  seed=seed)}
        for pol in policies:  # dspark-ragged: the per-request greedy, which prices sum(1 + l_i)
            fn = (make_policy("dspark", price, layout="ragged") if pol == "dspark-ragged"
                  else make_policy(pol, price))
            if mode == "continuous":
                methods[pol] = lambda p, seed, fn=fn, b=batch: serve(target, drafter, p, new_tokens, b, fn,
                                                                     greedy=greedy, seed=seed)
            else:
                methods[pol] = lambda p, seed, fn=fn: generate(target, drafter, p, new_tokens, fn, greedy=greedy,
                                                               seed=seed)
        tot = {m: {"toks": 0, "secs": 0.0, "acc": [], "rounds": 0} for m in methods}
        per_round: dict[str, list[float]] = {m: [] for m in methods}
        for rep in range(repeats):  # every method once per round, same prompts and seed
            for m, fn in methods.items():
                toks, secs = 0, 0.0
                for grp in groups:
                    r = fn(grp, 1 + rep)
                    toks += sum(len(t) - 1 for t in r.tokens)
                    secs += r.decode_seconds
                    if m != "autoregressive":
                        tot[m]["acc"].extend(float(x) for rr in r.rounds for x in rr.accepted)
                    tot[m]["rounds"] += len(r.rounds)
                tot[m]["toks"] += toks
                tot[m]["secs"] += secs
                per_round[m].append(toks / secs)
        ar_tps = tot["autoregressive"]["toks"] / tot["autoregressive"]["secs"]
        row = {"batch": batch, "mode": mode, "autoregressive_tps": ar_tps, "ar_steps": tot["autoregressive"]["rounds"] // repeats,
               "loadavg": loadavg()}
        for pol in policies:
            t = tot[pol]
            row[f"{pol}_tps"] = t["toks"] / t["secs"]
            row[f"{pol}_ratio"] = row[f"{pol}_tps"] / ar_tps
            ratios = [a / b for a, b in zip(per_round[pol], per_round["autoregressive"])]
            row[f"{pol}_ratio_range"] = [min(ratios), max(ratios)]
            row[f"{pol}_accepted_per_round"] = float(np.mean(t["acc"])) if t["acc"] else 0.0
            row[f"{pol}_steps"] = t["rounds"] // repeats
        res["rows"].append(row)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    res["loadavg_after"] = loadavg()
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (every method once per round)")
    ap.add_argument("--solo-prompts", type=int, default=6, help="prompts decoded one after another at batch 1")
    ap.add_argument("--policies", default="dspark,dspark-ragged,static-3,verify-all")
    ap.add_argument("--continuous", type=int, default=3,
                    help="at batch B > 1 also serve this many x B requests through B slots, refilled as requests "
                         "finish (0: fixed batches only)")
    ap.add_argument("--greedy", action="store_true")
    ap.add_argument("--head", default="markov")
    ap.add_argument("--checkpoints", default=None, help="checkpoint directory [default: bundled]")
    ap.add_argument("--out", default=None, help="write the results JSON here")
    a = ap.parse_args(argv)
    from pathlib import Path

    t0 = time.time()
    pols = tuple(p.strip() for p in a.policies.split(",") if p.strip())
    res = run(a.device, a.threads, a.new_tokens, [int(b) for b in a.batches.split(",")], a.greedy, a.head,
              Path(a.checkpoints) if a.checkpoints else None, pols, a.solo_prompts, a.repeats, a.continuous)
    res["wall_s"] = time.time() - t0
    print(f"{'batch':>5} {'mode':>10} {'AR tok/s':>9} " + " ".join(f"{p + ' tok/s (x, acc/round)':>34}" for p in pols))
    for r in res["rows"]:
        print(f"{r['batch']:>5} {r['mode']:>10} {r['autoregressive_tps']:>9.1f} " + " ".join(
            f"{r[p + '_tps']:>12.1f} ({r[p + '_ratio']:.2f}x, {r[p + '_accepted_per_round']:.2f})".rjust(34)
            for p in pols))
    print(f"load average before {' '.join(res['loadavg_before'])}, after {' '.join(res['loadavg_after'])}")
    if a.out:
        from sparksched.io import write_json

        write_json(a.out, res, indent=1)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
