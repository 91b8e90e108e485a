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
from simulator.engine import STATUS_NAMES, Engine, StepClock, Workload
from simulator.files import write_json as write_strict_json
from simulator.metrics import (
    acceptance_by_position,
    budget_by_running,
    meets_sla,
    request_latencies,
    summarize,
)
from simulator.policies import make_policy
from simulator.speed import HostSpeed
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
    """One simulation's tables and summary (see the module docstring)."""

    summary: dict[str, Any]
    requests: pl.DataFrame
    steps: pl.DataFrame
    rounds: pl.DataFrame
    config: SimConfig
    meta: dict[str, Any] = field(default_factory=dict)

    def acceptance_by_position(self) -> pl.DataFrame:
        """Conditional acceptance per domain and block position (simulator.metrics)."""
        return acceptance_by_position(self.rounds, self.config.draft_block, self.requests["domain"])

    def budget_by_running(self) -> pl.DataFrame:
        """Mean verify budget (anchor incl.) per number of decoding requests in a step."""
        return budget_by_running(self.steps)

    @cached_property
    def bench(self) -> dict[str, Any]:
        """The run as a `vllm bench serve` result: vLLM's keys and definitions (simulator.vllm_metrics)."""
        from simulator.vllm_metrics import bench_result, parse_goodput

        meta = {"label": self.config.policy, "model_id": self.meta.get("profile", self.config.profile),
                "trace": self.meta.get("trace")}
        return bench_result(self.requests, self.steps, self.rounds, block=self.config.draft_block,
                            goodput=parse_goodput(self.config.goodput), meta=meta)

    def about(self) -> dict[str, Any]:
        """What identifies the run, for a result set's manifest (trace, policy, seed, rate scale)."""
        return {"command": "simulate", "trace": self.meta.get("trace"), "policy": self.config.policy,
                "seed": self.config.seed, "rate_scale": self.config.rate_scale}

    def write_files(self, folder: str | Path) -> list[Path]:
        """The Parquet tables, summary.json and result.json into `folder` (e.g. a ResultSet's
        staging folder), each file atomically; returns their paths (RESULT_FILES, in order)."""
        folder = Path(folder)
        files = {"requests.parquet": self.requests, "steps.parquet": self.steps,
                 "rounds.parquet": self.rounds, "acceptance.parquet": self.acceptance_by_position(),
                 "budget.parquet": self.budget_by_running()}
        doc = {"summary": self.summary, "config": self.config.to_dict(), "meta": self.meta}
        for name, df in files.items():
            write_parquet(folder / name, df)
        write_json(folder / "summary.json", doc, indent=2, default=_json_default)
        write_strict_json(folder / "result.json", self.bench)
        return [folder / name for name in RESULT_FILES]

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


def _workload(trace: pl.DataFrame | str | Path, config: SimConfig) -> tuple[Any, pl.DataFrame, str, float]:
    from simulator.engine import Workload
    from simulator.trace import load_trace, resolve_trace

    if isinstance(trace, pl.DataFrame):
        df, name = trace, "dataframe"
    else:
        path = resolve_trace(trace)
        df, name = load_trace(path), Path(path).name
    if config.max_requests is not None:
        df = df.head(config.max_requests)
    if df.height == 0:
        raise ValueError(f"trace {name}: no requests to simulate")
    raw = df["arrival_s"].to_numpy().astype(np.float64)
    arrival, offset = relative_arrivals(raw, config.rate_scale, name)
    if np.any(np.diff(arrival) < 0):
        raise ValueError(f"trace {name}: arrival_s must not decrease")
    prompts = df["prompt"].to_list() if "prompt" in df.columns else None
    work = Workload(ids=df["id"].cast(pl.Utf8).to_list(), arrival=arrival,
                    prompt=df["prompt_tokens"].to_numpy().astype(np.int64),
                    output=df["output_tokens"].to_numpy().astype(np.int64),
                    domains=df["domain"].cast(pl.Utf8).to_list(), prompts=prompts)
    if np.any(work.prompt < 1) or np.any(work.output < 1):
        raise ValueError(f"trace {name}: prompt_tokens and output_tokens must be >= 1")
    return work, df, name, offset


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


