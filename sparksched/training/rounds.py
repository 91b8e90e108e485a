"""Held-out rounds of the real loop: prompts from held-out text, rounds recorded, STS fitted on them.

A "round" is one draft + verify of one request (sparksched.rounds row format). Rounds used for
calibration and for the ablation come from the real loop with `verify-all` (every drafted token is
verified), so the label "first k drafts accepted" exists at every position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sparksched.calibration import calibration_report, fit_sts
from sparksched.models.decoder import Decoder
from sparksched.models.drafter import DSparkDrafter
from sparksched.speculative import generate, rounds_rows
from sparksched.training.data import TokenData


def heldout_prompts(data: TokenData, per_domain: int, length: int = 32, offset: int = 0) -> tuple[list[list[int]], list[str]]:
    """`per_domain` prompts of `length` tokens per domain, evenly spread over the held-out streams.

    offset shifts the windows (0 for calibration, another value for evaluation) so two sets differ.
    """
    prompts, domains = [], []
    for dom, s in data.heldout.items():
        span = max(1, (s.size - length - 1) // max(1, per_domain))
        for i in range(per_domain):
            start = min(s.size - length - 1, i * span + (offset * 97) % max(1, span))
            prompts.append(s[max(0, start):max(0, start) + length].tolist())
            domains.append(dom)
    return prompts, domains


@dataclass
class RoundSet:
    """Recorded rounds as arrays: conf [m, g], accepted [m], verified [m], domain [m]."""

    conf: np.ndarray
    accepted: np.ndarray
    verified: np.ndarray
    domain: np.ndarray
    rows: list[dict]

    def per_domain_accepted(self) -> dict[str, float]:
        return {d: float(self.accepted[self.domain == d].mean()) for d in np.unique(self.domain)}

    def conditional_acceptance(self, domain: str | None = None) -> np.ndarray:
        """[g]: P(x_k accepted | x_1..x_{k-1} accepted), from verify-all rounds."""
        m = np.ones(self.accepted.size, bool) if domain is None else self.domain == domain
        a = self.accepted[m]
        g = self.conf.shape[1]
        return np.array([(a >= k + 1).sum() / max(1, (a >= k).sum()) for k in range(g)])


@torch.no_grad()
def collect_rounds(target: Decoder, drafter: DSparkDrafter, prompts: list[list[int]], domains: list[str],
                   new_tokens: int = 48, batch: int = 16, seed: int = 0, calibrated: bool = False,
                   temperature: float = 1.0) -> RoundSet:
    """Run the real loop with verify-all over `prompts` (in batches) and record every round."""
    rows: list[dict] = []
    for b0 in range(0, len(prompts), batch):
        ps = prompts[b0:b0 + batch]
        res = generate(target, drafter, ps, new_tokens, "verify-all", temperature=temperature,
                       seed=seed + b0, calibrated=calibrated)
        ids = [f"h-{b0 + i:05d}" for i in range(len(ps))]
        rows.extend(rounds_rows(res, ids, domains[b0:b0 + batch]))
    return RoundSet(np.array([r["conf"] for r in rows], dtype=np.float64),
                    np.array([r["accepted"] for r in rows], dtype=np.int64),
                    np.array([r["verified"] for r in rows], dtype=np.int64),
                    np.array([r["domain"] for r in rows], dtype=object), rows)


def calibrate_drafter(target: Decoder, drafter: DSparkDrafter, data: TokenData, per_domain: int = 16,
                      new_tokens: int = 48, seed: int = 0) -> tuple[np.ndarray, RoundSet]:
    """Fit STS temperatures on held-out rounds (raw confidences); stores them in drafter.sts_temps."""
    prompts, domains = heldout_prompts(data, per_domain, offset=0)
    rs = collect_rounds(target, drafter, prompts, domains, new_tokens, seed=seed, calibrated=False)
    temps = fit_sts(rs.conf, rs.accepted, rs.verified)
    drafter.sts_temps.copy_(torch.as_tensor(temps, dtype=drafter.sts_temps.dtype))
    return temps, rs


def evaluate_drafter(target: Decoder, drafter: DSparkDrafter, data: TokenData, per_domain: int = 16,
                     new_tokens: int = 48, seed: int = 1) -> dict:
    """Accepted length per round per domain, conditional acceptance per position, ECE / AUC (raw
    confidences, and after the drafter's STS temperatures), on held-out prompts disjoint from the
    calibration set."""
    prompts, domains = heldout_prompts(data, per_domain, offset=1)
    rs = collect_rounds(target, drafter, prompts, domains, new_tokens, seed=seed + 10_000, calibrated=False)
    rep = calibration_report(rs.conf, rs.accepted, rs.verified, temps=drafter.sts_temps.double().cpu().numpy())
    return {"accepted": rs.per_domain_accepted(), "accepted_all": float(rs.accepted.mean()),
            "conditional": {d: rs.conditional_acceptance(d).tolist() for d in sorted(set(domains))},
            "conditional_all": rs.conditional_acceptance().tolist(),
            "ece_before": rep.ece_before.tolist(), "ece_after": rep.ece_after.tolist(),
            "auc_conditional": rep.auc_conditional.tolist(), "auc_survival": rep.auc_survival_before.tolist(),
            "rounds": int(rs.accepted.size)}
