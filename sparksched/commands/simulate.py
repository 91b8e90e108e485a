"""`sparksched simulate`: replay a trace through the serving simulator, print the summary, write the run.

A thin shell over `simulator.run.simulate`; every simulation option is built from its `SimConfig`
field (default, help, choices: `knob_option`).
Writes the run as one result set (`sparksched.io.ResultSet`: staged beside the output directory,
manifest.json last, renamed into place, so the directory holds one whole run or is left as it
was): the Parquet tables, summary.json, result.json (vllm bench serve's keys), scenario.toml (the
resolved scenario), the PNGs and report.html (simulator.run_plots, simulator.report) and, with
--timeline, timeline.json (Perfetto, simulator.timeline). An existing directory is refused unless
--overwrite (checked before the run); the default, runs/<trace>-<policy>, names the seed and the
rate scale when they are not the defaults, so runs that differ in them never share one.
Conflicting flags and other usage errors exit 2, runtime errors 1 (sparksched.commands._common).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from simulator.scenario import SIM
from sparksched.commands._common import (
    BadUsage,
    Command,
    config_option,
    goodput_option,
    knob_help,
    knob_option,
    quiet_option,
    runtime_errors,
    surface_warnings,
    usage_errors,
    write_scenario,
)

# every file a run directory may hold (recognises folders written before manifests, for --overwrite)
RUN_FILES = ("requests.parquet", "steps.parquet", "rounds.parquet", "acceptance.parquet", "budget.parquet",
             "summary.json", "result.json", "scenario.toml", "timeline.json", "report.html", "timeseries.png",
             "latency_cdf.png", "acceptance_by_position.png")

EXAMPLES = """\b
Examples:
  sparksched simulate --trace chat -o runs/chat
  sparksched simulate --trace chat --timeline -o runs/chat       # + timeline.json for ui.perfetto.dev
  sparksched simulate --trace code --policy mtp1 --goodput ttft:500 tpot:20 -o runs/code-mtp1
  sparksched simulate --config runs/chat/scenario.toml -o runs/chat-again
