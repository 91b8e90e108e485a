"""Self-contained HTML reports (report.html) of a simulation or a sweep: one file that opens offline.

The page carries its own CSS and its figures as base64 `data:` URIs: no script, no network, no
side files, so it can be mailed or attached to a ticket as is. Builders return HTML text;
`write_report` writes it atomically (sparksched.io).

- `simulate_report`: the printed summary, vLLM bench serve's latency table (mean / median / std /
  P50 / P90 / P99 of TTFT, TPOT, ITL and E2EL in ms), throughput and speculative-decoding keys,
  the DSpark-specific figures, the run's PNGs and its resolved scenario.
- `sweep_report`: the printed answers of `pareto` / `whatif`, their tables and PNGs, and the scenario.
- `write_run_set`: every output file of one simulation (tables, JSON, timeline, PNGs, report.html).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.88em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; }
"""


def fmt(v: Any, digits: int = 4) -> str:
    """A cell: numbers to `digits` significant digits (integers whole), None and NaN as "-"."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 10 ** digits else f"{v:.{digits}g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x, 3) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k}: {fmt(x)}" for k, x in v.items())
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; cells go through `fmt` and are escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_table(pairs: Mapping[str, Any], headers: tuple[str, str] = ("key", "value")) -> str:
    """A two-column table of key / value pairs."""
    return table(headers, [(k, v) for k, v in pairs.items()])


def frame_table(df: pl.DataFrame, max_rows: int = 200) -> str:
    """A polars frame as a table (the first `max_rows` rows, with a note when cut)."""
    note = f'<p class="note">first {max_rows} of {df.height} rows</p>' if df.height > max_rows else ""
    return table(df.columns, [list(r) for r in df.head(max_rows).iter_rows()]) + note


def pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def image(path: str | Path, alt: str = "") -> str:
    """A PNG embedded as a base64 data URI (the page needs no side files)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt or Path(path).stem)}" src="data:image/png;base64,{data}">'


def page(title: str, sections: Sequence[tuple[str, str]], subtitle: str = "") -> str:
    """The whole document: a title, an optional subtitle line and (heading, body HTML) sections."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if subtitle:
        parts.append(f'<p class="sub">{html.escape(subtitle)}</p>')
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>\n{body}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def latency_table(bench: Mapping[str, Any]) -> str:
    """vLLM's latency keys as a grid: one row per metric, one column per statistic (ms)."""
    stats = ["mean", "median", "std"] + sorted({k.split("_")[0] for k in bench if k.startswith("p") and
                                                k.endswith("_ttft_ms")}, key=lambda p: float(p[1:]))
    rows = [[m.upper()] + [bench.get(f"{s}_{m}_ms") for s in stats] for m in ("ttft", "tpot", "itl", "e2el")]
    return table(["metric (ms)"] + stats, rows)


BENCH_HEADLINE = ("completed", "failed", "duration", "total_input_tokens", "total_output_tokens", "request_throughput",
                  "request_goodput", "output_throughput", "total_token_throughput", "max_output_tokens_per_s",
                  "max_concurrent_requests")


def simulate_report(result: Any, pngs: Mapping[str, Path], scenario_text: str | None = None,
                    files: Sequence[str] = ()) -> str:
    """The HTML report of one `SimResult` (simulator.run)."""
    b = result.bench
    meta = result.meta
    spec = {k: v for k, v in b.items() if k.startswith("spec_decode_")}
    dspark = {k: v for k, v in b.items() if k.startswith("dspark_")}
    sections = [
        ("Summary", pre(result.table())),
        ("Latency, as vllm bench serve reports it", latency_table(b)
         + '<p class="note">TTFT: first token - arrival. TPOT: (E2EL - TTFT) / (output tokens - 1). ITL: every '
           "gap between streamed chunks (a speculative round's tokens arrive together). E2EL: completion - "
           "arrival. Completed requests only; std is the population standard deviation.</p>"),
        ("Throughput", kv_table({k: b.get(k) for k in BENCH_HEADLINE})),
    ]
    if spec:
        sections.append(("Speculative decoding (vLLM's counters)", kv_table(spec)
                         + '<p class="note">A draft is one request verifying at least one draft token in one '
                           "step; per-position rate k = drafts with at least k accepted / drafts.</p>"))
    sections.append(("DSpark figures", kv_table(dspark)))
    for name, label in (("timeseries", "The run over time"), ("latency", "Latency distributions"),
                        ("acceptance", "Acceptance by position and domain")):
        if name in pngs:
            sections.append((label, image(pngs[name], label)))
    if scenario_text:
        sections.append(("Scenario (repeat with --config scenario.toml)", pre(scenario_text)))
    if files:
        sections.append(("Files", "<ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in files) + "</ul>"))
    sub = (f"trace {meta.get('trace')}, policy {meta.get('policy')}, drafter {meta.get('drafter')}, block "
           f"{meta.get('block')}, profile {meta.get('profile')}")
    return page("sparksched simulate", sections, sub)


def sweep_report(title: str, text: str, tables: Mapping[str, pl.DataFrame], pngs: Sequence[Path],
                 scenario_text: str | None = None, subtitle: str = "") -> str:
    """The HTML report of a `pareto` or `whatif` sweep: answers, tables, figures, scenario."""
    sections = [("Answers", pre(text))]
    sections += [(Path(p).stem.replace("_", " "), image(p)) for p in pngs]
    sections += [(name, frame_table(df)) for name, df in tables.items()]
    if scenario_text:
        sections.append(("Scenario (repeat with --config scenario.toml)", pre(scenario_text)))
    return page(title, sections, subtitle)


def write_run_set(result: Any, folder: Path, scenario_text: str | None, written: Sequence[Path] = (), *,
                  timeline: bool = False, report: bool = True) -> list[Path]:
    """Every output of one simulation into `folder` (the staged folder of a `sparksched.io.ResultSet`):
    its tables and JSON files (`SimResult.write_files`), with `timeline` timeline.json (Perfetto,
    simulator.timeline), with `report` the PNGs (simulator.run_plots) and report.html. `written`:
    files the caller already put there (scenario.toml), listed in the report. Returns every path,
    report.html last."""
    out = list(result.write_files(folder))
    out += list(written)
    if timeline:
        from simulator.timeline import replica_tables, write_timeline

        meta = {"trace": result.meta.get("trace"), "policy": result.config.policy, "profile": result.config.profile}
        out.append(write_timeline(folder / "timeline.json", replica_tables(result), meta))
    if report:
        from simulator.run_plots import write_run_plots

        pngs = write_run_plots(result, folder)
        out += list(pngs.values())
        names = [p.name for p in out] + ["report.html"]
        out.append(write_report(folder / "report.html", simulate_report(result, pngs, scenario_text, files=names)))
    return out


def write_report(path: str | Path, text: str) -> Path:
    """Write report HTML atomically."""
    from sparksched.io import write_text

    return write_text(path, text)
