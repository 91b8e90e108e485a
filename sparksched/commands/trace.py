"""`sparksched trace`: convert, generate, inspect and transform request traces.

A thin shell over `simulator.trace`, `simulator.convert`, `simulator.generate` and
`simulator.trace_tools`. Library ValueErrors become one-line click errors; outputs are written
atomically (temp file + rename), so a failed command never leaves a half-written trace.
"""

from __future__ import annotations

import math
from typing import Any

import click

from sparksched.commands._common import BadUsage, cli_errors, quiet_option, usage_errors

POSITIVE = click.FloatRange(min=0, min_open=True)
_errors = cli_errors  # library errors as one line, exit 1; warnings as `warning:` lines


def _load(name: str):
    from simulator.trace import load_trace, resolve_trace

    return load_trace(resolve_trace(name))


def _write(df, out: str) -> int:
    from simulator.trace import write_trace

    return write_trace(df, out)


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        click.echo(text)


def _fmt(value: Any, key: str) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if key in ("mean_rate", "peak_rate", "ia_cv"):
            return f"{value:.2f}"
        if key == "span_s":
            return f"{value:.1f}"
        return f"{value:.0f}"
    return str(value)


def format_stats(stats) -> str:
    """The stats frame as a text table: one line per metric, one column per domain row."""
    rows = stats.to_dicts()
    labels = {"requests": "requests", "span_s": "span (s)", "mean_rate": "mean rate (req/s)",
              "peak_rate": "peak rate (req/s, 60 s)", "ia_cv": "inter-arrival CV"}
    keys = [k for k in stats.columns if k != "domain"]
    header = ["metric"] + [str(r["domain"]) for r in rows]
    body = [[labels.get(k, k.replace("_", " "))] + [_fmt(r[k], k) for r in rows] for k in keys]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in [header, *body]]
    return "\n".join(lines)


@click.group(epilog="""\b
Examples:
  sparksched trace stats chat code
  sparksched trace generate --domain code --rate 4 --duration 600 -o code.jsonl
  sparksched trace convert --from vllm-bench bench.json -o workload.jsonl
""")
def trace() -> None:
    """Request traces (JSON Lines): convert public formats, generate, inspect, transform."""


@trace.command(epilog="""\b
Examples:
  sparksched trace convert --from azure AzureLLMInferenceTrace_conv.csv -o azure-chat.jsonl
  sparksched trace convert --from lengths sharegpt_stats.csv --rate 5 -o sharegpt.jsonl
  sparksched trace convert --from vllm-bench bench.json -o workload.jsonl
""")
@click.option("--from", "fmt", required=True,
              type=click.Choice(["azure", "mooncake", "burstgpt", "lengths", "vllm-bench"]), help="Input format.")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("out_arg", metavar="[OUT]", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", default=None, type=click.Path(dir_okay=False),
              help="Output trace (.jsonl); the positional OUT is the old spelling of the same.")
@click.option("--domain", default=None, help="Domain label (azure: 'code' if the file name says so, else chat).")
@click.option("--seed", default=0, show_default=True, help="Seed for mooncake jitter / lengths and vllm-bench arrivals.")
@click.option("--jitter/--no-jitter", default=True, show_default=True,
              help="mooncake: spread requests within a quantised timestamp bucket.")
@click.option("--bucket", "bucket_s", type=POSITIVE, default=None,
              help="mooncake: bucket width in s (default: median gap between distinct timestamps).")
@click.option("--keep-failed", is_flag=True, help="burstgpt: keep 0-token responses as 1-token outputs "
              "(default: drop and count them).")
@click.option("--model", default=None, help="burstgpt: keep only this Model (e.g. ChatGPT).")
@click.option("--rate", type=POSITIVE, default=None,
              help="lengths: arrival rate in requests/s (required); vllm-bench: override the result's request_rate.")
