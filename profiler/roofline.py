"""Roofline what-if: a profile estimated from FLOPs, bytes and collectives per step, not measured.

For a model (`profiler.models`: dense, sliding-window, MoE, MLA), a deployment (`profiler.parallel`:
GPUs, TP, EP, DP attention) and a device (`profiler.devices`), every grid point is priced by
`profiler.passes`: verify passes (n requests per attention group x t tokens over a KV cache of L),
drafter steps (`profiler.drafters`: DSpark by default, and the other families in `draft_families`)
and prefills. The result has the profile schema (verify / draft / prefill rows) with
`"kind": "estimated"`, plus the deployment (per-GPU weights and KV, KV capacity), per-row
deployment and per-GPU throughput, and the time split into compute, memory, collectives and launches.

Rows whose weights + KV exceed the usable memory (90 % of the device) stay in the grid, marked
`"fits": false`, so every context has the same batch grid. A deployment whose weights alone do not fit,
or in which no grid point fits, is an error.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from profiler.devices import DEVICES, DTYPE_BYTES, DeviceSpec, canonical_dtype, get_device_spec
from profiler.drafters import FAMILIES, draft_cost, drafter_presets
from profiler.grid import Grid
from profiler.models import ModelSpec, as_model_spec
from profiler.moe import MOE_TILE
from profiler.parallel import (
    SINGLE,
    Deployment,
    kv_bytes_per_token_layer,
    kv_capacity_tokens,
    weight_bytes_per_gpu,
)
from profiler.passes import (
    GEMM_TILE,
    KERNELS_FIXED,
    KERNELS_MLA,
    KERNELS_MOE,
    KERNELS_PER_LAYER,
    Precision,
    prefill_cost,
    verify_cost,
)

__all__ = ["DEVICES", "DTYPE_BYTES", "DeviceSpec", "get_device_spec", "verify_cost", "prefill_cost",
           "roofline_profile", "default_kv_dtype", "check_fits"]

GiB = 2**30
ASSUMPTIONS = (
    "effective rates: 80 % of dense tensor-core peak per dtype, 90 % of memory bandwidth, 80 % of link bandwidth",
    "each phase (attention, MLP / experts, LM head) costs max(compute, memory); phases add up",
    "top-k routing uniform and independent across tokens; no expert load imbalance between ranks",
    "collectives add to the step unless two-batch overlap hides them behind compute",
    "requests per attention group; with DP attention every group holds the same batch",
    "kernel launch gap per kernel under CUDA-graph replay; no host (scheduler, sampling) overhead",
)


def default_kv_dtype(weight_dtype: str) -> str:
    """KV-cache dtype when none is given: the weights' dtype, FP8 for 4-bit weights."""
    return "float8" if weight_dtype == "float4" else weight_dtype


def check_fits(model: ModelSpec, dep: Deployment, device: DeviceSpec, weight_dtype: str) -> float:
    """Weight bytes per GPU; a one-line ValueError when they alone exceed the usable memory."""
    weights = weight_bytes_per_gpu(model, dep, weight_dtype)
    usable = dep.memory_fraction * device.memory_bytes
    if weights > usable:
        hint = ("add GPUs (--gpus with --ep to spread the experts)" if model.is_moe
                else "add GPUs (--gpus / --tp)")
        raise ValueError(f"{model.name} ({weight_dtype}) does not fit: {weights / GiB:.1f} GiB of weights per GPU "
                         f"on {dep.gpus} x {device.key or device.name} (tp {dep.tp}, ep {dep.ep}) exceed the "
                         f"{usable / GiB:.1f} GiB usable ({dep.memory_fraction:.0%} of {device.memory_bytes / GiB:.0f} "
                         f"GiB); {hint}, or a narrower --dtype")
    return weights


def _sig(x: float) -> float:
    """`x` to 6 significant digits (an estimate has no more; keeps bundled files small)."""
    return float(f"{x:.6g}")


def _timing(sec: float) -> dict[str, Any]:
    sec = _sig(sec)
    return {"median_s": sec, "p10_s": sec, "p90_s": sec, "cv": 0.0, "repeats": 0}