"""


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


@click.command(cls=Command, epilog=EXAMPLES)
@config_option
@click.option("--trace", "trace", required=True, help="Trace file (JSON Lines) or bundled name: chat, code, math, mixed.")
@knob_option(SIM, "profile")
@knob_option(SIM, "policy")
@knob_option(SIM, "drafter")
@knob_option(SIM, "block")
@knob_option(SIM, "max_running")
@knob_option(SIM, "kv_blocks")
@knob_option(SIM, "kv_block_size")
@knob_option(SIM, "prefill_chunk")
@knob_option(SIM, "disaggregated")
@knob_option(SIM, "replicas")
@knob_option(SIM, "router")
@knob_option(SIM, "replica_profiles")
@knob_option(SIM, "prefix_cache")
@knob_option(SIM, "log")
@knob_option(SIM, "rate_scale")
@knob_option(SIM, "max_requests")
@knob_option(SIM, "horizon_s")
@knob_option(SIM, "seed")
@knob_option(SIM, "acceptance")
@knob_option(SIM, "recorded_donors")
@knob_option(SIM, "conf_auc")
@knob_option(SIM, "conf_ece")
@knob_option(SIM, "sla_tps")
@knob_option(SIM, "sla_ttft_s")
@goodput_option
@click.option("--engine", "engine", default="synthetic", show_default=True, type=click.Choice(["synthetic", "model"]),
              help="Acceptance from the synthetic/recorded model, or from the real drafter + target loop.")
@knob_option(SIM, "verify_layout", default=None, show_default=False,
             help=knob_help(SIM, "verify_layout") + " Default: padded with --engine model, else flat.")
@knob_option(SIM, "clock")
@click.option("--timeline", is_flag=True, help="Also write timeline.json: steps and requests for ui.perfetto.dev.")
@click.option("--report/--no-report", default=True, show_default=True,
              help="Write the PNGs and report.html (self-contained, opens offline).")
@click.option("-o", "--out", "out", default=None, type=click.Path(file_okay=False),
              help="Output directory [default: runs/<trace>-<policy>, plus -seed<S> / -x<rate scale> when "
                   "not the defaults].")
@click.option("--overwrite", is_flag=True, help="Replace an existing results folder (never merged with it).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar in simulated time.")
@quiet_option
@click.pass_context
def simulate(ctx: click.Context, trace: str, profile: str, policy: str, drafter: str, block: int, max_running: int,
             kv_blocks: int | None, kv_block_size: int, prefill_chunk: int, disaggregated: bool, replicas: int,
             router: str, replica_profiles: str | None, prefix_cache: bool, log: str, rate_scale: float,
             max_requests: int | None, horizon_s: float | None, seed: int, acceptance: str, recorded_donors: str,
             conf_auc: float, conf_ece: float, sla_tps: float, sla_ttft_s: float, goodput: str | None, engine: str,
             verify_layout: str | None, clock: str, timeline: bool, report: bool, out: str | None,
             overwrite: bool, progress: bool, quiet: bool) -> None:
    """Replay a trace through a serving engine with confidence-scheduled speculative decoding.

    Prints the summary (latencies as vllm bench serve reports them: mean / median / P90 / P99 in
    ms) and writes the run: Parquet tables, result.json (vLLM's result keys), summary.json,
    scenario.toml (repeat the run with --config), PNGs and report.html.
    """
    from simulator.config import SimConfig, parse_log

    layout = verify_layout or ("padded" if engine == "model" else "flat")
    if disaggregated and engine == "model":
        raise BadUsage("--disaggregated with --engine model: the real loop prefills its own requests")
    if clock == "measured" and engine != "model":
        raise BadUsage("--clock measured needs --engine model (only the real loop measures wall time)")
    if acceptance == "synthetic" and ctx.get_parameter_source("recorded_donors") not in (
            ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
        raise BadUsage("--recorded-donors needs a recorded-rounds file in --acceptance")
    with usage_errors():
        config = SimConfig(policy=policy, drafter=drafter, block=block, max_running=max_running, kv_blocks=kv_blocks,
                           kv_block_size=kv_block_size, prefill_chunk=prefill_chunk, disaggregated=disaggregated,
                           rate_scale=rate_scale,
                           max_requests=max_requests, horizon_s=horizon_s, seed=seed, acceptance=acceptance,
                           recorded_donors=recorded_donors, conf_auc=conf_auc, conf_ece=conf_ece, sla_tps=sla_tps,
                           sla_ttft_s=sla_ttft_s, goodput=goodput, clock=clock, profile=profile,
                           verify_layout=layout, replicas=replicas, router=router, prefix_cache=prefix_cache,
                           replica_profiles=tuple(p.strip() for p in (replica_profiles or "").split(",") if p.strip()),
                           log=parse_log(log))
    if engine == "model" and replicas > 1:
        raise BadUsage("--engine model runs one real loop: --replicas must be 1")
    directory = Path(out) if out else _default_out(trace, policy, seed, rate_scale)
    with surface_warnings(), runtime_errors():
        from simulator.run import simulate as run_simulation
        from sparksched.io import ResultSet

        ResultSet.check(directory, overwrite, RUN_FILES)  # refuse before running, not after
        backend = _model_backend(config) if engine == "model" else None
        with ResultSet(directory, overwrite=overwrite, names=RUN_FILES, about={"command": "simulate"}) as rs:
            # the logged tables stream into the staged folder: a failed or killed run publishes nothing
            result = run_simulation(trace, config, backend=backend, progress=progress and not quiet, folder=rs.folder)
            rs.about = result.about()
            written = _write_run(ctx, result, rs.folder, timeline=timeline, report=report)
        written = [directory / p.name for p in written]
        result.relocate(directory)
    if not quiet:
        click.echo(result.table())
        click.echo(f"results: {directory} ({', '.join(p.name for p in written)})")


def _write_run(ctx: click.Context, result: Any, folder: Path, *, timeline: bool, report: bool) -> list[Path]:
    """Every output of a run into the staged result-set `folder` (simulator.report.write_run_set), with
    the resolved scenario.toml; the paths written (report.html last)."""
    from simulator.report import write_run_set

    path, scenario_text = write_scenario(ctx, folder)
    return write_run_set(result, folder, scenario_text, [path], timeline=timeline, report=report)


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
