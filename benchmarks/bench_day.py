"""Bounded memory and speed over a day: `sparksched simulate` on a 24-hour chat trace, against one hour of it.

    python benchmarks/bench_day.py [--trace day.jsonl] [--policy dspark] [--log steps,rounds] [--no-report]

Generates (seeded, cached at --trace) the day the issue names: `sparksched trace generate --domain chat
--rate 5.4 --duration 86400` (about 465,000 requests), and its first hour (the same requests up to
3,600 s). Runs `sparksched simulate` on each in a child process (the whole command: reading the
trace, simulating, writing the Parquet tables, summary, PNGs and report.html into a fresh folder)
and reports wall time, CPU time and peak RSS of each child (resource.getrusage), the load average
(other processes share the 2 cores), and the ratios day / hour: about 24 for time (linear in the
traffic) and about 1 for memory (bounded). Targets: the day in <= 120 s and <= 1 GB.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_child(args: list[str]) -> tuple[float, float, float]:
    """(wall s, cpu s, peak RSS GB) of one `sparksched simulate` child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sparksched.cli", "simulate", *args], capture_output=True,
                          text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"simulate failed: {proc.stderr.strip()[-500:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, after.ru_maxrss / 1e6  # Linux: kB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default=str(Path(tempfile.gettempdir()) / "sparksched-chat-day.jsonl"))
    ap.add_argument("--policy", default="dspark")
    ap.add_argument("--log", default="steps,rounds")
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args()
    day = Path(a.trace)
    if not day.exists():
        subprocess.run([sys.executable, "-m", "sparksched.cli", "trace", "generate", "--domain", "chat", "--rate",
                        "5.4", "--duration", "86400", "-o", str(day), "-q"], check=True)
    hour = day.with_name(day.stem + "-hour.jsonl")
    if not hour.exists():
        import json

        with open(day) as src, open(hour, "w") as dst:
            for line in src:
                if json.loads(line)["arrival_s"] >= 3600:
                    break
                dst.write(line)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in (("hour", hour), ("day", day)):
            n = sum(1 for _ in open(path))
            load0 = os.getloadavg()[0]
            extra = ["--no-report"] if a.no_report else []
            # the child's peak RSS: RUSAGE_CHILDREN keeps the largest child so far, so the hour runs first
            wall, cpu, rss = run_child(["--trace", str(path), "--policy", a.policy, "--log", a.log, "-q",
                                        "-o", str(Path(tmp) / name), *extra])
            rows.append((name, n, wall, cpu, rss, load0, os.getloadavg()[0]))
            print(f"{name}: {n:,} requests, wall {wall:.1f} s, cpu {cpu:.1f} s, peak RSS {rss:.2f} GB, "
                  f"load average {load0:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    h, d = rows
    print(f"day / hour: requests {d[1] / h[1]:.1f}x, wall {d[2] / h[2]:.1f}x, cpu {d[3] / h[3]:.1f}x, "
          f"peak RSS {d[4] / h[4]:.2f}x; targets: day wall <= 120 s ({'met' if d[2] <= 120 else 'NOT met'}), "
          f"peak RSS <= 1 GB ({'met' if d[4] <= 1.0 else 'NOT met'})")


if __name__ == "__main__":
    main()
