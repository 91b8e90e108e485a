"""`sparksched pareto` and `sparksched whatif`: load sweeps, the serving frontier and SLA questions.

Thin click shells: the options are built from the config dataclasses (`SimConfig` and
`SweepDefaults` in simulator.scenario, via `knob_option`), the runs are `simulator.sweep`'s, and the
analysis, report text and result sets are `simulator.analysis`'s. `--config` reads a scenario file
and every run writes scenario.toml. Library errors become one-line `click.ClickException`s (usage
errors exit 2, runtime errors 1). The output folder is a `sparksched.io.ResultSet`: written whole or
not at all, an existing one refused without --overwrite (checked before the sweep runs) and
replaced whole with it, so no file of an earlier sweep survives. `whatif --from DIR` reads only
complete result sets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from simulator.scenario import SIM, SPEED_COLUMNS, SWEEP
from sparksched.commands._common import (
    BadUsage,
    Command,
    config_option,
    goodput_option,
    knob_option,
    quiet_option,
    resolved_scenario,
    runtime_errors,
    usage_errors,
)

# ------------------------------------------------------------------------------------------ parsing

def _parse_list(text: str, kind: Callable[[str], Any], option: str) -> list[Any]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = kind(part)
        except ValueError:
            raise click.BadParameter(f"{part!r} is not a valid {kind.__name__}", param_hint=option) from None
        if isinstance(v, (int, float)) and not v > 0:
            raise click.BadParameter(f"{part!r} must be > 0", param_hint=option)
        out.append(v)
    if not out:
        raise click.BadParameter("needs at least one value", param_hint=option)
    return out


def sweep_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by `pareto` and `whatif`: what to sweep and where to run it."""
    opts: list[Callable[[Any], Any]] = [
        config_option,
        knob_option(SWEEP, "trace"),
        knob_option(SWEEP, "policies"),
        knob_option(SWEEP, "load", "--load", "loads"),
        knob_option(SWEEP, "rate_scales"),
        knob_option(SIM, "profile"),
        knob_option(SIM, "drafter"),
        knob_option(SIM, "block"),
        knob_option(SIM, "disaggregated"),
        knob_option(SWEEP, "max_requests"),
        knob_option(SIM, "seed"),
        knob_option(SIM, "sla_tps", "--sla", "sla"),
        goodput_option,
        knob_option(SWEEP, "slo_attainment", "--slo-attainment", "attainment",
                    type=click.FloatRange(0, 1, min_open=True)),
        knob_option(SWEEP, "speed", "--speed", "speed"),
        click.option("--baseline", default=None,
                     help="Policy to compare against (default: mtp1 if swept, else the last policy)."),
        click.option("--workers", default=None, type=click.IntRange(min=1),
                     help="Parallel workers (local processes or Ray CPUs); default: CPUs available."),
        click.option("--ray", "use_ray", is_flag=True, help="Run on a local Ray instance."),
        click.option("--ray-address", default=None,
                     help="Run on this Ray cluster, host:port (implies --ray). Clusters with token "
                          "authentication need RAY_AUTH_MODE=token in the environment."),
        click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar."),
        quiet_option,
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _base_config(profile: str, drafter: str, block: int, max_requests: int, seed: int, sla: float,
                 goodput: str | None = None, disaggregated: bool = False) -> Any:
    """The sweep's base SimConfig (ValueError when a value is bad)."""
    from simulator.analysis import normal_goodput
    from simulator.config import SimConfig

    return SimConfig(drafter=drafter, block=block, seed=seed, sla_tps=sla, max_requests=max_requests or None,
                     goodput=normal_goodput(goodput), disaggregated=disaggregated, profile=profile)


def _backend(use_ray: bool, ray_address: str | None) -> Any:
    return "ray" if (use_ray or ray_address) else "local"


def _run(trace: str, policies: str, loads: str, rate_scales: str, profile: str, drafter: str,
         block: int, max_requests: int, seed: int, sla: float, workers: int | None, use_ray: bool,
         ray_address: str | None, progress: bool, goodput: str | None = None,
         disaggregated: bool = False) -> tuple[Any, Any, list[str], float]:
    """Build the configs, run the sweep; (SweepResult, base config, policy list, wall seconds)."""
    from simulator.sweep import run_sweep, sweep_configs
    from simulator.trace import load_trace, resolve_trace

    pols = _policies(policies)
    caps = _parse_list(loads, int, "--load")
    rates = _parse_list(rate_scales, float, "--rate-scales")
    if max_requests < 0:
        raise click.BadParameter(f"{max_requests} must be >= 0", param_hint="--max-requests")
    with usage_errors():
        base = _base_config(profile, drafter, block, max_requests, seed, sla, goodput, disaggregated)
        configs = sweep_configs(base, pols, caps, rates)
    with runtime_errors():
        df = load_trace(resolve_trace(trace))
        t0 = time.perf_counter()
        result = run_sweep(df, configs, backend=_backend(use_ray, ray_address), workers=workers,
                           ray_address=ray_address, progress=progress)
    return result, base, pols, time.perf_counter() - t0


def _policies(text: str) -> list[str]:
    """--policies as a list; a policy named twice is a usage error (it would be swept twice)."""
    pols = _parse_list(text, str, "--policies")
    twice = sorted({p for p in pols if pols.count(p) > 1})
    if twice:
        raise click.BadParameter(f"{', '.join(twice)} named more than once", param_hint="--policies")
    return pols


def _baseline(pols: list[str], baseline: str | None) -> str:
    if baseline is not None:
        if baseline not in pols:
            raise click.BadParameter(f"{baseline!r} is not one of the swept policies {pols}",
                                     param_hint="--baseline")
        return baseline
    return "mtp1" if "mtp1" in pols else pols[-1]


def _slos(goodput: str | None) -> str:
    """--goodput in one spelling ("" without); BadUsage when malformed."""
    from simulator.analysis import normal_goodput

    with usage_errors():
        return normal_goodput(goodput) or ""


# ------------------------------------------------------------------------------------------ commands

PARETO_EXAMPLES = """\b
Examples:
  sparksched pareto --trace chat -o pareto-out
  sparksched pareto --policies dspark,mtp1 --load 256 --rate-scales 0.5,1,2,4,8 -o offered-load
  sparksched pareto --goodput ttft:2000 tpot:12.5 --slo-attainment 0.95 -o slo
  sparksched pareto --config pareto-out/scenario.toml -o again
"""

WHATIF_EXAMPLES = """\b
Examples:
  sparksched whatif --sla 80
  sparksched whatif --replicas 1,2,4,8 --rate-scales 32 --policies dspark,mtp1   # smallest fleet per policy
  sparksched whatif --from pareto-out --sla 120 --throughput 5000
  sparksched whatif --goodput ttft:1000 tpot:10 -o whatif-out
"""


@click.command(cls=Command, epilog=PARETO_EXAMPLES)
@sweep_options
@click.option("-o", "--out", "out_dir", default="pareto-out", show_default=True, type=click.Path(file_okay=False),
              help="Directory for Parquet tables, PNG plots, report.txt, report.html and scenario.toml.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder (never merged with it).")
@click.pass_context
def pareto(ctx: click.Context, trace: str, policies: str, loads: str, rate_scales: str, profile: str,
           drafter: str, block: int, disaggregated: bool, max_requests: int, seed: int, sla: float, goodput: str | None,
           attainment: float, speed: str, baseline: str | None, workers: int | None, use_ray: bool,
           ray_address: str | None, progress: bool, quiet: bool, out_dir: str, overwrite: bool) -> None:
    """Sweep load for each policy; print the frontier and SLA answers; write tables and plots.

    One simulation per (policy, --load cap, --rate-scales multiplier). With the defaults (3 policies
    x 9 caps, the first 1000 chat requests at 16x their arrival rate) it takes about a minute on 2
    cores. Writes sweep.parquet (one row per run, with vllm bench serve's keys), frontier.parquet,
    sla.parquet, speed_gain.parquet, budget.parquet, acceptance.parquet, sla_breaking_load.parquet,
    goodput.parquet (with --goodput), frontier.png, verify_budget_vs_concurrency.png,
    acceptance_by_position.png, step_time.png, report.txt, report.html and scenario.toml.

    The default load overloads the trace, so each cap is the concurrency (the paper's Figure 8
    axis) and TTFT is mostly queueing; `--load 256 --rate-scales 0.5,1,2,4,8` sweeps offered load
    instead, with meaningful TTFT.
    """
    from simulator.analysis import RESULT_NAMES, analyse, report_text, write_pareto_set
    from sparksched.io import ResultSet

    pols = _policies(policies)
    base_name = _baseline(pols, baseline)
    speed_col = SPEED_COLUMNS[speed]
    slos = _slos(goodput)
    with runtime_errors():
        ResultSet.check(out_dir, overwrite, RESULT_NAMES)  # a folder it cannot write: refused before the sweep
    result, base, pols, wall = _run(trace, policies, loads, rate_scales, profile, drafter, block, max_requests,
                                    seed, sla, workers, use_ray, ray_address, progress and not quiet, goodput,
                                    disaggregated)
    a = analyse(result.rows, sla, base_name, speed_col, attainment, slos)
    backend = "Ray" if (use_ray or ray_address) else "local processes"
    head = (f"Swept {result.rows.height} runs ({len(pols)} policies) on {trace} "
            f"(max_requests={max_requests or 'all'}, profile={base.profile}, seed={seed}) in {wall:.1f} s "
            f"on {backend}.")
    text = head + "\n\n" + report_text(a, sla, base_name, speed_col)
    if not quiet:
        click.echo(text)
    with runtime_errors():
        written = write_pareto_set(Path(out_dir), result, a, base, sla, speed_col, text, resolved_scenario(ctx),
                                   overwrite=overwrite)
    if not quiet:
        click.echo("\nWrote " + ", ".join(str(p) for p in written))


@click.command(cls=Command, epilog=WHATIF_EXAMPLES)
@sweep_options
@click.option("--replicas", "fleet", default=None,
              help="Fleet sizes to try, comma-separated (e.g. 1,2,4,8): answers the smallest fleet meeting the SLA "
                   "at each --rate-scales rate, per policy (--load is then each replica's concurrency cap).")
@knob_option(SIM, "router", help="With --replicas: how the fleet routes requests.")
@knob_option(SIM, "sla_ttft_s")
@click.option("--throughput", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Also answer: how fast is each user at this aggregate throughput (tok/s)?")
@click.option("--from", "from_dir", default=None, type=click.Path(file_okay=False),
              help="Answer from a previous `pareto -o DIR` sweep (its sweep.parquet) instead of simulating.")
@click.option("-o", "--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Also write report.html (answers, figures, tables) and scenario.toml into this directory.")
@click.option("--overwrite", is_flag=True, help="With -o: replace an existing output folder (never merged with it).")
@click.pass_context
def whatif(ctx: click.Context, trace: str, policies: str, loads: str, rate_scales: str, profile: str,
           drafter: str, block: int, disaggregated: bool, max_requests: int, seed: int, sla: float, goodput: str | None,
           attainment: float, speed: str, baseline: str | None, workers: int | None, use_ray: bool,
           ray_address: str | None, progress: bool, quiet: bool, fleet: str | None, router: str, sla_ttft_s: float,
           throughput: float | None, from_dir: str | None, out_dir: str | None, overwrite: bool) -> None:
    """What throughput can we sell at --sla tokens/s per user (or --goodput SLOs), and how much faster is each user?

    Sweeps like `pareto` (or reads `--from DIR`) and prints only the answers; -o DIR also writes
    them as report.html with the figures, and the resolved scenario.
    """
    from simulator.analysis import WHATIF_NAMES, analyse, whatif_text, write_whatif_set
    from sparksched.io import ResultSet

    speed_col = SPEED_COLUMNS[speed]
    if fleet is not None:
        if from_dir is not None:
            raise BadUsage("--replicas sweeps fleets itself: it cannot answer --from a pareto sweep")
        _whatif_fleet(ctx, trace, policies, loads, rate_scales, profile, drafter, block, disaggregated, max_requests,
                      seed, sla, goodput, attainment, workers, use_ray, ray_address, progress and not quiet, quiet,
                      fleet, router, sla_ttft_s, out_dir, overwrite)
        return
    slos = _slos(goodput)
    if out_dir is not None:
        with runtime_errors():
            ResultSet.check(out_dir, overwrite, WHATIF_NAMES)  # before sweeping
    if from_dir is not None:
        rows, pols = _read_sweep(ctx, from_dir, speed_col, policies, goodput)
    else:
        result, _, pols, _ = _run(trace, policies, loads, rate_scales, profile, drafter, block, max_requests,
                                  seed, sla, workers, use_ray, ray_address, progress and not quiet, goodput,
                                  disaggregated)
        rows = result.rows
    base_name = _baseline(pols, baseline)
    a = analyse(rows, sla, base_name, speed_col, attainment, slos)
    text = whatif_text(a, sla, base_name, speed_col, pols, throughput)
    if not quiet:
        click.echo(text)
    if out_dir is not None:
        with runtime_errors():
            write_whatif_set(out_dir, rows, a, sla, speed_col, text, resolved_scenario(ctx), pols, overwrite=overwrite)


def _read_sweep(ctx: click.Context, from_dir: str, speed_col: str, policies: str,
                goodput: str | None) -> tuple[Any, list[str]]:
    """whatif --from: the earlier sweep's rows (only the --policies given, when given) and its policies."""
    import polars as pl

    from simulator.analysis import read_sweep, row_goodput

    path = Path(from_dir) / "sweep.parquet"
    with runtime_errors():
        rows = read_sweep(from_dir, speed_col)
    if goodput is not None and _slos(goodput) != row_goodput(rows):
        want = _slos(goodput)
        raise BadUsage(f"{path}: swept with goodput SLOs {row_goodput(rows)!r}, not {want!r}: run "
                       f"`sparksched pareto --goodput {want}` to answer for those")
    pols = rows.get_column("policy").unique(maintain_order=True).to_list()
    if ctx.get_parameter_source("policies") not in (click.core.ParameterSource.DEFAULT, None):
        wanted = _policies(policies)
        missing = [p for p in wanted if p not in pols]
        if missing:
            raise click.BadParameter(f"{missing} not in {path} (it has {pols})", param_hint="--policies")
        rows, pols = rows.filter(pl.col("policy").is_in(wanted)), wanted
    return rows, pols


def _whatif_fleet(ctx: click.Context, trace: str, policies: str, loads: str, rate_scales: str, profile: str,
                  drafter: str, block: int, disaggregated: bool, max_requests: int, seed: int, sla: float,
                  goodput: str | None, attainment: float, workers: int | None, use_ray: bool, ray_address: str | None,
                  progress: bool, quiet: bool, fleet: str, router: str, sla_ttft_s: float, out_dir: str | None,
                  overwrite: bool) -> None:
    """whatif --replicas: the smallest fleet meeting the SLA at each rate, per policy (simulator.frontier)."""
    from simulator.analysis import FLEET_NAMES, fleet_text, write_fleet_set
    from simulator.frontier import smallest_fleet
    from simulator.sweep import run_sweep, sweep_configs
    from simulator.trace import load_trace, resolve_trace
    from sparksched.io import ResultSet

    sizes = sorted(set(_parse_list(fleet, int, "--replicas")))
    pols = _policies(policies)
    default_load = ctx.get_parameter_source("loads") in (click.core.ParameterSource.DEFAULT, None)
    caps = [SIM.max_running] if default_load else _parse_list(loads, int, "--load")
    if len(caps) != 1:
        raise click.BadParameter("a fleet sweep takes one concurrency cap per replica", param_hint="--load")
    rates = _parse_list(rate_scales, float, "--rate-scales")
    if out_dir is not None:
        with runtime_errors():
            ResultSet.check(out_dir, overwrite, FLEET_NAMES)
    with usage_errors():
        base = _base_config(profile, drafter, block, max_requests, seed, sla, goodput, disaggregated)
        base = base.replace(router=router, sla_ttft_s=sla_ttft_s)
        configs = sweep_configs(base, pols, caps, rates, sizes)
    with runtime_errors():
        df = load_trace(resolve_trace(trace))
        t0 = time.perf_counter()
        result = run_sweep(df, configs, backend=_backend(use_ray, ray_address), workers=workers,
                           ray_address=ray_address, progress=progress)
        wall = time.perf_counter() - t0
    column = "dspark_slo_attainment" if goodput else "goodput_share"
    table = smallest_fleet(result.rows, attainment, column)
    what = f"vLLM SLOs {_slos(goodput)}" if goodput else f"TTFT <= {sla_ttft_s:g} s and >= {sla:g} tok/s/user"
    text = fleet_text(table, router, caps[0], attainment, what, sizes, result.rows.height, wall)
    if not quiet:
        click.echo(text)
    if out_dir is not None:
        with runtime_errors():
            write_fleet_set(out_dir, table, result.rows, text, resolved_scenario(ctx), pols, sizes, overwrite=overwrite)
