"""Architecture presets for the reference target decoder (Llama / Qwen3 family).

Real presets carry the published dimensions of the named model (config.json of the public
checkpoint), so a profile of `qwen3-8b` with random weights times the same matrix shapes as the
real model; step time does not depend on weight values. Tiny presets run on 2 CPU cores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class DecoderConfig:
    """Dimensions of a decoder-only transformer (RMSNorm, RoPE, GQA, SwiGLU)."""

    name: str = "custom"
    vocab_size: int = 4096  # tokens in the embedding and LM head
    hidden: int = 128  # model width d_model
    layers: int = 2  # transformer blocks
    heads: int = 4  # query heads
    kv_heads: int = 2  # key/value heads (grouped-query attention when < heads)
    head_dim: int = 32  # per-head width (Qwen3 decouples it from hidden / heads)
    intermediate: int = 384  # SwiGLU inner width
    rope_theta: float = 10000.0  # RoPE base
    qk_norm: bool = False  # Qwen3 applies RMSNorm to q and k per head
    tie_embeddings: bool = False  # LM head shares the embedding matrix
    norm_eps: float = 1e-6
    max_positions: int = 4096  # longest sequence (RoPE table size, KV cache default)
    qkv_bias: bool = False  # biases on the q / k / v projections (Qwen2); added for local HF checkpoints

    def __post_init__(self) -> None:
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        for f in ("vocab_size", "hidden", "layers", "heads", "kv_heads", "head_dim", "intermediate"):
            if getattr(self, f) <= 0:
                raise ValueError(f"DecoderConfig.{f} must be > 0, got {getattr(self, f)}")

    def parameters(self) -> int:
        """Parameter count (embedding, blocks, norms, LM head unless tied)."""
        d, h = self.hidden, self.head_dim
        attn = d * h * (self.heads + 2 * self.kv_heads) + self.heads * h * d
        attn += h * (self.heads + 2 * self.kv_heads) if self.qkv_bias else 0
        mlp = 3 * d * self.intermediate
        norms = 2 * d + (2 * h if self.qk_norm else 0)
        emb = self.vocab_size * d
        return emb * (1 if self.tie_embeddings else 2) + self.layers * (attn + mlp + norms) + d

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_(self, **changes: Any) -> DecoderConfig:
        return replace(self, **changes)


PRESETS: dict[str, DecoderConfig] = {
    # Qwen/Qwen3-0.6B config.json
    "qwen3-0.6b": DecoderConfig("qwen3-0.6b", 151936, 1024, 28, 16, 8, 128, 3072, 1e6, True, True,
                                1e-6, 40960),
    # Qwen/Qwen3-4B config.json
    "qwen3-4b": DecoderConfig("qwen3-4b", 151936, 2560, 36, 32, 8, 128, 9728, 1e6, True, True, 1e-6, 40960),
    # Qwen/Qwen3-8B config.json
    "qwen3-8b": DecoderConfig("qwen3-8b", 151936, 4096, 36, 32, 8, 128, 12288, 1e6, True, False, 1e-6,
                              40960),
    # meta-llama/Llama-3.1-8B config.json
    "llama-3.1-8b": DecoderConfig("llama-3.1-8b", 128256, 4096, 32, 32, 8, 128, 14336, 500000.0, False,
                                  False, 1e-5, 131072),
    # small presets that run on 2 CPU cores
    "tiny": DecoderConfig("tiny", 4096, 128, 2, 4, 2, 32, 384, 10000.0, True, True, 1e-6, 4096),
    # the bundled target of the real loop: narrow and deep, so a CPU step costs 24 layers' per-op
    # overhead while a one-layer drafter costs one (benchmarks/model_shape.py measures the trade)
    "tiny-deep": DecoderConfig("tiny-deep", 4096, 64, 24, 2, 1, 32, 192, 10000.0, True, True, 1e-6, 4096),
    "small": DecoderConfig("small", 8192, 256, 4, 8, 2, 32, 768, 10000.0, True, True, 1e-6, 4096),
}


def get_preset(name: str) -> DecoderConfig:
    """The preset called `name`; ValueError listing the known presets otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}") from None
