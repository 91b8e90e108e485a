"""`sparksched pareto` and `sparksched whatif`: load sweeps, the serving frontier and SLA questions.

Thin shells over `simulator.sweep` (runs), `simulator.frontier` (maths), `simulator.plots`
(figures) and `simulator.report` (report.html). Defaults come from `simulator.scenario` (the same
as simulate's); `--config` reads a scenario file and every run writes scenario.toml. Library
errors become one-line `click.ClickException`s (usage errors exit 2, runtime errors 1). The output
folder is a `sparksched.io.ResultSet`: written whole or not at all, an existing one refused without
--overwrite (checked before the sweep runs) and replaced whole with it, so no file of an earlier
sweep survives. `whatif --from DIR` reads only complete result sets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from simulator.scenario import SIM, SWEEP
from sparksched.commands._common import (
    BadUsage,
    Command,
    config_option,
    goodput_option,
    quiet_option,
    resolved_scenario,
    runtime_errors,
)

# Defaults (simulator.scenario, shared with simulate): sized to finish in a few minutes on 2 CPU
# cores with the bundled chat trace.
DEFAULT_POLICIES = SWEEP.policies
DEFAULT_LOAD = SWEEP.load  # concurrency caps (max_running)
DEFAULT_RATE_SCALES = SWEEP.rate_scales  # arrival-rate multiplier: 16x the chat trace keeps every cap saturated
DEFAULT_MAX_REQUESTS = SWEEP.max_requests  # first N requests of the trace per run
DEFAULT_SLA = SIM.sla_tps  # tokens/s/user, the paper's V4-Flash moderate anchor (simulate's too)
DEFAULT_ATTAINMENT = 0.9  # share of requests that must meet the --goodput SLOs at "throughput at SLO"
SPEED_COLUMNS = {"p50": "user_tps_p50", "p90": "user_tps_p90"}

PNG_NAMES = {"frontier": "frontier.png", "budget": "verify_budget_vs_concurrency.png",
             "acceptance": "acceptance_by_position.png", "step_time": "step_time.png"}
TABLE_NAMES = ("sweep.parquet", "frontier.parquet", "sla.parquet", "budget.parquet", "acceptance.parquet",
               "sla_breaking_load.parquet", "speed_gain.parquet")
RESULT_NAMES = (*TABLE_NAMES, "goodput.parquet", *PNG_NAMES.values(), "report.txt", "report.html", "scenario.toml")
WHATIF_NAMES = (PNG_NAMES["frontier"], "report.html", "scenario.toml")


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
        click.option("--trace", default=SWEEP.trace, show_default=True,
                     help="Trace file (JSON Lines) or bundled name (chat, code, math, mixed)."),
        click.option("--policies", default=DEFAULT_POLICIES, show_default=True,
                     help="Comma-separated policies: dspark, mtp1, static-K, threshold-TAU, conf-threshold-TAU, "
                          "verify-all, none, ..."),
        click.option("--load", "loads", default=DEFAULT_LOAD, show_default=True,
                     help="Concurrency caps (max running requests) to sweep, comma-separated."),
        click.option("--rate-scales", default=DEFAULT_RATE_SCALES, show_default=True,
                     help="Arrival-rate multipliers to sweep, comma-separated (crossed with --load). The "
                          "default overloads the chat trace so each cap is the concurrency; use values "
                          "around 1 to sweep offered load instead."),
        click.option("--profile", default=None,
                     help="Profile JSON (or bundled name) for step times; default: the simulator's."),
        click.option("--drafter", default=SIM.drafter, show_default=True, help="Drafter acceptance preset."),
        click.option("--block", default=SIM.block, show_default=True, type=int, help="Drafted tokens per round."),
        click.option("--disaggregated", is_flag=True, default=SIM.disaggregated,
                     help="Prefill on separate prefill instances (PD disaggregation): requests join with their "
                          "prompt's KV and first token, the replica only decodes (the paper's decode engines)."),
        click.option("--max-requests", default=DEFAULT_MAX_REQUESTS, show_default=True, type=int,
                     help="Simulate the first N requests of the trace in every run (0: all)."),
        click.option("--seed", default=SIM.seed, show_default=True, type=int, help="Seed of every run."),
        click.option("--sla", default=DEFAULT_SLA, show_default=True, type=float,
                     help="Per-user speed SLA, tokens/s/user."),
        goodput_option,
        click.option("--slo-attainment", "attainment", default=DEFAULT_ATTAINMENT, show_default=True,
                     type=click.FloatRange(0, 1, min_open=True),
                     help="With --goodput: the share of requests that must meet every SLO for a load to count "
                          "as meeting them (throughput at SLO)."),
        click.option("--speed", "speed", default=SWEEP.speed, show_default=True, type=click.Choice(sorted(SPEED_COLUMNS)),
                     help="Per-user speed the frontier and SLA use: p50 = the median user, p90 = the speed "
                          "90 % of users reach or beat (1 / P90 of TPOT)."),
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


def _base_config(profile: str | None, drafter: str, block: int, max_requests: int, seed: int, sla: float,
                 goodput: str | None = None, disaggregated: bool = False) -> Any:
    from simulator.config import SimConfig

    kw: dict[str, Any] = {"drafter": drafter, "block": block, "seed": seed, "sla_tps": sla,
                          "max_requests": max_requests or None, "goodput": _normal_goodput(goodput),
                          "disaggregated": disaggregated}
    if profile is not None:
        kw["profile"] = profile
    return SimConfig(**kw)


def _run(trace: str, policies: str, loads: str, rate_scales: str, profile: str | None, drafter: str,
         block: int, max_requests: int, seed: int, sla: float, workers: int | None, use_ray: bool,
         ray_address: str | None, progress: bool, goodput: str | None = None,
         disaggregated: bool = False) -> tuple[Any, Any, list[str], float]:
    """Build the configs, run the sweep; (SweepResult, base config, policy list, wall seconds)."""
    from simulator.sweep import Backend, run_sweep, sweep_configs
    from simulator.trace import load_trace, resolve_trace

    pols = _policies(policies)
    caps = _parse_list(loads, int, "--load")
    rates = _parse_list(rate_scales, float, "--rate-scales")
    if max_requests < 0:
        raise click.BadParameter(f"{max_requests} must be >= 0", param_hint="--max-requests")
    try:
        base = _base_config(profile, drafter, block, max_requests, seed, sla, goodput, disaggregated)
        configs = sweep_configs(base, pols, caps, rates)
    except ValueError as e:
        raise BadUsage(str(e)) from None
    try:
        df = load_trace(resolve_trace(trace))
        backend: Backend = "ray" if (use_ray or ray_address) else "local"
        t0 = time.perf_counter()
        result = run_sweep(df, configs, backend=backend, workers=workers, ray_address=ray_address,
                           progress=progress)
    except ValueError as e:
        raise click.ClickException(" ".join(str(e).split())) from None
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


# ------------------------------------------------------------------------------------------ output

def _fmt(v: Any, spec: str = ",.0f") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def frontier_text(front: Any, speed_col: str) -> str:
    """The frontier table: one line per frontier point, policy by policy, fastest users last."""
    rows = []
    for r in front.iter_rows(named=True):
        rows.append([r["policy"], _fmt(r.get("max_running"), "d"), _fmt(r.get("rate_scale"), "g"),
                     _fmt(r.get("mean_running"), ".1f"), _fmt(r.get(speed_col), ".1f"),
                     _fmt(r.get("user_tps_p90"), ".1f"), _fmt(r.get("throughput_tps")),
                     _fmt(r.get("ttft_p90_s"), ".2f"), _fmt(r.get("budget_per_request"), ".2f")])
    return _table(["policy", "max_running", "rate_scale", "mean_running", f"user tok/s ({speed_col})",
                   "user_tps_p90", "throughput tok/s", "TTFT P90 s", "verify budget/req"], rows)


def sla_text(sla_rows: Any, front: Any, sla: float, baseline: str, speed_col: str) -> str:
    lines = [f"Throughput at per-user speed >= {sla:g} tok/s/user ({speed_col}), on each frontier:"]
    for r in sla_rows.iter_rows(named=True):
        p = r["policy"]
        if r["throughput"] is None:
            fastest = front.filter(front["policy"] == p)[speed_col].max()
            lines.append(f"  {p:<14} unreachable: its fastest operating point is {_fmt(fastest, '.1f')} tok/s/user")
            continue
        note = {"lower_bound": "lower bound: the SLA holds even at the heaviest load swept",
                "exact": "at a swept point", "interpolated": "interpolated between swept points"}[r["status"]]
        ratio = ""
        if p != baseline and r["ratio"] is not None:
            ratio = (f"  {r['ratio']:.2f}x {baseline}" if r["ratio"] != float("inf")
                     else f"  ({baseline} cannot meet it)")
        lines.append(f"  {p:<14} {r['throughput']:>10,.0f} tok/s  ({note}){ratio}")
    return "\n".join(lines)


def gain_text(gain: Any) -> str:
    if gain.overlap is None:
        return (f"Per-user speed at matched throughput ({gain.policy} vs {gain.baseline}): the two frontiers "
                "cover no common throughput range; sweep more loads.")
    rows = [[_fmt(r["throughput"]), _fmt(r["speed"], ".1f"), _fmt(r["baseline_speed"], ".1f"),
             f"{100 * r['gain']:+.0f} %"] for r in gain.table.iter_rows(named=True)]
    head = (f"Per-user speed at matched throughput ({gain.policy} vs {gain.baseline}, "
            f"{gain.overlap[0]:,.0f}-{gain.overlap[1]:,.0f} tok/s): gain {100 * gain.min_gain:+.0f} % "
            f"to {100 * gain.max_gain:+.0f} %")
    return head + "\n" + _table(["throughput tok/s", gain.policy, gain.baseline, "gain"], rows)


def breaking_text(brk: Any, sla: float, load: str) -> str:
    lines = [f"Load ({load}) at which per-user speed falls below {sla:g} tok/s/user:"]
    for r in brk.iter_rows(named=True):
        if r["status"] == "met_at_all_loads":
            msg = f"met at every load swept (up to {r['last_ok_load']:g})"
        elif r["status"] == "never_met":
            msg = f"not met even at the lightest load ({r['first_fail_load']:g})"
        else:
            msg = (f"breaks at about {r['crossing_load']:.1f} (met at {r['last_ok_load']:g}, "
                   f"missed at {r['first_fail_load']:g})")
        lines.append(f"  {r['policy']:<14} {msg}")
    return "\n".join(lines)


def _load_column(rows: Any) -> str:
    """The load axis that varies in a sweep (max_running unless only rate_scale varies)."""
    if rows.get_column("max_running").n_unique() == 1 and rows.get_column("rate_scale").n_unique() > 1:
        return "rate_scale"
    return "max_running"


def analyse(rows: Any, sla: float, baseline: str, speed_col: str, attainment: float | None = None) -> dict[str, Any]:
    """Frontier, SLA table, speed gains vs the baseline and SLA-breaking loads of sweep rows; with
    `attainment` (and rows swept with --goodput), the goodput table too."""
    from simulator.frontier import frontier, goodput_table, sla_breaking_load, sla_table, speed_gain

    front = frontier(rows, x=speed_col)
    pols = rows.get_column("policy").unique(maintain_order=True).to_list()
    load = _load_column(rows)
    # the SLA-breaking load needs one load axis: with a cross product, read it at each rate_scale
    brk_rows = rows if load == "rate_scale" or rows.get_column("rate_scale").n_unique() == 1 else \
        rows.filter(rows["rate_scale"] == rows["rate_scale"].max())
    return {
        "front": front,
        "sla": sla_table(front, sla, baseline=baseline, x=speed_col),
        "gains": [speed_gain(front, p, baseline, x=speed_col) for p in pols if p != baseline],
        "breaking": sla_breaking_load(brk_rows, sla, load=load, x=speed_col),
        "load": load,
        "goodput": (goodput_table(rows, attainment, baseline) if attainment is not None and _has_goodput(rows)
                    else None),
        "attainment": attainment,
    }


def _has_goodput(rows: Any) -> bool:
    return "request_goodput" in rows.columns and rows.get_column("request_goodput").drop_nulls().len() > 0


def goodput_text(table: Any, slos: str, attainment: float, baseline: str) -> str:
    """The goodput answers: best request goodput, and throughput where enough requests meet every SLO."""
    lines = [f"Goodput under SLOs {slos} ms (vLLM's request_goodput; throughput where >= "
             f"{100 * attainment:g} % of requests meet every SLO):"]
    for r in table.iter_rows(named=True):
        if r["best_goodput"] is None:
            lines.append(f"  {r['policy']:<14} no goodput data")
            continue
        at = f"{r['throughput_at_slo']:>10,.0f} tok/s at max_running {r['slo_max_running']}" \
            if r["throughput_at_slo"] is not None else "   no load meets it"
        ratio = f"  {r['ratio']:.2f}x {baseline}" if r["ratio"] is not None else ""
        lines.append(f"  {r['policy']:<14} best {r['best_goodput']:.2f} req/s (max_running {r['best_max_running']}, "
                     f"{100 * r['attainment_there']:.0f} % meet);{at}{ratio}")
    return "\n".join(lines)


def report_text(a: dict[str, Any], sla: float, baseline: str, speed_col: str) -> str:
    parts = ["Frontier (operating points no other load of the same policy beats on both axes):",
             frontier_text(a["front"], speed_col), "",
             sla_text(a["sla"], a["front"], sla, baseline, speed_col), ""]
    for g in a["gains"]:
        parts += [gain_text(g), ""]
    parts.append(breaking_text(a["breaking"], sla, a["load"]))
    if a.get("goodput") is not None:
        parts += ["", goodput_text(a["goodput"], a.get("slos", ""), a["attainment"], baseline)]
    return "\n".join(parts)


def write_outputs(out: Path, result: Any, a: dict[str, Any], base: Any, sla: float, speed_col: str,
                  text: str, scenario_text: str | None = None, title: str = "sparksched pareto",
                  overwrite: bool = False) -> list[Path]:
    """Parquet tables, PNGs, the printed report, report.html and scenario.toml (when given) as one
    result set in `out` (whole or not at all; an existing `out` is refused unless `overwrite`, then
    replaced whole). Returns the files' paths."""
    import polars as pl

    from simulator.plots import plot_acceptance, plot_budget_vs_concurrency, plot_frontier, plot_step_time
    from sparksched.io import ResultSet, write_parquet, write_text

    gains = [g.table.with_columns(policy=pl.lit(g.policy), baseline=pl.lit(g.baseline)) for g in a["gains"]]
    tables = {"sweep.parquet": result.rows, "frontier.parquet": a["front"], "sla.parquet": a["sla"],
              "budget.parquet": result.budget, "acceptance.parquet": result.acceptance,
              "sla_breaking_load.parquet": a["breaking"]}
    if gains:
        tables["speed_gain.parquet"] = pl.concat(gains)
    if a.get("goodput") is not None:
        tables["goodput.parquet"] = a["goodput"]
    about = {"command": "pareto", "policies": result.rows.get_column("policy").unique(maintain_order=True).to_list(),
             "seed": getattr(base, "seed", None), "profile": getattr(base, "profile", None)}
    with ResultSet(out, overwrite=overwrite, names=RESULT_NAMES, about=about) as rs:
        folder = rs.folder
        written = []
        for name, df in tables.items():
            written.append(write_parquet(folder / name, df))
        written.append(plot_frontier(result.rows, a["front"], folder / PNG_NAMES["frontier"], sla=sla,
                                     sla_rows=a["sla"], x=speed_col))
        written.append(plot_budget_vs_concurrency(result.rows, result.budget, folder / PNG_NAMES["budget"]))
        acc = result.acceptance
        if not acc.is_empty():
            acc = pl.concat([_pool_acceptance(acc), _preset_acceptance(acc, base)], how="diagonal_relaxed")
        written.append(plot_acceptance(acc, folder / PNG_NAMES["acceptance"]))
        cost = _cost(base)
        if cost is not None:
            written.append(plot_step_time(cost, result.rows, folder / PNG_NAMES["step_time"]))
        written.append(write_text(folder / "report.txt", text + "\n"))
        if scenario_text is not None:
            written.append(write_text(folder / "scenario.toml", scenario_text))
        written.append(_html_report(folder, a, [p for p in written if p.suffix == ".png"], text, scenario_text,
                                    title))
    return [out / p.name for p in written]