def effective_config(config: SimConfig, work: Workload, kv_blocks: int) -> SimConfig:
    """`config` with max_running and prefill_chunk cut to what `work` can use (same simulation).

    Resident requests never exceed the requests in the trace nor the KV blocks (each holds at least
    one); one step never prefills more than every request's prompt and output together, nor more
    than the KV cache holds. Sizes allocated per slot and per batch token then follow the run, not
    the flags (`--max-running 1e9` allocated 8 GB). ValueError when even the cut step exceeds
    MAX_STEP_TOKENS.
    """
    n = len(work.ids)
    running = max(1, min(config.max_running, n, kv_blocks))
    tokens = int(work.prompt.sum() + work.output.sum())
    chunk = max(1, min(config.prefill_chunk, tokens, kv_blocks * config.kv_block_size))
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
             speed: HostSpeed | None = None, cost: StepCost | None = None) -> SimResult:
    """Run one simulation of `trace` (DataFrame, path, or bundled name) under `config`.

    Args:
        trace: the requests (trace schema, simulator.trace).
        config: settings (SimConfig defaults when None).
        backend: acceptance backend; None builds it from the config (synthetic or recorded).
        progress: show a tqdm bar in simulated seconds.
        curve: a step-time curve by batch tokens only, overriding the profile's verify grid (tests,
            what-if analysis); the profile still gives the drafter's price.
        cost: a step-cost model overriding `config.profile` entirely (sparksched.cost.StepCost).
        speed: the host's speed against the profile, by batch and over time (simulator.speed; what-if
            analysis, replaying a measured run's host speed); None: the profile's speed.
    Returns:
        SimResult with summary, requests, steps and rounds.
    """
    config = config or SimConfig()
    wall0 = time.perf_counter()
    if config.clock == "measured" and backend is None:
        raise ValueError("clock 'measured' needs a backend that measures wall time (the real loop, --engine "
                         "model); the synthetic and recorded backends measure nothing")
    work, df, trace_name, offset = _workload(trace, config)
    profile = None
    if cost is None:
        profile = _profile_or_none(config.profile)
        if curve is not None:
            cost = StepCost.from_curve(curve, tuple((profile or {}).get("draft") or ()),
                                       int(((profile or {}).get("drafter") or {}).get("layers", 1) or 1))
        else:
            cost = StepCost.from_profile(profile) if profile is not None else StepCost.load(config.profile)
    g = config.draft_block
    if config.kv_blocks is not None:
        kv_blocks, kv_note = config.kv_blocks, "configured"
    else:
        kv_blocks, kv_note = derive_kv_blocks(profile, config.kv_block_size)
    user_config, config = config, effective_config(config, work, kv_blocks)
    if profile is not None and g > 0 and not profile.get("draft"):
        warnings.warn(f"{profile.get('_source', 'profile')} has no draft rows: the drafter is charged 0 s per step, "
                      "so speculative policies look faster than they are (profile the drafter too)",
                      ProfileWarning, stacklevel=2)
    if backend is None:
        backend = make_backend(config)
    elif g > backend.block:
        raise ValueError(f"backend drafts at most {backend.block} tokens, config needs block {g}")
    policy = make_policy(config)
    clock = StepClock(cost, config.drafter_family, g, config.max_running)
    env = simpy.Environment()
    bar = None
    tick = None
    if progress:
        from tqdm import tqdm

        end_guess = float(work.arrival[-1])
        bar = tqdm(total=max(end_guess, 0.1), unit="sim-s", desc=f"simulate {trace_name}",
                   bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} sim-s [{elapsed}<{remaining}]")

        def tick(now: float) -> None:  # the bar's total grows with the clock: n never passes it
            now = float(now)
            if now > bar.total:
                bar.total = now
            bar.n = now
            bar.update(0)  # refreshes at tqdm's usual rate

    engine = Engine(env, work, config, backend, policy, clock, kv_blocks, tick, speed)
    env.process(engine.arrivals())
    done = env.process(engine.run())
    if config.horizon_s is not None:
        env.run(until=simpy.events.AnyOf(env, [done, env.timeout(config.horizon_s)]))
        if not done.triggered:
            engine.close_open(f"horizon {config.horizon_s:g} s reached")
    else:
        env.run(until=done)
    if bar is not None:
        bar.total = max(bar.total, float(env.now))
        bar.n = float(env.now)
        bar.refresh()
        bar.close()
    wall = time.perf_counter() - wall0
    requests, steps, rounds = _tables(engine, df, work)
    summary = summarize(requests, steps, rounds, block=g, sla_tps=config.sla_tps, sla_ttft_s=config.sla_ttft_s)
    summary["wall_s"] = wall
    summary["sim_per_wall"] = env.now / wall if wall > 0 else math.inf
    meta = {"trace": trace_name, "policy": config.policy, "drafter": config.drafter_family, "block": g,
            "backend": getattr(backend, "name", type(backend).__name__), "kv_blocks": kv_blocks,
            "kv_blocks_source": kv_note, "drafter_latency": clock.draft_note, "profile": config.profile,
            "cost": repr(cost), "wall_s": wall, "sim_per_wall": summary["sim_per_wall"],
            "simulated_s": env.now, "host_speed": None if speed is None else repr(speed),
            "arrival_offset_s": offset, "max_running_used": config.max_running,
            "prefill_chunk_used": config.prefill_chunk}
    return SimResult(summary, requests, steps, rounds, user_config, meta)


def _tables(engine: Engine, df: pl.DataFrame, work: Workload) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    e = engine
    rounds = pl.DataFrame(e.record.round_columns())
    who = rounds["request"].to_numpy()
    per = {k: np.bincount(who, weights=None if k == "rounds" else rounds[k].to_numpy(),
                          minlength=e.n_requests).astype(np.int64)
           for k in ("rounds", "drafted", "verified", "accepted")}
    status = np.asarray(STATUS_NAMES, dtype=object)[e.status]
    reason = [e.reason.get(i) for i in range(e.n_requests)]
    cols: dict[str, Any] = {
        "id": work.ids, "domain": work.domains, "arrival_s": work.arrival,
        "prompt_tokens": work.prompt, "output_tokens": work.output, "emitted_tokens": e.emitted,
        "status": status.tolist(), "reason": pl.Series("reason", reason, dtype=pl.Utf8),
        "admitted_s": e.admit_s, "first_token_s": e.first_s, "finish_s": e.finish_s,
        "rounds": per["rounds"], "drafted": per["drafted"], "verified": per["verified"],
        "accepted": per["accepted"],
        "preemptions": e.preemptions,
    }
    requests = pl.DataFrame(cols).with_columns(pl.col(c).fill_nan(None) for c in
                                               ("admitted_s", "first_token_s", "finish_s"))
    if "slo_tps" in df.columns:
        requests = requests.with_columns(df["slo_tps"].alias("slo_tps"))
    requests = request_latencies(requests)
    requests = requests.with_columns(meets_sla(requests, e.cfg.sla_tps, e.cfg.sla_ttft_s))
    steps = pl.DataFrame(e.record.step_columns())
    return requests, steps, rounds
