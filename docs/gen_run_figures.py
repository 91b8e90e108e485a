"""Regenerate the README's pictures of one run: `python docs/gen_run_figures.py`.

Runs `sparksched simulate --trace chat --timeline` (the bundled chat trace, defaults) into a
temporary directory and copies into docs/run/: the run-over-time and latency PNGs of its
report.html, and a 2-second window of its timeline.json drawn as a picture (ui.perfetto.dev shows
the same tracks interactively). Prints the summary it came from.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "run"


def main() -> int:
    import polars as pl
    from click.testing import CliRunner

    from simulator.run_plots import busiest_window, plot_timeline_window
    from sparksched.cli import main as cli

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "chat"
        res = CliRunner().invoke(cli, ["simulate", "--trace", "chat", "--timeline", "--no-progress", "-o", str(run)])
        if res.exit_code != 0:
            print(res.output, file=sys.stderr)
            return 1
        print(res.output)
        OUT.mkdir(parents=True, exist_ok=True)
        for name in ("timeseries.png", "latency_cdf.png"):
            shutil.copyfile(run / name, OUT / name)
        steps = pl.read_parquet(run / "steps.parquet")
        t0, t1 = busiest_window(steps, 2.0)
        plot_timeline_window(pl.read_parquet(run / "requests.parquet"), steps, OUT / "timeline_window.png", t0, t1)
    for p in sorted(OUT.iterdir()):
        print(p.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
