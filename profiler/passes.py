"""The work of one forward pass on one GPU of a deployment: FLOPs by data type, bytes, collectives.

A pass is a list of phases (per layer: attention, then the MLP or the experts; then the LM head).
Each phase runs as fast as its slower resource, so a pass costs

    sum over phases of max(sum_dtype FLOPs / rate(dtype), bytes / bandwidth)
      + collectives (latency + bytes / link bandwidth)      [hidden behind compute with two-batch overlap]
      + kernels x launch gap

at the device's effective rates. Pricing phase by phase (not max over the whole pass) matters once
the GEMMs are compute-bound while attention still streams KV from memory: the two do not overlap.

Per phase and GPU (b = n t tokens per attention group, tp the attention TP degree, s / s_kv the
weight / KV bytes per element):
- attention: projection weights / tp read once (2 tiled(b) params / tp FLOPs at the weight dtype);
  each request's cached KV read (n L kv_layer bytes, window-capped on sliding layers); the b new
  entries written; score + value FLOPs b x pairs x flops_per_pair / tp at the KV dtype's rate
  (MLA absorbed in decode: the 512-wide latent shared by all 128 heads makes it compute-heavy).
- dense MLP: 3 d I / tp weights; shared experts likewise; the router in 16-bit.
- routed experts (see `profiler.moe`): on each expert-parallel rank, the expected touched experts'
  weights read once, and grouped-GEMM rows paid in whole tiles per touched expert.
- LM head: vocabulary-parallel over tp, 16-bit when the body is quantized; float32 logits written.
GEMM rows are rounded up to 64-row tiles (the steps real GPUs show at tile boundaries).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from profiler.devices import DTYPE_BYTES, DeviceSpec
from profiler.models import ModelSpec
from profiler.moe import expected_touched, tiled_rows, tokens_per_touched_expert
from profiler.parallel import (
    SINGLE,
    Collective,
    Deployment,
    emb_bytes,
    kv_bytes_per_gpu,
    kv_bytes_per_token_layer,
    weight_bytes_per_gpu,
)

GEMM_TILE = 64  # rows of a GEMM tile: compute is paid in whole tiles
KERNELS_PER_LAYER = 14  # norms, q/k/v/o, rope, cache write, attention, gate/up/act/down, residuals
KERNELS_MLA = 4  # latent down/up projections, absorbed q and output
KERNELS_MOE = 8  # router, top-k, permute, two grouped GEMMs, activation, combine, shared expert
KERNELS_FIXED = 10  # embedding, final norm, LM head, position/rope gathers
ACT_BYTES = 2.0  # activations stay 16-bit


def tiled(rows: float) -> float:
    """Rows a dense GEMM pays: whole tiles of GEMM_TILE."""
    return float(math.ceil(rows / GEMM_TILE - 1e-9) * GEMM_TILE) if rows > 0 else 0.0


@dataclass(frozen=True)
class Work:
    """One phase on one GPU: FLOPs per compute dtype, bytes moved to/from device memory."""

    name: str
    flops: tuple[tuple[str, float], ...]
    bytes: float

    def compute_s(self, device: DeviceSpec) -> float:
        return sum(f / device.rate(d) for d, f in self.flops if f)

    def memory_s(self, device: DeviceSpec) -> float:
        return self.bytes / device.bandwidth

    def seconds(self, device: DeviceSpec) -> float:
        return max(self.compute_s(device), self.memory_s(device))


@dataclass(frozen=True)
class PassCost:
    """A pass on one GPU: its phases, collectives, kernel launches and resident bytes (weights + KV)."""

    phases: tuple[Work, ...]
    collectives: tuple[Collective, ...] = ()
    kernels: int = 0
    resident_bytes: float = 0.0
    overlap: bool = False  # collectives hidden behind compute (two-batch overlap)
    kv_bytes: float = field(default=0.0, compare=False)

    @property
    def flops(self) -> float:
        return float(sum(f for w in self.phases for _, f in w.flops))

    @property
    def bytes(self) -> float:
        return float(sum(w.bytes for w in self.phases))

    def breakdown(self, device: DeviceSpec) -> dict[str, float]:
        """Seconds by kind: compute-bound phases, memory-bound phases, collectives, launches, total."""
        compute = memory = 0.0
        for w in self.phases:
            c, m = w.compute_s(device), w.memory_s(device)
            if c >= m:
                compute += c
            else:
                memory += m
        comm = sum(c.seconds(device) for c in self.collectives)
        launch = self.kernels * device.launch_gap_s
        body = max(compute + memory, comm) if self.overlap else compute + memory + comm
        return {"compute_s": compute, "memory_s": memory, "comm_s": comm, "launch_s": launch,
                "total_s": body + launch}

    def seconds(self, device: DeviceSpec) -> float:
        """Roofline time of the pass (s)."""
        return self.breakdown(device)["total_s"]

    def bound(self, device: DeviceSpec) -> str:
        """What dominates: 'compute', 'memory' or 'communication'."""
        b = self.breakdown(device)
        return max((("compute", b["compute_s"]), ("memory", b["memory_s"]), ("communication", b["comm_s"])),
                   key=lambda kv: kv[1])[0]

    def __add__(self, other: PassCost) -> PassCost:
        return PassCost(self.phases + other.phases, self.collectives + other.collectives,
                        self.kernels + other.kernels, max(self.resident_bytes, other.resident_bytes),
                        self.overlap and other.overlap, max(self.kv_bytes, other.kv_bytes))

    def times(self, k: int) -> PassCost:
        """The same pass run k times in a row (e.g. k autoregressive draft steps)."""
        return PassCost(self.phases * k, self.collectives * k, self.kernels * k, self.resident_bytes,
                        self.overlap, self.kv_bytes)


@dataclass(frozen=True)
class Precision:
    """Weight and KV-cache dtypes (canonical names)."""

    weights: str = "bfloat16"
    kv: str = "bfloat16"

    @property
    def emb(self) -> str:
        """Dtype of embedding / LM head (16-bit when the body is quantized below that)."""
        return self.weights if DTYPE_BYTES[self.weights] >= 2 else "bfloat16"


def _layer_classes(model: ModelSpec, layers: range | list[int]) -> Counter[tuple[int, bool]]:
    """How many of `layers` share each (window, is MoE) shape."""
    return Counter((model.window(i), model.is_moe_layer(i)) for i in layers)


def layers_cost(model: ModelSpec, n: float, t: int, context: float, prec: Precision = Precision(),
                dep: Deployment = SINGLE, layers: range | list[int] | None = None, groups: int | None = None,
                causal: bool = True, absorbed: bool = True) -> PassCost:
    """Decoder blocks `layers` (all by default) over n requests x t new tokens per attention group, each
    request attending to `context` cached tokens (plus its own new tokens: causally, or all t of them
    for a bidirectional block when causal=False). `groups` attention groups are active (default all):
    the MoE layers see groups x n x t tokens. Resident bytes are the KV of these layers only.
    """
    layers = range(model.layers) if layers is None else layers
    groups = dep.groups if groups is None else groups
    tp = int(dep.tp)  # type: ignore[arg-type]
    s, d = DTYPE_BYTES[prec.weights], model.hidden
    b = n * t
    b_moe = groups * b
    kv_layer = kv_bytes_per_token_layer(model, dep, prec.kv)
    attn_p = model.attention_params() / tp
    own = (t + 1) / 2 if causal else t
    phases: list[Work] = []
    colls: list[Collective] = []
    kernels = 0
    for (window, moe), count in _layer_classes(model, layers).items():
        ctx = min(context, window) if window else context
        pairs = min(ctx + own, window) if window else ctx + own
        attn = Work("attention",
                    ((prec.weights, 2.0 * tiled(b) * attn_p),
                     (prec.kv, b * pairs * model.attention_flops_per_pair(absorbed) / tp)),
                    attn_p * s + n * ctx * kv_layer + b * kv_layer + b * 6 * d * ACT_BYTES)
        ffn, ffn_colls = (_moe_work(model, b, b_moe, prec, dep) if moe else _dense_mlp_work(model, b, prec, dep))
        layer_colls = ([Collective("all_reduce", b * d * ACT_BYTES, tp)] if tp > 1 else []) + ffn_colls
        phases += [attn, ffn] * count
        colls += layer_colls * count
        kernels += count * (KERNELS_PER_LAYER + (KERNELS_MLA if model.attention == "mla" else 0)
                            + (KERNELS_MOE if moe else 0))
    kv = _kv_resident(model, dep, prec, n, context + t, layers)
    return PassCost(tuple(phases), tuple(colls), kernels, kv, kv_bytes=kv)


def _dense_mlp_work(model: ModelSpec, b: float, prec: Precision, dep: Deployment) -> tuple[Work, list[Collective]]:
    tp = int(dep.tp)  # type: ignore[arg-type]
    p = model.dense_mlp_params() / tp
    w = Work("mlp", ((prec.weights, 2.0 * tiled(b) * p),),
             p * DTYPE_BYTES[prec.weights] + b * (3 * model.hidden + 3 * model.intermediate / tp) * ACT_BYTES)
    return w, ([Collective("all_reduce", b * model.hidden * ACT_BYTES, tp)] if tp > 1 else [])


def _moe_work(model: ModelSpec, b: float, b_moe: float, prec: Precision,
              dep: Deployment) -> tuple[Work, list[Collective]]:
    """Router + shared experts (per group) + routed experts (per expert-parallel rank) of one MoE layer."""
    tp, ep, etp = int(dep.tp), dep.ep, dep.expert_tp  # type: ignore[arg-type]
    s, d, k, e = DTYPE_BYTES[prec.weights], model.hidden, model.experts_per_token, model.n_routed_experts
    shared = model.shared_params() / tp
    touched = expected_touched(b_moe, e, k) / ep  # this rank's share of the touched experts
    m = tokens_per_touched_expert(b_moe, e, k)
    per_expert = model.expert_params() / etp
    arriving = b_moe * k / ep  # token-expert assignments this rank computes
    flops = ((prec.weights, 2.0 * tiled(b) * shared + 2.0 * touched * tiled_rows(m) * per_expert),
             ("bfloat16", 2.0 * b * model.router_params()))
    moved = (model.router_params() * 2.0 + shared * s + touched * per_expert * s
             + arriving * (2 * d + 3 * model.moe_intermediate / etp) * ACT_BYTES
             + b * 3 * d * ACT_BYTES)
    colls: list[Collective] = []
    if ep > 1:
        sent = (b / tp) * k * (ep - 1) / ep * d
        # FP8 dispatch (+ one float32 scale per 128 values) when the weights are 8-bit or less
        dispatch = 1.0 + 4.0 / 128 if DTYPE_BYTES[prec.weights] <= 1 else ACT_BYTES
        colls += [Collective("all_to_all", sent * dispatch, ep),
                  Collective("all_to_all", sent * ACT_BYTES, ep)]
    if etp > 1:
        colls.append(Collective("all_reduce", b_moe / ep * d * ACT_BYTES, etp))
    elif tp > 1 and model.n_shared_experts:
        colls.append(Collective("all_reduce", b * d * ACT_BYTES, tp))
    return Work("experts", flops, moved), colls


def _kv_resident(model: ModelSpec, dep: Deployment, prec: Precision, n: float, length: float,
                 layers: range | list[int]) -> float:
    """KV bytes on one GPU that `layers` hold for n requests of `length` tokens (windows cap sliding layers)."""
    per = kv_bytes_per_token_layer(model, dep, prec.kv)
    return n * per * sum(min(length, model.window(i)) if model.window(i) else length for i in layers)


def head_cost(model: ModelSpec, rows: float, logits_rows: float, prec: Precision, dep: Deployment,
              vocab: int | None = None) -> PassCost:
    """Embedding gather of `rows` tokens, LM head over `logits_rows` of them (vocab-parallel over tp)."""
    tp = int(dep.tp)  # type: ignore[arg-type]
    v = vocab or model.vocab_size
    se = emb_bytes(prec.weights)
    head = v * model.hidden / tp
    w = Work("lm_head", ((prec.emb, 2.0 * tiled(logits_rows) * head),),
             head * se + rows * model.hidden * se + logits_rows * v / tp * 4)
    return PassCost((w,), (), KERNELS_FIXED)


def verify_cost(model: Any, n: float, t: int, context: float, dtype: str = "bfloat16",
                dep: Deployment = SINGLE, kv_dtype: str | None = None) -> PassCost:
    """One verify pass: n requests x t tokens (anchor + drafts) per attention group over `context` cached
    tokens each; the whole deployment steps together. `model`: ModelSpec or DecoderConfig.

    With two-batch overlap (dep.two_batch_overlap, n >= 2) the batch runs as two micro-batches of n/2,
    each re-reading the weights, with collectives hidden behind the other micro-batch's compute.
    """
    from profiler.models import as_model_spec

    spec = as_model_spec(model)
    prec = Precision(dtype, kv_dtype or dtype)
    if dep.two_batch_overlap and n >= 2:
        half = verify_cost(spec, n / 2, t, context, dtype, _no_overlap(dep), kv_dtype)
        both = half.times(2)
        full_kv = kv_bytes_per_gpu(spec, dep, prec.kv, n, context + t)
        return PassCost(both.phases, both.collectives, both.kernels,
                        weight_bytes_per_gpu(spec, dep, dtype) + full_kv, True, full_kv)
    body = layers_cost(spec, n, t, context, prec, dep)
    head = head_cost(spec, n * t, n * t, prec, dep)
    total = body + head
    return PassCost(total.phases, total.collectives, total.kernels,
                    weight_bytes_per_gpu(spec, dep, dtype) + body.kv_bytes, False, body.kv_bytes)


def prefill_cost(model: Any, prompt: int, dtype: str = "bfloat16", dep: Deployment = SINGLE,
                 kv_dtype: str | None = None) -> PassCost:
    """Prefill of one prompt of `prompt` tokens in one attention group (causal; MLA unabsorbed; only
    the last position's logits). Other groups are idle, so the MoE layers see `prompt` tokens."""
    from profiler.models import as_model_spec

    spec = as_model_spec(model)
    prec = Precision(dtype, kv_dtype or dtype)
    body = layers_cost(spec, 1, prompt, 0, prec, dep, groups=1, absorbed=False)
    total = body + head_cost(spec, prompt, 1, prec, dep)
    return PassCost(total.phases, total.collectives, total.kernels,
                    weight_bytes_per_gpu(spec, dep, dtype) + body.kv_bytes, False, body.kv_bytes)


def _no_overlap(dep: Deployment) -> Deployment:
    from dataclasses import replace

    return replace(dep, two_batch_overlap=False)
