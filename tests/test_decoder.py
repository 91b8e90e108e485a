"""The reference target decoder: KV-cache passes equal a full causal pass; rollback; GQA; sizes."""

from __future__ import annotations

import pytest
import torch

from sparksched.models.decoder import build_decoder
from sparksched.models.presets import PRESETS, DecoderConfig, get_preset

TINY = get_preset("tiny")
TOL = dict(atol=2e-4, rtol=2e-4)


def _model(config: DecoderConfig = TINY, seed: int = 0):
    # std 0.2 so attention is far from uniform and a wrong mask/position shows up in the logits
    m = build_decoder(config, "cpu", torch.float32, seed)
    m.reset_parameters(seed, std=0.2)
    return m


def _tokens(n: int, t: int, vocab: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kv_heads", [4, 2, 1])  # MHA, GQA (2 query heads per kv head), MQA
def test_incremental_cache_equals_full_causal_pass(kv_heads: int) -> None:
    config = TINY.with_(kv_heads=kv_heads)
    model = _model(config)
    x = _tokens(3, 12, config.vocab_size)
    with torch.inference_mode():
        full = model(x).logits
        cache = model.new_cache(3, 16)
        pieces = []
        for lo, hi in [(0, 5), (5, 6), (6, 10), (10, 12)]:  # prefill, decode, verify-sized chunks
            pieces.append(model(x[:, lo:hi], cache).logits)
            cache.advance(torch.full((3,), hi - lo))
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, **TOL)


def test_cache_with_wrong_lengths_differs() -> None:
    """Negative control: the same check fails when the cache is not advanced (positions reused)."""
    model = _model()
    x = _tokens(2, 8, TINY.vocab_size)
    with torch.inference_mode():
        full = model(x).logits
        cache = model.new_cache(2, 8)
        first = model(x[:, :4], cache).logits  # forgot cache.advance
        second = model(x[:, 4:], cache).logits
    assert not torch.allclose(torch.cat([first, second], 1), full, **TOL)


def test_rollback_by_length_discards_rejected_drafts() -> None:
    """Verify 4 drafts, keep 1 (+ anchor), continue: same as never having seen the rejected ones."""
    model = _model()
    x = _tokens(1, 10, TINY.vocab_size, seed=1)
    junk = _tokens(1, 3, TINY.vocab_size, seed=2)
    with torch.inference_mode():
        ref = model(x).logits
        cache = model.new_cache(1, 16)
        model(x[:, :6], cache)
        cache.advance(torch.tensor([6]))
        verify = torch.cat([x[:, 6:8], junk], dim=1)  # anchor + 1 good draft + 3 rejected
        model(verify, cache)
        cache.advance(torch.tensor([2]))  # keep anchor and the accepted draft only
        rest = model(x[:, 8:], cache).logits
    torch.testing.assert_close(rest, ref[:, 8:], **TOL)


def test_ragged_lengths_match_per_request_passes() -> None:
    """Requests at different cache lengths in one batch each match their own full pass."""
    model = _model()
    lengths = [3, 7, 5]
    seqs = [_tokens(1, L + 2, TINY.vocab_size, seed=10 + i) for i, L in enumerate(lengths)]
    with torch.inference_mode():
        cache = model.new_cache(3, 12)
        for i, (s, L) in enumerate(zip(seqs, lengths)):
            one = model.new_cache(1, 12)
            model(s[:, :L], one)
            cache.k[:, i], cache.v[:, i] = one.k[:, 0], one.v[:, 0]
        cache.lengths.copy_(torch.tensor(lengths))
        step = torch.cat([s[:, L:L + 2] for s, L in zip(seqs, lengths)], dim=0)  # [3, 2]
        out = model(step, cache).logits
        for i, (s, L) in enumerate(zip(seqs, lengths)):
            torch.testing.assert_close(out[i], model(s).logits[0, L:L + 2], **TOL)


def test_gqa_matches_explicit_head_repetition() -> None:
    """A GQA model equals the MHA model whose k/v weights repeat each kv head `groups` times."""
    gqa = _model(TINY.with_(kv_heads=1))
    mha = build_decoder(TINY.with_(kv_heads=4), "cpu", torch.float32, 0)
    sd = dict(gqa.state_dict())
    hd = TINY.head_dim
    for name, w in list(sd.items()):
        if name.endswith("attn.k.weight") or name.endswith("attn.v.weight"):
            sd[name] = w.view(1, hd, -1).repeat_interleave(4, 0).reshape(4 * hd, -1)
    mha.load_state_dict(sd, strict=False)
    x = _tokens(2, 9, TINY.vocab_size)
    with torch.inference_mode():
        ca, cb = gqa.new_cache(2, 9), mha.new_cache(2, 9)
        gqa(x[:, :5], ca), mha(x[:, :5], cb)
        ca.advance(torch.tensor([5, 5])), cb.advance(torch.tensor([5, 5]))
        torch.testing.assert_close(gqa(x[:, 5:], ca).logits, mha(x[:, 5:], cb).logits, **TOL)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_parameter_count_matches_config(name: str) -> None:
    config = PRESETS[name]
    with torch.device("meta"):
        from sparksched.models.decoder import Decoder

        model = Decoder(config)
    assert sum(p.numel() for p in model.parameters()) == config.parameters()


def test_real_preset_sizes() -> None:
    assert 7.9e9 < get_preset("qwen3-8b").parameters() < 8.3e9  # Qwen3-8B: 8.2 B
    assert 7.9e9 < get_preset("llama-3.1-8b").parameters() < 8.1e9  # Llama-3.1-8B: 8.03 B
    assert 0.55e9 < get_preset("qwen3-0.6b").parameters() < 0.65e9