def roofline_profile(device: str, config: Any, grid: Grid, dtype: str = "bfloat16", draft_layers: int | None = None,
                     rank: int = 256, *, deployment: Deployment = SINGLE, kv_dtype: str | None = None,
                     draft_window: int | None = None) -> dict[str, Any]:
    """A schema-1 profile estimated for `device` (a DEVICES key), `config` (ModelSpec or DecoderConfig)
    on `deployment` over `grid`; `kind` = "estimated"."""
    spec = get_device_spec(device)
    model = as_model_spec(config)
    deployment.check(model)
    w = canonical_dtype(dtype)
    kv = canonical_dtype(kv_dtype) if kv_dtype else default_kv_dtype(w)
    prec = Precision(w, kv)
    weights = check_fits(model, deployment, spec, w)
    usable = deployment.memory_fraction * spec.memory_bytes
    gpus, groups = deployment.gpus, deployment.groups

    verify = []
    for n, t, ctx in grid.verify_points():
        cost = verify_cost(model, n, t, ctx, w, deployment, kv)
        split = cost.breakdown(spec)
        sec = split["total_s"]
        verify.append({"requests": n, "tokens": n * t, "tokens_per_request": t, "context": ctx, **_timing(sec),
                       "flops": _sig(cost.flops), "bytes": _sig(cost.bytes), "bound": cost.bound(spec),
                       "fits": cost.resident_bytes <= usable,
                       "deployment_tokens": groups * n * t, "tokens_per_s": _sig(groups * n * t / sec),
                       "tokens_per_s_per_gpu": _sig(groups * n * t / sec / gpus),
                       **{k: _sig(split[k]) for k in ("compute_s", "memory_s", "comm_s", "launch_s")},
                       "resident_bytes": _sig(cost.resident_bytes)})
    if not any(r["fits"] for r in verify):
        r0 = min(verify, key=lambda r: (r["requests"], r["context"]))
        raise ValueError(f"no grid point fits: {model.name} ({w}, KV {kv}) on {gpus} x {device.lower()} needs "
                         f"{r0['resident_bytes'] / GiB:.1f} GiB per GPU at n={r0['requests']}, L={r0['context']} "
                         f"(usable {usable / GiB:.1f} GiB); shrink --contexts / --requests or add GPUs")

    presets = drafter_presets(model, draft_layers, draft_window, rank)
    contexts = sorted(set(grid.contexts) | {grid.draft_context})
    draft, families = [], []
    for fam in FAMILIES:
        blocks = (1,) if fam == "mtp1" else grid.blocks
        for n in grid.draft_requests:
            for g in blocks:
                for ctx in contexts:
                    bb, hd = draft_cost(model, presets[fam], n, g, ctx, prec, deployment)
                    b_s, h_s = bb.seconds(spec), hd.seconds(spec)
                    row = {"requests": n, "block": g, "context": ctx, "backbone_s": _sig(b_s),
                           "head_s": _sig(h_s), **_timing(b_s + h_s)}
                    families.append({"family": fam, **row})
                    if fam == "dspark":
                        draft.append(dict(row))

    prefill = []
    for p in grid.prompts:
        cost = prefill_cost(model, p, w, deployment, kv)
        prefill.append({"prompt_tokens": p, **_timing(cost.seconds(spec)), "bound": cost.bound(spec)})

    kv_token = sum(kv_bytes_per_token_layer(model, deployment, kv) for i in range(model.layers) if not model.window(i))
    dspark = presets["dspark"]
    return {
        "schema": 1,
        "kind": "estimated",
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": {"type": "roofline", **spec.to_dict(), "kernels_per_layer": KERNELS_PER_LAYER,
                   "kernels_mla": KERNELS_MLA, "kernels_moe": KERNELS_MOE, "kernels_fixed": KERNELS_FIXED,
                   "gemm_tile": GEMM_TILE, "moe_tile": MOE_TILE},
        "model": {"preset": model.name, **model.to_dict(), "parameters": model.parameters(),
                  "active_parameters": model.active_parameters()},
        "dtype": w,
        "kv_dtype": kv,
        "compute_dtype": {"gemm": spec.compute_dtype(w), "attention": spec.compute_dtype(kv)},
        "torch": None,
        "deployment": {**deployment.to_dict(),
                       "requests_axis": "requests per attention group" + (" (one GPU each)" if groups == gpus else ""),
                       "weights_bytes_per_gpu": weights, "usable_memory_bytes": usable,
                       "kv_bytes_per_token_per_gpu": kv_token,
                       "kv_capacity_tokens": kv_capacity_tokens(model, deployment, spec, w, kv)},
        "assumptions": list(ASSUMPTIONS),
        "grid": grid.to_dict(),
        "drafter": {"family": "dspark", "layers": dspark.layers, "width": model.hidden, "rank": dspark.rank,
                    "window": dspark.window, "moe": dspark.moe, "implementation": "roofline",
                    "families": {k: v.to_dict() for k, v in presets.items()}},
        "verify": verify,
        "draft": draft,
        "draft_families": families,
        "prefill": prefill,
    }
