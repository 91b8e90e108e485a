"""The answers of a load sweep (`pareto`, `whatif`): analysis, report text and the result sets written.

Covers: from a sweep's rows (simulator.sweep) to what an operator reads. `analyse` computes the
frontier, the throughput at an SLA, the speed gains over a baseline, the SLA-breaking loads and
(with goodput SLOs) the goodput table (maths in simulator.frontier) as one `SweepAnalysis`; the
`*_text` functions print them; `write_pareto_set`, `write_whatif_set` and `write_fleet_set` write
the tables, figures (simulator.plots), report.txt / report.html (simulator.report) and scenario.toml
as one `sparksched.io.ResultSet` (whole or not at all). `read_sweep` reads a complete earlier sweep.

Click-free: errors are one-line ValueErrors; the commands (sparksched.commands.pareto) turn them
into exit codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

PNG_NAMES = {"frontier": "frontier.png", "budget": "verify_budget_vs_concurrency.png",
             "acceptance": "acceptance_by_position.png", "step_time": "step_time.png"}
TABLE_NAMES = ("sweep.parquet", "frontier.parquet", "sla.parquet", "budget.parquet", "acceptance.parquet",
               "sla_breaking_load.parquet", "speed_gain.parquet")
RESULT_NAMES = (*TABLE_NAMES, "goodput.parquet", *PNG_NAMES.values(), "report.txt", "report.html", "scenario.toml")
WHATIF_NAMES = (PNG_NAMES["frontier"], "report.html", "scenario.toml")
FLEET_NAMES = ("fleet.parquet", "fleet_sweep.parquet", "report.html", "scenario.toml")


# ------------------------------------------------------------------------------------------ analysis

@dataclass(frozen=True)
class SweepAnalysis:
    """What `analyse` finds in a sweep's rows.

    Attributes:
        front: the frontier points (simulator.frontier.frontier), per policy.
        sla: throughput at the SLA per policy, with the ratio to the baseline (sla_table).
        gains: per-user speed at matched throughput of each policy over the baseline (SpeedGain).
        breaking: the load at which each policy stops meeting the SLA (sla_breaking_load).
        load: the load axis that varies: "max_running" or "rate_scale".
        goodput: best goodput and throughput at the SLOs per policy (goodput_table), or None.
        attainment: the share of requests that must meet every SLO (None: no goodput table asked).
        slos: the goodput SLOs the rows were swept with, in one spelling ("" without).
    """

    front: pl.DataFrame
    sla: pl.DataFrame
    gains: list[Any]
    breaking: pl.DataFrame
    load: str
    goodput: pl.DataFrame | None = None
    attainment: float | None = None
    slos: str = ""


def load_column(rows: pl.DataFrame) -> str:
    """The load axis that varies in a sweep (max_running unless only rate_scale varies)."""
    if rows.get_column("max_running").n_unique() == 1 and rows.get_column("rate_scale").n_unique() > 1:
        return "rate_scale"
    return "max_running"


def analyse(rows: pl.DataFrame, sla: float, baseline: str, speed_col: str, attainment: float | None = None,
            slos: str = "") -> SweepAnalysis:
    """Frontier, SLA table, speed gains vs the baseline and SLA-breaking loads of sweep rows; with
    `attainment` (and rows swept with goodput SLOs), the goodput table too. `slos`: the SLOs asked
    for (default: those the rows were swept with)."""
    from simulator.frontier import frontier, goodput_table, sla_breaking_load, sla_table, speed_gain

    front = frontier(rows, x=speed_col)
    pols = rows.get_column("policy").unique(maintain_order=True).to_list()
    load = load_column(rows)
    # the SLA-breaking load needs one load axis: with a cross product, read it at each rate_scale
    brk_rows = rows if load == "rate_scale" or rows.get_column("rate_scale").n_unique() == 1 else \
        rows.filter(rows["rate_scale"] == rows["rate_scale"].max())
    return SweepAnalysis(
        front=front,
        sla=sla_table(front, sla, baseline=baseline, x=speed_col),
        gains=[speed_gain(front, p, baseline, x=speed_col) for p in pols if p != baseline],
        breaking=sla_breaking_load(brk_rows, sla, load=load, x=speed_col),
        load=load,
        goodput=goodput_table(rows, attainment, baseline) if attainment is not None and _has_goodput(rows) else None,
        attainment=attainment,
        slos=slos or row_goodput(rows) or "",
    )


def _has_goodput(rows: pl.DataFrame) -> bool:
    return "request_goodput" in rows.columns and rows.get_column("request_goodput").drop_nulls().len() > 0


def normal_goodput(goodput: str | None) -> str | None:
    """Goodput SLOs in one spelling ("ttft:500,tpot:50" -> "ttft:500 tpot:50"); ValueError when malformed."""
    from simulator.vllm_metrics import format_goodput, parse_goodput

    if goodput is None:
        return None
    return format_goodput(parse_goodput(goodput))


def row_goodput(rows: pl.DataFrame) -> str | None:
    """The goodput SLOs sweep rows were run with (None when without)."""
    if "goodput" not in rows.columns:
        return None
    values = rows.get_column("goodput").drop_nulls().unique().to_list()
    return values[0] if len(values) == 1 else None


def read_sweep(folder: str | Path, speed_col: str) -> pl.DataFrame:
    """The rows of an earlier `pareto -o` sweep (its sweep.parquet), from a complete result set only;
    ValueError naming the folder or file and what is wrong."""
    from sparksched.io import check_result_set

    path = Path(folder) / "sweep.parquet"
    try:
        check_result_set(folder, need=["sweep.parquet"])
    except ValueError as e:
        raise ValueError(f"cannot read a sweep: {' '.join(str(e).split())}") from None
    try:
        rows = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as e:
        raise ValueError(f"{path}: cannot read a sweep: {e}") from None
    absent = {"policy", "max_running", "rate_scale", "throughput_tps", speed_col} - set(rows.columns)
    if absent:
        raise ValueError(f"{path}: not a sweep table, missing columns {sorted(absent)}")
    return rows


# ------------------------------------------------------------------------------------------ text

def _fmt(v: Any, spec: str = ",.0f") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def frontier_text(front: pl.DataFrame, speed_col: str) -> str:
    """The frontier table: one line per frontier point, policy by policy, fastest users last."""
    rows = []
    for r in front.iter_rows(named=True):
        rows.append([r["policy"], _fmt(r.get("max_running"), "d"), _fmt(r.get("rate_scale"), "g"),
                     _fmt(r.get("mean_running"), ".1f"), _fmt(r.get(speed_col), ".1f"),
                     _fmt(r.get("user_tps_p90"), ".1f"), _fmt(r.get("throughput_tps")),
                     _fmt(r.get("ttft_p90_s"), ".2f"), _fmt(r.get("budget_per_request"), ".2f")])
    return _table(["policy", "max_running", "rate_scale", "mean_running", f"user tok/s ({speed_col})",
                   "user_tps_p90", "throughput tok/s", "TTFT P90 s", "verify budget/req"], rows)


def sla_text(sla_rows: pl.DataFrame, front: pl.DataFrame, sla: float, baseline: str, speed_col: str) -> str:
    """Throughput at the SLA, policy by policy, with its ratio to the baseline's."""
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
    """Per-user speed at matched throughput of one policy over the baseline (a SpeedGain)."""
    if gain.overlap is None:
        return (f"Per-user speed at matched throughput ({gain.policy} vs {gain.baseline}): the two frontiers "
                "cover no common throughput range; sweep more loads.")
    rows = [[_fmt(r["throughput"]), _fmt(r["speed"], ".1f"), _fmt(r["baseline_speed"], ".1f"),
             f"{100 * r['gain']:+.0f} %"] for r in gain.table.iter_rows(named=True)]
    head = (f"Per-user speed at matched throughput ({gain.policy} vs {gain.baseline}, "
            f"{gain.overlap[0]:,.0f}-{gain.overlap[1]:,.0f} tok/s): gain {100 * gain.min_gain:+.0f} % "
            f"to {100 * gain.max_gain:+.0f} %")
    return head + "\n" + _table(["throughput tok/s", gain.policy, gain.baseline, "gain"], rows)


