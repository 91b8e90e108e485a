"""Checkpoint files of the bundled models: save atomically, load onto a device.

Layout of a checkpoint directory (the bundled one is `sparksched/data/checkpoints/`):
    tokenizer.json          byte-level BPE (tokenizers)
    target.pt               {"config": DecoderConfig dict, "state": fp16 state dict, "meta": {...}}
    drafter-<head>.pt       {"config": DrafterConfig dict, "state": fp16 state dict (without the
                            shared embedding / LM head), "sts": [g] temperatures, "meta": {...}}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from sparksched.io import atomic_write, write_npz
from sparksched.models.decoder import Decoder, build_decoder
from sparksched.models.presets import DecoderConfig

BUNDLED = Path(__file__).resolve().parent.parent / "data" / "checkpoints"


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save, all or nothing (`sparksched.io.atomic_write`)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _half_state(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", torch.float16).clone() for k, v in module.state_dict().items()
            if not k.startswith(skip)}


def save_target(model: Decoder, path: str | os.PathLike, meta: dict | None = None) -> None:
    """Save the target's config and fp16 weights (the tied LM head is stored once)."""
    skip = ("lm_head.",) if model.config.tie_embeddings else ()
    atomic_save({"config": model.config.to_dict(), "state": _half_state(model, skip), "meta": meta or {}}, path)


def load_target(path: str | os.PathLike, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> Decoder:
    """The target decoder saved at `path`, in eval mode on `device` in `dtype`."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable, truncated or not a torch checkpoint at all
        raise ValueError(f"{path}: cannot load target checkpoint ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    config = DecoderConfig(**blob["config"])
    model = build_decoder(config, device=device, dtype=dtype)
    missing, unexpected = model.load_state_dict({k: v.to(dtype) for k, v in blob["state"].items()}, strict=False)
    missing = [m for m in missing if not (config.tie_embeddings and m.startswith("lm_head."))]
    if missing or unexpected:
        raise ValueError(f"{path}: target checkpoint does not match its config (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    if config.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    return model.eval()


def target_meta(path: str | os.PathLike) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True).get("meta", {})


def save_drafter(drafter, path: str | os.PathLike, meta: dict | None = None) -> None:
    """Save a DSparkDrafter's config, fp16 weights (shared embedding / LM head excluded) and STS temps."""
    atomic_save({"config": drafter.config.to_dict(), "state": _half_state(drafter),
                 "sts": drafter.sts_temps.detach().cpu().double().tolist(), "meta": meta or {}}, path)


def load_drafter(path: str | os.PathLike, target: Decoder):
    """The drafter saved at `path`, bound to `target` (its embedding / LM head), on its device and dtype."""
    from sparksched.models.drafter import DrafterConfig, build_drafter

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable, truncated or not a torch checkpoint at all
        raise ValueError(f"{path}: cannot load drafter checkpoint ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    cfg = dict(blob["config"])
    cfg["target_layers"] = tuple(cfg["target_layers"])
    drafter = build_drafter(DrafterConfig(**cfg), target)
    w = target.embed.weight
    try:
        drafter.load_state_dict({k: v.to(w.dtype) for k, v in blob["state"].items()})
    except RuntimeError as e:
        raise ValueError(f"{path}: drafter checkpoint does not match target / config ({str(e).splitlines()[0]})") from None
    if "sts" in blob:  # exact temperatures (the fp16 state dict rounds them)
        drafter.sts_temps.copy_(torch.as_tensor(blob["sts"], dtype=drafter.sts_temps.dtype))
    return drafter.eval()


def load_bundle(directory: str | os.PathLike | None = None, head: str = "markov", device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32, tokenizer: bool = True):
    """(tokenizer, target, drafter) from a checkpoint directory (default: the bundled one).

    tokenizer=False skips the tokenizer (returns None for it), so no `tokenizers` package is needed.
    """
    d = Path(directory) if directory else BUNDLED
    for name in ("tokenizer.json", "target.pt", f"drafter-{head}.pt"):
        if not (d / name).exists():
            raise ValueError(f"{d / name}: missing (regenerate with `sparksched train all --out {d}`)")
    target = load_target(d / "target.pt", device=device, dtype=dtype)
    tok = None
    if tokenizer:
        from sparksched.training.tokenizer import load_tokenizer

        tok = load_tokenizer(str(d / "tokenizer.json"))
    return tok, target, load_drafter(d / f"drafter-{head}.pt", target)


def save_heldout(streams: dict, path: str | os.PathLike) -> None:
    """Held-out token streams per domain (uint16 when the vocabulary fits) as one .npz, atomically."""
    import numpy as np

    arrays = {d: (s.astype(np.uint16) if s.size and s.max() < 2**16 else s.astype(np.int64)) for d, s in streams.items()}
    write_npz(path, arrays)


def load_heldout(path: str | os.PathLike) -> dict:
    """{domain: int64 token stream} saved by `save_heldout`."""
    import numpy as np

    with np.load(path) as z:
        return {d: z[d].astype(np.int64) for d in z.files}