def _html_report(out: Path, a: dict[str, Any], pngs: list[Path], text: str, scenario_text: str | None,
                 title: str) -> Path:
    """report.html: the answers, the figures and the frontier / SLA / goodput tables, self-contained."""
    from simulator.report import sweep_report, write_report

    tables = {"Frontier": a["front"], "Throughput at the SLA": a["sla"], "SLA-breaking load": a["breaking"]}
    if a.get("goodput") is not None:
        tables["Goodput"] = a["goodput"]
    return write_report(out / "report.html", sweep_report(title, text, tables, pngs, scenario_text))


def _pool_acceptance(acc: Any) -> Any:
    """Acceptance per (policy, domain, position) pooled over all runs of the sweep."""
    import polars as pl

    return (acc.group_by("policy", "domain", "position", maintain_order=True)
            .agg(pl.col("trials").sum(), pl.col("accepted").sum())
            .filter(pl.col("trials") > 0)
            .with_columns(acceptance=pl.col("accepted") / pl.col("trials"))
            .rename({"policy": "series"}))


def _preset_acceptance(acc: Any, base: Any) -> Any:
    """The drafter preset's raw conditional rates per domain (the paper's Figure 2 where it has them)."""
    import polars as pl

    try:
        from simulator.acceptance import conditional_rates
    except ImportError:
        return pl.DataFrame()
    rows = []
    for d in acc.get_column("domain").unique(maintain_order=True).to_list():
        rates = conditional_rates(base.drafter, d, base.block)
        rows += [{"series": f"{base.drafter} drafter preset", "domain": d, "position": k + 1,
                  "acceptance": float(r)} for k, r in enumerate(rates)]
    return pl.DataFrame(rows)


