"""What the roofline needs to know about a decoder: shapes of attention, MLP and experts, layer by layer.

`ModelSpec` covers dense GQA decoders (Llama, Qwen, Mistral, Gemma), sliding-window layers, mixtures
of experts (routed top-k experts, shared experts, leading dense layers) and multi-head latent
attention (DeepSeek's MLA: a compressed KV latent plus a decoupled RoPE key). It is built from a
Hugging Face config.json (`profiler.hf_config`), a preset (`profiler.model_presets`) or a
`sparksched.models.presets.DecoderConfig`. Counts are in elements; bytes follow from the dtype.

All MLPs are gated (gate, up, down: 3 x d x width parameters), as in every family supported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    """Shapes of a decoder-only transformer, enough to count its FLOPs, bytes and KV cache.

    Attributes:
        name, model_type: a label and the HF `model_type` it came from.
        vocab_size, hidden, layers: embedding rows, model width d, decoder blocks.
        attention: "gqa" (grouped-query, incl. MHA / MQA) or "mla" (multi-head latent attention).
        heads, kv_heads, head_dim: query heads, KV heads, per-head width (GQA).
        q_lora_rank, kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim: MLA shapes
            (q_lora_rank 0 = queries projected directly from the hidden state).
        intermediate: width of the dense gated MLP (0 when no layer is dense).
        moe_layers: indices of the layers whose MLP is a mixture of experts.
        n_routed_experts, experts_per_token, moe_intermediate: routed experts E, top-k, expert width.
        n_shared_experts, shared_intermediate: always-on experts per MoE layer and their width.
        sliding_window, sliding_layers: attention window (tokens) and the layers that use it.
        tie_embeddings, qk_norm, max_positions: as in the HF config.
        native_dtype: the checkpoint's weight dtype (canonical name) when the config says.
        mtp_layers: DeepSeek multi-token-prediction modules shipped with the checkpoint (not part of
            the target's forward pass; priced as the MTP-1 drafter).
    """

    name: str
    model_type: str
    vocab_size: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int = 0
    attention: str = "gqa"
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    moe_layers: tuple[int, ...] = ()
    n_routed_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate: int = 0
    n_shared_experts: int = 0
    shared_intermediate: int = 0
    sliding_window: int = 0
    sliding_layers: tuple[int, ...] = ()
    tie_embeddings: bool = False
    qk_norm: bool = False
    max_positions: int = 4096
    native_dtype: str = "bfloat16"
    mtp_layers: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "moe_layers", tuple(sorted(int(i) for i in self.moe_layers)))
        object.__setattr__(self, "sliding_layers", tuple(sorted(int(i) for i in self.sliding_layers)))
        for f in ("vocab_size", "hidden", "layers", "heads", "kv_heads", "head_dim"):
            if int(getattr(self, f)) <= 0:
                raise ValueError(f"model {self.name}: {f} must be > 0, got {getattr(self, f)}")
        if self.attention not in ("gqa", "mla"):
            raise ValueError(f"model {self.name}: attention must be 'gqa' or 'mla', got {self.attention!r}")
        if self.attention == "gqa" and self.heads % self.kv_heads:
            raise ValueError(f"model {self.name}: heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        if self.attention == "mla" and min(self.kv_lora_rank, self.qk_nope_head_dim + self.qk_rope_head_dim,
                                           self.v_head_dim) <= 0:
            raise ValueError(f"model {self.name}: MLA needs kv_lora_rank, qk head dims and v_head_dim > 0")
        bad = [i for i in self.moe_layers + self.sliding_layers if not 0 <= i < self.layers]
        if bad:
            raise ValueError(f"model {self.name}: layer index {bad[0]} outside 0..{self.layers - 1}")
        if self.moe_layers:
            if self.n_routed_experts <= 0 or not 0 < self.experts_per_token <= self.n_routed_experts \
                    or self.moe_intermediate <= 0:
                raise ValueError(f"model {self.name}: MoE layers need 0 < experts_per_token "
                                 f"({self.experts_per_token}) <= n_routed_experts ({self.n_routed_experts}) "
                                 f"and moe_intermediate > 0 ({self.moe_intermediate})")
        if len(self.moe_layers) < self.layers and self.intermediate <= 0:
            raise ValueError(f"model {self.name}: dense layers need intermediate > 0")
        if self.sliding_layers and self.sliding_window <= 0:
            raise ValueError(f"model {self.name}: sliding layers need sliding_window > 0")

    # ------------------------------------------------------------------ structure
    @property
    def is_moe(self) -> bool:
        return bool(self.moe_layers)

    def is_moe_layer(self, i: int) -> bool:
        return i in self.moe_layers

    def window(self, i: int) -> int:
        """Attention window of layer i in tokens (0 = the whole context)."""
        return self.sliding_window if i in self.sliding_layers else 0

    # ------------------------------------------------------------------ parameters (elements)
    def attention_params(self) -> int:
        """Projection weights of one attention block (q, k, v, o or MLA's down / up projections)."""
        d = self.hidden
        if self.attention == "gqa":
            h = self.head_dim
            return d * h * (self.heads + 2 * self.kv_heads) + self.heads * h * d
        qk = self.qk_nope_head_dim + self.qk_rope_head_dim
        q = d * self.q_lora_rank + self.q_lora_rank * self.heads * qk if self.q_lora_rank else d * self.heads * qk
        kv = d * (self.kv_lora_rank + self.qk_rope_head_dim) + \
            self.kv_lora_rank * self.heads * (self.qk_nope_head_dim + self.v_head_dim)
        return q + kv + self.heads * self.v_head_dim * d

    def dense_mlp_params(self) -> int:
        return 3 * self.hidden * self.intermediate

    def expert_params(self) -> int:
        """One routed expert (gated MLP of width moe_intermediate)."""
        return 3 * self.hidden * self.moe_intermediate

    def shared_params(self) -> int:
        """All shared experts of one MoE layer."""
        return self.n_shared_experts * 3 * self.hidden * self.shared_intermediate

    def router_params(self) -> int:
        return self.hidden * self.n_routed_experts

    def parameters(self) -> int:
        """Total parameters of the target (embedding, blocks, LM head unless tied; MTP modules excluded)."""
        n_moe = len(self.moe_layers)
        body = self.layers * self.attention_params() + (self.layers - n_moe) * self.dense_mlp_params()
        body += n_moe * (self.n_routed_experts * self.expert_params() + self.shared_params() + self.router_params())
        return body + self.vocab_size * self.hidden * (1 if self.tie_embeddings else 2)

    def active_parameters(self) -> int:
        """Parameters active per token (top-k routed experts only), embeddings counted as the model
        cards do (so DeepSeek-V3 is 37 B, Qwen3-30B-A3B 3.3 B)."""
        n_moe = len(self.moe_layers)
        body = self.layers * self.attention_params() + (self.layers - n_moe) * self.dense_mlp_params()
        body += n_moe * (self.experts_per_token * self.expert_params() + self.shared_params() + self.router_params())
        return body + self.vocab_size * self.hidden * (1 if self.tie_embeddings else 2)

    # ------------------------------------------------------------------ attention arithmetic
    def kv_elements_per_token(self) -> int:
        """KV-cache elements one token stores in one layer: 2 Hkv hd (GQA), latent + RoPE key (MLA)."""
        if self.attention == "mla":
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.kv_heads * self.head_dim

    def attention_flops_per_pair(self, absorbed: bool = True) -> int:
        """FLOPs of one (query token, cached position) pair over all heads: scores plus value mix.

        GQA: 4 H hd. MLA absorbed (decode / verify: queries moved into the latent space, every head
        attends over the shared latent): 2 H (latent + rope) + 2 H latent. MLA unabsorbed (prefill:
        keys and values decompressed per head): 2 H (nope + rope) + 2 H v.
        """
        h = self.heads
        if self.attention == "gqa":
            return 4 * h * self.head_dim
        if absorbed:
            return 2 * h * (self.kv_lora_rank + self.qk_rope_head_dim) + 2 * h * self.kv_lora_rank
        return 2 * h * (self.qk_nope_head_dim + self.qk_rope_head_dim) + 2 * h * self.v_head_dim

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["moe_layers"] = list(self.moe_layers)
        d["sliding_layers"] = list(self.sliding_layers)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """A ModelSpec from `to_dict()` output (extra keys such as 'parameters' are ignored)."""
        names = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
        return cls(**kw)

    def with_(self, **changes: Any) -> ModelSpec:
        d = self.to_dict()
        d.update(changes)
        return ModelSpec.from_dict(d)


def from_decoder_config(config: Any) -> ModelSpec:
    """A dense ModelSpec from a `sparksched.models.presets.DecoderConfig` (the runnable reference decoder)."""
    return ModelSpec(name=config.name, model_type="sparksched-decoder", vocab_size=config.vocab_size,
                     hidden=config.hidden, layers=config.layers, heads=config.heads, kv_heads=config.kv_heads,
                     head_dim=config.head_dim, intermediate=config.intermediate,
                     tie_embeddings=config.tie_embeddings, qk_norm=config.qk_norm,
                     max_positions=config.max_positions)


def as_model_spec(model: Any) -> ModelSpec:
    """`model` itself when it is a ModelSpec, else converted from a DecoderConfig."""
    return model if isinstance(model, ModelSpec) else from_decoder_config(model)
