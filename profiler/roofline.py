"""Roofline what-if: a profile estimated from FLOPs and bytes moved per step, not measured.

Covers: one verify pass of a decoder (n requests x t tokens on top of a KV cache of L tokens each),
one drafter step (a backbone of a few target-width layers over the block, then the sequential head)
and one prefill. Each is costed as

    time = max(flops / peak_flops, bytes / bandwidth) + kernels x launch_gap

with the device's *effective* (achievable) rates, not its datasheet peaks. The fixed term models the
per-kernel gap that remains even under CUDA-graph replay (a decoder layer is ~14 kernels).

Bytes per verify step (dtype bytes s, B = n t tokens, per-token KV size kv = layers 2 Hkv hd s):
    weights      every block matrix + LM head, read once            (params - embedding) s
    embedding    B rows gathered                                     B d s
    KV reads     each request's cache, every layer                   n L kv
    KV writes    the B new entries                                   B kv
    activations  ~ (12 d + 3 I) per token per layer, read + written  B layers (12 d + 3 I) s
    logits       float32, written                                    B V 4
FLOPs: 2 B (block params + LM head) for the matmuls (B rounded up to the GEMM tile, which gives the
steps real GPUs show at tile boundaries once compute-bound), plus attention 4 B layers H hd (L + (t+1)/2).

The result has the profile schema of DESIGN.md section 3 with `"kind": "estimated"`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from profiler.grid import Grid
from sparksched.models.presets import DecoderConfig

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float8": 1}


@dataclass(frozen=True)
class DeviceSpec:
    """Achievable rates of an accelerator (dense, no sparsity) and the datasheet figures behind them."""

    name: str
    flops: float  # effective dense bf16/fp16 tensor-core FLOP/s used by the estimate
    bandwidth: float  # effective HBM/GDDR bytes/s used by the estimate
    memory_bytes: float  # device memory (bytes), to flag grid points that would not fit
    peak_flops: float  # datasheet dense bf16 FLOP/s
    peak_bandwidth: float  # datasheet bytes/s
    launch_gap_s: float = 1.0e-6  # per-kernel gap under CUDA-graph replay (s)
    source: str = ""


# Datasheet peaks are dense (no 2:4 sparsity) BF16 tensor-core rates. Effective rates: 80 % of peak
# compute (what large cuBLAS GEMMs sustain) and ~90 % of peak bandwidth (what a device-to-device copy
# or a memory-bound GEMV sustains); H100 figures as measured on such a card (issue 3).
DEVICES: dict[str, DeviceSpec] = {
    # NVIDIA H100 SXM5 80 GB datasheet: 989 TFLOP/s BF16 dense (1979 with sparsity), 3.35 TB/s HBM3.
    # https://www.nvidia.com/en-us/data-center/h100/ ; effective 790 TFLOP/s, ~3.0 TB/s measured.
    "h100": DeviceSpec("NVIDIA H100 SXM5 80GB (roofline)", 790e12, 3.0e12, 80e9, 989e12, 3.35e12,
                       source="nvidia.com/en-us/data-center/h100 datasheet; effective 80% FLOPs, ~90% BW"),
    # NVIDIA H200 SXM 141 GB datasheet: 989 TFLOP/s BF16 dense, 4.8 TB/s HBM3e.
    # https://www.nvidia.com/en-us/data-center/h200/
    "h200": DeviceSpec("NVIDIA H200 SXM 141GB (roofline)", 790e12, 4.3e12, 141e9, 989e12, 4.8e12,
                       source="nvidia.com/en-us/data-center/h200 datasheet; effective 80% FLOPs, ~90% BW"),
    # NVIDIA A100 SXM4 80 GB datasheet: 312 TFLOP/s BF16 dense, 2.039 TB/s HBM2e.
    # https://www.nvidia.com/en-us/data-center/a100/
    "a100": DeviceSpec("NVIDIA A100 SXM4 80GB (roofline)", 250e12, 1.83e12, 80e9, 312e12, 2.039e12,
                       launch_gap_s=1.5e-6,
                       source="nvidia.com/en-us/data-center/a100 datasheet; effective 80% FLOPs, ~90% BW"),
    # NVIDIA L40S 48 GB datasheet: 362 TFLOP/s BF16 dense (733 with sparsity), 864 GB/s GDDR6.
    # https://www.nvidia.com/en-us/data-center/l40s/
    "l40s": DeviceSpec("NVIDIA L40S 48GB (roofline)", 290e12, 0.78e12, 48e9, 362e12, 0.864e12,
                       launch_gap_s=1.5e-6,
                       source="nvidia.com/en-us/data-center/l40s datasheet; effective 80% FLOPs, ~90% BW"),
}

KERNELS_PER_LAYER = 14  # norms, q/k/v/o, rope, cache write, attention, gate/up/act/down, residuals
KERNELS_FIXED = 10  # embedding, final norm, LM head, position/rope gathers
GEMM_TILE = 64  # rows of a GEMM tile: compute is paid in whole tiles


def get_device_spec(name: str) -> DeviceSpec:
    """The spec called `name` (case-insensitive); ValueError listing the known devices otherwise."""
    try:
        return DEVICES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown roofline device {name!r}; known: {', '.join(DEVICES)}") from None


@dataclass(frozen=True)
class StepCost:
    """Work of one pass: FLOPs, bytes moved, kernels launched, and bytes resident (weights + KV)."""

    flops: float
    bytes: float
    kernels: int
    resident_bytes: float

    def seconds(self, spec: DeviceSpec) -> float:
        """Roofline time (s): the slower of compute and memory, plus the fixed launch gaps."""
        return max(self.flops / spec.flops, self.bytes / spec.bandwidth) + self.kernels * spec.launch_gap_s

    def bound(self, spec: DeviceSpec) -> str:
        return "compute" if self.flops / spec.flops > self.bytes / spec.bandwidth else "memory"


def _kv_bytes_per_token(c: DecoderConfig, layers: int, s: int) -> int:
    return layers * 2 * c.kv_heads * c.head_dim * s


def _block_params(c: DecoderConfig) -> int:
    d, h = c.hidden, c.head_dim
    return (d * h * (c.heads + 2 * c.kv_heads) + c.heads * h * d + 3 * d * c.intermediate
            + 2 * d + (2 * h if c.qk_norm else 0))


def _tiled(b: int) -> int:
    return int(math.ceil(b / GEMM_TILE) * GEMM_TILE)


def layers_cost(c: DecoderConfig, layers: int, n: int, t: int, context: int, s: int) -> StepCost:
    """`layers` decoder blocks over n requests x t new tokens attending to `context` cached tokens each."""
    b = n * t
    p = _block_params(c) * layers
    kv = _kv_bytes_per_token(c, layers, s)
    act = b * layers * (12 * c.hidden + 3 * c.intermediate) * s
    flops = 2.0 * _tiled(b) * p + 4.0 * b * layers * c.heads * c.head_dim * (context + (t + 1) / 2)
    moved = p * s + n * context * kv + b * kv + act
    return StepCost(flops, moved, layers * KERNELS_PER_LAYER, p * s + n * (context + t) * kv)


def verify_cost(c: DecoderConfig, n: int, t: int, context: int, dtype: str = "bfloat16") -> StepCost:
    """One verify pass: n requests x t tokens (anchor + drafts) over a KV cache of `context` each."""
    s = DTYPE_BYTES[dtype]
    body = layers_cost(c, c.layers, n, t, context, s)
    b = n * t
    head = c.vocab_size * c.hidden
    flops = body.flops + 2.0 * _tiled(b) * head
    moved = body.bytes + head * s + b * c.hidden * s + b * c.vocab_size * 4
    emb = 0 if c.tie_embeddings else head * s
    return StepCost(flops, moved, body.kernels + KERNELS_FIXED, body.resident_bytes + head * s + emb)


def prefill_cost(c: DecoderConfig, prompt: int, dtype: str = "bfloat16") -> StepCost:
    """Prefill of one prompt of `prompt` tokens (causal; logits of the last position only)."""
    s = DTYPE_BYTES[dtype]
    body = layers_cost(c, c.layers, 1, prompt, 0, s)  # attention term uses (t + 1) / 2: causal
    head = c.vocab_size * c.hidden
    return StepCost(body.flops + 2.0 * GEMM_TILE * head, body.bytes + head * s + c.vocab_size * 4,
                    body.kernels + KERNELS_FIXED, body.resident_bytes + head * s)


def draft_cost(c: DecoderConfig, n: int, block: int, context: int, draft_layers: int, rank: int,
               dtype: str = "bfloat16") -> tuple[StepCost, StepCost]:
    """(backbone, head) of one DSpark drafter step: backbone = `draft_layers` target-width blocks over
    n x block positions attending to `context` projected target states + LM head; head = `block`
    sequential steps of a rank-`rank` Markov bias (V x r lookup, r x V projection), softmax, sampling.
    """
    s = DTYPE_BYTES[dtype]
    body = layers_cost(c, draft_layers, n, block, context, s)
    b = n * block
    v = c.vocab_size
    backbone = StepCost(body.flops + 2.0 * _tiled(b) * v * c.hidden,
                        body.bytes + v * c.hidden * s + b * v * 4, body.kernels + KERNELS_FIXED,
                        body.resident_bytes)
    # per head step: gather n rows of W1, [n, r] x [r, V], add, softmax, multinomial over [n, V] float32
    head = StepCost(block * (2.0 * _tiled(n) * rank * v + 6.0 * n * v),
                    block * (rank * v * s + n * rank * s + 4 * n * v * 4), block * 6, (v * rank * 2) * s)
    return backbone, head


def roofline_profile(device: str, config: DecoderConfig, grid: Grid, dtype: str = "bfloat16",
                     draft_layers: int = 5, rank: int = 256) -> dict[str, Any]:
    """A schema-1 profile estimated for `device` (a DEVICES key) over `grid`; `kind` = "estimated".

    Rows whose weights + KV cache exceed device memory are kept (the curve needs a full grid) and
    marked `"fits": false`.
    """
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r} for a roofline; known: {', '.join(DTYPE_BYTES)}")
    spec = get_device_spec(device)
    verify = []
    for n, t, ctx in grid.verify_points():
        cost = verify_cost(config, n, t, ctx, dtype)
        sec = cost.seconds(spec)
        verify.append({"requests": n, "tokens": n * t, "tokens_per_request": t, "context": ctx,
                       "median_s": sec, "p10_s": sec, "p90_s": sec, "cv": 0.0, "repeats": 0,
                       "flops": cost.flops, "bytes": cost.bytes, "bound": cost.bound(spec),
                       "fits": cost.resident_bytes <= spec.memory_bytes})
    draft = []
    for n, g in grid.draft_points():
        bb, hd = draft_cost(config, n, g, grid.draft_context, draft_layers, rank, dtype)
        b_s, h_s = bb.seconds(spec), hd.seconds(spec)
        draft.append({"requests": n, "block": g, "context": grid.draft_context, "backbone_s": b_s,
                      "head_s": h_s, "median_s": b_s + h_s, "p10_s": b_s + h_s, "p90_s": b_s + h_s,
                      "cv": 0.0, "repeats": 0})
    prefill = []
    for p in grid.prompts:
        cost = prefill_cost(config, p, dtype)
        sec = cost.seconds(spec)
        prefill.append({"prompt_tokens": p, "median_s": sec, "p10_s": sec, "p90_s": sec, "cv": 0.0,
                        "repeats": 0, "bound": cost.bound(spec)})
    return {
        "schema": 1,
        "kind": "estimated",
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": {"type": "roofline", "key": device.lower(), **asdict(spec),
                   "kernels_per_layer": KERNELS_PER_LAYER, "kernels_fixed": KERNELS_FIXED,
                   "gemm_tile": GEMM_TILE},
        "model": {"preset": config.name, **config.to_dict(), "parameters": config.parameters()},
        "dtype": dtype,
        "torch": None,
        "grid": grid.to_dict(),
        "drafter": {"layers": draft_layers, "width": config.hidden, "rank": rank,
                    "implementation": "roofline"},
        "verify": verify,
        "draft": draft,
        "prefill": prefill,
    }