def _cost(base: Any) -> Any:
    """The profile's step-cost model, or None when it cannot be read (the plot is then skipped)."""
    try:
        from sparksched.cost import StepCost
        from sparksched.profile import resolve_profile

        return StepCost.load(resolve_profile(base.profile))
    except (ValueError, OSError):
        return None


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
def pareto(ctx: click.Context, trace: str, policies: str, loads: str, rate_scales: str, profile: str | None,
           drafter: str, block: int, disaggregated: bool, max_requests: int, seed: int, sla: float, goodput: str | None, attainment: float,
           speed: str, baseline: str | None, workers: int | None, use_ray: bool, ray_address: str | None,
           progress: bool, quiet: bool, out_dir: str, overwrite: bool) -> None:
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
    from sparksched.io import ResultSet

    pols = _policies(policies)
    base_name = _baseline(pols, baseline)
    speed_col = SPEED_COLUMNS[speed]
    with runtime_errors():
        ResultSet.check(out_dir, overwrite, RESULT_NAMES)  # a folder it cannot write: refused before the sweep
    result, base, pols, wall = _run(trace, policies, loads, rate_scales, profile, drafter, block, max_requests,
                                    seed, sla, workers, use_ray, ray_address, progress and not quiet, goodput,
                                    disaggregated)
    a = _analyse(result.rows, sla, base_name, speed_col, goodput, attainment)
    backend = "Ray" if (use_ray or ray_address) else "local processes"
    head = (f"Swept {result.rows.height} runs ({len(pols)} policies) on {trace} "
            f"(max_requests={max_requests or 'all'}, profile={base.profile}, seed={seed}) in {wall:.1f} s "
            f"on {backend}.")
    text = head + "\n\n" + report_text(a, sla, base_name, speed_col)
    if not quiet:
        click.echo(text)
    with runtime_errors():
        written = write_outputs(Path(out_dir), result, a, base, sla, speed_col, text, resolved_scenario(ctx),
                                overwrite=overwrite)
    if not quiet:
        click.echo("\nWrote " + ", ".join(str(p) for p in written))


