"""`sparksched simulate`: replay a trace through the serving simulator, print the summary, write the run.

A thin shell over `simulator.run.simulate`; the defaults are `SimConfig`'s (simulator.scenario).
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
    quiet_option,
    runtime_errors,
    surface_warnings,
    usage_errors,
    write_scenario,
)
from sparksched.policies import policy_forms

# every file a run directory may hold (recognises folders written before manifests, for --overwrite)
RUN_FILES = ("requests.parquet", "steps.parquet", "rounds.parquet", "acceptance.parquet", "budget.parquet",
             "summary.json", "result.json", "scenario.toml", "timeline.json", "report.html", "timeseries.png",
             "latency_cdf.png", "acceptance_by_position.png")

POLICY_HELP = ("Verify-length policy: " + policy_forms() + " (sparksched.policies.POLICIES; docs/policies.md).")

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
@click.option("--profile", default=SIM.profile, show_default=True, help="Profile JSON or bundled name.")
@click.option("--policy", default=SIM.policy, show_default=True, help=POLICY_HELP)
@click.option("--drafter", default=SIM.drafter, show_default=True,
              type=click.Choice(["dspark", "dflash", "eagle3", "mtp1"]), help="Acceptance preset family.")
@click.option("--block", default=SIM.block, show_default=True, type=int, help="Draft block size g.")
@click.option("--max-running", default=SIM.max_running, show_default=True, type=int, help="Cap on resident requests.")
@click.option("--kv-blocks", default=None, type=int, help="KV cache blocks [default: derived from the profile].")
@click.option("--kv-block-size", default=SIM.kv_block_size, show_default=True, type=int, help="Tokens per KV block.")
@click.option("--prefill-chunk", default=SIM.prefill_chunk, show_default=True, type=int, help="Prefill tokens per step.")
@click.option("--disaggregated", is_flag=True, default=SIM.disaggregated,
              help="Prefill on separate prefill instances (PD disaggregation): requests join with their prompt's KV "
                   "and first token already made, and this replica only decodes (TTFT is the wait to join).")
@click.option("--replicas", default=SIM.replicas, show_default=True, type=int,
              help="Replicas in one simulation, each its own engine behind --router (a fleet).")
@click.option("--router", default=SIM.router, show_default=True,
              type=click.Choice(["round-robin", "least-loaded", "least-kv", "session", "prefix"]),
              help="How a fleet assigns each arriving request: session needs the trace's session field, "
                   "prefix its prefix_blocks.")
@click.option("--replica-profiles", "replica_profiles", default=None,
              help="Comma-separated profile per replica (cycled), for fleets of unlike replicas [default: --profile].")
@click.option("--prefix-cache/--no-prefix-cache", "prefix_cache", default=SIM.prefix_cache, show_default=True,
              help="With a trace carrying prefix_blocks: each replica caches prompt blocks in its KV cache and "
                   "skips their prefill.")
@click.option("--log", "log", default=",".join(SIM.log), show_default=True,
              help="Per-step and per-round tables to write: steps, rounds, both, or none (requests.parquet "
                   "always); they are written in row groups as the run goes.")
@click.option("--rate-scale", default=SIM.rate_scale, show_default=True, type=float, help="Arrival-rate multiplier.")
@click.option("--max-requests", default=None, type=int, help="Simulate only the first N requests.")
@click.option("--horizon", "horizon_s", default=None, type=float, help="Stop the clock at this simulated time (s).")
@click.option("--seed", default=SIM.seed, show_default=True, type=int, help="Seed of every random draw.")
@click.option("--acceptance", default=SIM.acceptance, show_default=True,
              help="'synthetic' presets, or a recorded-rounds file to fit acceptance from.")
@click.option("--recorded-donors", "recorded_donors", default=SIM.recorded_donors, show_default=True,
              type=click.Choice(["domain", "request"]),
              help="With a recorded-rounds file: each request replays a random recorded request of its domain, "
                   "or the recorded request with its own id (the same trace, replayed).")
@click.option("--conf-auc", default=SIM.conf_auc, show_default=True, type=float, help="Synthetic confidence ROC-AUC.")
@click.option("--conf-ece", default=SIM.conf_ece, show_default=True, type=float,
              help="Synthetic confidence calibration error (0.01 after STS; ~0.055 raw).")
@click.option("--sla-tps", default=SIM.sla_tps, show_default=True, type=float,
              help="DSpark goodput: per-user tok/s target (1 / TPOT).")
@click.option("--sla-ttft", "sla_ttft_s", default=SIM.sla_ttft_s, show_default=True, type=float,
              help="DSpark goodput: TTFT target (s).")
@goodput_option
@click.option("--engine", "engine", default="synthetic", show_default=True, type=click.Choice(["synthetic", "model"]),
              help="Acceptance from the synthetic/recorded model, or from the real drafter + target loop.")
@click.option("--verify-layout", "verify_layout", default=None, type=click.Choice(["flat", "padded"]),
              help="Verify tokens the clock charges: flat sum(1 + l_i) (vLLM, SGLang) or padded n * (1 + max l_i) "
                   "(the real loop). Default: padded with --engine model, else flat.")
@click.option("--clock", default=SIM.clock, show_default=True, type=click.Choice(["profile", "measured"]),
              help="Step time from the profile, or the backend's measured wall time (--engine model).")
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
    """Every output of a run into the staged result-set `folder`; the paths written (report.html last)."""
    written = result.write_files(folder)
    path, scenario_text = write_scenario(ctx, folder)
    written.append(path)
    if timeline:
        from simulator.timeline import replica_tables, write_timeline

        meta = {"trace": result.meta.get("trace"), "policy": result.config.policy, "profile": result.config.profile}
        written.append(write_timeline(folder / "timeline.json", replica_tables(result), meta))
    if report:
        from simulator.report import simulate_report, write_report
        from simulator.run_plots import write_run_plots

        pngs = write_run_plots(result, folder)
        written += list(pngs.values())
        names = [p.name for p in written] + ["report.html"]
        written.append(write_report(folder / "report.html", simulate_report(result, pngs, scenario_text, files=names)))
    return written


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
