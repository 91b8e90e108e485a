"""Train a DSpark drafter against a frozen target (the paper's section 3.3 losses).

    L = 0.1 * CE + 0.9 * TV + 1.0 * BCE,   each term  sum_k w_k * term_k,  w_k = exp(-(k-1)/g)

    CE_k  = -log q_k(x*_k)                      (x*_k: the corpus token at block position k)
    TV_k  = || q_k - p_k ||_1                   (p_k: the frozen target's next-token distribution)
    BCE_k = BCE(c_k, c*_k),  c*_k = 1 - 0.5 * || q_k - p_k ||_1   (soft label, no gradient)

Blocks are cut at anchor positions sampled uniformly at random from training windows; the sequential
head is teacher-forced on the corpus prefix x*_0..x*_{g-1}. The target, its embedding and its LM head
stay frozen; only the backbone, the sequential head and the confidence head learn. Losses are summed
over positions and averaged over blocks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from sparksched.models.decoder import Decoder
from sparksched.models.drafter import DrafterConfig, DSparkDrafter, build_drafter
from sparksched.training.data import TokenData, fixed_windows, sample_windows
from sparksched.training.target import TrainLog, lr_at

LOSS_WEIGHTS = {"ce": 0.1, "tv": 0.9, "conf": 1.0}


def sample_anchors(n: int, length: int, block: int, count: int, rng: np.random.Generator) -> torch.Tensor:
    """[n, count] distinct anchor positions per row in [1, length - block - 1] (sorted)."""
    hi = length - block - 1
    if hi < 1:
        raise ValueError(f"windows of {length} tokens are too short for blocks of {block}")
    count = min(count, hi)
    return torch.from_numpy(np.sort(np.stack([rng.choice(np.arange(1, hi + 1), count, replace=False)
                                              for _ in range(n)]), axis=1))


def block_losses(drafter: DSparkDrafter, target: Decoder, tokens: torch.Tensor,
                 anchors: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three loss terms (scalars, position-weighted sums averaged over blocks) and diagnostics.

    tokens [n, T]; anchors [n, A]. Also returns 'alpha' [g]: mean per-position acceptance
    1 - TV(q_k, p_k) (no gradient) and 'conf' / 'label' [n, A, g] for calibration checks.
    """
    g = drafter.config.block
    with torch.no_grad():
        out = target(tokens, hidden_layers=drafter.target_layers)
    bb = drafter.train_forward(tokens, out.hidden, anchors)
    offs = torch.arange(g, device=tokens.device)
    pos = anchors[:, :, None] + offs  # [n, A, g]: anchor position a + k - 1 predicts token a + k
    n, a = anchors.shape
    flat = pos.reshape(n, -1)
    prev = tokens.gather(1, flat).reshape(n, a, g)  # x*_0 .. x*_{g-1}
    gold = tokens.gather(1, (flat + 1)).reshape(n, a, g)  # x*_1 .. x*_g
    p_t = torch.softmax(out.logits.gather(1, flat[..., None].expand(-1, -1, out.logits.shape[-1])), -1)
    p_t = p_t.reshape(n, a, g, -1)
    logits, conf_logit = drafter.score(bb, prev, conf_logits=True)
    logq = torch.log_softmax(logits, -1)
    q = logq.exp()
    w = torch.exp(-offs.float() / g)  # w_k = exp(-(k-1)/g)
    ce = -logq.gather(-1, gold[..., None]).squeeze(-1)  # [n, A, g]
    l1 = (q - p_t).abs().sum(-1)
    label = (1 - 0.5 * l1).detach().clamp(0, 1)
    bce = F.binary_cross_entropy_with_logits(conf_logit, label, reduction="none")
    red = lambda x: (x * w).sum(-1).mean()
    return {"ce": red(ce), "tv": red(l1), "conf": red(bce), "alpha": label.mean((0, 1)),
            "conf_pred": torch.sigmoid(conf_logit).detach(), "label": label}


def total_loss(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([LOSS_WEIGHTS[k] * terms[k] for k in LOSS_WEIGHTS]).sum()


@torch.no_grad()
def heldout_acceptance(drafter: DSparkDrafter, target: Decoder, data: TokenData, length: int = 128,
                       windows: int = 32, anchors: int = 8, seed: int = 1) -> dict[str, dict[str, float]]:
    """Per domain, teacher-forced on held-out windows: mean acceptance 1 - TV per position and the
    expected accepted length sum_k prod_{j<=k} alpha_j of verifying the whole block."""
    rng = np.random.default_rng(seed)
    res = {}
    for dom, stream in data.heldout.items():
        x = fixed_windows(stream, length, windows).to(drafter.fc.weight.device)
        if x.shape[0] == 0:
            continue
        anc = sample_anchors(x.shape[0], length, drafter.config.block, anchors, rng).to(x.device)
        terms = block_losses(drafter, target, x, anc)
        alpha = terms["label"]  # [n, A, g]
        tau = alpha.cumprod(-1).sum(-1).mean().item()
        res[dom] = {"tau": tau, "alpha1": alpha[..., 0].mean().item(), "loss": total_loss(terms).item()}
    return res


def train_drafter(target: Decoder, config: DrafterConfig, data: TokenData, steps: int = 400, batch: int = 16,
                  length: int = 128, anchors: int = 8, lr: float = 2e-3, seed: int = 0,
                  progress: Callable[[int, float], None] | None = None) -> tuple[DSparkDrafter, TrainLog]:
    """Train a drafter of shape `config` for the frozen `target`; returns (drafter in eval mode, log).

    log.losses: total loss per step; log.extra['terms']: final (ce, tv, conf) averages;
    log.heldout: teacher-forced expected accepted length per domain (see heldout_acceptance).
    """
    torch.manual_seed(seed)
    target.eval().requires_grad_(False)
    drafter = build_drafter(config, target, seed=seed).train()
    params = [p for p in drafter.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    rng = np.random.default_rng(seed)
    log = TrainLog()
    terms_hist: list[tuple[float, float, float]] = []
    dev = target.embed.weight.device
    t0 = time.perf_counter()
    for step in range(steps):
        for gr in opt.param_groups:
            gr["lr"] = lr_at(step, steps, lr, warmup=max(1, steps // 20))
        x = sample_windows(data.train, batch, length, rng).to(dev)
        anc = sample_anchors(batch, length, config.block, anchors, rng).to(dev)
        terms = block_losses(drafter, target, x, anc)
        loss = total_loss(terms)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        log.losses.append(loss.item())
        terms_hist.append((terms["ce"].item(), terms["tv"].item(), terms["conf"].item()))
        if progress:
            progress(step, log.losses[-1])
    log.steps, log.seconds = steps, time.perf_counter() - t0
    drafter.eval()
    tail = np.asarray(terms_hist[-20:]) if terms_hist else np.full((1, 3), math.nan)
    log.extra["terms"] = dict(zip(("ce", "tv", "conf"), tail.mean(0).tolist()))
    log.heldout = {d: v["tau"] for d, v in heldout_acceptance(drafter, target, data, length).items()}
    return drafter, log
