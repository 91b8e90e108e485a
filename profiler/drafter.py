"""Timing the drafter: the parallel backbone and the sequential head, separately, per (n, g).

The real DSpark drafter (`sparksched.models.drafter.DSparkDrafter`) is timed when it is importable:
`backbone(anchor, ctx)` (one parallel pass over the block, attending to `context` cached positions)
and `sample(bb, anchor)` (the sequential head loop). Stand-in shape (used only if that module is
absent, or on request): a DSpark drafter step is
  backbone  `layers` decoder blocks of the target's width over n x g positions (anchor + g - 1 masks),
            attending to L context entries appended to every layer's K/V (the projected target hidden
            states), then the shared LM head -> base logits [n, g, V];
  head      g sequential steps: bias = W2(W1[x_{k-1}]) (rank-r Markov bias, V x r lookup then
            r x V projection), logits = base_k + bias, softmax, one multinomial draw per request.
The backbone is built from `Decoder` blocks with the target's embedding and LM head shared.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from profiler.timer import Timing, time_fn
from sparksched.models.decoder import Decoder, build_decoder


class MarkovHeadLoop(nn.Module):
    """The sequential sampling loop with a low-rank Markov bias (W1: V x r, W2: r x V)."""

    def __init__(self, vocab: int, rank: int) -> None:
        super().__init__()
        self.w1 = nn.Embedding(vocab, rank)
        self.w2 = nn.Linear(rank, vocab, bias=False)

    def forward(self, base_logits: torch.Tensor, anchor: torch.Tensor, generator: torch.Generator | None
                ) -> torch.Tensor:
        """base_logits [n, g, V] float32, anchor [n] int64 -> drafted tokens [n, g] int64."""
        prev = anchor
        out = []
        for k in range(base_logits.shape[1]):
            logits = base_logits[:, k] + self.w2(self.w1(prev)).float()  # [n, V]
            probs = torch.softmax(logits, dim=-1)
            prev = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # [n]
            out.append(prev)
        return torch.stack(out, dim=1)


def build_standin(target: Decoder, layers: int = 5, rank: int = 256, seed: int = 1) -> tuple[Decoder, MarkovHeadLoop]:
    """A stand-in drafter of the DSpark shape for `target`: (backbone, head), on its device and dtype."""
    w = target.embed.weight
    config = target.config.with_(layers=layers, name=f"{target.config.name}-drafter")
    backbone = build_decoder(config, w.device, w.dtype, seed)
    backbone.embed = target.embed  # shared and frozen, as in DSpark
    backbone.lm_head = target.lm_head
    head = MarkovHeadLoop(target.config.vocab_size, rank).to(device=w.device, dtype=w.dtype).eval()
    gen = torch.Generator(device=w.device).manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, device=w.device, dtype=torch.float32).to(p.dtype) * 0.02)
    return backbone, head


def draft_fns(backbone: Decoder, head: MarkovHeadLoop, n: int, block: int, context: int,
              seed: int = 0) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(backbone pass, head loop) callables for n requests, block g, `context` conditioning entries."""
    device = backbone.embed.weight.device
    cache = backbone.new_cache(n, context + block)
    cache.lengths.fill_(context)
    gen_cpu = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, backbone.config.vocab_size, (n, block), generator=gen_cpu).to(device)
    with torch.inference_mode():
        base = backbone(tokens, cache).logits  # [n, g, V] float32, reused by the head timing
    gen = torch.Generator(device=device).manual_seed(seed)

    def run_backbone() -> Any:
        with torch.inference_mode():
            return backbone(tokens, cache).logits

    def run_head() -> Any:
        with torch.inference_mode():
            return head(base, tokens[:, 0], gen)

    run_backbone.device = device  # type: ignore[attr-defined]
    run_head.device = device  # type: ignore[attr-defined]
    return run_backbone, run_head


