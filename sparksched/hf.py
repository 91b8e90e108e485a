"""Users' own models: a target from a local Hugging Face checkpoint directory, and a drafter for it.

No network access: everything is read from `directory` (config.json, *.safetensors or
pytorch_model*.bin, tokenizer.json). Llama, Qwen2 and Qwen3 checkpoints (`model_type` llama /
mistral / qwen2 / qwen3) are mapped onto `sparksched.models.decoder.Decoder` (same RMSNorm,
rotate-half RoPE, GQA, SwiGLU; Qwen2's q/k/v biases, Qwen3's per-head q/k norms), so the real loop,
the profiler and the drafter use one code path. RoPE scaling variants (e.g. Llama 3.1 "llama3"),
sliding windows and MoE layers are not mapped: a one-line ValueError says so.

    target = load_hf_target("/models/Qwen3-0.6B", device="cuda", dtype=torch.bfloat16)
    drafter = hf_drafter("/models/Qwen3-0.6B", target, "qwen3-drafter.pt")   # trains when absent

Reading safetensors needs the `safetensors` package (the `hf` extra); transformers itself is not
needed to load (the tests use it to write a random checkpoint and to check logits).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from sparksched.models.decoder import Decoder, build_decoder
from sparksched.models.presets import DecoderConfig

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")


def _rope_theta(cfg: dict[str, Any], where: str) -> float:
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or None
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type")) or params.get("rope_type", "default")
    if kind not in (None, "default"):
        raise ValueError(f"{where}: rope scaling {kind!r} is not supported (only plain RoPE)")
    return float(cfg.get("rope_theta") or params.get("rope_theta") or 10000.0)


def config_from_hf(source: str | Path | dict[str, Any]) -> DecoderConfig:
    """A DecoderConfig from a HF config.json (path to the file or its directory, or the dict)."""
    where = "config"
    if isinstance(source, dict):
        cfg: dict[str, Any] = source
    else:
        p = Path(source)
        p = p / "config.json" if p.is_dir() else p
        where = str(p)
        try:
            cfg = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{where}: cannot read a HF config ({e})") from None
    kind = cfg.get("model_type")
    if kind not in SUPPORTED:
        raise ValueError(f"{where}: field 'model_type': not supported (got {kind!r}; supported: {', '.join(SUPPORTED)})")
    if cfg.get("use_sliding_window") or (kind == "mistral" and cfg.get("sliding_window")):
        raise ValueError(f"{where}: sliding-window attention is not supported")
    try:
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        return DecoderConfig(
            name=str(cfg.get("_name_or_path") or kind), vocab_size=int(cfg["vocab_size"]), hidden=hidden,
            layers=int(cfg["num_hidden_layers"]), heads=heads, kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads), intermediate=int(cfg["intermediate_size"]),
            rope_theta=_rope_theta(cfg, where), qk_norm=kind == "qwen3",
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)), norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            max_positions=int(cfg.get("max_position_embeddings", 4096)),
            qkv_bias=bool(cfg.get("attention_bias", kind == "qwen2")))
    except KeyError as e:
        raise ValueError(f"{where}: field {e.args[0]!r}: missing") from None


def _hf_state(directory: Path) -> dict[str, torch.Tensor]:
    files = sorted(directory.glob("*.safetensors"))
    state: dict[str, torch.Tensor] = {}
    if files:
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ValueError(f"{directory}: reading .safetensors needs the 'safetensors' package "
                             "(pip install 'sparksched[hf]')") from None
        for f in files:
            state.update(load_file(str(f)))
        return state
    bins = sorted(directory.glob("pytorch_model*.bin"))
    if not bins:
        raise ValueError(f"{directory}: no *.safetensors or pytorch_model*.bin weights")
    for f in bins:
        state.update(torch.load(f, map_location="cpu", weights_only=True))
    return state


_NAMES = {"self_attn.q_proj": "attn.q", "self_attn.k_proj": "attn.k", "self_attn.v_proj": "attn.v",
          "self_attn.o_proj": "attn.o", "self_attn.q_norm": "attn.q_norm", "self_attn.k_norm": "attn.k_norm",
          "input_layernorm": "attn_norm", "post_attention_layernorm": "mlp_norm", "mlp.gate_proj": "gate",
          "mlp.up_proj": "up", "mlp.down_proj": "down"}


def map_hf_name(name: str) -> str | None:
    """Our parameter name for a HF Llama/Qwen parameter name (None for buffers we recompute)."""
    if name.endswith("rotary_emb.inv_freq"):
        return None
    name = name.removeprefix("model.")
    if name.startswith("embed_tokens."):
        return "embed." + name.split(".", 1)[1]
    if name.startswith("norm."):
        return name
    if name.startswith("lm_head."):
        return name
    if name.startswith("layers."):
        _, i, rest = name.split(".", 2)
        for hf, ours in _NAMES.items():
            if rest.startswith(hf + "."):
                return f"blocks.{i}.{ours}.{rest[len(hf) + 1:]}"
    return "?" + name


def load_hf_target(directory: str | Path, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32) -> Decoder:
    """The checkpoint in `directory` as a Decoder (eval mode) on `device` in `dtype`."""
    d = Path(directory)
    config = config_from_hf(d)
    model = build_decoder(config, device=device, dtype=dtype)
    ours: dict[str, torch.Tensor] = {}
    for name, t in _hf_state(d).items():
        m = map_hf_name(name)
        if m is None:
            continue
        if m.startswith("?"):
            raise ValueError(f"{d}: weight {name!r} has no place in the {config.name} decoder (unsupported variant)")
        ours[m] = t.to(dtype)
    if config.tie_embeddings:
        ours.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(ours, strict=False)
    missing = [k for k in missing if not (config.tie_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"{d}: weights do not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if config.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    return model.eval()


def load_hf_tokenizer(directory: str | Path):
    """The checkpoint's fast tokenizer (tokenizer.json through the `tokenizers` package)."""
    from sparksched.training.tokenizer import load_tokenizer

    p = Path(directory) / "tokenizer.json"
    if not p.exists():
        raise ValueError(f"{p}: missing (a fast tokenizer is needed to tokenize the training corpus)")
    return load_tokenizer(str(p))