@click.option("--cv", type=POSITIVE, default=1.0, show_default=True, help="lengths: inter-arrival CV.")
@click.option("--arrival", type=click.Choice(["gamma", "weibull"]), default="gamma", show_default=True,
              help="lengths: inter-arrival distribution.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="lengths: keep the first N rows.")
@click.option("--shuffle", is_flag=True, help="lengths: shuffle rows (seeded) before assigning arrivals.")
@click.option("--burstiness", type=POSITIVE, default=None,
              help="vllm-bench: override the result's burstiness (gamma shape; 1 = Poisson).")
@click.option("--arrivals", "bench_arrivals", type=click.Choice(["rate", "recorded"]), default="rate",
              show_default=True,
              help="vllm-bench: draw arrivals from request_rate and burstiness, or use the recorded start_times.")
@click.option("--line", type=click.IntRange(min=1), default=None,
              help="vllm-bench: which run of a JSON Lines file (SGLang appends one per line) [default: the last].")
@click.option("--skip-bad", is_flag=True, help="azure, mooncake, burstgpt: drop and count bad rows (an unreadable "
              "or implausible timestamp or token count) instead of stopping at the first.")
@quiet_option
@_errors
def convert(fmt: str, src: str, out_arg: str | None, out: str | None, domain: str | None, seed: int, jitter: bool,
            bucket_s: float | None, keep_failed: bool, model: str | None, rate: float | None, cv: float, arrival: str,
            limit: int | None, shuffle: bool, burstiness: float | None, bench_arrivals: str, line: int | None,
            skip_bad: bool, quiet: bool) -> None:
    """Convert SRC in a public trace format (or a benchmark result) into the trace schema at -o OUT."""
    from simulator.convert import convert as run

    if out is not None and out_arg is not None and out != out_arg:
        raise click.UsageError(f"two outputs given: {out_arg} and -o {out}")
    out = out or out_arg
    if out is None:
        raise click.UsageError("missing the output: -o OUT.jsonl")
    if bucket_s is not None and not math.isfinite(bucket_s):  # FloatRange lets nan through
        raise click.BadParameter(f"{bucket_s!r} must be a finite number of seconds > 0", param_hint="--bucket")
    if bucket_s is not None and fmt != "mooncake":
        raise click.UsageError("--bucket applies to --from mooncake")
    if skip_bad and fmt not in ("azure", "mooncake", "burstgpt"):
        raise click.UsageError("--skip-bad applies to --from azure, mooncake and burstgpt")
    options: dict[str, Any] = {}
    if fmt == "azure":
        options = {"domain": domain, "skip_bad": skip_bad}
    elif fmt == "mooncake":
        options = {"domain": domain or "chat", "jitter": jitter, "seed": seed, "bucket_s": bucket_s,
                   "skip_bad": skip_bad}
    elif fmt == "burstgpt":
        options = {"domain": domain or "chat", "keep_failed": keep_failed, "model": model, "skip_bad": skip_bad}
    elif fmt == "vllm-bench":
        options = {"domain": domain or "chat", "seed": seed, "arrivals": bench_arrivals, "rate": rate,
                   "burstiness": burstiness, "line": line}
    else:
        if rate is None:
            raise click.UsageError("--from lengths needs --rate (requests/s)")
        options = {"rate": rate, "cv": cv, "arrival": arrival, "seed": seed, "domain": domain or "chat",
                   "limit": limit, "shuffle": shuffle}
    df, report = run(fmt, src, **options)
    n = _write(df, out)
    _say(quiet, f"{report.summary()} -> {out} ({n} requests)")


@trace.command(epilog="""\b
Examples:
  sparksched trace generate --domain chat --rate 6 --duration 600 -o chat-600s.jsonl
  sparksched trace generate --domain mixed --mix chat=0.6,code=0.4 --requests 2000 -o mix.jsonl
""")
@click.option("--domain", type=click.Choice(["chat", "code", "math", "mixed"]), default="chat", show_default=True)
@click.option("--rate", type=POSITIVE, default=None, help="Mean arrival rate, requests/s (default: the domain's).")
@click.option("--duration", type=POSITIVE, default=None, help="Seconds of traffic (default 3600 unless --requests).")
@click.option("--requests", type=click.IntRange(min=1), default=None,
              help="Exactly this many requests instead of a duration.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False), help="Output .jsonl.")
@click.option("--cv", type=POSITIVE, default=None, help="Inter-arrival coefficient of variation (default: the domain's).")
@click.option("--arrival", type=click.Choice(["gamma", "weibull"]), default="gamma", show_default=True)
@click.option("--modulation", type=click.Choice(["none", "sine", "diurnal"]), default="none", show_default=True,
              help="Rate modulation over time (time-warped renewal process).")
@click.option("--mod-amplitude", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True,
              help="Relative amplitude in [0, 1).")
@click.option("--mod-period", type=POSITIVE, default=3600.0, show_default=True, help="sine: period in s.")
@click.option("--mix", "mix_text", default=None, help="mixed: weights, e.g. chat=0.6,code=0.25,math=0.15.")
@quiet_option
@_errors
def generate(domain: str, rate: float | None, duration: float | None, requests: int | None, seed: int, out: str,
             cv: float | None, arrival: str, modulation: str, mod_amplitude: float, mod_period: float,
             mix_text: str | None, quiet: bool) -> None:
    """Generate a synthetic trace with renewal arrivals and the domain's length distributions."""
    from simulator.generate import Modulation, generate_trace, parse_mix

    if duration is not None and requests is not None:
        raise click.UsageError("give --duration or --requests, not both")
    if duration is None and requests is None:
        duration = 3600.0
    if mix_text is not None and domain != "mixed":
        raise click.UsageError("--mix needs --domain mixed")
    with usage_errors():
        mod = Modulation.named(modulation, mod_amplitude, mod_period)
        mix = parse_mix(mix_text) if mix_text else None
    df = generate_trace(domain, rate=rate, duration_s=duration, requests=requests, seed=seed, cv=cv,
                        arrival=arrival, modulation=mod, mix=mix)
    n = _write(df, out)
    span = float(df["arrival_s"].to_numpy().max())
    _say(quiet, f"{domain}: {n} requests over {span:.1f} s -> {out}")


@trace.command(epilog="""\b
Examples:
  sparksched trace stats chat code math
  sparksched trace stats my-trace.jsonl --csv > stats.csv
""")
@click.argument("files", nargs=-1, required=True)
@click.option("--window", type=POSITIVE, default=60.0, show_default=True, help="Peak-rate window in s.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV instead of a table.")
@_errors
def stats(files: tuple[str, ...], window: float, as_csv: bool) -> None:
    """Print requests, span, mean/peak rate, inter-arrival CV and length percentiles by domain.

    FILES are paths or bare names of bundled traces (chat, code, math, mixed).
    """
    from simulator.trace import resolve_trace
    from simulator.trace_tools import trace_stats

    for i, name in enumerate(files):
        table = trace_stats(_load(name), window_s=window)
        if as_csv:
            click.echo(table.write_csv(), nl=False)
            continue
        if i:
            click.echo()
        click.echo(f"{resolve_trace(name)}")
        click.echo(format_stats(table))


@trace.command(epilog="""\b
Example:
  sparksched trace transform chat --rate-scale 4 --clip-output 1024 -o chat-x4.jsonl
""")
@click.argument("src")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False))
@click.option("--rate-scale", type=POSITIVE, default=None, help="Multiply the arrival rate (divide times) by this.")
@click.option("--clip-prompt", type=click.IntRange(min=1), default=None, help="Cap prompt tokens.")
@click.option("--clip-output", type=click.IntRange(min=1), default=None, help="Cap output tokens.")
@quiet_option
@_errors
def transform(src: str, out: str, rate_scale: float | None, clip_prompt: int | None,
              clip_output: int | None, quiet: bool) -> None:
    """Rescale the rate and/or clip lengths of SRC (a path or bundled name) into OUT."""
    from simulator.trace_tools import clip_lengths, scale_rate

    df = _load(src)
    notes = []
    if rate_scale is not None:
        df = scale_rate(df, rate_scale)
        notes.append(f"rate x{rate_scale:g}")
    if clip_prompt is not None or clip_output is not None:
        df, counts = clip_lengths(df, clip_prompt, clip_output)
        notes.append(f"clipped {counts['requests']} requests ({counts['prompt']} prompts, "
                     f"{counts['output']} outputs)")
    n = _write(df, out)
    _say(quiet, f"{n} requests{': ' + ', '.join(notes) if notes else ''} -> {out}")


