"""`sparksched profile`: measure a target's step-time curve (GPU or CPU), or estimate it (roofline).

    sparksched profile --gpu 0 --model qwen3-8b --dtype bfloat16 -o h100-qwen3-8b.json
    sparksched profile --device cpu --model tiny -o cpu.json
    sparksched profile --roofline h100 --model qwen3-8b -o est.json
    sparksched profile --roofline h200 --model deepseek-v3 --gpus 8 --ep 8 --dp-attention -o ds.json
    sparksched profile --roofline h100 --model path/to/config.json --dtype fp8 -o est.json
    sparksched profile show FILE        # table + PNG
    sparksched profile check FILE       # held-out interpolation error
    sparksched profile compare FILE     # roofline vs measured, per point

Thin shell over `profiler/`; library errors become one-line ClickExceptions; files are written
atomically (never half-written).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from sparksched.commands._common import BadUsage, quiet_option


def _say(text: str, err: bool = False) -> None:
    """Echo unless the command runs with -q/--quiet."""
    ctx = click.get_current_context(silent=True)
    if not (ctx is not None and ctx.params.get("quiet")):
        click.echo(text, err=err)


def _fail(exc: BaseException) -> click.ClickException:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return click.ClickException(msg)


def _grid(mode: str, grid_name: str | None, requests: str | None, tokens: str | None, block: int | None,
          contexts: str | None, prompts: str | None, draft_requests: str | None, blocks: str | None,
          draft_context: int | None) -> Any:
    from profiler.grid import Grid, get_grid, parse_int_list

    base = get_grid(grid_name or mode)
    changes: dict[str, Any] = {}
    if requests:
        changes["requests"] = parse_int_list(requests, "requests")
    if tokens and block is not None:
        raise ValueError("give either --tokens or --block, not both")
    if tokens:
        changes["tokens_per_request"] = parse_int_list(tokens, "tokens")
    if block is not None:
        if block < 0:
            raise ValueError(f"--block must be >= 0, got {block}")
        changes["tokens_per_request"] = tuple(range(1, block + 2))
    if contexts:
        changes["contexts"] = _parse_contexts(contexts)
    if prompts:
        changes["prompts"] = parse_int_list(prompts, "prompts")
    if draft_requests:
        changes["draft_requests"] = parse_int_list(draft_requests, "draft-requests")
    if blocks:
        changes["blocks"] = parse_int_list(blocks, "blocks")
    if draft_context is not None:
        changes["draft_context"] = draft_context
    grid: Grid = replace(base, **changes)
    return grid


def _parse_contexts(text: str) -> tuple[int, ...]:
    from profiler.grid import parse_int_list

    vals = [v.strip() for v in text.split(",") if v.strip()]
    zero = "0" in vals
    rest = ",".join(v for v in vals if v != "0")
    out = parse_int_list(rest, "contexts") if rest else ()
    return tuple(sorted(set(out) | ({0} if zero else set())))


@click.group("profile", invoke_without_command=True, epilog="""\b
Examples:
  sparksched profile --roofline h100 --model qwen3-8b -o est.json
  sparksched profile --gpu 0 --model qwen3-8b --dtype bfloat16 -o h100-qwen3-8b.json
  sparksched profile --device cpu --model tiny -o cpu.json
  sparksched profile show est.json -o est.png