def _analyse(rows: Any, sla: float, baseline: str, speed_col: str, goodput: str | None,
             attainment: float) -> dict[str, Any]:
    """`analyse`, with the goodput table when the rows were swept with --goodput SLOs."""
    a = analyse(rows, sla, baseline, speed_col, attainment)
    a["slos"] = _normal_goodput(goodput) or _row_goodput(rows) or ""
    return a


def _normal_goodput(goodput: str | None) -> str | None:
    """--goodput SLOs in one spelling ("ttft:500,tpot:50" -> "ttft:500 tpot:50"); BadUsage when malformed."""
    from simulator.vllm_metrics import format_goodput, parse_goodput

    if goodput is None:
        return None
    try:
        return format_goodput(parse_goodput(goodput))
    except ValueError as e:
        raise BadUsage(str(e)) from None


def _row_goodput(rows: Any) -> str | None:
    """The --goodput SLOs sweep rows were run with (None when without)."""
    if "goodput" not in rows.columns:
        return None
    values = rows.get_column("goodput").drop_nulls().unique().to_list()
    return values[0] if len(values) == 1 else None


@click.command(cls=Command, epilog=WHATIF_EXAMPLES)
@sweep_options
@click.option("--replicas", "fleet", default=None,
              help="Fleet sizes to try, comma-separated (e.g. 1,2,4,8): answers the smallest fleet meeting the SLA "
                   "at each --rate-scales rate, per policy (--load is then each replica's concurrency cap).")
