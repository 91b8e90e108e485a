"""Hugging Face config.json -> ModelSpec: real fields of each model type, written here from public shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profiler.hf_config import SUPPORTED, config_to_spec
from profiler.model_presets import MODEL_PRESETS, resolve_model

# Architecture fields of public checkpoints' config.json (values as published on the Hub).
DEEPSEEK_V3 = {"model_type": "deepseek_v3", "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
               "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_nextn_predict_layers": 1,
               "num_attention_heads": 128, "num_key_value_heads": 128, "n_shared_experts": 1,
               "n_routed_experts": 256, "num_experts_per_tok": 8, "moe_layer_freq": 1, "first_k_dense_replace": 3,
               "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
               "v_head_dim": 128, "max_position_embeddings": 163840, "tie_word_embeddings": False,
               "torch_dtype": "bfloat16", "rope_scaling": {"type": "yarn", "factor": 40},
               "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]}}
DEEPSEEK_V2_LITE = {"model_type": "deepseek_v2", "vocab_size": 102400, "hidden_size": 2048, "intermediate_size": 10944,
                    "moe_intermediate_size": 1408, "num_hidden_layers": 27, "num_attention_heads": 16,
                    "num_key_value_heads": 16, "n_shared_experts": 2, "n_routed_experts": 64, "num_experts_per_tok": 6,
                    "moe_layer_freq": 1, "first_k_dense_replace": 1, "q_lora_rank": None, "kv_lora_rank": 512,
                    "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "torch_dtype": "bfloat16"}
QWEN3_30B_A3B = {"model_type": "qwen3_moe", "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144,
                 "moe_intermediate_size": 768, "num_hidden_layers": 48, "num_attention_heads": 32,
                 "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8,
                 "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": True,
                 "max_position_embeddings": 40960, "use_sliding_window": False, "sliding_window": None,
                 "max_window_layers": 48, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
QWEN15_MOE = {"model_type": "qwen2_moe", "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 5632,
              "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632, "num_hidden_layers": 24,
              "num_attention_heads": 16, "num_key_value_heads": 16, "num_experts": 60, "num_experts_per_tok": 4,
              "decoder_sparse_step": 1, "torch_dtype": "bfloat16"}
MIXTRAL = {"model_type": "mixtral", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
           "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8,
           "num_experts_per_tok": 2, "sliding_window": None, "torch_dtype": "bfloat16"}
LLAMA31_8B = {"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
              "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
              "max_position_embeddings": 131072, "torch_dtype": "bfloat16"}
MISTRAL_7B_V01 = {"model_type": "mistral", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
                  "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                  "sliding_window": 4096, "torch_dtype": "bfloat16"}
GEMMA2_9B = {"model_type": "gemma2", "vocab_size": 256000, "hidden_size": 3584, "intermediate_size": 14336,
             "num_hidden_layers": 42, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256,
             "sliding_window": 4096, "torch_dtype": "bfloat16"}
GEMMA3_27B = {"model_type": "gemma3", "torch_dtype": "bfloat16", "vision_config": {"hidden_size": 1152},
              "text_config": {"model_type": "gemma3_text", "vocab_size": 262208, "hidden_size": 5376,
                              "intermediate_size": 21504, "num_hidden_layers": 62, "num_attention_heads": 32,
                              "num_key_value_heads": 16, "head_dim": 128, "sliding_window": 1024,
                              "sliding_window_pattern": 6}}


def _write(tmp_path: Path, cfg: dict, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("cfg, billions, active", [
    (DEEPSEEK_V3, 671.0, 37.0), (DEEPSEEK_V2_LITE, 15.7, None), (QWEN3_30B_A3B, 30.5, 3.3),
    (QWEN15_MOE, 14.3, 2.7), (MIXTRAL, 46.7, 12.9), (LLAMA31_8B, 8.03, None), (MISTRAL_7B_V01, 7.24, None),
    (GEMMA2_9B, 9.24, None), (GEMMA3_27B, 27.0, None),
])
def test_parameter_counts_match_the_published_totals(tmp_path: Path, cfg: dict, billions: float,
                                                     active: float | None) -> None:
    spec = config_to_spec(_write(tmp_path, cfg))
    assert spec.parameters() / 1e9 == pytest.approx(billions, rel=0.01)
    if active is not None:
        assert spec.active_parameters() / 1e9 == pytest.approx(active, rel=0.1)


def test_deepseek_v3_fields(tmp_path: Path) -> None:
    s = config_to_spec(_write(tmp_path, DEEPSEEK_V3))  # a config file's directory works too
    assert config_to_spec(tmp_path) == s
    assert (s.attention, s.kv_lora_rank, s.qk_rope_head_dim, s.q_lora_rank) == ("mla", 512, 64, 1536)
    assert s.moe_layers == tuple(range(3, 61)) and s.n_shared_experts == 1 and s.shared_intermediate == 2048
    assert (s.n_routed_experts, s.experts_per_token, s.mtp_layers, s.native_dtype) == (256, 8, 1, "float8")
    assert s.kv_elements_per_token() == 576  # the compressed latent plus the decoupled RoPE key
    # absorbed decode attention: per head 2 x (512 + 64) for scores + 2 x 512 for the latent values
    assert s.attention_flops_per_pair() == 128 * (2 * 576 + 2 * 512)
    assert s.attention_flops_per_pair(absorbed=False) == 128 * (2 * 192 + 2 * 128)


def test_dense_and_moe_layer_layouts(tmp_path: Path) -> None:
    q = config_to_spec(QWEN3_30B_A3B)
    assert len(q.moe_layers) == 48 and q.intermediate == 0 and q.qk_norm and q.kv_elements_per_token() == 1024
    lite = config_to_spec(DEEPSEEK_V2_LITE)
    assert lite.moe_layers == tuple(range(1, 27)) and lite.q_lora_rank == 0 and lite.n_shared_experts == 2
    q15 = config_to_spec(QWEN15_MOE)
    assert q15.n_shared_experts == 1 and q15.shared_intermediate == 5632
    sparse = config_to_spec({**QWEN3_30B_A3B, "decoder_sparse_step": 2, "mlp_only_layers": [1], "intermediate_size": 6144})
    assert sparse.moe_layers == tuple(range(3, 48, 2)) and sparse.intermediate == 6144
    m = config_to_spec(MIXTRAL)
    assert m.moe_layers == tuple(range(32)) and m.moe_intermediate == 14336 and not m.sliding_layers


def test_sliding_window_layers(tmp_path: Path) -> None:
    assert config_to_spec(MISTRAL_7B_V01).sliding_layers == tuple(range(32))
    g2 = config_to_spec(GEMMA2_9B)
    assert g2.sliding_layers == tuple(range(0, 42, 2)) and g2.window(0) == 4096 and g2.window(1) == 0
    assert g2.tie_embeddings  # Gemma ties its embeddings by default
    g3 = config_to_spec(_write(tmp_path, GEMMA3_27B))
    assert g3.model_type == "gemma3_text" and len(g3.sliding_layers) == 52 and g3.window(5) == 0
    qw = config_to_spec({**QWEN3_30B_A3B, "use_sliding_window": True, "sliding_window": 4096, "max_window_layers": 40})
    assert qw.sliding_layers == tuple(range(40, 48))
    types = ["sliding_attention", "full_attention"] * 16
    listed = config_to_spec({**LLAMA31_8B, "layer_types": types, "sliding_window": 512})
    assert listed.sliding_layers == tuple(range(0, 32, 2)) and listed.sliding_window == 512


def test_presets_are_the_same_configs() -> None:
    for name, cfg in MODEL_PRESETS.items():
        assert resolve_model(name) == config_to_spec(cfg, name=name)
    assert resolve_model("deepseek-v3") == config_to_spec(DEEPSEEK_V3, name="deepseek-v3")
    assert resolve_model("qwen3-30b-a3b") == config_to_spec(QWEN3_30B_A3B, name="qwen3-30b-a3b")
    assert resolve_model("qwen3-8b").hidden == 4096  # reference-decoder presets still resolve


@pytest.mark.parametrize("cfg, message", [
    ({**LLAMA31_8B, "model_type": "gpt_oss"}, "field 'model_type': 'gpt_oss' is not supported; supported: llama"),
    ({k: v for k, v in QWEN3_30B_A3B.items() if k != "num_experts"}, "field 'num_experts' is missing"),
    ({**DEEPSEEK_V3, "kv_lora_rank": "512"}, "field 'kv_lora_rank' must be a positive integer, got '512'"),
    ({**GEMMA2_9B, "layer_types": ["full_attention"] * 3}, "field 'layer_types' lists 3 layers"),
    ({**MIXTRAL, "num_experts_per_tok": 9}, "experts_per_token (9) <= n_routed_experts (8)"),
])
def test_bad_configs_name_the_file_and_field(tmp_path: Path, cfg: dict, message: str) -> None:
    path = _write(tmp_path, cfg)
    with pytest.raises(ValueError) as exc:
        config_to_spec(path)
    assert message in str(exc.value) and "\n" not in str(exc.value)
    if "model_type" in message:
        assert all(k in str(exc.value) for k in SUPPORTED)


def test_unreadable_configs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"model_type": "llama",\n "hidden_size": }')
    with pytest.raises(ValueError, match=r"bad.json: line 2: not valid JSON"):
        config_to_spec(bad)
    with pytest.raises(ValueError, match="cannot (open|read) a Hugging Face config"):
        config_to_spec(tmp_path / "none.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must be a JSON object"):
        config_to_spec(tmp_path / "list.json")
    with pytest.raises(ValueError, match="unknown model preset 'gpt-9'; known: deepseek-v3"):
        resolve_model("gpt-9")
    with pytest.raises(ValueError, match="no such file"):
        resolve_model("models/none/config.json")
