"""Policies side by side on one trace and profile: throughput, per-user speed, verify budget.

    python benchmarks/compare_policies.py [--trace chat] [--policies dspark,mtp1,static-3]
                                          [--rate-scales 1,8] [--max-running 128]

Also prints the synthetic presets' mean accepted length per round (fixed block 7, no scheduler)
against the DSpark paper's Table 1 (Qwen3-4B), from the closed form and from simulated rounds.
"""

from __future__ import annotations

import argparse


def presets_table() -> str:
    import numpy as np

    from simulator.acceptance import DOMAINS, TABLE1_QWEN3_4B, SyntheticAcceptance, expected_accepted_length
    from simulator.backend import Requests

    lines = [f"{'drafter':8} {'domain':6} {'preset tau':>10} {'simulated':>9}  paper (Qwen3-4B, Table 1)"]
    for family in ("dspark", "dflash", "eagle3"):
        for domain in DOMAINS:
            n, rounds = 2000, 10
            b = SyntheticAcceptance(family, 7, n, seed=0)
            slots = np.arange(n)
            b.join(slots, Requests(slots, [str(i) for i in slots], [domain] * n, np.full(n, 100),
                                   np.full(n, 10**6), np.zeros(n, dtype=np.int64)))
            acc = [b.verify(slots, np.full(n, 7)).accepted for _ in range(rounds) if b.draft(slots, 7)]
            sim = float(np.mean(acc)) + 1
            paper = ", ".join(f"{k} {v:.2f}" for k, v in TABLE1_QWEN3_4B[family][domain].items())
            lines.append(f"{family:8} {domain:6} {expected_accepted_length(family, domain, 7):10.2f} {sim:9.2f}  "
                         f"{paper}")
    for domain in DOMAINS:
        lines.append(f"{'mtp1':8} {domain:6} {expected_accepted_length('mtp1', domain, 1):10.2f} {'':9}  "
                     "(one-token drafter, DeepSeek 85-90 %)")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default="chat")
    ap.add_argument("--policies", default="dspark,mtp1,static-3")
    ap.add_argument("--rate-scales", default="1,8")
    ap.add_argument("--max-running", type=int, default=128)
    ap.add_argument("--sla-tps", type=float, default=80.0, help="goodput: per-user tok/s target")
    ap.add_argument("--sla-ttft", type=float, default=2.0, help="goodput: TTFT target (s)")
    ap.add_argument("--no-presets", action="store_true")
    args = ap.parse_args()

    from simulator.config import SimConfig
    from simulator.run import simulate

    if not args.no_presets:
        print(presets_table())
        print()
    head = (f"{'policy':14} {'rate x':>6} {'tok/s':>8} {'user P50':>9} {'user P90':>9} {'TTFT P90':>9} "
            f"{'budget':>7} {'tau':>5} {'running':>7} {'goodput':>8}")
    print(f"trace {args.trace}, bundled profile, max_running {args.max_running}; budget = verified tokens per "
          f"request per step incl. the anchor; tau = tokens per round; goodput = share of requests with "
          f"TTFT <= {args.sla_ttft:g} s and >= {args.sla_tps:g} tok/s/user")
    print(head)
    for scale in (float(x) for x in args.rate_scales.split(",")):
        for policy in args.policies.split(","):
            res = simulate(args.trace, SimConfig(policy=policy, rate_scale=scale, max_running=args.max_running,
                                                 sla_tps=args.sla_tps, sla_ttft_s=args.sla_ttft))
            s = res.summary
            print(f"{policy:14} {scale:6g} {s['throughput_tps']:8.0f} {s['user_tps_p50']:9.1f} {s['user_tps_p90']:9.1f} "
                  f"{1000 * s['ttft_p90_s']:7.0f}ms {s['mean_verify_budget']:7.2f} {s['mean_accepted_per_round']:5.2f} "
                  f"{s['time_weighted_running']:7.1f} {100 * s['goodput_share']:7.1f}%")


if __name__ == "__main__":
    main()
