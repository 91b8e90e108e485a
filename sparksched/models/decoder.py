"""Reference target decoder: Llama / Qwen3 family (RMSNorm, RoPE, GQA, SwiGLU) with a paged-free KV cache.

One module serves three users:
- the profiler times a verify pass: n requests x (1 + l) tokens on top of a cache of L tokens each;
- the real drafter/verifier loop trains a small target and decodes with it;
- the drafter reads hidden states of a few target layers (`hidden_layers=`).

KV cache semantics (what makes verification with rollback cheap): `forward(tokens, cache)` writes the
keys and values of the T new tokens of request i at positions `cache.lengths[i] + 0..T-1` and lets
each query attend to every cached position at or before its own. It does *not* advance the lengths:
the caller does, by the number of tokens it keeps (`cache.advance(counts)`). Rejected draft positions
are therefore rolled back for free: their entries lie past the valid length and are overwritten by
the next step. Shapes are static for a fixed (n, T, max_len), so a verify pass can be captured in a
CUDA graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sparksched.models.presets import DecoderConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_tables(head_dim: int, max_positions: int, theta: float,
                device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables [max_positions, head_dim] (float32) for rotate-half RoPE."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    t = torch.arange(max_positions, device=device, dtype=torch.float32)
    freqs = torch.outer(t, inv)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [n, heads, T, hd]; cos/sin [n, 1, T, hd] gathered at each token's position."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


@dataclass
class KVCache:
    """Keys and values of every layer for n requests, with per-request valid lengths.

    Attributes:
        k, v: [layers, n, kv_heads, max_len, head_dim] in the model's dtype.
        lengths: [n] int64, tokens of valid cache per request (positions 0..lengths-1).
    """

    k: torch.Tensor
    v: torch.Tensor
    lengths: torch.Tensor

    @classmethod
    def empty(cls, config: DecoderConfig, n: int, max_len: int, device: torch.device | str,
              dtype: torch.dtype) -> KVCache:
        shape = (config.layers, n, config.kv_heads, max_len, config.head_dim)
        return cls(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype),
                   torch.zeros(n, device=device, dtype=torch.long))

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def advance(self, counts: torch.Tensor) -> None:
        """Mark `counts` [n] more tokens per request as valid (after a forward wrote them)."""
        self.lengths += counts.to(self.lengths)

    def select(self, index: torch.Tensor) -> KVCache:
        """The cache of requests `index` [m] (a copy), e.g. to drop finished requests."""
        return KVCache(self.k[:, index].clone(), self.v[:, index].clone(), self.lengths[index].clone())


@dataclass
class DecoderOutput:
    """logits [n, T, V] (float32); hidden: per requested layer, [n, T, hidden]; last [n, T, hidden]."""

    logits: torch.Tensor
    hidden: list[torch.Tensor]
    last_hidden: torch.Tensor


class Attention(nn.Module):
    def __init__(self, c: DecoderConfig) -> None:
        super().__init__()
        self.c = c
        self.q = nn.Linear(c.hidden, c.heads * c.head_dim, bias=c.qkv_bias)
        self.k = nn.Linear(c.hidden, c.kv_heads * c.head_dim, bias=c.qkv_bias)
        self.v = nn.Linear(c.hidden, c.kv_heads * c.head_dim, bias=c.qkv_bias)
        self.o = nn.Linear(c.heads * c.head_dim, c.hidden, bias=False)
        self.q_norm = RMSNorm(c.head_dim, c.norm_eps) if c.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(c.head_dim, c.norm_eps) if c.qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layer: int,
                cache: KVCache | None, positions: torch.Tensor | None) -> torch.Tensor:
        n, t, _ = x.shape
        c = self.c
        q = self.q_norm(self.q(x).view(n, t, c.heads, c.head_dim)).transpose(1, 2)  # [n, H, T, hd]
        k = self.k_norm(self.k(x).view(n, t, c.kv_heads, c.head_dim)).transpose(1, 2)  # [n, Hkv, T, hd]
        v = self.v(x).view(n, t, c.kv_heads, c.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        groups = c.heads // c.kv_heads
        if cache is None:
            if groups > 1:
                k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            assert positions is not None
            idx = positions[:, None, :, None].expand(n, c.kv_heads, t, c.head_dim)  # [n, Hkv, T, hd]
            cache.k[layer].scatter_(2, idx, k)
            cache.v[layer].scatter_(2, idx, v)
            keys, values = cache.k[layer], cache.v[layer]  # [n, Hkv, max_len, hd]
            key_pos = torch.arange(cache.max_len, device=x.device)
            mask = key_pos[None, None, None, :] <= positions[:, None, :, None]  # [n, 1, T, max_len]
            if groups > 1:
                # GQA without copying the cache: fold each kv head's query group into the query
                # length (q head h = j * groups + r reads kv head j), so the cache is read once.
                q = q.reshape(n, c.kv_heads, groups * t, c.head_dim)  # [n, Hkv, groups*T, hd]
                mask = mask.repeat(1, 1, groups, 1)  # [n, 1, groups*T, max_len], row r*T + i = mask[i]
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
            out = out.reshape(n, c.heads, t, c.head_dim)  # [n, H, T, hd]
        return self.o(out.transpose(1, 2).reshape(n, t, c.heads * c.head_dim))


class Block(nn.Module):
    def __init__(self, c: DecoderConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(c.hidden, c.norm_eps)
        self.attn = Attention(c)
        self.mlp_norm = RMSNorm(c.hidden, c.norm_eps)
        self.gate = nn.Linear(c.hidden, c.intermediate, bias=False)
        self.up = nn.Linear(c.hidden, c.intermediate, bias=False)
        self.down = nn.Linear(c.intermediate, c.hidden, bias=False)

    def forward(self, x, cos, sin, layer, cache, positions):
        x = x + self.attn(self.attn_norm(x), cos, sin, layer, cache, positions)
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Decoder(nn.Module):
    """Decoder-only LM. `forward(tokens [n, T], cache=None)` -> DecoderOutput.

    Without a cache: a causal pass over whole sequences (training, scoring). With a cache: tokens
    are appended at each request's `cache.lengths` (prefill, decode, verify); see the module
    docstring for rollback.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = RMSNorm(config.hidden, config.norm_eps)
        self.lm_head = nn.Linear(config.hidden, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rope_tables(config.head_dim, config.max_positions, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def reset_parameters(self, seed: int = 0, std: float = 0.02) -> None:
        """Random init (normal std, norms at 1), seeded; what the profiler and training start from."""
        gen = torch.Generator(device=self.embed.weight.device).manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("norm.weight") or ".q_norm." in name or ".k_norm." in name:
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=gen, device=p.device, dtype=torch.float32).to(p.dtype) * std)
            cos, sin = rope_tables(self.config.head_dim, self.config.max_positions, self.config.rope_theta,
                                   device=self.embed.weight.device)
            self.rope_cos, self.rope_sin = cos, sin

    def new_cache(self, n: int, max_len: int) -> KVCache:
        """An empty cache for n requests of up to max_len tokens, on the model's device and dtype."""
        w = self.embed.weight
        return KVCache.empty(self.config, n, max_len, w.device, w.dtype)

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None,
                hidden_layers: Sequence[int] = (), logits: bool = True) -> DecoderOutput:
        """tokens [n, T] int64. hidden_layers: indices of blocks whose outputs to return (0-based).

        Returns logits [n, T, V] (float32; an empty tensor when logits=False), the requested hidden
        states [n, T, hidden] each, and the final normed hidden state [n, T, hidden].
        """
        n, t = tokens.shape
        if cache is None:
            positions = torch.arange(t, device=tokens.device).expand(n, t)
        else:
            positions = cache.lengths[:, None] + torch.arange(t, device=tokens.device)  # [n, T]
        cos = self.rope_cos[positions][:, None]  # [n, 1, T, hd]
        sin = self.rope_sin[positions][:, None]
        x = self.embed(tokens)
        hidden = []
        wanted = set(hidden_layers)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, i, cache, positions if cache is not None else None)
            if i in wanted:
                hidden.append(x)
        last = self.norm(x)
        out = self.lm_head(last).float() if logits else last.new_empty(0)
        return DecoderOutput(out, [hidden[sorted(wanted).index(i)] for i in hidden_layers], last)


def build_decoder(config: DecoderConfig, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32, seed: int = 0) -> Decoder:
    """A decoder with seeded random weights, built directly on `device` in `dtype`.

    Built on the meta device first, so an 8B preset never materialises on the host.
    """
    with torch.device("meta"):
        model = Decoder(config)
    model = model.to_empty(device=device).to(dtype)
    if config.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    model.reset_parameters(seed)
    return model.eval()
