"""Time per call of the greedy scheduler: plain-Python reference vs numpy vs torch.

    python benchmarks/bench_schedule.py [--quick] [--repeat 7]

Confidences are realistic (c ~ Beta(8, 2), mean 0.8, i.i.d. per position), the curve is flat up to
256 batch tokens and linear after (a memory-bound GPU step turning compute-bound). Each cell is
the best of `--repeat` timing rounds (each averaging several calls; implementations take turns
within a round), all measured in the same run; ratios are reference time / implementation time.
Two curves: knee at 256 tokens (heavy load for n >= 256: few or no drafts verified) and at 4096
(light load: most drafts verified, the expensive case for the vectorised path). The torch rows use a prebuilt step-time table
and validate=False (the engine's hot path); the CUDA row synchronises after every call.
"""

from __future__ import annotations

import argparse
import timeit

import numpy as np
import torch

from sparksched import ThroughputCurve, schedule_numpy, schedule_reference, schedule_torch
from sparksched.scheduler import step_time_table

SIZES_N = (1, 16, 64, 256, 1024)
SIZES_G = (4, 8, 16)


def interleaved_best(fns: dict[str, object], repeat: int, budget_s: float = 0.02) -> dict[str, float]:
    """Seconds per call of each function: best of `repeat` rounds, the functions taking turns in
    every round (so background load hits all of them alike); each round averages enough calls."""
    numbers = {}
    for name, fn in fns.items():
        t0 = timeit.timeit(fn, number=1)
        numbers[name] = max(1, int(budget_s / max(t0, 1e-7)))
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            best[name] = min(best[name], timeit.timeit(fn, number=numbers[name]) / numbers[name])
    return best


def table_for(curve: ThroughputCurve, knee: int, repeat: int, has_cuda: bool) -> list[float]:
    """Print one table; return the numpy ratios at 256 x 16 (for the summary line)."""
    rng = np.random.default_rng(0)
    header = (f"{'n':>5} {'g':>3} {'verified':>8} {'reference':>11} {'numpy':>10} {'x':>6} "
              f"{'torch cpu':>10} {'x':>6}" + (f" {'torch cuda':>10} {'x':>6}" if has_cuda else ""))
    print(f"\ncurve: flat {curve.seconds[0][0] * 1e3:g} ms up to B = {knee}, linear after; c ~ Beta(8, 2)")
    print(header)
    print("-" * len(header))
    ratio = []
    for n in SIZES_N:
        for g in SIZES_G:
            conf = rng.beta(8, 2, (n, g))
            lengths = schedule_reference(conf, curve)
            assert np.array_equal(schedule_numpy(conf, curve), lengths)
            table = torch.as_tensor(step_time_table(curve, n * (g + 1)))
            conf_t = torch.as_tensor(conf)
            assert np.array_equal(schedule_torch(conf_t, table).numpy(), lengths)
            fns = {"ref": lambda c=conf: schedule_reference(c, curve),
                   "np": lambda c=conf: schedule_numpy(c, curve),
                   "cpu": lambda c=conf_t, tb=table: schedule_torch(c, tb, validate=False)}
            if has_cuda:
                conf_c, table_c = conf_t.cuda(), table.cuda()
                assert np.array_equal(schedule_torch(conf_c, table_c).cpu().numpy(), lengths)

                def on_gpu(c=conf_c, tb=table_c):
                    schedule_torch(c, tb, validate=False)
                    torch.cuda.synchronize()

                fns["gpu"] = on_gpu
            t = interleaved_best(fns, repeat)
            row = (f"{n:>5} {g:>3} {int(lengths.sum()):>8} {t['ref'] * 1e6:>9.1f}us {t['np'] * 1e6:>8.1f}us "
                   f"{t['ref'] / t['np']:>6.1f} {t['cpu'] * 1e6:>8.1f}us {t['ref'] / t['cpu']:>6.1f}")
            if has_cuda:
                row += f" {t['gpu'] * 1e6:>8.1f}us {t['ref'] / t['gpu']:>6.1f}"
            print(row, flush=True)
            if (n, g) == (256, 16):
                ratio.append(t["ref"] / t["np"])
    return ratio


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = ap.parse_args(argv)
    repeat = 2 if args.quick else args.repeat
    torch.set_num_threads(1)
    has_cuda = torch.cuda.is_available()
    summary = []
    for knee in (256, 4096):
        curve = ThroughputCurve.from_points([1, knee, 65536], [0.020, 0.020, 0.020 * 65536 / knee])
        summary += [(knee, r) for r in table_for(curve, knee, repeat, has_cuda)]
    print()
    for knee, r in summary:
        print(f"numpy / reference at 256 x 16, knee {knee}: {r:.1f}x")


if __name__ == "__main__":
    main()