def real_fns(drafter: Any, n: int, block: int, context: int, seed: int = 0
             ) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(backbone pass, head loop) of a `sparksched.models.drafter.DSparkDrafter` for n requests,
    block g, a context cache holding `context` projected target positions per request.

    The block size is a field of the drafter's config; it is swapped in place (the weights do not
    depend on it). The head loop runs `drafter.sample` with the global RNG (no per-request generators).
    """
    from dataclasses import replace

    w = drafter.fc.weight
    device = w.device
    if drafter.config.block != block:
        drafter.config = replace(drafter.config, block=block)
        drafter.sts_temps = torch.ones(block, device=device, dtype=drafter.sts_temps.dtype)
    ctx = drafter.new_context(n, max(context, 1))
    ctx.lengths.fill_(context)
    gen_cpu = torch.Generator().manual_seed(seed)
    anchor = torch.randint(0, drafter.vocab, (n,), generator=gen_cpu).to(device)
    with torch.inference_mode():
        bb = drafter.backbone(anchor, ctx)

    def run_backbone() -> Any:
        with torch.inference_mode():
            return drafter.backbone(anchor, ctx).base_logits

    def run_head() -> Any:
        with torch.inference_mode():
            return drafter.sample(bb, anchor).tokens

    run_backbone.device = device  # type: ignore[attr-defined]
    run_head.device = device  # type: ignore[attr-defined]
    return run_backbone, run_head


def build_drafter(target: Decoder, layers: int = 5, rank: int = 256, seed: int = 1, standin: bool = False
                  ) -> tuple[Callable[[int, int, int, int], tuple[Callable[[], Any], Callable[[], Any]]],
                             dict[str, Any]]:
    """A factory `(n, g, context, seed) -> (backbone_fn, head_fn)` for `target`, and facts about it.

    Uses the real DSpark drafter (`sparksched.models.drafter`) at the target's width, heads and MLP
    size with `layers` blocks, a rank-`rank` Markov head and three conditioning target layers; falls
    back to the stand-in shape of this module when that module is absent (or `standin=True`).
    """
    c = target.config
    if not standin:
        try:
            from sparksched.models.drafter import DrafterConfig
            from sparksched.models.drafter import build_drafter as build_real
        except ImportError:
            standin = True
    if not standin:
        picks = sorted({1, c.layers // 2, c.layers - 2} & set(range(c.layers))) or [0]
        config = DrafterConfig(block=7, layers=layers, width=0, heads=c.heads, kv_heads=c.kv_heads,
                               head_dim=c.head_dim, intermediate=c.intermediate, target_layers=tuple(picks),
                               head="markov", rank=rank, rope_theta=c.rope_theta, norm_eps=c.norm_eps)
        drafter = build_real(config, target, seed)
        meta = {"implementation": "sparksched.models.drafter.DSparkDrafter", **config.to_dict(),
                "block": "per row", "parameters": drafter.trainable_parameters(),
                "head_rng": "global (no per-request generators)"}
        return (lambda n, g, ctx, s: real_fns(drafter, n, g, ctx, s)), meta
    backbone, head = build_standin(target, layers, rank, seed)
    meta = {"implementation": "stand-in (profiler/drafter.py: Decoder blocks + Markov head loop)",
            "layers": layers, "width": c.hidden, "rank": rank}
    return (lambda n, g, ctx, s: draft_fns(backbone, head, n, g, ctx, s)), meta


def time_draft(drafter: Callable[[int, int, int, int], tuple[Callable[[], Any], Callable[[], Any]]],
               n: int, block: int, context: int, warmup: int = 3, repeats: int = 10, seed: int = 0,
               device: torch.device | str | None = None) -> tuple[Timing, Timing]:
    """(backbone timing, head timing) for one drafter step of n requests x block g at `context`."""
    run_backbone, run_head = drafter(n, block, context, seed)
    dev = device if device is not None else _device_of(run_backbone)
    return time_fn(run_backbone, dev, warmup, repeats), time_fn(run_head, dev, warmup, repeats)


def _device_of(fn: Callable[[], Any]) -> torch.device:
    return getattr(fn, "device", torch.device("cpu"))
