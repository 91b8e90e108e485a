"""Named models for `--model`: the architecture fields of public Hugging Face config.json files.

Each preset is the subset of the checkpoint's config.json that shapes compute and memory, read by the
same parser as a user's file (`profiler.hf_config`), so a preset and the downloaded config give the
same `ModelSpec`. The runnable reference-decoder presets (`sparksched.models.presets`: tiny, small,
qwen3-*, llama-3.1-8b) are accepted too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from profiler.hf_config import config_to_spec
from profiler.models import ModelSpec, from_decoder_config

_FP8_BLOCK = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}

MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # deepseek-ai/DeepSeek-V3 config.json (671 B total, 37 B active; FP8 block-quantized checkpoint)
    "deepseek-v3": {
        "model_type": "deepseek_v3", "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
        "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_nextn_predict_layers": 1,
        "num_attention_heads": 128, "num_key_value_heads": 128, "n_shared_experts": 1, "n_routed_experts": 256,
        "num_experts_per_tok": 8, "moe_layer_freq": 1, "first_k_dense_replace": 3, "q_lora_rank": 1536,
        "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
        "max_position_embeddings": 163840, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "quantization_config": _FP8_BLOCK},
    # Qwen/Qwen3-30B-A3B config.json (30.5 B total, 3.3 B active)
    "qwen3-30b-a3b": {
        "model_type": "qwen3_moe", "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144,
        "moe_intermediate_size": 768, "num_hidden_layers": 48, "num_attention_heads": 32,
        "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8,
        "decoder_sparse_step": 1, "mlp_only_layers": [], "max_position_embeddings": 40960,
        "use_sliding_window": False, "sliding_window": None, "max_window_layers": 48,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
    # Qwen/Qwen3-235B-A22B config.json
    "qwen3-235b-a22b": {
        "model_type": "qwen3_moe", "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 12288,
        "moe_intermediate_size": 1536, "num_hidden_layers": 94, "num_attention_heads": 64,
        "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8,
        "decoder_sparse_step": 1, "mlp_only_layers": [], "max_position_embeddings": 40960,
        "use_sliding_window": False, "sliding_window": None, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16"},
    # mistralai/Mixtral-8x7B-Instruct-v0.1 config.json
    "mixtral-8x7b": {
        "model_type": "mixtral", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8,
        "num_experts_per_tok": 2, "max_position_embeddings": 32768, "sliding_window": None,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
    # meta-llama/Meta-Llama-3-8B-Instruct config.json
    "llama-3-8b": {
        "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "max_position_embeddings": 8192, "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
    # meta-llama/Llama-3.1-70B config.json
    "llama-3.1-70b": {
        "model_type": "llama", "vocab_size": 128256, "hidden_size": 8192, "intermediate_size": 28672,
        "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
        "max_position_embeddings": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
    # mistralai/Mistral-7B-Instruct-v0.3 config.json
    "mistral-7b": {
        "model_type": "mistral", "vocab_size": 32768, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "max_position_embeddings": 32768, "sliding_window": None, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16"},
    # google/gemma-2-9b config.json (local attention, window 4096, on every other layer)
    "gemma-2-9b": {
        "model_type": "gemma2", "vocab_size": 256000, "hidden_size": 3584, "intermediate_size": 14336,
        "num_hidden_layers": 42, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256,
        "sliding_window": 4096, "max_position_embeddings": 8192, "torch_dtype": "bfloat16"},
    # google/gemma-3-27b-it config.json, text tower (5 local layers of window 1024 per global layer)
    "gemma-3-27b": {
        "model_type": "gemma3_text", "vocab_size": 262208, "hidden_size": 5376, "intermediate_size": 21504,
        "num_hidden_layers": 62, "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128,
        "sliding_window": 1024, "sliding_window_pattern": 6, "max_position_embeddings": 131072,
        "torch_dtype": "bfloat16"},
}


def model_names() -> list[str]:
    """Every name `resolve_model` accepts without a path."""
    from sparksched.models.presets import PRESETS

    return list(MODEL_PRESETS) + [k for k in PRESETS if k not in MODEL_PRESETS]


def resolve_model(name: str) -> ModelSpec:
    """A ModelSpec for a preset name or a path to a config.json (or its directory).

    Raises a one-line ValueError naming the presets when `name` is neither.
    """
    from sparksched.models.presets import PRESETS

    key = name.lower()
    if key in MODEL_PRESETS:
        return config_to_spec(MODEL_PRESETS[key], name=key)
    path = Path(name)
    if path.exists():
        return config_to_spec(path)
    if key in PRESETS:
        return from_decoder_config(PRESETS[key])
    if name.endswith(".json") or "/" in name:
        raise ValueError(f"--model {name}: no such file")
    raise ValueError(f"unknown model preset {name!r}; known: {', '.join(model_names())}; "
                     "or give the path of a Hugging Face config.json")
