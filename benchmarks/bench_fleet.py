"""A fleet at N times the load: per-user speed of N replicas behind a router against one replica at 1x.

    python benchmarks/bench_fleet.py [--replicas 4] [--duration 900] [--rate 5.4] [--policy dspark]

Generates (seeded) chat traffic at --rate requests/s and at --replicas times that rate over the
same --duration, simulates one replica on the first and a fleet of --replicas replicas on the
second with each router, and prints per-user speed (P50 / P90 of 1 / TPOT), TTFT P50 / P90,
throughput, wall time and the load average. Baseline in the same run: one replica at 1x, and one
replica at N x (what the fleet spares). Target: least-loaded within 20 % of the single replica's
per-user speed.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--duration", type=float, default=900.0)
    ap.add_argument("--rate", type=float, default=5.4)
    ap.add_argument("--policy", default="dspark")
    ap.add_argument("--routers", default="least-loaded,round-robin,least-kv")
    a = ap.parse_args()

    from simulator.config import SimConfig
    from simulator.generate import generate_trace
    from simulator.run import simulate

    n = a.replicas
    one = generate_trace("chat", rate=a.rate, duration_s=a.duration, seed=0)
    many = generate_trace("chat", rate=n * a.rate, duration_s=a.duration, seed=1)
    runs = [("1 replica, 1x", one, SimConfig(policy=a.policy, log=())),
            (f"1 replica, {n}x", many, SimConfig(policy=a.policy, log=()))]
    runs += [(f"{n} replicas, {n}x, {r}", many, SimConfig(policy=a.policy, replicas=n, router=r, log=()))
             for r in a.routers.split(",")]
    base = None
    print(f"{'run':<34} {'requests':>8} {'P50 tok/s':>10} {'P90 tok/s':>10} {'TTFT P50':>9} {'TTFT P90':>9} "
          f"{'tok/s':>8} {'wall s':>7} {'load':>5} {'vs 1x P50':>9}")
    for name, trace, cfg in runs:
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        s = simulate(trace, cfg).summary
        wall = time.perf_counter() - t0
        if base is None:
            base = s["user_tps_p50"]
        ratio = s["user_tps_p50"] / base if s["user_tps_p50"] else 0.0
        print(f"{name:<34} {s['requests']:>8} {s['user_tps_p50'] or 0:>10.1f} {s['user_tps_p90'] or 0:>10.1f} "
              f"{s['ttft_p50_s'] or 0:>9.3f} {s['ttft_p90_s'] or 0:>9.3f} {s['throughput_tps']:>8.0f} {wall:>7.1f} "
              f"{load:>5.2f} {ratio:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