@click.option("--router", default=SIM.router, show_default=True,
              type=click.Choice(["round-robin", "least-loaded", "least-kv", "session", "prefix"]),
              help="With --replicas: how the fleet routes requests.")
@click.option("--sla-ttft", "sla_ttft_s", default=SIM.sla_ttft_s, show_default=True, type=float,
              help="With --replicas: the TTFT (s) a request must not exceed to count as meeting the SLA.")
@click.option("--throughput", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Also answer: how fast is each user at this aggregate throughput (tok/s)?")
@click.option("--from", "from_dir", default=None, type=click.Path(file_okay=False),
              help="Answer from a previous `pareto -o DIR` sweep (its sweep.parquet) instead of simulating.")
@click.option("-o", "--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Also write report.html (answers, figures, tables) and scenario.toml into this directory.")
@click.option("--overwrite", is_flag=True, help="With -o: replace an existing output folder (never merged with it).")
@click.pass_context
def whatif(ctx: click.Context, trace: str, policies: str, loads: str, rate_scales: str, profile: str | None,
           drafter: str, block: int, disaggregated: bool, max_requests: int, seed: int, sla: float, goodput: str | None,
           attainment: float, speed: str, baseline: str | None, workers: int | None, use_ray: bool,
           ray_address: str | None, progress: bool, quiet: bool, fleet: str | None, router: str, sla_ttft_s: float,
           throughput: float | None, from_dir: str | None, out_dir: str | None, overwrite: bool) -> None:
    """What throughput can we sell at --sla tokens/s per user (or --goodput SLOs), and how much faster is each user?

    Sweeps like `pareto` (or reads `--from DIR`) and prints only the answers; -o DIR also writes
    them as report.html with the figures, and the resolved scenario.
    """
    from simulator.frontier import speed_at_throughput

    speed_col = SPEED_COLUMNS[speed]
    if fleet is not None:
        if from_dir is not None:
            raise BadUsage("--replicas sweeps fleets itself: it cannot answer --from a pareto sweep")
        _whatif_fleet(ctx, trace, policies, loads, rate_scales, profile, drafter, block, disaggregated, max_requests,
                      seed, sla, goodput, attainment, workers, use_ray, ray_address, progress and not quiet, quiet,
                      fleet, router, sla_ttft_s, out_dir, overwrite)
        return
    result = None
    if out_dir is not None:
        from sparksched.io import ResultSet

        with runtime_errors():
            ResultSet.check(out_dir, overwrite, WHATIF_NAMES)  # before sweeping
    if from_dir is not None:
        import polars as pl

        from sparksched.io import check_result_set

        path = Path(from_dir) / "sweep.parquet"
        try:
            check_result_set(from_dir, need=["sweep.parquet"])
        except ValueError as e:
            raise click.ClickException(f"cannot read a sweep: {' '.join(str(e).split())}") from None
        try:
            rows = pl.read_parquet(path)
        except (OSError, pl.exceptions.PolarsError) as e:
            raise click.ClickException(f"{path}: cannot read a sweep: {e}") from None
        absent = {"policy", "max_running", "rate_scale", "throughput_tps", speed_col} - set(rows.columns)
        if absent:
            raise click.ClickException(f"{path}: not a sweep table, missing columns {sorted(absent)}")
        if goodput is not None and _normal_goodput(goodput) != _row_goodput(rows):
            want = _normal_goodput(goodput)
            raise BadUsage(f"{path}: swept with goodput SLOs {_row_goodput(rows)!r}, not {want!r}: run "
                           f"`sparksched pareto --goodput {want}` to answer for those")
        pols = rows.get_column("policy").unique(maintain_order=True).to_list()
        if ctx.get_parameter_source("policies") not in (click.core.ParameterSource.DEFAULT, None):
            wanted = _policies(policies)
            missing = [p for p in wanted if p not in pols]
            if missing:
                raise click.BadParameter(f"{missing} not in {path} (it has {pols})", param_hint="--policies")
            rows, pols = rows.filter(pl.col("policy").is_in(wanted)), wanted
    else:
        result, _, pols, _ = _run(trace, policies, loads, rate_scales, profile, drafter, block, max_requests,
                                  seed, sla, workers, use_ray, ray_address, progress and not quiet, goodput,
                                  disaggregated)
        rows = result.rows
    base_name = _baseline(pols, baseline)
    a = _analyse(rows, sla, base_name, speed_col, goodput, attainment)
    lines = [sla_text(a["sla"], a["front"], sla, base_name, speed_col)]
    lines += [gain_text(g).splitlines()[0] for g in a["gains"]]
    lines.append(breaking_text(a["breaking"], sla, a["load"]))
    if a.get("goodput") is not None:
        lines.append(goodput_text(a["goodput"], a["slos"], attainment, base_name))
    if throughput is not None:
        lines.append(f"Per-user speed ({speed_col}) at {throughput:,.0f} tok/s aggregate:")
        front = a["front"]
        for p in pols:
            f = front.filter(front["policy"] == p).sort(speed_col)
            v, st = speed_at_throughput(f[speed_col].to_numpy(), f["throughput_tps"].to_numpy(), throughput)
            msg = ("unreachable (above its highest throughput)" if v is None else
                   f"{v:.1f} tok/s/user" + (" (at least: below the lightest load swept)" if st == "lower_bound" else ""))
            lines.append(f"  {p:<14} {msg}")
    text = "\n".join(lines)
    if not quiet:
        click.echo(text)
    if out_dir is not None:
        from sparksched.io import ResultSet, write_text

        with runtime_errors(), ResultSet(out_dir, overwrite=overwrite, names=WHATIF_NAMES,
                                         about={"command": "whatif", "policies": pols}) as rs:
            scenario_text = resolved_scenario(ctx)
            write_text(rs.folder / "scenario.toml", scenario_text)
            pngs = _whatif_pngs(rs.folder, rows, a, sla, speed_col)
            _html_report(rs.folder, a, pngs, text, scenario_text, "sparksched whatif")


def _whatif_pngs(out: Path, rows: Any, a: dict[str, Any], sla: float, speed_col: str) -> list[Path]:
    """The frontier figure of the answers (the sweep's other figures are pareto's)."""
    from simulator.plots import plot_frontier

    return [plot_frontier(rows, a["front"], out / PNG_NAMES["frontier"], sla=sla, sla_rows=a["sla"], x=speed_col)]


FLEET_NAMES = ("fleet.parquet", "fleet_sweep.parquet", "report.html", "scenario.toml")


def _whatif_fleet(ctx: click.Context, trace: str, policies: str, loads: str, rate_scales: str, profile: str | None,
                  drafter: str, block: int, disaggregated: bool, max_requests: int, seed: int, sla: float,
                  goodput: str | None, attainment: float, workers: int | None, use_ray: bool, ray_address: str | None,
                  progress: bool, quiet: bool, fleet: str, router: str, sla_ttft_s: float, out_dir: str | None,
                  overwrite: bool) -> None:
    """whatif --replicas: the smallest fleet meeting the SLA at each rate, per policy (simulator.frontier)."""
    from simulator.frontier import smallest_fleet
    from simulator.sweep import run_sweep, sweep_configs
    from simulator.trace import load_trace, resolve_trace

    sizes = sorted(set(_parse_list(fleet, int, "--replicas")))
    pols = _policies(policies)
    default_load = ctx.get_parameter_source("loads") in (click.core.ParameterSource.DEFAULT, None)
    caps = [SIM.max_running] if default_load else _parse_list(loads, int, "--load")
    if len(caps) != 1:
        raise click.BadParameter("a fleet sweep takes one concurrency cap per replica", param_hint="--load")
    rates = _parse_list(rate_scales, float, "--rate-scales")
    if out_dir is not None:
        from sparksched.io import ResultSet

        with runtime_errors():
            ResultSet.check(out_dir, overwrite, FLEET_NAMES)
    try:
        base = _base_config(profile, drafter, block, max_requests, seed, sla, goodput, disaggregated)
        base = base.replace(router=router, sla_ttft_s=sla_ttft_s)
        configs = sweep_configs(base, pols, caps, rates, sizes)
    except ValueError as e:
        raise BadUsage(str(e)) from None
    with runtime_errors():
        df = load_trace(resolve_trace(trace))
        t0 = time.perf_counter()
        result = run_sweep(df, configs, backend="ray" if (use_ray or ray_address) else "local", workers=workers,
                           ray_address=ray_address, progress=progress)
        wall = time.perf_counter() - t0
    column = "dspark_slo_attainment" if goodput else "goodput_share"
    table = smallest_fleet(result.rows, attainment, column)
    what = (f"vLLM SLOs {_normal_goodput(goodput)}" if goodput else
            f"TTFT <= {sla_ttft_s:g} s and >= {sla:g} tok/s/user")
    lines = [f"Smallest fleet ({router} routing, {caps[0]} requests per replica at most) in which at least "
             f"{100 * attainment:.0f} % of requests meet {what}; sizes tried {sizes}, {result.rows.height} runs in "
             f"{wall:.1f} s:"]
    for r in table.iter_rows(named=True):
        if r["replicas"] is None:
            msg = (f"none of the sizes tried (at {r['largest_swept']} replicas {100 * (r['share_at_largest'] or 0):.1f} "
                   "% meet it): try larger fleets")
        else:
            msg = (f"{r['replicas']} replica{'s' if r['replicas'] > 1 else ''} ({100 * r['share']:.1f} % meet it; "
                   f"P50 {r['user_tps_p50']:.0f} tok/s/user, TTFT P90 {r['ttft_p90_s']:.2f} s, "
                   f"{r['throughput_tps']:,.0f} tok/s)")
        lines.append(f"  {r['policy']:<14} x{r['rate_scale']:g} rate: {msg}")
    text = "\n".join(lines)
    if not quiet:
        click.echo(text)
    if out_dir is not None:
        from simulator.report import sweep_report, write_report
        from sparksched.io import ResultSet, write_parquet, write_text

        with runtime_errors(), ResultSet(out_dir, overwrite=overwrite, names=FLEET_NAMES,
                                         about={"command": "whatif", "policies": pols, "replicas": sizes}) as rs:
            write_parquet(rs.folder / "fleet.parquet", table)
            write_parquet(rs.folder / "fleet_sweep.parquet", result.rows)
            scenario_text = resolved_scenario(ctx)
            write_text(rs.folder / "scenario.toml", scenario_text)
            write_report(rs.folder / "report.html", sweep_report("sparksched whatif --replicas", text,
                                                                 {"Smallest fleet": table}, [], scenario_text))
