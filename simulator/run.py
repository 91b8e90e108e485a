"""`simulate`: replay a trace through the engine and collect what users and operators would see.

    from simulator.run import simulate
    from simulator.config import SimConfig
    res = simulate("chat", SimConfig(policy="dspark"))
    print(res.table())
    res.write("runs/chat-dspark")   # Parquet tables, summary.json, result.json, manifest.json

The result holds three polars tables: `requests` (one row per trace request, every request present:
finished, rejected or unfinished with a reason), `steps` (one row per engine step) and `rounds` (one
row per decoding request per step: verified drafts, accepted drafts, emitted tokens), `summary`,
a dict of scalars (definitions in `simulator.metrics`), and `bench`, the same run in the keys and
definitions of a `vllm bench serve` result (simulator.vllm_metrics), written as result.json.

Arrivals run on a clock that starts at the trace's first arrival, less its fractional second: a
trace stamped in epoch seconds (1.7e9) is shifted by an exact whole number of seconds, so every
time keeps its float64 precision. The shift is `meta["arrival_offset_s"]` (in summary.json).
Arrivals whose float64 spacing is coarser than a microsecond (>= 2**33 s, e.g. epoch microseconds
read as seconds) are refused when the trace loads, and so is a `rate_scale` that stretches the
trace past that.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import simpy

from simulator.backend import Backend
from simulator.config import SimConfig
from simulator.engine import DONE, STATUS_NAMES, WAITING, Engine, StepClock
from simulator.files import write_json as write_strict_json
from simulator.metrics import (
    acceptance_by_position,
    budget_by_running,
    meets_sla,
    request_latencies,
    summarize_streamed,
)
from simulator.policies import make_policy
from simulator.records import Recorder, RunTables
from simulator.source import Book
from simulator.speed import HostSpeed
from simulator.stats import GapStats, RoundStats, StepStats
from sparksched.cost import DTYPE_BYTES, StepCost
from sparksched.curve import ThroughputCurve
from sparksched.io import ResultSet, write_json, write_parquet
from sparksched.profile import ProfileWarning

GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default share of device memory for weights + KV cache
FALLBACK_KV_BLOCKS = 16384  # when a profile lacks model/device facts: 262k tokens at block 16
MAX_ARRIVAL_S = 2.0**33  # float64 spacing of larger times is coarser than a microsecond (2**-19 s)
# tokens one step may batch (decode + chunked prefill); the step-time tables hold one entry per
# token. Engines batch 8k-64k; a million is far past any, and keeps every table below 8 MB
MAX_STEP_TOKENS = 1 << 20
# the files SimResult.write puts into a run directory
RESULT_FILES = ("requests.parquet", "steps.parquet", "rounds.parquet", "acceptance.parquet", "budget.parquet",
                "summary.json", "result.json")


@dataclass
class SimResult:
    """One simulation's tables and summary (see the module docstring).

    `steps` and `rounds` are DataFrames, or, for a run streamed into a folder (`simulate(folder=...)`),
    read from its Parquet files when asked for; a table the run did not log (`SimConfig.log`) is
    empty. `stats` holds the run's streaming summaries (simulator.stats), which the per-position
    acceptance, the verify budget and the vLLM-keyed result are computed from.
    """

    summary: dict[str, Any]
    requests: pl.DataFrame
    _steps: pl.DataFrame | Path
    _rounds: pl.DataFrame | Path
    config: SimConfig
    meta: dict[str, Any] = field(default_factory=dict)
    stats: Any = None

    @property
    def steps(self) -> pl.DataFrame:
        """The steps table (one row per engine step, per replica in a fleet)."""
        return self._table(self._steps)

    @property
    def rounds(self) -> pl.DataFrame:
        """The rounds table (one row per decoding request per step)."""
        return self._table(self._rounds)

    @staticmethod
    def _table(t: pl.DataFrame | Path) -> pl.DataFrame:
        return t if isinstance(t, pl.DataFrame) else pl.read_parquet(t)

    def relocate(self, folder: str | Path) -> None:
        """Read streamed tables from `folder` from now on (after the run's result set was published)."""
        folder = Path(folder)
        if isinstance(self._steps, Path):
            self._steps = folder / self._steps.name
        if isinstance(self._rounds, Path):
            self._rounds = folder / self._rounds.name

    def acceptance_by_position(self) -> pl.DataFrame:
        """Conditional acceptance per domain and block position (simulator.metrics)."""
        if self.stats is None:
            return acceptance_by_position(self.rounds, self.config.draft_block, self.requests["domain"])
        return self.stats["rounds"].acceptance_table(self.stats["domains"])

    def budget_by_running(self) -> pl.DataFrame:
        """Mean verify budget (anchor incl.) per number of decoding requests in a step."""
        if self.stats is None:
            return budget_by_running(self.steps)
        return self.stats["steps"].budget_table()

    @cached_property
    def bench(self) -> dict[str, Any]:
        """The run as a `vllm bench serve` result: vLLM's keys and definitions (simulator.vllm_metrics)."""
        from simulator.vllm_metrics import bench_result, bench_result_streamed, parse_goodput

        meta = {"label": self.config.policy, "model_id": self.meta.get("profile", self.config.profile),
                "trace": self.meta.get("trace")}
        if self.stats is None:
            return bench_result(self.requests, self.steps, self.rounds, block=self.config.draft_block,
                                goodput=parse_goodput(self.config.goodput), meta=meta)
        return bench_result_streamed(self.requests, self.stats["rounds"], self.stats["gaps"],
                                     block=self.config.draft_block, goodput=parse_goodput(self.config.goodput),
                                     meta=meta)

    def about(self) -> dict[str, Any]:
        """What identifies the run, for a result set's manifest (trace, policy, seed, rate scale)."""
        return {"command": "simulate", "trace": self.meta.get("trace"), "policy": self.config.policy,
                "seed": self.config.seed, "rate_scale": self.config.rate_scale}

    def write_files(self, folder: str | Path) -> list[Path]:
        """The Parquet tables, summary.json and result.json into `folder` (e.g. a ResultSet's
        staging folder), each file atomically; returns their paths (RESULT_FILES, in order; tables
        the run did not log are left out). Tables a streamed run already wrote there stay as they are."""
        folder = Path(folder)
        files: dict[str, Any] = {"requests.parquet": self.requests}
        for name, t in (("steps", self._steps), ("rounds", self._rounds)):
            if name in self.config.log:
                files[f"{name}.parquet"] = t
        files["acceptance.parquet"] = self.acceptance_by_position()
        files["budget.parquet"] = self.budget_by_running()
        doc = {"summary": self.summary, "config": self.config.to_dict(), "meta": self.meta}
        for name, df in files.items():
            if isinstance(df, Path):
                if df.resolve() != (folder / name).resolve():
                    write_parquet(folder / name, pl.read_parquet(df))
                continue
            write_parquet(folder / name, df)
        write_json(folder / "summary.json", doc, indent=2, default=_json_default)
        write_strict_json(folder / "result.json", self.bench)
        return [folder / name for name in RESULT_FILES if name in files or name.endswith(".json")]

    def write(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write the result set into `directory`, whole or not at all (`sparksched.io.ResultSet`):
        the Parquet tables, summary.json, result.json and manifest.json.

        An existing non-empty `directory` is refused unless `overwrite` (then it is replaced, never
        merged). Write errors raise `sparksched.io.OutputError` naming the file.
        """
        with ResultSet(directory, overwrite=overwrite, names=RESULT_FILES, about=self.about()) as rs:
            self.write_files(rs.folder)
        return Path(directory)

    def table(self) -> str:
        """The summary as an aligned text table."""
        return summary_table(self.summary, self.meta, self.bench)


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return str(x)


def summary_table(s: dict[str, Any], meta: dict[str, Any] | None = None,
                  bench: dict[str, Any] | None = None) -> str:
    """Human-readable summary: the headline numbers, one per line.

    With `bench` (the vLLM-keyed result), latencies are vLLM's: mean / median / P90 / P99 in ms.
    """
    def f(v: Any, unit: str = "", digits: int = 3) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.{digits}g}{unit}" if abs(v) < 1e4 else f"{v:,.0f}{unit}"
        return f"{v}{unit}"

    def ms(v: Any) -> str:
        return "-" if v is None else f"{1000 * v:.1f} ms"

    meta = meta or {}
    rows = [
        ("policy / drafter / block", f"{meta.get('policy', '?')} / {meta.get('drafter', '?')} / "
                                     f"{meta.get('block', '?')}"),
        ("requests", f"{s['requests']} ({s['finished']} finished, {s['rejected']} rejected, "
                     f"{s['unfinished']} unfinished)"),
        ("simulated time", f(s["duration_s"], " s")),
        ("throughput", f(s["throughput_tps"], " tok/s")),
        ("per-user tok/s P50 / P90 / P99", " / ".join(f(s[f"user_tps_p{q}"]) for q in (50, 90, 99))),
    ]
    if bench is not None:
        for key, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2EL")):
            stats = [bench.get(f"{k}_{key}_ms") for k in ("mean", "median", "p90", "p99")]
            rows.append((f"{label} mean / median / P90 / P99",
                         " / ".join("-" if v is None else f"{v:.1f}" for v in stats) + " ms"))
    else:
        rows += [
            ("TTFT P50 / P90 / P99", " / ".join(ms(s[f"ttft_p{q}_s"]) for q in (50, 90, 99))),
            ("TPOT P50 / P90 / P99", " / ".join(ms(s[f"tpot_p{q}_s"]) for q in (50, 90, 99))),
            ("ITL per step P50 / P99", " / ".join(ms(s[f"itl_step_p{q}_s"]) for q in (50, 99))),
        ]
    rows += [
        ("ITL per token P50 / P99", " / ".join(ms(s[f"itl_token_p{q}_s"]) for q in (50, 99))),
        ("accepted length per round", f(s["mean_accepted_per_round"])),
        ("verify budget / request (anchor incl.)", f(s["mean_verify_budget"])),
        ("acceptance by position", " ".join(f"{a:.2f}" if a is not None else "-"
                                             for a in s["acceptance_by_position"]) or "-"),
    ]
    if bench is not None and "spec_decode_acceptance_length" in bench:
        rows.append(("vLLM acceptance length / rate", f"{bench['spec_decode_acceptance_length']:.2f} / "
                                                      f"{bench['spec_decode_acceptance_rate']:.1f} %"))
    rows.append((f"goodput (TTFT <= {s['sla_ttft_s']:g} s, >= {s['sla_tps']:g} tok/s/user)",
                 f"{100 * s['goodput_share']:.1f} % of requests, {f(s['goodput_tps'], ' tok/s')}"))
    if bench is not None and bench.get("request_goodput") is not None:
        from simulator.vllm_metrics import format_goodput

        rows.append((f"request goodput ({format_goodput(bench['dspark_goodput_slos_ms'])} ms)",
                     f"{bench['request_goodput']:.2f} req/s ({100 * bench['dspark_slo_attainment']:.1f} % of requests)"))
    if s.get("prefix_cache"):
        pc = s["prefix_cache"]
        rate = "-" if pc["hit_rate"] is None else f"{100 * pc['hit_rate']:.1f} %"
        rows.append(("prefix cache hit rate / prefill saved", f"{rate} of {pc['blocks_looked_up']:,} blocks / "
                                                             f"{pc['saved_prefill_tokens']:,} tokens"))
    if s.get("replicas"):
        rows.append(("replicas (requests, P50 user tok/s)",
                     " | ".join(f"{r['requests']}, {f(r['user_tps_p50'])}" for r in s["replicas"])))
    rows += [
        ("preemptions", f(s["preemptions"])),
        ("steps (mean batch tokens)", f"{s['steps']} ({f(s.get('mean_batch_tokens'))})"),
    ]
    if s["unfinished_reasons"]:
        rows.append(("not finished", "; ".join(f"{k}: {v}" for k, v in s["unfinished_reasons"].items())))
    if "wall_s" in meta:
        rate = meta.get("sim_per_wall", 0)
        rows.append(("wall time", f"{meta['wall_s']:.2f} s ({rate:,.0f} sim-s per wall-s)" if rate >= 10
                     else f"{meta['wall_s']:.2f} s ({rate:.2g} sim-s per wall-s)"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def derive_kv_blocks(profile: dict[str, Any] | None, block_size: int) -> tuple[int, str]:
    """KV blocks the profiled device holds for the profiled model, vLLM-style, and how it was derived.

    blocks = (0.9 x device memory - weights) / (layers x 2 x kv_heads x head_dim x dtype bytes x
    block_size). A roofline profile of a deployment states its KV capacity per attention group
    (`deployment.kv_capacity_tokens`: MLA latents, sliding windows, TP / DP splits and FP8 KV
    included), which is used as is. FALLBACK_KV_BLOCKS when the profile lacks any of those facts
    (a CPU profile has no device memory). Facts that are present but impossible are errors, not a
    fallback: a dtype without a known size, or weights that do not fit in the device's memory
    (`load_profile` already refuses non-positive sizes).
    """
    cap = ((profile or {}).get("deployment") or {}).get("kv_capacity_tokens")
    if isinstance(cap, (int, float)) and not isinstance(cap, bool) and cap >= block_size:
        return int(cap // block_size), f"profile deployment: {int(cap):,} KV tokens per attention group"
    where = (profile or {}).get("_source", "profile")
    model, device = (profile or {}).get("model") or {}, (profile or {}).get("device") or {}
    needed = {"model": ("layers", "kv_heads", "head_dim", "parameters"), "device": ("memory_bytes",)}
    have = {"model": model, "device": device}
    if profile is None or any(k not in have[part] for part, keys in needed.items() for k in keys):
        return FALLBACK_KV_BLOCKS, f"fallback {FALLBACK_KV_BLOCKS} blocks (profile lacks model/device facts)"
    dtype = str(profile.get("dtype", "bfloat16")).replace("torch.", "")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"{where}: field 'dtype': no known bytes per element for {dtype!r} (known: "
                         f"{', '.join(sorted(DTYPE_BYTES))}), so the KV cache cannot be sized; pass --kv-blocks")
    s = DTYPE_BYTES[dtype]
    per_token = int(model["layers"]) * 2 * int(model["kv_heads"]) * int(model["head_dim"]) * s
    memory = float(device["memory_bytes"])
    free = GPU_MEMORY_UTILIZATION * memory - float(model["parameters"]) * s
    blocks = int(free // (per_token * block_size))
    if blocks < 1:
        raise ValueError(f"{where}: the model's weights ({float(model['parameters']) * s / 2**30:.3g} GiB in {dtype}) "
                         f"leave no KV cache in {GPU_MEMORY_UTILIZATION:g} x the device memory "
                         f"({memory / 2**30:.3g} GiB): fields 'model.parameters' / 'device.memory_bytes'; "
                         "pass --kv-blocks to simulate anyway")
    return blocks, (f"derived: {GPU_MEMORY_UTILIZATION:g} x {memory / 2**30:.0f} GiB "
                    f"- weights, {per_token / 1024:.0f} KiB/token")


def _profile_or_none(name: str) -> dict[str, Any] | None:
    """The profile `name` names, or None when it is an SGLang cost table (no profile facts)."""
    from sparksched.profile import load_profile, read_json, resolve_profile
    from sparksched.sglang_tables import is_sglang_table

    path = resolve_profile(name)
    data = read_json(path, "profile")
    if isinstance(data, dict) and is_sglang_table(data):
        return None
    return load_profile(path)


def relative_arrivals(arrival_s: np.ndarray, rate_scale: float, where: str = "trace") -> tuple[np.ndarray, float]:
    """(arrivals on the simulation clock [n] s, offset s): (arrival - offset) / rate_scale.

    offset = the whole seconds of the first arrival, subtracted exactly, so an epoch-stamped trace
    keeps microsecond precision. ValueError when a time is beyond MAX_ARRIVAL_S (coarser than a
    microsecond in float64), before or after the rate scaling.
    """
    a = np.asarray(arrival_s, dtype=np.float64)
    bad = ~np.isfinite(a) | (np.abs(a) >= MAX_ARRIVAL_S)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{where}: line {i + 1}: field 'arrival_s': {a[i]!r} s is beyond {MAX_ARRIVAL_S:.4g} s, "
                         "where float64 cannot hold microseconds (epoch micro- or milliseconds read as seconds?)")
    offset = float(math.floor(a[0])) if a.size else 0.0
    if not (isinstance(rate_scale, (int, float)) and math.isfinite(rate_scale) and rate_scale > 0):
        raise ValueError(f"rate_scale must be a finite number > 0, got {rate_scale!r}")
    with np.errstate(over="ignore"):
        scaled = (a - offset) / float(rate_scale)
    span = float(scaled[-1]) if scaled.size else 0.0
    if not math.isfinite(span) or span >= MAX_ARRIVAL_S:
        raise ValueError(f"rate_scale {rate_scale:g} stretches {where} to {span:.4g} s of arrivals, beyond "
                         f"{MAX_ARRIVAL_S:.4g} s (the clock's microsecond precision); use a larger rate_scale")
    return scaled, offset


def effective_config(config: SimConfig, book: Book, kv_blocks: int) -> SimConfig:
    """`config` with max_running and prefill_chunk cut to what the trace can use (same simulation).

    Resident requests never exceed the requests in the trace nor the KV blocks (each holds at least
    one); one step never prefills more than every request's prompt and output together (known when
    the whole trace fits in the first chunk read), nor more than the KV cache holds. Sizes allocated
    per slot and per batch token then follow the run, not the flags (`--max-running 1e9` allocated
    8 GB). ValueError when even the cut step exceeds MAX_STEP_TOKENS.
    """
    n = book.n if book.exhausted else book.capacity
    running = max(1, min(config.max_running, n, kv_blocks))
    chunk = min(config.prefill_chunk, kv_blocks * config.kv_block_size)
    if book.exhausted:
        chunk = min(chunk, int(book.prompt[:book.n].sum() + book.output[:book.n].sum()))
    chunk = max(1, chunk)
    step = running * (config.draft_block + 1) + chunk
    if step > MAX_STEP_TOKENS:
        raise ValueError(f"max_running x (block + 1) + prefill_chunk = {running} x {config.draft_block + 1} + {chunk} "
                         f"= {step:,} tokens in one step (after cutting both to what the trace and KV cache can "
                         f"use); the limit is {MAX_STEP_TOKENS:,}: lower --max-running or --prefill-chunk")
    if running == config.max_running and chunk == config.prefill_chunk:
        return config
    return config.replace(max_running=running, prefill_chunk=chunk)


def make_backend(config: SimConfig) -> Backend:
    """The acceptance backend a config names: synthetic presets or a recorded-rounds file."""
    if config.acceptance == "synthetic":
        from simulator.acceptance import SyntheticAcceptance

        return SyntheticAcceptance(config.drafter_family, config.draft_block, config.max_running, config.seed,
                                   config.conf_auc, config.conf_ece, config.mtp1_acceptance)
    from simulator.recorded import RecordedAcceptance

    return RecordedAcceptance.from_file(config.acceptance, config.draft_block, config.max_running, config.seed,
                                        match_ids=config.recorded_donors == "request")


def simulate(trace: pl.DataFrame | str | Path, config: SimConfig | None = None, backend: Backend | None = None,
             progress: bool = False, curve: ThroughputCurve | None = None,
             speed: HostSpeed | None = None, cost: StepCost | None = None,
             folder: str | Path | None = None) -> SimResult:
    """Run one simulation of `trace` (DataFrame, path, or bundled name) under `config`.

    Args:
        trace: the requests (trace schema, simulator.trace), read as a stream as the clock reaches them.
        config: settings (SimConfig defaults when None); `replicas` > 1 runs a fleet behind `router`.
        backend: acceptance backend; None builds it from the config (synthetic or recorded). A fleet
            builds one per replica (a given backend is for a single replica only).
        progress: show a tqdm bar in simulated seconds.
        curve: a step-time curve by batch tokens only, overriding the profile's verify grid (tests,
            what-if analysis); the profile still gives the drafter's price.
        cost: a step-cost model overriding `config.profile` entirely (sparksched.cost.StepCost).
        speed: the host's speed against the profile, by batch and over time (simulator.speed; what-if
            analysis, replaying a measured run's host speed); None: the profile's speed.
        folder: stream the logged steps and rounds tables into this folder as the run goes (Parquet
            parts joined at the end into steps.parquet / rounds.parquet; e.g. a ResultSet's staging
            folder); None keeps them in memory.
    Returns:
        SimResult with summary, requests, steps and rounds.
    """
    from simulator.fleet import Dispatcher, check_router

    config = config or SimConfig()
    wall0 = time.perf_counter()
    if config.clock == "measured" and backend is None:
        raise ValueError("clock 'measured' needs a backend that measures wall time (the real loop, --engine "
                         "model); the synthetic and recorded backends measure nothing")
    if backend is not None and config.replicas > 1:
        raise ValueError("a given backend serves one replica; a fleet builds one backend per replica")
    book = Book(trace, config.rate_scale, config.max_requests)
    book.need(0)  # the first chunk: errors in its lines, and what the trace carries, before the run
    trace_name = book.name
    if config.replicas > 1:
        check_router(config.router, book)
    profiles = list(config.replica_profiles) or [config.profile]
    replica_costs: dict[str, tuple[StepCost, dict[str, Any] | None]] = {}
    for name in dict.fromkeys(profiles):
        prof = None
        if cost is not None:
            c = cost
        else:
            prof = _profile_or_none(name)
            if curve is not None:
                c = StepCost.from_curve(curve, tuple((prof or {}).get("draft") or ()),
                                        int(((prof or {}).get("drafter") or {}).get("layers", 1) or 1))
            else:
                c = StepCost.from_profile(prof) if prof is not None else StepCost.load(name)
        replica_costs[name] = (c, prof)
    g = config.draft_block
    kv_by_profile: dict[str, tuple[int, str]] = {}
    for name, (_, prof) in replica_costs.items():
        kv_by_profile[name] = ((config.kv_blocks, "configured") if config.kv_blocks is not None
                               else derive_kv_blocks(prof, config.kv_block_size))
    kv_blocks, kv_note = kv_by_profile[profiles[0]]
    user_config = config
    config = effective_config(config, book, max(k for k, _ in kv_by_profile.values()))
    for _, prof in replica_costs.values():
        if prof is not None and g > 0 and not prof.get("draft"):
            warnings.warn(f"{prof.get('_source', 'profile')} has no draft rows: the drafter is charged 0 s per step, "
                          "so speculative policies look faster than they are (profile the drafter too)",
                          ProfileWarning, stacklevel=2)
    if backend is not None and g > backend.block:
        raise ValueError(f"backend drafts at most {backend.block} tokens, config needs block {g}")
    env = simpy.Environment()
    bar = None
    tick = None
    if progress:
        from tqdm import tqdm

        book.need_until(math.inf) if book.exhausted else None
        end_guess = float(book.arrival[book.n - 1])
        bar = tqdm(total=max(end_guess, 0.1), unit="sim-s", desc=f"simulate {trace_name}",
                   bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} sim-s [{elapsed}<{remaining}]")

        def tick(now: float) -> None:  # the bar's total grows with the clock: n never passes it
            now = float(now)
            if now > bar.total:
                bar.total = now
            bar.n = now
            bar.update(0)  # refreshes at tqdm's usual rate

    n_rep = config.replicas
    feed = Dispatcher(env, book, config.router if n_rep > 1 else None, WAITING)
    target = Path(folder) if folder is not None else None
    run_tables = RunTables(target, config.log)
    round_stats, gaps = RoundStats(g), GapStats(DONE)
    fleet_steps = StepStats()
    engines = []
    for k in range(n_rep):
        name = profiles[k % len(profiles)]
        c, _ = replica_costs[name]
        kv_k = kv_by_profile[name][0]
        be = backend if backend is not None else make_backend(config)
        rec = Recorder(book, k, round_stats, gaps, StepStats() if n_rep > 1 else fleet_steps,
                       fleet_steps if n_rep > 1 else None, run_tables, with_replica=n_rep > 1)
        engines.append(Engine(env, book, config, be, make_policy(config), StepClock(c, config.drafter_family, g,
                              config.max_running), kv_k, rec, feed, tick, speed, replica=k))
    feed.attach(engines)
    env.process(feed.arrivals())
    procs = [env.process(e.run()) for e in engines]
    done = procs[0] if n_rep == 1 else simpy.AllOf(env, procs)
    if config.horizon_s is not None:
        env.run(until=simpy.events.AnyOf(env, [done, env.timeout(config.horizon_s)]))
        if not done.triggered:
            engines[0].close_open(f"horizon {config.horizon_s:g} s reached")
    else:
        env.run(until=done)
    if bar is not None:
        bar.total = max(bar.total, float(env.now))
        bar.n = float(env.now)
        bar.refresh()
        bar.close()
    tables = engines[0].slots.to_tables()  # every replica's log: flushed, then the tables finished
    gaps.settle(book.status, final=True)
    wall = time.perf_counter() - wall0
    requests = _requests_table(book, config, n_rep > 1)
    steps_t, rounds_t = tables["steps"], tables["rounds"]
    summary = summarize_streamed(requests, fleet_steps, round_stats, gaps, sla_tps=config.sla_tps,
                                 sla_ttft_s=config.sla_ttft_s)
    if book.has_prefix and config.prefix_cache and not config.disaggregated:
        summary["prefix_cache"] = prefix_counters([e.slots.cache for e in engines], requests)
    if n_rep > 1:
        summary["replicas"] = per_replica(requests, [e.slots.log.step_stats for e in engines])
        if "prefix_cache" in summary:
            for row, e in zip(summary["replicas"], engines):
                row["prefix_cache"] = e.slots.cache.counters()
    summary["wall_s"] = wall
    summary["sim_per_wall"] = env.now / wall if wall > 0 else math.inf
    clock0 = engines[0].clock
    meta = {"trace": trace_name, "policy": config.policy, "drafter": config.drafter_family, "block": g,
            "backend": getattr(engines[0].backend, "name", type(engines[0].backend).__name__),
            "kv_blocks": kv_blocks, "kv_blocks_source": kv_note, "drafter_latency": clock0.draft_note,
            "profile": config.profile, "cost": repr(replica_costs[profiles[0]][0]), "wall_s": wall,
            "sim_per_wall": summary["sim_per_wall"], "simulated_s": env.now,
            "host_speed": None if speed is None else repr(speed), "arrival_offset_s": book.offset,
            "max_running_used": config.max_running, "prefill_chunk_used": config.prefill_chunk}
    if n_rep > 1:
        meta.update(replicas=n_rep, router=config.router, replica_profiles=[profiles[k % len(profiles)]
                                                                           for k in range(n_rep)])
    stats = {"rounds": round_stats, "gaps": gaps, "steps": fleet_steps, "domains": book.domain_names,
             "replica_steps": [e.slots.log.step_stats for e in engines]}
    return SimResult(summary, requests, steps_t, rounds_t, user_config, meta, stats)


def _requests_table(book: Book, config: SimConfig, fleet: bool) -> pl.DataFrame:
    """The requests table: one row per request of the trace, in trace order (see the module docstring)."""
    n = book.n
    status = np.asarray(STATUS_NAMES, dtype=object)[book.status[:n]]
    reason = [book.reason.get(i) for i in range(n)] if book.reason else [None] * n
    cols: dict[str, Any] = {
        "id": book.id_column(), "domain": book.domain_column(), "arrival_s": book.arrival[:n],
        "prompt_tokens": book.prompt[:n], "output_tokens": book.output[:n], "emitted_tokens": book.emitted[:n],
        "status": status.tolist(), "reason": pl.Series("reason", reason, dtype=pl.Utf8),
        "admitted_s": book.admit_s[:n], "first_token_s": book.first_s[:n], "finish_s": book.finish_s[:n],
        "rounds": book.totals[0, :n], "drafted": book.totals[1, :n], "verified": book.totals[2, :n],
        "accepted": book.totals[3, :n],
        "preemptions": book.preemptions[:n],
    }
    if fleet:
        cols["replica"] = book.replica[:n]
    if book.has_prefix and config.prefix_cache:
        cols["cached_tokens"] = book.cached_tokens[:n]
    requests = pl.DataFrame(cols).with_columns(pl.col(c).fill_nan(None) for c in
                                               ("admitted_s", "first_token_s", "finish_s"))
    if book.has_slo:
        requests = requests.with_columns(pl.Series("slo_tps", book.slo[:n]).fill_nan(None))
    requests = request_latencies(requests)
    return requests.with_columns(meets_sla(requests, config.sla_tps, config.sla_ttft_s))


def prefix_counters(caches: list[Any], requests: pl.DataFrame) -> dict[str, Any]:
    """The fleet's prefix-cache figures: blocks looked up and hit, hit rate, prefill tokens saved (and
    their share of all prompt tokens admitted), blocks evicted."""
    looked = sum(c.looked_up for c in caches)
    hit = sum(c.hit for c in caches)
    saved = sum(c.saved_tokens for c in caches)
    prompt = int(requests["prompt_tokens"].sum())
    return {"blocks_looked_up": looked, "blocks_hit": hit, "hit_rate": hit / looked if looked else None,
            "saved_prefill_tokens": saved, "saved_share_of_prompt_tokens": saved / prompt if prompt else None,
            "blocks_evicted": sum(c.evicted for c in caches), "block_tokens": caches[0].block_tokens}


def per_replica(requests: pl.DataFrame, steps: list[StepStats]) -> list[dict[str, Any]]:
    """Per replica: requests served, finished, output tokens, throughput, median and P90 TTFT and
    per-user speed, time-weighted running requests and steps (the summary's `replicas`)."""
    out = []
    for k, st in enumerate(steps):
        mine = requests.filter(pl.col("replica") == k)
        part = summarize_streamed(mine, st, RoundStats(0), GapStats(DONE), sla_tps=float("inf"), sla_ttft_s=0.0)
        out.append({"replica": k, "requests": mine.height, "finished": part["finished"],
                    "output_tokens": part["output_tokens"], "throughput_tps": part["throughput_tps"],
                    "ttft_p50_s": part["ttft_p50_s"], "ttft_p90_s": part["ttft_p90_s"],
                    "user_tps_p50": part["user_tps_p50"], "user_tps_p90": part["user_tps_p90"],
                    "time_weighted_running": part.get("time_weighted_running"), "steps": part["steps"],
                    "preemptions": part["preemptions"]})
    return out