""")
@click.option("--gpu", type=int, default=None, help="Measure on CUDA device N.")
@click.option("--device", "device_name", default=None, help="Measure on a torch device (cpu, cuda:1).")
@click.option("--roofline", default=None, metavar="DEVICE",
              help="Estimate instead of measuring: h100, h200, h800, h20, b200, a100, l40s, mi300x.")
@click.option("--model", default=None,
              help="Preset (qwen3-8b default on GPU/roofline, tiny on CPU, deepseek-v3, qwen3-30b-a3b, ...) or, "
                   "with --roofline, the path of a Hugging Face config.json.")
@click.option("--dtype", default=None,
              help="Weights: bfloat16 (GPU default), float16, float32 (CPU default); roofline also fp8, fp4 "
                   "(default: the checkpoint's own dtype).")
@click.option("--kv-dtype", default=None, help="Roofline: KV-cache dtype (default: as --dtype; fp8 for fp4 weights).")
@click.option("--gpus", type=int, default=None, help="Roofline: GPUs in the deployment (default 1).")
@click.option("--tp", type=int, default=None,
              help="Roofline: tensor parallelism of attention and dense layers (default: --gpus, or 1 with "
                   "--dp-attention).")
@click.option("--ep", type=int, default=None, help="Roofline: expert parallelism of the routed experts (default 1).")
@click.option("--dp-attention", is_flag=True, default=False,
              help="Roofline: attention data parallelism, one batch per TP group (--requests are per group).")
@click.option("--two-batch-overlap", is_flag=True, default=False,
              help="Roofline: split each step in two micro-batches so collectives hide behind compute.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Profile JSON to write (default <device>-<model>.json).")
@click.option("--grid", "grid_name", type=click.Choice(["cpu", "gpu", "roofline", "moe"]), default=None,
              help="Named base grid (default: by mode); the options below override parts of it.")
@click.option("--requests", default=None, help="Requests n per verify pass, e.g. 1,2,4,8.")
@click.option("--tokens", default=None, help="Tokens per request t (anchor + drafts), e.g. 1-8.")
@click.option("--block", type=click.IntRange(min=0), default=None, help="Block size g: tokens per request 1..g+1.")
@click.option("--contexts", default=None, help="KV context lengths L, e.g. 512,2048.")
@click.option("--prompts", default=None, help="Prefill prompt lengths.")
@click.option("--draft-requests", default=None, help="Requests n for drafter timing.")
@click.option("--blocks", default=None, help="Drafter block sizes g.")
@click.option("--draft-context", type=int, default=None,
              help="Context the drafter attends to (roofline: drafters are priced at every --contexts value "
                   "and this one).")
@click.option("--draft-layers", type=int, default=None,
              help="Drafter backbone layers (default 5; roofline of an MoE target: 3, the paper's production drafter).")
@click.option("--draft-window", type=int, default=None,
              help="Roofline: drafter attention window (default: none; 128 for an MoE target).")
@click.option("--rank", type=int, default=256, show_default=True, help="Markov head rank r.")
@click.option("--parts", default="verify,draft,prefill", show_default=True, help="What to time.")
@click.option("--repeats", type=int, default=None, help="Timed runs per point and round (default 10 GPU, 5 CPU).")
@click.option("--rounds", type=int, default=None,
              help="Interleaved sweeps of the verify grid, samples pooled (default 1 GPU, 3 CPU).")
@click.option("--retries", type=int, default=3, show_default=True,
              help="Re-time verify points that break monotonicity in B, up to this many times.")
@click.option("--warmup", type=int, default=3, show_default=True, help="Untimed runs per point.")
@click.option("--cuda-graph/--no-cuda-graph", default=False, show_default=True,
              help="Capture the verify pass in a CUDA graph and time replays.")
@click.option("--threads", type=int, default=None,
              help="CPU: torch intra-op threads (default 1: steadier on a shared or busy host).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
@quiet_option
@click.pass_context
def profile(ctx: click.Context, gpu: int | None, device_name: str | None, roofline: str | None,
            model: str | None, dtype: str | None, kv_dtype: str | None, gpus: int | None, tp: int | None,
            ep: int | None, dp_attention: bool, two_batch_overlap: bool, output: str | None, grid_name: str | None,
            requests: str | None, tokens: str | None, block: int | None, contexts: str | None,
            prompts: str | None, draft_requests: str | None, blocks: str | None,
            draft_context: int | None, draft_layers: int | None, draft_window: int | None, rank: int, parts: str,
            repeats: int | None,
            rounds: int | None, retries: int, warmup: int, cuda_graph: bool, threads: int | None, seed: int, progress: bool,
            quiet: bool) -> None:
    """Measure (--gpu / --device) or estimate (--roofline) a step-time profile."""
    if ctx.invoked_subcommand is not None:
        return
    if all(ctx.get_parameter_source(name) == ParameterSource.DEFAULT for name in ctx.params):
        click.echo(ctx.get_help())  # bare `sparksched profile`: say how to use it, measure nothing
        return
    if sum(x is not None for x in (gpu, device_name, roofline)) > 1:
        raise BadUsage("give one of --gpu, --device, --roofline")
    if tokens and block is not None:
        raise BadUsage("give either --tokens or --block, not both")
    try:
        layout = {"gpus": gpus, "tp": tp, "ep": ep, "dp_attention": dp_attention or None,
                  "two_batch_overlap": two_batch_overlap or None, "kv_dtype": kv_dtype, "draft_window": draft_window}
        if roofline is not None:
            _run_roofline(roofline, model or "qwen3-8b", dtype, output, grid_name, layout, requests,
                          tokens, block, contexts, prompts, draft_requests, blocks, draft_context,
                          draft_layers, rank)
        else:
            given = [f"--{k.replace('_', '-')}" for k, v in layout.items() if v is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: only with --roofline (a measurement uses one device)")
            _run_measure(gpu, device_name, model, dtype, output, grid_name, requests, tokens, block,
                         contexts, prompts, draft_requests, blocks, draft_context, draft_layers or 5, rank,
                         parts, repeats, rounds, retries, warmup, cuda_graph, threads, seed, progress and not quiet)
    except (ValueError, OSError, RuntimeError) as exc:
        raise _fail(exc) from None


def _run_roofline(device: str, model: str, dtype: str | None, output: str | None, grid_name: str | None,
                  layout: dict[str, Any], *grid_args: Any) -> None:
    from profiler.devices import canonical_dtype
    from profiler.model_presets import resolve_model
    from profiler.parallel import Deployment
    from profiler.roofline import get_device_spec, roofline_profile
    from profiler.run import write_profile

    spec = get_device_spec(device)
    draft_layers, rank = grid_args[-2:]
    grid = _grid("roofline", grid_name, *grid_args[:-2])
    target = resolve_model(model)
    dep = Deployment(gpus=layout["gpus"] or 1, tp=layout["tp"], ep=layout["ep"] or 1,
                     dp_attention=bool(layout["dp_attention"]), two_batch_overlap=bool(layout["two_batch_overlap"]))
    wdt = canonical_dtype(dtype or target.native_dtype)
    prof = roofline_profile(device, target, grid, wdt, draft_layers, rank, deployment=dep,
                            kv_dtype=layout["kv_dtype"], draft_window=layout["draft_window"])
    label = Path(model).stem if model.endswith(".json") else Path(target.name).name
    path = write_profile(prof, output or f"{device.lower()}-{label.lower()}-roofline.json")
    d = prof["deployment"]
    fits = sum(r["fits"] for r in prof["verify"])
    _say(f"wrote {path} (estimated: {target.name}, {wdt} weights / {prof['kv_dtype']} KV on {dep.gpus} x "
               f"{spec.key}, tp {dep.tp}, ep {dep.ep}{', DP attention' if dep.dp_attention else ''}; "
               f"{d['weights_bytes_per_gpu'] / 2**30:.1f} GiB weights and room for {d['kv_capacity_tokens']:,} KV "
               f"tokens per {'GPU' if dep.groups == dep.gpus else 'attention group'}; {len(prof['verify'])} verify points, {fits} fit)")


def _run_measure(gpu: int | None, device_name: str | None, model: str | None, dtype: str | None,
                 output: str | None, grid_name: str | None, requests: str | None, tokens: str | None,
                 block: int | None, contexts: str | None, prompts: str | None, draft_requests: str | None,
                 blocks: str | None, draft_context: int | None, draft_layers: int, rank: int, parts: str,
                 repeats: int | None, rounds: int | None, retries: int, warmup: int, cuda_graph: bool,
                 threads: int | None, seed: int, progress: bool) -> None:
    from profiler.run import resolve_device

    device = resolve_device(gpu, device_name)
    import torch

    from profiler.run import measure_profile, resolve_dtype, write_profile
    from sparksched.models.presets import get_preset

    on_gpu = device.type == "cuda"
    model = model or ("qwen3-8b" if on_gpu else "tiny")
    dtype = dtype or ("bfloat16" if on_gpu else "float32")
    resolve_dtype(dtype)
    config = get_preset(model)
    grid = _grid("gpu" if on_gpu else "cpu", grid_name, requests, tokens, block, contexts, prompts,
                 draft_requests, blocks, draft_context)
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    if not on_gpu or threads is not None:
        torch.set_num_threads(threads or 1)
    part_list = [p.strip() for p in parts.split(",") if p.strip()]
    out = Path(output or f"{'cuda' if on_gpu else 'cpu'}-{model}.json")
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise ValueError(f"{out}: folder {out.parent} does not exist")
    prof = measure_profile(config, device, dtype, grid, warmup, repeats or (10 if on_gpu else 5),
                           cuda_graph, seed, part_list, draft_layers, rank, progress,
                           log=lambda m: _say(m, err=True), retries=retries,
                           rounds=rounds or (1 if on_gpu else 3))
    try:
        write_profile(prof, out)
    except ValueError as exc:
        from profiler.run import write_json_atomic

        keep = out.with_name(out.stem + ".invalid.json")
        write_json_atomic(prof, keep)
        raise ValueError(f"{exc} (measurements kept in {keep}; not a valid profile)") from None
    _say(f"wrote {out} ({len(prof['verify'])} verify, {len(prof['draft'])} draft, "
               f"{len(prof['prefill'])} prefill points; {len(prof['skipped'])} skipped)")


@profile.command("show", epilog="""\b
Example:
  sparksched profile show h100-qwen3-8b-roofline -o profile.png
