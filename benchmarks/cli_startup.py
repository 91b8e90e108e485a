"""How long the command line takes to start: `python benchmarks/cli_startup.py`.

Runs each command in a fresh interpreter (subprocess) several times and prints the median wall
time, its ratio to a bare interpreter (`python -c pass`) and to `import torch` (what every command
paid before names were loaded lazily), and the peak memory of the child. Target: `sparksched
--help` under 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "python -c 'import torch' (the old floor)": [sys.executable, "-c", "import torch"],
    "sparksched --help": [sys.executable, "-m", "sparksched.cli", "--help"],
    "sparksched simulate --help": [sys.executable, "-m", "sparksched.cli", "simulate", "--help"],
    "sparksched trace stats chat": [sys.executable, "-m", "sparksched.cli", "trace", "stats", "chat"],
}


def run(cmd: list[str], repeats: int) -> tuple[float, float]:
    """(median wall seconds, largest peak RSS in MiB of one run) over `repeats` runs."""
    times, peaks = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own resource usage
        times.append(time.perf_counter() - t0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} exited {child.returncode}")
        peaks.append(usage.ru_maxrss / 1024)
    return statistics.median(times), max(peaks)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    results = {name: run(cmd, args.repeats) for name, cmd in CASES.items()}
    base = results["python -c pass (baseline)"][0]
    torch_s = results["python -c 'import torch' (the old floor)"][0]
    print(f"{'command':<42} {'median s':>9} {'x bare python':>14} {'x import torch':>15} {'peak MiB':>9}")
    for name, (t, peak) in results.items():
        print(f"{name:<42} {t:>9.3f} {t / base:>14.1f} {t / torch_s:>15.2f} {peak:>9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
