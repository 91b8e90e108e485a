"""Orchestration: build the target (and drafter), time every grid point, write the profile atomically.

The profile is the schema-1 JSON of `sparksched.profile` with `"kind": "measured"`. A grid point that
runs out of device memory is skipped and listed under "skipped"; batch sizes B not measured at every
context are then dropped from all contexts so the curve keeps one B grid (also listed).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from profiler.device import device_facts, software_facts
from profiler.grid import Grid
from profiler.timer import CPU_INNER, summarize
from profiler.verify import time_prefill, time_verify, verify_samples
from sparksched.models.decoder import build_decoder
from sparksched.models.presets import DecoderConfig
from sparksched.profile import validate_profile

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
PARTS = ("verify", "draft", "prefill")


def resolve_device(gpu: int | None = None, device: str | None = None) -> torch.device:
    """The torch device for `--gpu N` or `--device NAME`; one-line ValueError when it is not usable."""
    if gpu is not None and device is not None:
        raise ValueError("give either --gpu or --device, not both")
    if gpu is not None:
        if not torch.cuda.is_available():
            raise ValueError(f"--gpu {gpu}: CUDA is not available (torch {torch.__version__}, "
                             f"{'no CUDA build' if torch.version.cuda is None else 'no visible GPU'}); "
                             "use --device cpu or --roofline")
        if not 0 <= gpu < torch.cuda.device_count():
            raise ValueError(f"--gpu {gpu}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return torch.device("cuda", gpu)
    name = device or "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r}: not a torch device name (e.g. cpu, cuda:0)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available; use --device cpu or --roofline")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: only cpu and cuda devices are supported")
    return dev


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"--dtype {name!r}: known dtypes are {', '.join(DTYPES)}") from None


def _progress(total: int, enabled: bool, desc: str) -> Any:
    """A tqdm bar when tqdm is installed and enabled; otherwise an object with update()/close()."""
    if enabled:
        try:
            from tqdm import tqdm

            return tqdm(total=total, desc=desc, unit="pt", dynamic_ncols=True)
        except ImportError:
            pass

    class _Null:
        def update(self, k: int = 1) -> None: ...
        def set_postfix_str(self, s: str) -> None: ...
        def close(self) -> None: ...

    return _Null()


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def complete_grid(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """Keep rows whose B (tokens) was measured at every context; return (kept rows, dropped B values)."""
    contexts = {r["context"] for r in rows}
    by_b: dict[int, set[int]] = {}
    for r in rows:
        by_b.setdefault(r["tokens"], set()).add(r["context"])
    dropped = sorted(b for b, cs in by_b.items() if cs != contexts)
    return [r for r in rows if r["tokens"] not in dropped], dropped


def monotone_violations(rows: list[dict[str, Any]], tolerance: float = 0.15) -> set[tuple[int, int, int]]:
    """(requests, context, tokens) points of a verify grid that drop more than `tolerance` below an
    earlier B's time at the same request count and context, together with the earlier points they
    drop below.

    Mirrors the schema check (`sparksched.profile`, 25 % tolerance, first row per point) with a
    tighter tolerance, so noisy points are re-timed before the profile could be rejected.
    """
    first: dict[tuple[int, int], dict[int, float]] = {}
    for r in rows:
        first.setdefault((r.get("requests", 1), r["context"]), {}).setdefault(r["tokens"], r["median_s"])
    bad: set[tuple[int, int, int]] = set()
    for (n, ctx), pts in first.items():
        running, at = 0.0, 0
        for b in sorted(pts):
            if pts[b] < running * (1 - tolerance):
                bad |= {(n, ctx, b), (n, ctx, at)}
            if pts[b] > running:
                running, at = pts[b], b
    return bad


def _measure_verify(model: Any, grid: Grid, warmup: int, repeats: int, rounds: int, cuda_graph: bool,
                    seed: int, bar: Any, skipped: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Time every (n, t, L) verify point; `rounds` interleaved passes over the grid, samples pooled."""
    device = model.embed.weight.device
    t_max = max(grid.tokens_per_request)
    samples: dict[tuple[int, int, int], list[float]] = {}
    failed: set[tuple[int, int, int]] = set()
    for _ in range(rounds):
        for ctx in grid.contexts:
            for n in grid.requests:
                todo = [t for t in grid.tokens_per_request if (n, t, ctx) not in failed]
                if not todo:
                    continue
                try:
                    cache = model.new_cache(n, ctx + t_max)
                except Exception as exc:
                    if not _is_oom(exc):
                        raise
                    failed.update((n, t, ctx) for t in todo)
                    skipped.extend({"part": "verify", "requests": n, "tokens_per_request": t, "context": ctx,
                                    "reason": "out of memory (cache)"} for t in todo)
                    bar.update(len(todo))
                    _free(device)
                    continue
                for t in todo:
                    bar.set_postfix_str(f"verify n={n} t={t} L={ctx}")
                    try:
                        samples.setdefault((n, t, ctx), []).extend(
                            verify_samples(model, n, t, ctx, warmup, repeats, cuda_graph, cache, seed))
                    except Exception as exc:
                        if not _is_oom(exc):
                            raise
                        failed.add((n, t, ctx))
                        samples.pop((n, t, ctx), None)
                        skipped.append({"part": "verify", "requests": n, "tokens_per_request": t,
                                        "context": ctx, "reason": "out of memory"})
                        _free(device)
                    bar.update()
                del cache
                _free(device)
    rows = []
    for (n, t, ctx), xs in samples.items():
        if (n, t, ctx) not in failed:
            rows.append({"requests": n, "tokens": n * t, "tokens_per_request": t, "context": ctx,
                         **summarize(xs).row(), "rounds": rounds, "cuda_graph": cuda_graph})
    return rows


