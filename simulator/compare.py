"""Hold a simulation against a real engine's benchmark of the same workload, metric by metric.

Covers: "does the simulator predict what vLLM / SGLang measured?". The engine side is a
`vllm bench serve` result JSON or SGLang `bench_serving` output (simulator.bench_files, renamed
to vLLM's keys); the simulated side is a run directory's result.json (simulator.vllm_metrics),
written with the same keys and definitions. Workflow:

    sparksched trace convert --from vllm-bench RESULT.json -o workload.jsonl   # its requests
    sparksched simulate --trace workload.jsonl -o run                           # the simulation
    sparksched compare RESULT.json run                                         # side by side

`compare_results` returns one row per metric present on both sides: the two values, the
difference (simulated - engine) and the relative error in % of the engine's value. Lists
(per-position acceptance rates) compare position by position. Rows about the workload itself
(completed, input and output tokens) say whether the two runs served the same requests.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import polars as pl

from simulator.bench_files import METRIC_KEY, BenchResult, read_bench

WORKLOAD = ("completed", "failed", "total_input_tokens", "total_output_tokens")
THROUGHPUT = ("duration", "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
              "max_output_tokens_per_s", "max_concurrent_requests")
SPEC = ("spec_decode_acceptance_rate", "spec_decode_acceptance_length", "spec_decode_num_drafts",
        "spec_decode_draft_tokens", "spec_decode_accepted_tokens")
STAT_ORDER = {"mean": 0, "median": 1, "std": 2}


def read_run(path: str | Path) -> dict[str, Any]:
    """A simulation's result.json (a run directory, or the file itself)."""
    p = Path(path)
    if p.is_dir():
        p = p / "result.json"
    if not p.exists():
        raise ValueError(f"{p}: no such file (a run directory of `sparksched simulate` holds result.json)")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"{p}: not a JSON result: {exc}") from None
    if not isinstance(doc, dict) or "mean_ttft_ms" not in doc:
        raise ValueError(f"{p}: not a simulation result (no mean_ttft_ms key)")
    return doc


def _latency_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = [k for k in a if METRIC_KEY.match(k) and k in b]

    def order(k: str) -> tuple[int, float]:
        stat, metric = METRIC_KEY.match(k).groups()  # type: ignore[union-attr]
        rank = STAT_ORDER.get(stat, 3)
        return (("ttft", "tpot", "itl", "e2el").index(metric), rank + (float(stat[1:]) / 1000 if rank == 3 else 0))
    return sorted(keys, key=order)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def compare_results(engine: dict[str, Any], sim: dict[str, Any]) -> pl.DataFrame:
    """One row per metric present on both sides (see the module docstring).

    Columns: group, metric, engine, simulated, diff (simulated - engine), error_pct (diff / engine x 100;
    null when the engine's value is 0 or missing).
    """
    rows: list[tuple[str, str, float | None, float | None]] = []
    for group, keys in (("workload", WORKLOAD), ("throughput", THROUGHPUT),
                        ("latency", tuple(_latency_keys(engine, sim))), ("speculative decoding", SPEC)):
        for k in keys:
            if k in engine and k in sim and (_num(engine[k]) is not None or _num(sim[k]) is not None):
                rows.append((group, k, _num(engine[k]), _num(sim[k])))
    a = engine.get("spec_decode_per_position_acceptance_rates") or []
    b = sim.get("spec_decode_per_position_acceptance_rates") or []
    for i in range(min(len(a), len(b))):
        rows.append(("speculative decoding", f"spec_decode_per_position_acceptance_rates[{i}]", _num(a[i]), _num(b[i])))
    out = pl.DataFrame(rows, schema={"group": pl.Utf8, "metric": pl.Utf8, "engine": pl.Float64,
                                     "simulated": pl.Float64}, orient="row")
    return out.with_columns(diff=pl.col("simulated") - pl.col("engine")).with_columns(
        error_pct=pl.when(pl.col("engine").abs() > 0).then(100 * pl.col("diff") / pl.col("engine").abs())
        .otherwise(None))


def workload_notes(engine: dict[str, Any], sim: dict[str, Any], tolerance: float = 0.01) -> list[str]:
    """Lines warning where the two runs did not serve the same workload (within `tolerance`)."""
    notes = []
    for k in ("num_prompts", "total_input_tokens", "total_output_tokens"):
        x, y = _num(engine.get(k)), _num(sim.get(k))
        if x is not None and y is not None and abs(x - y) > tolerance * max(abs(x), 1.0):
            notes.append(f"workloads differ: {k} {x:,.0f} (engine) vs {y:,.0f} (simulated)")
    if engine.get("max_concurrency") not in (None, "None"):
        notes.append(f"the benchmark capped client concurrency at {engine['max_concurrency']}; the simulator sends "
                     "every request at its arrival time (no client-side cap)")
    return notes


def compare_text(table: pl.DataFrame, bench: BenchResult, run: str, notes: list[str]) -> str:
    """The comparison as an aligned text table, with a header naming both sides."""
    src = {"vllm": "vllm bench serve", "sglang": "sglang bench_serving"}[bench.source]
    lines = [f"engine: {bench.path} ({src}{f', line {bench.line}' if bench.line > 1 else ''})", f"simulated: {run}"]
    if bench.renamed:
        lines.append("SGLang keys read as vLLM's: " + ", ".join(f"{k} -> {v}" for k, v in bench.renamed.items()))
    lines += notes
    width = max([len(m) for m in table["metric"].to_list()] + [6])

    def cell(v: float | None, digits: int = 4) -> str:
        if v is None:
            return "-"
        return f"{v:,.0f}" if abs(v) >= 1e5 or (v.is_integer() and abs(v) < 1e15) else f"{v:.{digits}g}"
    head = f"{'metric':<{width}}  {'engine':>12}  {'simulated':>12}  {'error':>9}"
    lines += ["", head, "-" * len(head)]
    group = None
    for r in table.iter_rows(named=True):
        if r["group"] != group:
            group = r["group"]
            lines.append(f"[{group}]")
        err = "-" if r["error_pct"] is None else f"{r['error_pct']:+.1f} %"
        lines.append(f"{r['metric']:<{width}}  {cell(r['engine']):>12}  {cell(r['simulated']):>12}  {err:>9}")
    return "\n".join(lines)


def compare_files(result: str | Path, run: str | Path, line: int | None = None) -> tuple[pl.DataFrame, str]:
    """Read both sides and compare; (table, printed text)."""
    bench = read_bench(result, line)
    sim = read_run(run)
    table = compare_results(bench.data, sim)
    if table.height == 0:
        raise ValueError(f"{result}: no metric in common with {run}")
    return table, compare_text(table, bench, str(run), workload_notes(bench.data, sim))
