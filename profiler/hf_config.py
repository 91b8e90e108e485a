"""A Hugging Face `config.json` read into a `ModelSpec`: the real fields of each supported model type.

Supported `model_type`s: dense llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3 / gemma3_text;
mixtures of experts mixtral, qwen2_moe, qwen3_moe; DeepSeek deepseek_v2 / deepseek_v3 (MLA attention,
routed and shared experts, leading dense layers, MTP modules). Sliding-window layers come from
`layer_types` when the config lists them, else from each family's own fields (Mistral's
`sliding_window` on every layer, Qwen's `use_sliding_window` above `max_window_layers`, Gemma 2's
alternating layers, Gemma 3's `sliding_window_pattern`).

Errors are one line naming the file, the field and what was expected.
"""

from __future__ import annotations

import builtins
import math
from pathlib import Path
from typing import Any

from profiler.models import ModelSpec
from sparksched.profile import read_json

DENSE = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")
MOE = ("mixtral", "qwen2_moe", "qwen3_moe")
DEEPSEEK = ("deepseek_v2", "deepseek_v3")
SUPPORTED = DENSE + MOE + DEEPSEEK + ("gemma3",)
MAX_FIELD = 1e12  # no count or size in a model config comes near it (and every one fits an int64)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


class _Fields:
    """Typed access to a config dict with errors that name the file and the field."""

    def __init__(self, cfg: dict[str, Any], where: str, kind: str) -> None:
        self.cfg, self.where, self.kind = cfg, where, kind

    def _fail(self, key: str, what: str) -> ValueError:
        return ValueError(f"{self.where}: field {key!r} {what} (model_type {self.kind!r})")

    def int(self, key: str, default: int | None = None, positive: bool = True) -> int:
        v = self.cfg.get(key)
        if v is None:
            if default is None:
                raise self._fail(key, "is missing")
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or int(v) != v \
                or (positive and v <= 0) or v < 0:
            raise self._fail(key, f"must be a {'positive ' if positive else 'non-negative '}integer, got {_short(v)}")
        if v > MAX_FIELD:
            raise self._fail(key, f"must be at most {MAX_FIELD:.0e}, got {_short(v)}")
        return int(v)

    def bool(self, key: str, default: bool) -> bool:
        v = self.cfg.get(key, default)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self._fail(key, f"must be true or false, got {v!r}")
        return v

    def int_list(self, key: str) -> list[builtins.int]:
        v = self.cfg.get(key) or []
        if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise self._fail(key, f"must be a list of layer indices, got {v!r}")
        return v


