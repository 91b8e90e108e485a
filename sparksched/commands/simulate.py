"""`sparksched simulate`: replay a trace through the serving simulator and print the summary.

A thin shell over `simulator.run.simulate`. Library ValueErrors become one-line click errors;
conflicting flags are usage errors (exit 2). The results folder is written whole or not at all
(`sparksched.io.ResultSet`); an existing one is refused unless --overwrite, checked before the run.
The default folder, runs/<trace>-<policy>, names the seed and the rate scale when they are not the
defaults, so runs that differ in them never share one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from sparksched.commands.common import one_line_errors, surface_warnings

POLICY_HELP = ("dspark | mtp1 | static-K | threshold-TAU | verify-all | none | async-dspark | "
               "vllm-adaptive | sglang-adaptive")


def _default_out(trace: str, policy: str, seed: int = 0, rate_scale: float = 1.0) -> Path:
    """runs/<trace>-<policy>[-seed<S>][-x<rate scale>]: runs differing in seed or rate never share a folder."""
    stem = Path(trace).name
    for suffix in (".gz", ".jsonl"):
        stem = stem[: -len(suffix)] if stem.endswith(suffix) else stem
    name = f"{stem}-{policy}"
    if seed != 0:
        name += f"-seed{seed}"
    if rate_scale != 1.0:
        name += f"-x{rate_scale:g}"
    return Path("runs") / name


@click.command()
@click.option("--trace", "trace", required=True, help="Trace file (JSON Lines) or bundled name: chat, code, math, mixed.")
@click.option("--profile", default=None, help="Profile JSON or bundled name [default: h100-qwen3-8b-roofline].")
@click.option("--policy", default="dspark", show_default=True, help=POLICY_HELP)
@click.option("--drafter", default="dspark", show_default=True,
              type=click.Choice(["dspark", "dflash", "eagle3", "mtp1"]), help="Acceptance preset family.")
@click.option("--block", default=7, show_default=True, type=int, help="Draft block size g.")
@click.option("--max-running", default=128, show_default=True, type=int, help="Cap on resident requests.")
@click.option("--kv-blocks", default=None, type=int, help="KV cache blocks [default: derived from the profile].")
@click.option("--kv-block-size", default=16, show_default=True, type=int, help="Tokens per KV block.")
@click.option("--prefill-chunk", default=2048, show_default=True, type=int, help="Prefill tokens per step.")
@click.option("--rate-scale", default=1.0, show_default=True, type=float, help="Arrival-rate multiplier.")
@click.option("--max-requests", default=None, type=int, help="Simulate only the first N requests.")
@click.option("--horizon", "horizon_s", default=None, type=float, help="Stop the clock at this simulated time (s).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of every random draw.")
@click.option("--acceptance", default="synthetic", show_default=True,
              help="'synthetic' presets, or a recorded-rounds file to fit acceptance from.")
@click.option("--recorded-donors", "recorded_donors", default="domain", show_default=True,
              type=click.Choice(["domain", "request"]),
              help="With a recorded-rounds file: each request replays a random recorded request of its domain, "
                   "or the recorded request with its own id (the same trace, replayed).")
@click.option("--conf-auc", default=0.85, show_default=True, type=float, help="Synthetic confidence ROC-AUC.")
@click.option("--conf-ece", default=0.01, show_default=True, type=float,
              help="Synthetic confidence calibration error (0.01 after STS; ~0.055 raw).")
@click.option("--sla-tps", default=20.0, show_default=True, type=float, help="Goodput: per-user tok/s target.")
@click.option("--sla-ttft", "sla_ttft_s", default=2.0, show_default=True, type=float, help="Goodput: TTFT target (s).")
@click.option("--engine", "engine", default="synthetic", show_default=True, type=click.Choice(["synthetic", "model"]),
              help="Acceptance from the synthetic/recorded model, or from the real drafter + target loop.")
@click.option("--verify-layout", "verify_layout", default=None, type=click.Choice(["flat", "padded"]),
              help="Verify tokens the clock charges: flat sum(1 + l_i) (vLLM, SGLang) or padded n * (1 + max l_i) "
                   "(the real loop). Default: padded with --engine model, else flat.")
@click.option("--clock", default="profile", show_default=True, type=click.Choice(["profile", "measured"]),
              help="Step time from the profile, or the backend's measured wall time (--engine model).")
@click.option("-o", "--out", "out", default=None, type=click.Path(file_okay=False),
              help="Output directory [default: runs/<trace>-<policy>, plus -seed<S> / -x<rate scale> when "
                   "not the defaults].")
@click.option("--overwrite", is_flag=True, help="Replace an existing results folder (never merged with it).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar in simulated time.")
@click.pass_context
def simulate(ctx: click.Context, trace: str, profile: str | None, policy: str, drafter: str, block: int,
             max_running: int, kv_blocks: int | None, kv_block_size: int, prefill_chunk: int, rate_scale: float,
             max_requests: int | None, horizon_s: float | None, seed: int, acceptance: str, recorded_donors: str,
             conf_auc: float, conf_ece: float, sla_tps: float, sla_ttft_s: float, engine: str,
             verify_layout: str | None, clock: str, out: str | None, overwrite: bool, progress: bool) -> None:
    """Replay a trace through a serving engine with confidence-scheduled speculative decoding."""
    if clock == "measured" and engine != "model":
        raise click.UsageError("--clock measured needs --engine model (only the real loop measures wall time)")
    if acceptance == "synthetic" and ctx.get_parameter_source("recorded_donors") != ParameterSource.DEFAULT:
        raise click.UsageError("--recorded-donors needs a recorded-rounds file in --acceptance")
    with surface_warnings(), one_line_errors():
        from simulator.config import SimConfig
        from simulator.run import RESULT_FILES
        from simulator.run import simulate as run_simulation
        from sparksched.io import ResultSet

        kwargs: dict[str, Any] = dict(policy=policy, drafter=drafter, block=block, max_running=max_running, kv_blocks=kv_blocks,
                      kv_block_size=kv_block_size, prefill_chunk=prefill_chunk, rate_scale=rate_scale,
                      max_requests=max_requests, horizon_s=horizon_s, seed=seed, acceptance=acceptance,
                      recorded_donors=recorded_donors,
                      conf_auc=conf_auc, conf_ece=conf_ece, sla_tps=sla_tps, sla_ttft_s=sla_ttft_s, clock=clock)
        if profile is not None:
            kwargs["profile"] = profile
        kwargs["verify_layout"] = verify_layout or ("padded" if engine == "model" else "flat")
        config = SimConfig(**kwargs)
        target = Path(out) if out else _default_out(trace, policy, seed, rate_scale)
        ResultSet.check(target, overwrite, RESULT_FILES)  # refuse before running, not after
        backend = None
        if engine == "model":
            backend = _model_backend(config)
        result = run_simulation(trace, config, backend=backend, progress=progress)
        directory = result.write(target, overwrite=overwrite)
    click.echo(result.table())
    click.echo(f"results: {directory}")


def _model_backend(config):
    """The real drafter + target loop's backend (issue 7), imported only when asked for."""
    try:
        from simulator import model_backend
    except ImportError as exc:
        raise ValueError(f"--engine model needs simulator/model_backend.py (the real drafter + target loop): "
                         f"{exc}") from None
    make = getattr(model_backend, "make_backend", None)
    if make is None:
        raise ValueError("--engine model: simulator/model_backend.py has no make_backend(config)")
    return make(config)
