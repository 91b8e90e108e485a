"""How a deployment splits a model over GPUs: shares of weights and KV cache, and its collectives.

A deployment is `gpus` GPUs stepping in lockstep (one engine):

- attention and dense layers (attention projections, dense MLPs, shared experts, embedding and LM
  head) are tensor-parallel over `tp` GPUs. Without DP attention `tp` spans all GPUs and the
  engine has one batch. With `dp_attention` there are gpus / tp attention groups, each with its own
  requests and KV cache, and the dense parts are replicated per group (SGLang's DP attention with
  `--moe-dense-tp-size 1`).
- routed experts are expert-parallel over `ep` GPUs (E / ep experts each, on average when ep does not
  divide E: engines then place redundant copies, e.g. SGLang's EPLB) and tensor-parallel over the
  remaining gpus / ep within each expert.

The profile's `requests` axis is requests per attention group, so with DP attention on one GPU per
group a simulated engine is one GPU of the deployment and its throughput is per GPU (the paper's
Figures 7-8 axes). MoE layers see the tokens of every group at once.

Collectives per layer: an all-reduce of the attention output and of the dense MLP / shared-expert
output over the tp group (tp > 1); for expert parallelism an all-to-all dispatch of every token to
its k experts and a combine back (FP8 dispatch and BF16 combine when the weights are 8-bit or less,
as DeepEP does); an all-reduce over the expert-TP group when experts are split too. Each is priced
as latency + bytes / bandwidth, over NVLink inside a node and over the NIC for traffic that leaves it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from profiler.devices import DTYPE_BYTES, DeviceSpec
from profiler.models import ModelSpec

MEMORY_FRACTION = 0.9  # share of device memory for weights + KV (vLLM's default gpu_memory_utilization)


@dataclass(frozen=True)
class Deployment:
    """GPUs and their split. tp=None means: all GPUs without DP attention, 1 with it."""

    gpus: int = 1
    tp: int | None = None
    ep: int = 1
    dp_attention: bool = False
    two_batch_overlap: bool = False
    memory_fraction: float = MEMORY_FRACTION

    def __post_init__(self) -> None:
        for f in ("gpus", "ep"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"--{f} must be >= 1, got {getattr(self, f)}")
        tp = self.tp if self.tp is not None else (1 if self.dp_attention else self.gpus)
        if tp < 1:
            raise ValueError(f"--tp must be >= 1, got {tp}")
        object.__setattr__(self, "tp", int(tp))
        if self.gpus % tp:
            raise ValueError(f"--gpus {self.gpus} is not a multiple of --tp {tp}")
        if not self.dp_attention and tp != self.gpus:
            raise ValueError(f"--tp {tp} with --gpus {self.gpus}: without --dp-attention one engine's attention "
                             f"spans all GPUs (--tp {self.gpus}); add --dp-attention for {self.gpus // tp} "
                             "attention groups")
        if self.gpus % self.ep:
            raise ValueError(f"--gpus {self.gpus} is not a multiple of --ep {self.ep}")
        if not 0 < self.memory_fraction <= 1:
            raise ValueError(f"memory fraction must be in (0, 1], got {self.memory_fraction}")

    @property
    def groups(self) -> int:
        """Attention groups (data-parallel batches) stepping together."""
        return self.gpus // int(self.tp) if self.dp_attention else 1  # type: ignore[arg-type]

    @property
    def expert_tp(self) -> int:
        """GPUs each routed expert is split over (gpus / ep)."""
        return self.gpus // self.ep

    def check(self, model: ModelSpec) -> None:
        """One-line ValueError when this split does not suit `model`."""
        tp = int(self.tp)  # type: ignore[arg-type]
        if model.heads % tp:
            raise ValueError(f"--tp {tp}: {model.name} has {model.heads} attention heads, not divisible by {tp}")
        if self.ep > 1 and not model.is_moe:
            raise ValueError(f"--ep {self.ep}: {model.name} is dense (no experts to distribute); use --tp")
        if model.is_moe and self.ep > model.n_routed_experts:
            raise ValueError(f"--ep {self.ep}: {model.name} has only {model.n_routed_experts} routed experts")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "groups": self.groups, "expert_tp": self.expert_tp}


SINGLE = Deployment()


def emb_bytes(weight_dtype: str) -> float:
    """Bytes per embedding / LM-head element: kept in 16-bit when the body is quantized below that."""
    return max(DTYPE_BYTES[weight_dtype], 2.0)


def weight_bytes_per_gpu(model: ModelSpec, dep: Deployment, weight_dtype: str) -> float:
    """Weight bytes resident on each GPU of the deployment."""
    s = DTYPE_BYTES[weight_dtype]
    tp = int(dep.tp)  # type: ignore[arg-type]
    n_moe = len(model.moe_layers)
    dense = model.layers * model.attention_params() + (model.layers - n_moe) * model.dense_mlp_params()
    dense += n_moe * model.shared_params()
    total = dense * s / tp
    total += n_moe * model.router_params() * 2.0  # router weights stay 16-bit, replicated
    total += n_moe * model.n_routed_experts * model.expert_params() * s / dep.gpus
    heads = 1 if model.tie_embeddings else 2
    return total + heads * model.vocab_size * model.hidden * emb_bytes(weight_dtype) / tp


def kv_split(model: ModelSpec, dep: Deployment) -> int:
    """GPUs of a tp group that share one token's KV: KV heads split up to tp; MLA's latent is not."""
    if model.attention == "mla":
        return 1
    return min(int(dep.tp), model.kv_heads)  # type: ignore[arg-type]


def kv_bytes_per_token_layer(model: ModelSpec, dep: Deployment, kv_dtype: str) -> float:
    """KV bytes one token stores per layer on one GPU."""
    return model.kv_elements_per_token() * DTYPE_BYTES[kv_dtype] / kv_split(model, dep)


def kv_bytes_per_gpu(model: ModelSpec, dep: Deployment, kv_dtype: str, requests: float, length: float) -> float:
    """KV bytes on one GPU for `requests` requests of `length` tokens each (sliding layers keep a window)."""
    per = kv_bytes_per_token_layer(model, dep, kv_dtype)
    total = 0.0
    for i in range(model.layers):
        w = model.window(i)
        total += min(length, w) if w else length
    return requests * total * per


def kv_capacity_tokens(model: ModelSpec, dep: Deployment, device: DeviceSpec, weight_dtype: str,
                       kv_dtype: str) -> int:
    """Tokens of KV one attention group holds once weights are loaded (full-attention layers; 0 if none fit)."""
    free = dep.memory_fraction * device.memory_bytes - weight_bytes_per_gpu(model, dep, weight_dtype)
    full = sum(1 for i in range(model.layers) if not model.window(i))
    per_token = max(full, 1) * kv_bytes_per_token_layer(model, dep, kv_dtype)
    return max(int(free // per_token), 0)


# --------------------------------------------------------------------------- collectives
@dataclass(frozen=True)
class Collective:
    """One collective a GPU takes part in: kind ('all_reduce' | 'all_to_all'), payload bytes, group size."""

    kind: str
    bytes: float
    group: int

    def seconds(self, device: DeviceSpec) -> float:
        """latency + bytes / bandwidth; traffic leaving the NVLink domain goes at the NIC's rate.

        all_reduce: a ring moves 2 (g - 1) / g of the payload per GPU. all_to_all: `bytes` is what
        one GPU sends to the others; the share bound for other nodes is (g - node) / (g - 1).
        """
        g = self.group
        if g <= 1 or self.bytes <= 0:
            return 0.0
        node = max(device.gpus_per_node, 1)
        if self.kind == "all_reduce":
            moved = 2.0 * (g - 1) / g * self.bytes
            if g <= node:
                return device.link_latency_s + moved / device.link_bandwidth
            return device.network_latency_s + moved / device.network_bandwidth
        if g <= node:
            return device.link_latency_s + self.bytes / device.link_bandwidth
        remote = (g - node) / (g - 1)
        return device.network_latency_s + max(self.bytes * (1 - remote) / device.link_bandwidth,
                                               self.bytes * remote / device.network_bandwidth)