def read_config(source: str | Path | dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(parsed config, where) from a config.json path, its directory, or an already parsed dict."""
    if isinstance(source, dict):
        return source, "config"
    p = Path(source)
    p = p / "config.json" if p.is_dir() else p
    cfg = read_json(p, "a Hugging Face config")
    if not isinstance(cfg, dict):
        raise ValueError(f"{p}: a config.json must be a JSON object, got {type(cfg).__name__}")
    return cfg, str(p)


def _native_dtype(cfg: dict[str, Any]) -> str:
    """The checkpoint's weight dtype: FP8 / FP4 from quantization_config, else torch_dtype."""
    quant = cfg.get("quantization_config") or {}
    method = str(quant.get("quant_method", "")).lower() if isinstance(quant, dict) else ""
    algo = str(quant.get("quant_algo", "")).lower() if isinstance(quant, dict) else ""
    if method == "fp8" or "fp8" in algo:
        return "float8"
    if method in ("mxfp4", "nvfp4") or "fp4" in algo:
        return "float4"
    torch_dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16").replace("torch.", "")
    return torch_dtype if torch_dtype in ("bfloat16", "float16", "float32") else "bfloat16"


def _sliding(cfg: dict[str, Any], f: _Fields, kind: str, layers: int) -> tuple[int, list[int]]:
    """(window, sliding layer indices) by the family's own convention."""
    types = cfg.get("layer_types")
    window = cfg.get("sliding_window")
    if isinstance(types, list) and types:
        if len(types) != layers:
            raise f._fail("layer_types", f"lists {len(types)} layers, expected num_hidden_layers = {layers}")
        idx = [i for i, t in enumerate(types) if "sliding" in str(t)]
        return (f.int("sliding_window") if idx else 0), idx
    if kind in ("mistral", "mixtral"):
        return (f.int("sliding_window"), list(range(layers))) if window else (0, [])
    if kind.startswith("qwen"):
        if not f.bool("use_sliding_window", False) or not window:
            return 0, []
        first = f.int("max_window_layers", layers, positive=False)
        return f.int("sliding_window"), list(range(first, layers))
    if kind == "gemma2":
        return f.int("sliding_window"), list(range(0, layers, 2))
    if kind == "gemma3_text":
        pattern = f.int("sliding_window_pattern", 6)
        return f.int("sliding_window"), [i for i in range(layers) if (i + 1) % pattern]
    return 0, []


def config_to_spec(source: str | Path | dict[str, Any], name: str | None = None) -> ModelSpec:
    """A ModelSpec from a Hugging Face config.json (file, directory or dict); one-line ValueError otherwise."""
    cfg, where = read_config(source)
    try:
        return _spec(cfg, where, name)
    except ValueError as exc:  # ModelSpec's own checks (e.g. heads a multiple of kv_heads): name the file
        msg = " ".join(str(exc).split())
        raise ValueError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def _spec(cfg: dict[str, Any], where: str, name: str | None) -> ModelSpec:
    kind = cfg.get("model_type")
    if kind == "gemma3" and isinstance(cfg.get("text_config"), dict):  # multimodal wrapper: the text tower
        cfg = {**cfg["text_config"], "quantization_config": cfg.get("quantization_config"),
               "torch_dtype": cfg.get("torch_dtype")}
        kind = "gemma3_text"
    if kind not in SUPPORTED:
        raise ValueError(f"{where}: field 'model_type': {kind!r} is not supported; supported: "
                         f"{', '.join(SUPPORTED)}")
    f = _Fields(cfg, where, str(kind))
    heads = f.int("num_attention_heads")
    hidden = f.int("hidden_size")
    layers = f.int("num_hidden_layers")
    window, sliding = _sliding(cfg, f, kind, layers)
    common: dict[str, Any] = dict(
        name=name or str(cfg.get("_name_or_path") or kind), model_type=kind, vocab_size=f.int("vocab_size"),
        hidden=hidden, layers=layers, heads=heads, kv_heads=f.int("num_key_value_heads", heads),
        head_dim=f.int("head_dim", hidden // heads),
        tie_embeddings=f.bool("tie_word_embeddings", kind.startswith("gemma")),
        qk_norm=kind in ("qwen3", "qwen3_moe") or kind == "gemma3_text",
        max_positions=f.int("max_position_embeddings", 4096), native_dtype=_native_dtype(cfg),
        sliding_window=window, sliding_layers=tuple(sliding))
    if kind in DENSE:
        return ModelSpec(intermediate=f.int("intermediate_size"), **common)
    if kind == "mixtral":
        return ModelSpec(moe_layers=tuple(range(layers)), n_routed_experts=f.int("num_local_experts"),
                         experts_per_token=f.int("num_experts_per_tok"),
                         moe_intermediate=f.int("intermediate_size"), **common)
    if kind in ("qwen2_moe", "qwen3_moe"):
        step = f.int("decoder_sparse_step", 1)
        dense_only = set(f.int_list("mlp_only_layers"))
        moe = [i for i in range(layers) if i not in dense_only and (i + 1) % step == 0]
        shared = f.int("shared_expert_intermediate_size", 0, positive=False) if kind == "qwen2_moe" else 0
        return ModelSpec(intermediate=f.int("intermediate_size") if len(moe) < layers else 0,
                         moe_layers=tuple(moe), n_routed_experts=f.int("num_experts"),
                         experts_per_token=f.int("num_experts_per_tok"),
                         moe_intermediate=f.int("moe_intermediate_size"),
                         n_shared_experts=1 if shared else 0, shared_intermediate=shared, **common)
    # deepseek_v2 / deepseek_v3: MLA attention, first_k_dense_replace dense layers, then MoE every moe_layer_freq
    first_dense = f.int("first_k_dense_replace", 0, positive=False)
    freq = f.int("moe_layer_freq", 1)
    moe = [i for i in range(first_dense, layers) if i % freq == 0]
    n_shared = f.int("n_shared_experts", 0, positive=False)
    nope, rope = f.int("qk_nope_head_dim"), f.int("qk_rope_head_dim")
    common.update(head_dim=nope + rope, kv_heads=heads)
    return ModelSpec(attention="mla", q_lora_rank=f.int("q_lora_rank", 0, positive=False),
                     kv_lora_rank=f.int("kv_lora_rank"), qk_nope_head_dim=nope, qk_rope_head_dim=rope,
                     v_head_dim=f.int("v_head_dim"),
                     intermediate=f.int("intermediate_size") if len(moe) < layers else 0,
                     moe_layers=tuple(moe), n_routed_experts=f.int("n_routed_experts"),
                     experts_per_token=f.int("num_experts_per_tok"),
                     moe_intermediate=f.int("moe_intermediate_size"), n_shared_experts=n_shared,
                     shared_intermediate=f.int("moe_intermediate_size") if n_shared else 0,
                     mtp_layers=f.int("num_nextn_predict_layers", 0, positive=False), **common)
