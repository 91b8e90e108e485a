"""Simulator speed: one hour of traffic at the Azure LLM inference 2023 conversation scale.

    python benchmarks/bench_simulator.py [--policy dspark] [--requests 19366] [--seed 0] [--profile]
                                         [--baseline-s 180]

Generates (seeded) a one-hour chat trace with the trace helper's generator: Azure 2023
conversation lengths (prompt ~1,150, output ~210 tokens on average), 19,366 requests in 3,600 s,
Poisson-like arrivals. Simulates it with the bundled H100 / Qwen3-8B profile and reports wall time,
simulated seconds per wall second, engine steps and steps per wall second, and the machine's load
average (other processes share the CPU). Target: <= 20 s on 2 CPU cores.

Baseline in the same run: the first `--baseline-s` seconds of the trace through the engine's plain
step path (one SimPy event and one set of numpy calls per step, the compiled epoch planner off)
against the default engine on the same slice; prints the speed ratio and checks the two agree.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="dspark")
    ap.add_argument("--requests", type=int, default=19366, help="requests in the hour (Azure 2023 conv: 19,366)")
    ap.add_argument("--duration", type=float, default=3600.0, help="trace span (s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="run under cProfile and print the top functions")
    ap.add_argument("--baseline-s", type=float, default=180.0, help="trace seconds for the step-path baseline")
    args = ap.parse_args()

    from simulator.config import SimConfig
    from simulator.generate import generate_trace
    from simulator.run import simulate

    trace = generate_trace("chat", rate=args.requests / args.duration, duration_s=args.duration, seed=args.seed, cv=1.0)
    print(f"trace: {trace.height} requests over {trace['arrival_s'].max():.0f} s, prompt mean "
          f"{trace['prompt_tokens'].mean():.0f}, output mean {trace['output_tokens'].mean():.0f} tokens")
    config = SimConfig(policy=args.policy)
    simulate(trace.head(50), config)  # warm caches (presets, curve tables) outside the timed run
    load0 = os.getloadavg()[0]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        res = prof.runcall(simulate, trace, config)
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    else:
        res = simulate(trace, config)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    s = res.summary
    sim_s = res.meta["simulated_s"]
    print(res.table())
    print(f"wall {wall:.2f} s (cpu {cpu:.2f} s), simulated {sim_s:.0f} s -> {sim_s / wall:.0f} sim-s per wall-s; "
          f"{s['steps']} steps ({s['steps'] / wall:,.0f} steps/s); load average {load0:.2f} -> "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; target <= 20 s")
    if args.baseline_s > 0:
        baseline(trace.filter(trace["arrival_s"] < args.baseline_s), config)


def baseline(part, config) -> None:
    """The same slice through the plain step path and the default engine: wall ratio, equal results."""
    import simulator.engine as engine_mod
    from simulator.run import simulate

    t0 = time.perf_counter()
    fast = simulate(part, config)
    t_fast = time.perf_counter() - t0
    planner = engine_mod.Engine._epoch_plan
    engine_mod.Engine._epoch_plan = lambda self, *a: None
    try:
        t0 = time.perf_counter()
        slow = simulate(part, config)
        t_slow = time.perf_counter() - t0
    finally:
        engine_mod.Engine._epoch_plan = planner
    same = fast.rounds.equals(slow.rounds)
    print(f"baseline ({part.height} requests, {part['arrival_s'].max():.0f} s of trace): step path {t_slow:.2f} s, "
          f"engine {t_fast:.2f} s -> {t_slow / t_fast:.1f}x; identical rounds: {same}")


if __name__ == "__main__":
    main()
