"""Local Hugging Face checkpoints: Llama / Qwen2 / Qwen3 configs map onto our Decoder with identical
logits; a drafter is trained for the loaded target, saved, reloaded, and decodes losslessly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from sparksched.hf import config_from_hf, hf_drafter, load_hf_target  # noqa: E402
from sparksched.speculative import autoregressive_generate, generate  # noqa: E402
from sparksched.training.data import TokenData  # noqa: E402

SMALL = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _save(tmp_path, kind: str, **extra):
    cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
           "qwen3": transformers.Qwen3Config}[kind]
    cfg = cls(**SMALL, **extra)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    if kind == "qwen2":  # make the q/k/v biases non-zero so the mapping of biases is checked
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.q_proj.bias.normal_(0, 0.5)
                layer.self_attn.k_proj.bias.normal_(0, 0.5)
    d = tmp_path / kind
    model.save_pretrained(d)
    return d, model


@pytest.mark.parametrize("kind, extra", [("llama", {}), ("qwen2", {}), ("qwen3", {"head_dim": 16}),
                                         ("llama", {"tie_word_embeddings": True})])
def test_logits_match_transformers(tmp_path, kind, extra):
    d, hf = _save(tmp_path, kind, **extra)
    ours = load_hf_target(d)
    toks = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(toks).logits.float()
    torch.testing.assert_close(ours(toks).logits, ref, atol=2e-4, rtol=1e-4)
    # and through the KV cache, token by token
    cache = ours.new_cache(2, 16)
    steps = []
    for i in range(11):
        steps.append(ours(toks[:, i:i + 1], cache=cache).logits)
        cache.advance(torch.ones(2, dtype=torch.long))
    torch.testing.assert_close(torch.cat(steps, 1), ref, atol=2e-4, rtol=1e-4)


def test_negative_control_wrong_mapping_is_visible(tmp_path):
    d, hf = _save(tmp_path, "llama")
    ours = load_hf_target(d)
    with torch.no_grad():  # swap two layers' attention norms: the logits must no longer match
        a, b = ours.blocks[0].attn_norm.weight, ours.blocks[1].mlp_norm.weight
        a.mul_(1.5)
        b.mul_(0.5)
    toks = torch.randint(0, 97, (1, 8))
    with torch.no_grad():
        assert not torch.allclose(ours(toks).logits, hf(toks).logits.float(), atol=2e-4)


def test_drafter_for_hf_target(tmp_path):
    d, _ = _save(tmp_path, "qwen3", head_dim=16)
    target = load_hf_target(d, dtype=torch.float64)
    rng = np.random.default_rng(0)
    streams = {dom: rng.integers(1, 97, 3000) for dom in ("code", "prose", "math")}
    data = TokenData(streams, {k: v[:600] for k, v in streams.items()})
    path = tmp_path / "drafter.pt"
    drafter = hf_drafter(d, target, path, steps=3, data=data)
    assert path.exists()
    again = hf_drafter(d, target, path)  # loads, does not train
    for a, b in zip(drafter.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b.to(a.dtype), atol=1e-3, rtol=1e-3)  # fp16 storage
    prompts = [[1, 2, 3, 4], [5, 6]]
    assert generate(target, again, prompts, 20, "verify-all", greedy=True).tokens == \
        autoregressive_generate(target, prompts, 20, greedy=True).tokens


def test_unsupported_configs(tmp_path):
    with pytest.raises(ValueError, match="model_type"):
        config_from_hf({"model_type": "gpt2"})
    cfg = dict(model_type="llama", vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=16, rope_scaling={"rope_type": "llama3", "factor": 8.0})
    with pytest.raises(ValueError, match="rope scaling"):
        config_from_hf(cfg)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "rope_scaling": None}))
    with pytest.raises(ValueError, match="no .*weights"):
        load_hf_target(tmp_path)
    del cfg["hidden_size"]
    with pytest.raises(ValueError, match="hidden_size"):
        config_from_hf(cfg)
