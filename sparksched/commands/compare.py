"""`sparksched compare RESULT RUN_DIR`: a real engine's benchmark against a simulation, metric by metric.

A thin shell over `simulator.compare`. RESULT is a `vllm bench serve` result JSON or SGLang
`bench_serving` output (JSON Lines; --line picks a run); RUN_DIR is a `sparksched simulate` output
directory (its result.json). Prints the table; -o also writes it (.csv, .parquet or .json by suffix).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from sparksched.commands._common import quiet_option, runtime_errors

EXAMPLES = """\b
Examples:
  vllm bench serve ... --save-result --save-detailed --result-filename bench.json
  sparksched trace convert --from vllm-bench bench.json -o workload.jsonl
  sparksched simulate --trace workload.jsonl -o run
  sparksched compare bench.json run
  sparksched compare sglang_bench.jsonl run --line 2 -o comparison.csv
"""


@click.command(epilog=EXAMPLES)
@click.argument("result", type=click.Path(dir_okay=False))
@click.argument("run_dir", type=click.Path())
@click.option("--line", type=click.IntRange(min=1), default=None,
              help="Which run of a JSON Lines result (SGLang appends one per line) [default: the last].")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Also write the comparison table (.csv, .parquet or .json).")
@quiet_option
def compare(result: str, run_dir: str, line: int | None, out: str | None, quiet: bool) -> None:
    """Print a real engine's benchmark and a simulation of the same workload side by side.

    Every metric present on both sides (vLLM's result keys; SGLang's are renamed to them): the
    engine's value, the simulated one and the error in % of the engine's.
    """
    if out is not None and Path(out).suffix not in (".csv", ".parquet", ".json"):
        raise click.BadParameter(f"{out!r}: the suffix must be .csv, .parquet or .json", param_hint="-o/--out")
    with runtime_errors():
        from simulator.compare import compare_files
        from sparksched.io import atomic_write

        table, text = compare_files(result, run_dir, line)
        if out is not None:
            suffix = Path(out).suffix
            writers: dict[str, Callable[[Path], Any]] = {".csv": table.write_csv, ".parquet": table.write_parquet,
                                                        ".json": table.write_json}
            atomic_write(out, writers[suffix])
    if not quiet:
        click.echo(text)