@trace.command(name="mix", epilog="""\b
Example:
  sparksched trace mix chat code --weights 0.7,0.3 -o chat-code.jsonl
""")
@click.argument("sources", nargs=-1, required=True)
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False))
@click.option("--weights", default=None, help="Shares of requests per source, e.g. 0.6,0.3,0.1 (thins sources).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--align/--no-align", default=True, show_default=True,
              help="Cut every source to the shortest span first.")
@quiet_option
@_errors
def mix_command(sources: tuple[str, ...], out: str, weights: str | None, seed: int, align: bool, quiet: bool) -> None:
    """Superpose several traces (paths or bundled names) into one, merged by arrival time."""
    from simulator.trace_tools import mix

    w = None
    if weights is not None:
        try:
            w = [float(x) for x in weights.split(",")]
        except ValueError:
            raise click.UsageError(f"--weights: expected numbers separated by commas, got {weights!r}") from None
        if len(w) != len(sources):
            raise BadUsage(f"--weights: mix: {len(w)} weights for {len(sources)} traces")
    df = mix([_load(s) for s in sources], w, seed=seed, align=align)
    n = _write(df, out)
    counts = df.group_by("domain").len().sort("domain")
    parts = ", ".join(f"{d} {c}" for d, c in counts.iter_rows())
    _say(quiet, f"{n} requests ({parts}) -> {out}")


@trace.command(epilog="""\b
Example:
  sparksched trace bundle -o /tmp/traces
""")
@click.option("-o", "--dir", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Write here instead of the bundled traces directory.")
@quiet_option
@_errors
def bundle(out_dir: str | None, quiet: bool) -> None:
    """Regenerate the bundled traces (chat, code, math, mixed) from their fixed seeds."""
    from simulator.generate import bundle as run

    for path in run(out_dir):
        _say(quiet, str(path))