""")
@click.argument("file")
@click.option("-o", "--png", type=click.Path(dir_okay=False), default=None,
              help="PNG to write (default <file stem>.png in the current folder).")
@click.option("--max-rows", type=click.IntRange(min=0), default=60, show_default=True, help="Verify rows to print.")
def show(file: str, png: str | None, max_rows: int) -> None:
    """Print a profile as a table and draw its curve to a PNG."""
    try:
        from profiler.plot import plot_profile
        from sparksched.profile import load_profile

        prof = load_profile(file)
        click.echo(_summary_text(prof, max_rows))
        try:
            path = plot_profile(prof, png or f"{Path(prof['_source']).stem}.png")
        except ImportError as exc:
            click.echo(f"no PNG: {exc.name or 'matplotlib'} is not installed", err=True)
            return
        click.echo(f"wrote {path}")
    except (ValueError, OSError, RuntimeError) as exc:
        raise _fail(exc) from None


def _summary_text(prof: dict[str, Any], max_rows: int) -> str:
    dev = prof.get("device", {})
    model = prof.get("model", {})
    lines = [f"{prof['_source']}: {prof.get('kind', 'measured')} profile, {model.get('preset', '?')} "
             f"({model.get('parameters', 0) / 1e9:.2f} B params), {prof['dtype']} on {dev.get('name', '?')}, "
             f"created {prof.get('created', '?')}, torch {prof.get('torch')}"]
    rows = sorted(prof["verify"], key=lambda r: (r["context"], r["tokens"], r["requests"]))
    lines.append(f"verify ({len(rows)} points):")
    lines.append(f"{'context':>8} {'n':>5} {'t':>3} {'B':>6} {'median ms':>10} {'p10 ms':>9} {'p90 ms':>9} "
                 f"{'cv':>6} {'tokens/s':>10}")
    shown = rows if len(rows) <= max_rows else rows[:max_rows]
    for r in shown:
        t = r.get("tokens_per_request", r["tokens"] // r["requests"])
        lines.append(f"{r['context']:>8} {r['requests']:>5} {t:>3} {r['tokens']:>6} {r['median_s'] * 1e3:>10.4f} "
                     f"{r.get('p10_s', r['median_s']) * 1e3:>9.4f} {r.get('p90_s', r['median_s']) * 1e3:>9.4f} "
                     f"{r.get('cv', 0.0):>6.1%} {r['tokens'] / r['median_s']:>10.0f}")
    if len(rows) > max_rows:
        lines.append(f"... {len(rows) - max_rows} more rows (--max-rows)")
    if prof.get("draft"):
        lines.append("draft:")
        lines.append(f"{'n':>5} {'g':>3} {'context':>8} {'backbone ms':>12} {'head ms':>9} {'total ms':>9}")
        for r in prof["draft"]:
            lines.append(f"{r['requests']:>5} {r['block']:>3} {r.get('context', '-'):>8} "
                         f"{r.get('backbone_s', float('nan')) * 1e3:>12.4f} {r.get('head_s', float('nan')) * 1e3:>9.4f} "
                         f"{r['median_s'] * 1e3:>9.4f}")
    if prof.get("prefill"):
        lines.append("prefill:")
        lines.append(f"{'prompt':>8} {'median ms':>10} {'tokens/s':>10}")
        for r in prof["prefill"]:
            lines.append(f"{r['prompt_tokens']:>8} {r['median_s'] * 1e3:>10.4f} "
                         f"{r['prompt_tokens'] / r['median_s']:>10.0f}")
    return "\n".join(lines)


@profile.command("check", epilog="""\b
Example:
  sparksched profile check h100-qwen3-8b-roofline --worst 10