def hf_drafter(directory: str | Path, target: Decoder, drafter_path: str | Path, head: str = "markov", block: int = 7,
               steps: int = 400, layers: int = 1, rank: int | None = None, max_chars: int = 1_000_000, data=None,
               seed: int = 0, progress=None):
    """Load the drafter at `drafter_path`, or train one for `target` and save it there.

    Training uses the stdlib code / prose / math corpora tokenized with the checkpoint's own
    tokenizer (or `data`, a TokenData, when given), the paper's losses, then fits STS on held-out
    rounds. rank defaults to min(256, V // 16).
    """
    from sparksched.models.drafter import DrafterConfig
    from sparksched.training.checkpoint import load_drafter, save_drafter
    from sparksched.training.drafter import train_drafter
    from sparksched.training.rounds import calibrate_drafter

    path = Path(drafter_path)
    if path.exists():
        return load_drafter(path, target)
    if data is None:
        from sparksched.training.corpus import build_corpus
        from sparksched.training.data import tokenize_corpus

        tok = load_hf_tokenizer(directory)
        data = tokenize_corpus(build_corpus(max_chars=max_chars, seed=seed), tok, eot=0)
    tl = target.config.layers
    config = DrafterConfig(block=block, layers=layers, head=head, rank=rank or max(8, min(256, target.config.vocab_size // 16)),
                           heads=max(1, target.config.heads // 2), kv_heads=1,
                           head_dim=target.config.head_dim, intermediate=target.config.intermediate,
                           target_layers=tuple(sorted({0, tl // 2, tl - 1})))
    drafter, log = train_drafter(target, config, data, steps=steps, seed=seed, progress=progress)
    temps, _ = calibrate_drafter(target, drafter, data, per_domain=8, new_tokens=24, seed=seed)
    save_drafter(drafter, path, meta={"source": str(directory), "steps": steps, "heldout_tau": log.heldout,
                                      "sts_temps": [float(t) for t in temps]})
    return drafter