def breaking_text(brk: pl.DataFrame, sla: float, load: str) -> str:
    """The load at which each policy's per-user speed falls below the SLA."""
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


def goodput_text(table: pl.DataFrame, slos: str, attainment: float, baseline: str) -> str:
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


def report_text(a: SweepAnalysis, sla: float, baseline: str, speed_col: str) -> str:
    """pareto's printed report: frontier, SLA answers, speed gains, breaking loads, goodput."""
    parts = ["Frontier (operating points no other load of the same policy beats on both axes):",
             frontier_text(a.front, speed_col), "",
             sla_text(a.sla, a.front, sla, baseline, speed_col), ""]
    for g in a.gains:
        parts += [gain_text(g), ""]
    parts.append(breaking_text(a.breaking, sla, a.load))
    if a.goodput is not None and a.attainment is not None:
        parts += ["", goodput_text(a.goodput, a.slos, a.attainment, baseline)]
    return "\n".join(parts)


def whatif_text(a: SweepAnalysis, sla: float, baseline: str, speed_col: str, policies: Sequence[str],
                throughput: float | None = None) -> str:
    """whatif's answers: throughput at the SLA, each gain's headline, breaking loads, goodput, and
    (with `throughput`) each policy's per-user speed at that aggregate throughput."""
    from simulator.frontier import speed_at_throughput

    lines = [sla_text(a.sla, a.front, sla, baseline, speed_col)]
    lines += [gain_text(g).splitlines()[0] for g in a.gains]
    lines.append(breaking_text(a.breaking, sla, a.load))
    if a.goodput is not None and a.attainment is not None:
        lines.append(goodput_text(a.goodput, a.slos, a.attainment, baseline))
    if throughput is not None:
        lines.append(f"Per-user speed ({speed_col}) at {throughput:,.0f} tok/s aggregate:")
        for p in policies:
            f = a.front.filter(a.front["policy"] == p).sort(speed_col)
            v, st = speed_at_throughput(f[speed_col].to_numpy(), f["throughput_tps"].to_numpy(), throughput)
            msg = ("unreachable (above its highest throughput)" if v is None else
                   f"{v:.1f} tok/s/user" + (" (at least: below the lightest load swept)" if st == "lower_bound" else ""))
            lines.append(f"  {p:<14} {msg}")
    return "\n".join(lines)