def measure_profile(config: DecoderConfig, device: torch.device, dtype: str, grid: Grid, warmup: int = 3,
                    repeats: int = 10, cuda_graph: bool = False, seed: int = 0,
                    parts: Sequence[str] = PARTS, draft_layers: int = 5, rank: int = 256,
                    progress: bool = True, log: Callable[[str], None] | None = None,
                    retries: int = 3, rounds: int = 1) -> dict[str, Any]:
    """Time the verify pass, drafter and prefill of `config` on `device` over `grid`; a profile dict.

    Before the grid, a mid-sized verify pass runs untimed (first-call costs: thread pools, kernel
    selection). After it, verify points that break monotonicity in B by more than 15 % are re-timed
    up to `retries` times, keeping the lower median (host noise only ever adds time). `rounds` > 1
    sweeps the verify grid that many times, interleaved, pooling `repeats` samples a round per point,
    so a burst of host load spreads over many points instead of biasing a few (useful on CPU).
    """
    if rounds < 1 or retries < 0:
        raise ValueError(f"need rounds >= 1 and retries >= 0, got rounds={rounds}, retries={retries}")
    for p in parts:
        if p not in PARTS:
            raise ValueError(f"unknown part {p!r}; known: {', '.join(PARTS)}")
    if cuda_graph and device.type != "cuda":
        raise ValueError("--cuda-graph needs a CUDA device")
    longest = {"context + tokens": max(grid.contexts) + max(grid.tokens_per_request),
               "prompt": max(grid.prompts), "draft context + block": grid.draft_context + max(grid.blocks)}
    for what, length in longest.items():
        if length > config.max_positions:
            raise ValueError(f"grid {what} = {length} exceeds {config.name}'s max_positions "
                             f"{config.max_positions}; shrink --contexts / --prompts / --draft-context")
    torch_dtype = resolve_dtype(dtype)
    model = build_decoder(config, device, torch_dtype, seed)
    total = (len(grid.verify_points()) * rounds * ("verify" in parts) + len(grid.draft_points()) * ("draft" in parts)
             + len(grid.prompts) * ("prefill" in parts))
    bar = _progress(total, progress, f"profile {config.name}")
    skipped: list[dict[str, Any]] = []
    verify: list[dict[str, Any]] = []
    t_max = max(grid.tokens_per_request)
    if "verify" in parts:
        n0, ctx0 = grid.requests[len(grid.requests) // 2], grid.contexts[0]
        time_verify(model, n0, t_max, ctx0, warmup=max(3, warmup), repeats=3, seed=seed)
    try:
        if "verify" in parts:
            verify = _measure_verify(model, grid, warmup, repeats, rounds, cuda_graph, seed, bar, skipped)
        draft: list[dict[str, Any]] = []
        drafter_meta: dict[str, Any] = {}
        if "draft" in parts:
            from profiler.drafter import build_drafter, time_draft

            drafter, drafter_meta = build_drafter(model, draft_layers, rank, seed + 1)
            for n, g in grid.draft_points():
                bar.set_postfix_str(f"draft n={n} g={g}")
                try:
                    bb, hd = time_draft(drafter, n, g, grid.draft_context, warmup, repeats, seed)
                    draft.append({"requests": n, "block": g, "context": grid.draft_context,
                                  "backbone_s": bb.median_s, "head_s": hd.median_s,
                                  "median_s": bb.median_s + hd.median_s, "p10_s": bb.p10_s + hd.p10_s,
                                  "p90_s": bb.p90_s + hd.p90_s, "cv": max(bb.cv, hd.cv),
                                  "backbone_cv": bb.cv, "head_cv": hd.cv, "repeats": repeats})
                except Exception as exc:
                    if not _is_oom(exc):
                        raise
                    skipped.append({"part": "draft", "requests": n, "block": g, "reason": "out of memory"})
                    _free(device)
                bar.update()
            del drafter
            _free(device)
        prefill: list[dict[str, Any]] = []
        if "prefill" in parts:
            for prompt in grid.prompts:
                bar.set_postfix_str(f"prefill P={prompt}")
                try:
                    tm = time_prefill(model, prompt, max(1, warmup // 2), max(3, repeats // 2), seed)
                    prefill.append({"prompt_tokens": prompt, **tm.row()})
                except Exception as exc:
                    if not _is_oom(exc):
                        raise
                    skipped.append({"part": "prefill", "prompt_tokens": prompt, "reason": "out of memory"})
                    _free(device)
                bar.update()
        if "verify" in parts:
            verify = _retime_outliers(model, verify, warmup, repeats, cuda_graph, seed, retries, log)
    finally:
        bar.close()
    verify, dropped = complete_grid(verify)
    if dropped:
        skipped.append({"part": "verify", "dropped_tokens": dropped,
                        "reason": "batch tokens not measured at every context (dropped from all)"})
        if log:
            log(f"dropped batch tokens {dropped}: not measured at every context")
    profile = {
        "schema": 1,
        "kind": "measured",
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": device_facts(device),
        "model": {"preset": config.name, **config.to_dict(), "parameters": config.parameters()},
        "dtype": dtype,
        "torch": torch.__version__,
        "software": software_facts(),
        "grid": grid.to_dict(),
        "settings": {"warmup": warmup, "repeats": repeats, "rounds": rounds, "retries": retries,
                     "sample": ("one call (CUDA events)" if device.type == "cuda"
                                else f"fastest of {CPU_INNER} back-to-back calls (perf_counter)"),
                     "cuda_graph": cuda_graph, "seed": seed,
                     "parts": list(parts)},
        "drafter": drafter_meta,
        "verify": verify,
        "draft": draft,
        "prefill": prefill,
        "skipped": skipped,
    }
    if not verify and "verify" in parts:
        raise ValueError("no verify point could be measured (all out of memory?); use a smaller grid")
    return profile


def write_json_atomic(data: Any, path: str | Path) -> Path:
    """Write JSON to `path` via a temporary file in the same folder and a rename (never half-written)."""
    return write_atomic_bytes(dumps_profile(data).encode(), path)


def dumps_profile(data: dict[str, Any]) -> str:
    """JSON text of a profile: one top-level field a line, one row a line inside row lists."""
    parts = []
    for k, v in data.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            inner = ",\n  ".join(json.dumps(x) for x in v)
            parts.append(f" {json.dumps(k)}: [\n  {inner}\n ]")
        else:
            parts.append(f" {json.dumps(k)}: {json.dumps(v)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _retime_outliers(model: Any, rows: list[dict[str, Any]], warmup: int, repeats: int, cuda_graph: bool,
                     seed: int, retries: int, log: Callable[[str], None] | None) -> list[dict[str, Any]]:
    for _ in range(retries):
        bad = monotone_violations(rows)
        if not bad:
            break
        if log:
            log(f"re-timing {len(bad)} (requests, context, B) point(s) that break monotonicity: {sorted(bad)}")
        for r in rows:
            if (r["requests"], r["context"], r["tokens"]) in bad:
                n, t, ctx = r["requests"], r["tokens_per_request"], r["context"]
                try:
                    tm = time_verify(model, n, t, ctx, warmup, repeats, cuda_graph, None, seed)
                except Exception as exc:
                    if not _is_oom(exc):
                        raise
                    _free(model.embed.weight.device)
                    continue
                if tm.median_s < r["median_s"]:
                    r.update(tm.row())
                r["retimed"] = r.get("retimed", 0) + 1
    return rows


def write_atomic_bytes(data: bytes, path: str | Path) -> Path:
    """Write bytes to `path` all or nothing (`sparksched.io`); the folder must already exist."""
    from sparksched.io import write_bytes

    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"{path}: folder {folder} does not exist")
    return write_bytes(path, data)


def write_profile(profile: dict[str, Any], path: str | Path) -> Path:
    """Validate `profile` against schema 1, then write it atomically."""
    validate_profile({k: v for k, v in profile.items() if not k.startswith("_")}, str(path))
    return write_json_atomic({k: v for k, v in profile.items() if not k.startswith("_")}, path)