""")
@click.argument("file")
@click.option("--worst", type=click.IntRange(min=0), default=5, show_default=True, help="Worst points to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def check(file: str, worst: int, as_json: bool) -> None:
    """Hold grid points out, predict them through the step-cost model, report relative errors."""
    try:
        import json

        from profiler.check import check_profile, format_report

        report = check_profile(file)
        click.echo(json.dumps(report.summary()) if as_json else format_report(report, worst))
    except (ValueError, OSError, RuntimeError) as exc:
        raise _fail(exc) from None


@profile.command("compare", epilog="""\b
Example:
  sparksched profile compare h100-qwen3-8b.json --roofline h100 -o errors.json
""")
@click.argument("file")
@click.option("--roofline", default=None, metavar="DEVICE", help="Roofline device (default: from the file).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Also write the per-point table as JSON.")
def compare_cmd(file: str, roofline: str | None, output: str | None) -> None:
    """Roofline estimate against a measured profile: relative error per point, median and max."""
    try:
        from profiler.compare import compare, format_comparison
        from profiler.run import write_json_atomic

        c = compare(file, roofline)
        click.echo(format_comparison(c))
        if output:
            write_json_atomic({"summary": c.summary(), "rows": c.rows}, output)
    except (ValueError, OSError, RuntimeError) as exc:
        raise _fail(exc) from None


@profile.command("export")
@click.argument("source")
@click.option("--to", "fmt", type=click.Choice(["sglang-sps", "sglang-additive", "vllm"]), required=True,
              help="Table format: SGLang's SpsCostTable or SpsAdditiveCostTable, or vLLM's cost curves.")
@click.option("--context", type=float, required=True, help="Context length (tokens) of the steps the table prices.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="Table JSON to write.")
@click.option("--block", type=int, default=7, show_default=True,
              help="Drafter block g: SGLang tables are whole steps with the drafter at this block, over "
                   "1..g+1 tokens per request; vllm: the drafter rows' block (default there: the largest measured).")
@click.option("--drafter", type=click.Choice(["dspark", "dflash", "eagle3", "mtp1"]), default="dspark",
              show_default=True, help="Drafter family priced inside SGLang's whole steps.")
@click.option("--requests", type=int, default=64, show_default=True,
              help="sglang-sps: the concurrency of the slice (the format has no request axis).")
@click.option("--max-num-seqs", type=int, default=256, show_default=True,
              help="vllm: the engine's --max-num-seqs (its dummy profiling batches spread B tokens over "
                   "min(B, max-num-seqs) requests).")
@quiet_option
def export_cmd(source: str, fmt: str, context: float, output: str, block: int, drafter: str, requests: int,
               max_num_seqs: int, quiet: bool) -> None:
    """Write a profile's step cost in an engine's table format (whole steps, drafter included, for SGLang).

    \b
    Examples:
      sparksched profile export h100-qwen3-8b-roofline --to sglang-additive --context 2048 -o sps.json
      sparksched simulate --trace chat --profile sps.json     # simulate the table the server loads
      sparksched profile export f.json --to vllm --context 8192 --max-num-seqs 256 -o vllm_curves.json
    """
    if not (math.isfinite(context) and context >= 0):
        raise BadUsage(f"--context must be a finite length >= 0, got {context}")
    for name, v in (("--block", block), ("--requests", requests), ("--max-num-seqs", max_num_seqs)):
        if v < 1:
            raise BadUsage(f"{name} must be >= 1, got {v}")
    try:
        from sparksched.cost import StepCost
        from sparksched.export import vllm_cost_curves
        from sparksched.sglang_tables import sglang_additive_table, sglang_sps_table, write_json

        cost = StepCost.load(source)
        if fmt == "sglang-additive":
            fit = sglang_additive_table(cost, context, block, family=drafter)
            table = fit.table
            _say(fit.report())
        elif fmt == "sglang-sps":
            table = sglang_sps_table(cost, context, requests, block, family=drafter)
            _say(f"SpsCostTable at {requests} requests, context {context:g}: "
                       f"{len(table['sample_batch_tokens'])} probes, B = {table['sample_batch_tokens'][0]}.."
                       f"{table['max_batch_tokens']} (no request axis: exact at this concurrency only; "
                       "sglang-additive has one)")
        else:
            from click.core import ParameterSource

            ctx = click.get_current_context()
            vblock = None if ctx.get_parameter_source("block") == ParameterSource.DEFAULT else block
            table = vllm_cost_curves(cost, context, vblock, max_num_seqs)
            _say(f"vLLM cost curves at context {context:g}: {len(table['verify_curve'])} verify points "
                       f"(B tokens over min(B, {max_num_seqs}) requests), {len(table['draft_curve'])} drafter points")
        path = write_json(table, output)
        _say(f"wrote {path}")
    except (ValueError, OSError, RuntimeError) as exc:
        raise _fail(exc) from None