def fleet_text(table: pl.DataFrame, router: str, cap: int, attainment: float, what: str, sizes: Sequence[int],
               runs: int, wall_s: float) -> str:
    """whatif --replicas: the smallest fleet meeting `what` at each rate, per policy (smallest_fleet's table)."""
    lines = [f"Smallest fleet ({router} routing, {cap} requests per replica at most) in which at least "
             f"{100 * attainment:.0f} % of requests meet {what}; sizes tried {list(sizes)}, {runs} runs in "
             f"{wall_s:.1f} s:"]
    for r in table.iter_rows(named=True):
        if r["replicas"] is None:
            msg = (f"none of the sizes tried (at {r['largest_swept']} replicas {100 * (r['share_at_largest'] or 0):.1f} "
                   "% meet it): try larger fleets")
        else:
            msg = (f"{r['replicas']} replica{'s' if r['replicas'] > 1 else ''} ({100 * r['share']:.1f} % meet it; "
                   f"P50 {r['user_tps_p50']:.0f} tok/s/user, TTFT P90 {r['ttft_p90_s']:.2f} s, "
                   f"{r['throughput_tps']:,.0f} tok/s)")
        lines.append(f"  {r['policy']:<14} x{r['rate_scale']:g} rate: {msg}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ result sets

def write_pareto_set(out: Path, result: Any, a: SweepAnalysis, base: Any, sla: float, speed_col: str,
                     text: str, scenario_text: str | None = None, title: str = "sparksched pareto",
                     overwrite: bool = False) -> list[Path]:
    """Parquet tables, PNGs, the printed report, report.html and scenario.toml (when given) as one
    result set in `out` (whole or not at all; an existing `out` is refused unless `overwrite`, then
    replaced whole). `result`: a simulator.sweep.SweepResult; `base`: the sweep's base SimConfig.
    Returns the files' paths."""
    from simulator.plots import plot_acceptance, plot_budget_vs_concurrency, plot_frontier, plot_step_time
    from sparksched.io import ResultSet, write_parquet, write_text

    gains = [g.table.with_columns(policy=pl.lit(g.policy), baseline=pl.lit(g.baseline)) for g in a.gains]
    tables = {"sweep.parquet": result.rows, "frontier.parquet": a.front, "sla.parquet": a.sla,
              "budget.parquet": result.budget, "acceptance.parquet": result.acceptance,
              "sla_breaking_load.parquet": a.breaking}
    if gains:
        tables["speed_gain.parquet"] = pl.concat(gains)
    if a.goodput is not None:
        tables["goodput.parquet"] = a.goodput
    about = {"command": "pareto", "policies": result.rows.get_column("policy").unique(maintain_order=True).to_list(),
             "seed": getattr(base, "seed", None), "profile": getattr(base, "profile", None)}
    with ResultSet(out, overwrite=overwrite, names=RESULT_NAMES, about=about) as rs:
        folder = rs.folder
        written = []
        for name, df in tables.items():
            written.append(write_parquet(folder / name, df))
        written.append(plot_frontier(result.rows, a.front, folder / PNG_NAMES["frontier"], sla=sla,
                                     sla_rows=a.sla, x=speed_col))
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


def write_whatif_set(out: str | Path, rows: pl.DataFrame, a: SweepAnalysis, sla: float, speed_col: str, text: str,
                     scenario_text: str, policies: Sequence[str], overwrite: bool = False) -> Path:
    """whatif -o: the frontier figure of the answers (the sweep's other figures are pareto's),
    report.html and scenario.toml, as one result set."""
    from simulator.plots import plot_frontier
    from sparksched.io import ResultSet, write_text

    with ResultSet(out, overwrite=overwrite, names=WHATIF_NAMES,
                   about={"command": "whatif", "policies": list(policies)}) as rs:
        write_text(rs.folder / "scenario.toml", scenario_text)
        pngs = [plot_frontier(rows, a.front, rs.folder / PNG_NAMES["frontier"], sla=sla, sla_rows=a.sla, x=speed_col)]
        _html_report(rs.folder, a, pngs, text, scenario_text, "sparksched whatif")
    return Path(out)


def write_fleet_set(out: str | Path, table: pl.DataFrame, rows: pl.DataFrame, text: str, scenario_text: str,
                    policies: Sequence[str], sizes: Sequence[int], overwrite: bool = False) -> Path:
    """whatif --replicas -o: the smallest-fleet table, the fleet sweep's rows, report.html and
    scenario.toml, as one result set."""
    from simulator.report import sweep_report, write_report
    from sparksched.io import ResultSet, write_parquet, write_text

    with ResultSet(out, overwrite=overwrite, names=FLEET_NAMES,
                   about={"command": "whatif", "policies": list(policies), "replicas": list(sizes)}) as rs:
        write_parquet(rs.folder / "fleet.parquet", table)
        write_parquet(rs.folder / "fleet_sweep.parquet", rows)
        write_text(rs.folder / "scenario.toml", scenario_text)
        write_report(rs.folder / "report.html", sweep_report("sparksched whatif --replicas", text,
                                                             {"Smallest fleet": table}, [], scenario_text))
    return Path(out)


def _html_report(out: Path, a: SweepAnalysis, pngs: list[Path], text: str, scenario_text: str | None,
                 title: str) -> Path:
    """report.html: the answers, the figures and the frontier / SLA / goodput tables, self-contained."""
    from simulator.report import sweep_report, write_report

    tables = {"Frontier": a.front, "Throughput at the SLA": a.sla, "SLA-breaking load": a.breaking}
    if a.goodput is not None:
        tables["Goodput"] = a.goodput
    return write_report(out / "report.html", sweep_report(title, text, tables, pngs, scenario_text))


def _pool_acceptance(acc: pl.DataFrame) -> pl.DataFrame:
    """Acceptance per (policy, domain, position) pooled over all runs of the sweep."""
    return (acc.group_by("policy", "domain", "position", maintain_order=True)
            .agg(pl.col("trials").sum(), pl.col("accepted").sum())
            .filter(pl.col("trials") > 0)
            .with_columns(acceptance=pl.col("accepted") / pl.col("trials"))
            .rename({"policy": "series"}))


def _preset_acceptance(acc: pl.DataFrame, base: Any) -> pl.DataFrame:
    """The drafter preset's raw conditional rates per domain (the paper's Figure 2 where it has them)."""
    from simulator.acceptance import conditional_rates

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
