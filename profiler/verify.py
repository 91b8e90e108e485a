"""Timing the target's verify pass and prefill.

A verify pass is one forward of n requests x t tokens (the anchor plus t - 1 drafts) appended at
position L of each request's KV cache; the cache holds L valid tokens (`cache.lengths = L`) and room
for the new ones. Everything runs under `torch.inference_mode`. With `cuda_graph=True` the pass is
captured once in a CUDA graph and replays are timed (what engines with graph replay pay).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from profiler.timer import Timing, sample_fn, summarize, time_fn
from sparksched.models.decoder import Decoder, KVCache


def _random_tokens(model: Decoder, n: int, t: int, seed: int) -> torch.Tensor:
    device = model.embed.weight.device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (n, t), generator=gen).to(device)


def capture_graph(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """Capture `fn` (static shapes, no host sync) in a CUDA graph; return its replay.

    Two eager warm-up runs happen on a side stream first, as CUDA graph capture requires.
    """
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def verify_fn(model: Decoder, cache: KVCache, t: int, context: int, seed: int = 0,
              cuda_graph: bool = False) -> Callable[[], object]:
    """The callable for one verify pass of cache.n requests x t tokens at context `context`.

    `cache` must have max_len >= context + t; its lengths are set to `context`.
    """
    n = cache.lengths.shape[0]
    if cache.max_len < context + t:
        raise ValueError(f"cache max_len {cache.max_len} < context {context} + tokens {t}")
    cache.lengths.fill_(context)
    tokens = _random_tokens(model, n, t, seed)

    def run() -> object:
        with torch.inference_mode():
            return model(tokens, cache).logits

    if cuda_graph:
        if tokens.device.type != "cuda":
            raise ValueError("cuda_graph=True needs a CUDA model")
        with torch.inference_mode():
            return capture_graph(run, tokens.device)
    return run


def verify_samples(model: Decoder, n: int, t: int, context: int, warmup: int = 3, repeats: int = 10,
                   cuda_graph: bool = False, cache: KVCache | None = None, seed: int = 0) -> list[float]:
    """Durations (s) of `repeats` verify passes (n requests x t tokens over `context` cached tokens).

    Pass `cache` (n requests, max_len >= context + t) to reuse one allocation across t values.
    """
    device = model.embed.weight.device
    if cache is None:
        cache = model.new_cache(n, context + t)
    fn = verify_fn(model, cache, t, context, seed, cuda_graph)
    return sample_fn(fn, device, warmup, repeats)


def time_verify(model: Decoder, n: int, t: int, context: int, warmup: int = 3, repeats: int = 10,
                cuda_graph: bool = False, cache: KVCache | None = None, seed: int = 0) -> Timing:
    """Statistics of `verify_samples` (median, p10, p90, cv)."""
    return summarize(verify_samples(model, n, t, context, warmup, repeats, cuda_graph, cache, seed))


def time_prefill(model: Decoder, prompt: int, warmup: int = 2, repeats: int = 5, seed: int = 0) -> Timing:
    """Time the prefill of one prompt of `prompt` tokens: a causal pass writing the cache, then the
    LM head on the last position only (what a server computes to emit the first token)."""
    device = model.embed.weight.device
    cache = model.new_cache(1, prompt)
    tokens = _random_tokens(model, 1, prompt, seed)

    def run() -> object:
        with torch.inference_mode():
            cache.lengths.zero_()
            out = model(tokens, cache, logits=False)
            return model.lm_head(out.last_hidden[:, -1:]).float()

    return time_fn(run, device, warmup, repeats)
