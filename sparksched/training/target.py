"""Train the small target decoder (next-token cross-entropy on the code / prose / math streams)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from sparksched.models.decoder import Decoder, build_decoder
from sparksched.models.presets import DecoderConfig
from sparksched.training.data import TokenData, fixed_windows, sample_windows


@dataclass
class TrainLog:
    """Loss history and held-out evaluation of a training run."""

    steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)  # training loss per step
    heldout: dict[str, float] = field(default_factory=dict)  # metric per domain (perplexity / acceptance)
    extra: dict = field(default_factory=dict)

    def final_loss(self, last: int = 20) -> float:
        tail = self.losses[-last:]
        return float(np.mean(tail)) if tail else float("nan")


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warmup then cosine decay to lr / 10."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


@torch.no_grad()
def heldout_perplexity(model: Decoder, data: TokenData, length: int = 128, windows: int = 64,
                       batch: int = 16) -> dict[str, float]:
    """Perplexity per domain on up to `windows` fixed held-out windows of `length` tokens."""
    model.eval()
    out = {}
    for dom, stream in data.heldout.items():
        x = fixed_windows(stream, length + 1, windows)
        tot, cnt = 0.0, 0
        for i in range(0, x.shape[0], batch):
            xb = x[i:i + batch].to(model.embed.weight.device)
            logits = model(xb[:, :-1]).logits
            tot += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), xb[:, 1:].reshape(-1), reduction="sum").item()
            cnt += xb[:, 1:].numel()
        out[dom] = math.exp(tot / max(1, cnt))
    return out


def train_target(config: DecoderConfig, data: TokenData, steps: int = 600, batch: int = 32, length: int = 128,
                 lr: float = 3e-3, weight_decay: float = 0.05, seed: int = 0, device: str = "cpu",
                 progress: Callable[[int, float], None] | None = None) -> tuple[Decoder, TrainLog]:
    """Train a decoder of shape `config` from a seeded init; returns (model in eval mode, log).

    Windows of `length` + 1 tokens are sampled with equal shares per domain; AdamW with warmup and
    cosine decay; `progress(step, loss)` is called after every step.
    """
    torch.manual_seed(seed)
    model = build_decoder(config, device=device, seed=seed).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    rng = np.random.default_rng(seed)
    log = TrainLog()
    t0 = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup=max(1, steps // 20))
        x = sample_windows(data.train, batch, length + 1, rng).to(device)
        logits = model(x[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        log.losses.append(loss.item())
        if progress:
            progress(step, log.losses[-1])
    log.steps, log.seconds = steps, time.perf_counter() - t0
    model.eval()
    log.heldout = heldout_perplexity(model, data, length)
    return model, log
