"""Batched lossless verification of drafted blocks (speculative rejection sampling).

Vocabulary (as in the field, e.g. vLLM's RejectionSampler, arXiv 2211.17192):
    * accepted tokens: the leading draft tokens that survive verification. Draft token x_k
      (k = 1..l_i) is accepted with probability min(1, p_k(x_k) / q_k(x_k)), left to right,
      stopping at the first rejection.
    * recovered token: at the first rejection (position k), one token drawn from the residual
      norm(max(0, p_k - q_k)) is emitted instead of x_k, and the round ends.
    * bonus token: if all l_i verified drafts are accepted, one token drawn from p_{l_i + 1}.
    * output tokens = accepted tokens + exactly one recovered or bonus token, so every round
      emits between 1 and l_i + 1 tokens, distributed exactly as sampling from the target.

Here p_k = target_probs[i, k - 1] is the target's distribution at the k-th drafted position (index
0 is the position right after the anchor), q_k = draft_probs[i, k - 1]. Rows need not sum to
exactly 1 (bf16 / fp16 softmax outputs do not): every row is read as its normalisation, each
probability divided by its row's float64 sum, so a row scaled by any factor verifies exactly as
the normalised row does. A drafter without
probabilities (`draft_probs=None`) proposes a certain token d: it is accepted with probability
p(d), and a rejection falls back to p with d removed and renormalised (the residual of a point
mass). With `greedy=True` (temperature 0) a draft is accepted while it equals argmax p_k and the
extra token is argmax p at the first mismatch (or after the block): exact match, no randomness.

Randomness: each request draws exactly 2 * (g + 1) float64 uniforms per call (g + 1 for
acceptance, g + 1 for sampling) from its own `torch.Generator` when given, so a request's outcome
never depends on which other requests share the batch. float64 uniforms in [0, 1) with a strict
`u < ratio` test: a zero ratio never accepts, a ratio >= 1 always does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sparksched.sampling import sample_rows

__all__ = ["VerifyResult", "verify"]


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of one verification round for n requests.

    Attributes:
        accepted: [n] int64, number of accepted draft tokens a_i (0 <= a_i <= l_i).
        tokens: [n, g + 1] int64 output tokens: the a_i accepted drafts, then one recovered or
            bonus token at column a_i, then -1 padding.
        num_emitted: [n] int64, a_i + 1 (tokens emitted this round, the recovered/bonus included).
        bonus: [n] bool, True where every verified draft was accepted (the extra token is a bonus
            token from p_{l_i + 1}), False where it is a recovered token.

    Example:
        >>> p = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])  # the target never emits token 0 first
        >>> r = verify(p, None, torch.tensor([[0]]), torch.tensor([1]))
        >>> r.accepted.tolist(), r.tokens.tolist(), r.bonus.tolist()
        ([0], [[1, -1]], [False])
    """

    accepted: torch.Tensor
    tokens: torch.Tensor
    num_emitted: torch.Tensor
    bonus: torch.Tensor


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    """A tensor as is, a numpy array as a CPU tensor; anything else is refused."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise ValueError(f"{name} must be a tensor or an array, got {type(x).__name__}")


def _integer(t: torch.Tensor) -> bool:
    return not (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool)


def _check(target_probs: torch.Tensor, draft_probs: torch.Tensor | None, draft_tokens: torch.Tensor,
           lengths: torch.Tensor, generators: Sequence[torch.Generator | None] | None,
           validate: bool) -> None:
    if target_probs.dim() != 3:
        raise ValueError(f"target_probs must be [n, g + 1, V], got shape {tuple(target_probs.shape)}")
    n, g1, v = target_probs.shape
    g = g1 - 1
    if g < 0 or v < 1:
        raise ValueError(f"target_probs must be [n, g + 1, V] with g >= 0, V >= 1, got {tuple(target_probs.shape)}")
    if tuple(draft_tokens.shape) != (n, g):
        raise ValueError(f"draft_tokens must have shape ({n}, {g}) to match target_probs "
                         f"{tuple(target_probs.shape)}, got {tuple(draft_tokens.shape)}")
    if draft_probs is not None and tuple(draft_probs.shape) != (n, g, v):
        raise ValueError(f"draft_probs must have shape ({n}, {g}, {v}), got {tuple(draft_probs.shape)}")
    if tuple(lengths.shape) != (n,):
        raise ValueError(f"lengths must have shape ({n},), got {tuple(lengths.shape)}")
    for name, t in (("draft_tokens", draft_tokens), ("lengths", lengths)):
        if not _integer(t):
            raise ValueError(f"{name} must be an integer tensor, got {t.dtype}")
    if generators is not None and len(generators) != n:
        raise ValueError(f"generators must hold one entry per request ({n}), got {len(generators)}")
    if not validate:
        return
    ls = lengths.detach().cpu()
    bad = (ls < 0) | (ls > g)
    if bool(bad.any()):
        i = int(bad.to(torch.int64).argmax())
        raise ValueError(f"lengths[{i}] = {int(ls[i])}: verify lengths must be in [0, g={g}]")
    toks = draft_tokens.detach().cpu()
    live = torch.arange(g)[None, :] < ls[:, None]
    bad = live & ((toks < 0) | (toks >= v))
    if bool(bad.any()):
        i, k = (int(x) for x in bad.nonzero()[0])
        raise ValueError(f"draft_tokens[{i}, {k}] = {int(toks[i, k])}: must be a token id in [0, V={v})")
    for name, probs in (("target_probs", target_probs), ("draft_probs", draft_probs)):
        if probs is None:
            continue
        tc = probs.detach().cpu()
        bad = ~torch.isfinite(tc) | (tc < 0)
        if bool(bad.any()):
            idx = tuple(int(x) for x in bad.nonzero()[0])
            raise ValueError(f"{name}{list(idx)} = {float(tc[idx])}: probabilities must be finite and >= 0")
    zero = target_probs.detach().cpu().sum(-1) <= 0
    if bool(zero.any()):
        i, k = (int(x) for x in zero.nonzero()[0])
        raise ValueError(f"target_probs[{i}, {k}] sums to 0: each row must be a distribution")
    if draft_probs is not None:  # a verified draft was drawn from its row: the row cannot be empty
        zero = (draft_probs.detach().cpu().sum(-1) <= 0) & live
        if bool(zero.any()):
            i, k = (int(x) for x in zero.nonzero()[0])
            raise ValueError(f"draft_probs[{i}, {k}] sums to 0 at a verified position: each row must be "
                             "the distribution the draft token was drawn from")


def _uniforms(n: int, count: int, generators: Sequence[torch.Generator | None] | None,
              device: torch.device) -> torch.Tensor:
    """[n, count] float64 uniforms in [0, 1); row i from generators[i] when given."""
    if generators is None:
        return torch.rand((n, count), dtype=torch.float64, device=device)
    rows = []
    for gen in generators:  # the only per-request loop: each request's draws come from its own stream
        if gen is None:
            rows.append(torch.rand(count, dtype=torch.float64, device=device))
        else:
            rows.append(torch.rand(count, dtype=torch.float64, device=gen.device, generator=gen).to(device))
    if not rows:
        return torch.empty((0, count), dtype=torch.float64, device=device)
    return torch.stack(rows)


def verify(target_probs: torch.Tensor, draft_probs: torch.Tensor | None, draft_tokens: torch.Tensor,
           lengths: torch.Tensor, generators: Sequence[torch.Generator | None] | None = None,
           greedy: bool = False, validate: bool = True) -> VerifyResult:
    """Verify the first lengths[i] drafted tokens of every request by lossless rejection sampling.

    Args:
        target_probs: [n, g + 1, V] target probabilities p at the g drafted positions and the one
            after the block (any float dtype; rows need not be normalised: each is read as
            itself divided by its float64 sum). Tensors, or numpy arrays (read as CPU tensors),
            for every array argument.
        draft_probs: [n, g, V] draft probabilities q that the drafted tokens were sampled from
            (rows normalised the same way), or None for a drafter that proposes certain tokens
            (q = point mass on the draft).
        draft_tokens: [n, g] int64 drafted token ids (entries beyond lengths[i] are ignored).
        lengths: [n] integer verify lengths l_i in [0, g] (from the scheduler).
        generators: None (default RNG of the device) or one `torch.Generator | None` per request;
            each request draws 2 * (g + 1) float64 uniforms per call from its own generator.
        greedy: temperature-0 verification: accept while draft == argmax p, emit argmax p.
        validate: check lengths, token ids and probabilities on the host (synchronises); pass
            False in a hot loop once inputs are known good. Shapes are always checked.

    Returns:
        VerifyResult with accepted [n], tokens [n, g + 1] (-1 padded), num_emitted [n], bonus [n],
        all on target_probs' device.

    Example:
        >>> import torch
        >>> p = torch.tensor([[[0.7, 0.3], [0.5, 0.5]]])      # [1, g + 1 = 2, V = 2]
        >>> q = torch.tensor([[[0.5, 0.5]]])                  # [1, g = 1, V = 2]
        >>> r = verify(p, q, torch.tensor([[0]]), torch.tensor([1]), greedy=True)
        >>> r.tokens.tolist(), r.accepted.tolist()
        ([[0, 0]], [1])
    """
    target_probs = _as_tensor(target_probs, "target_probs")
    draft_probs = None if draft_probs is None else _as_tensor(draft_probs, "draft_probs")
    draft_tokens = _as_tensor(draft_tokens, "draft_tokens")
    lengths = _as_tensor(lengths, "lengths")
    _check(target_probs, draft_probs, draft_tokens, lengths, generators, validate)
    n, g1, v = target_probs.shape
    g = g1 - 1
    dev = target_probs.device
    lengths = lengths.to(device=dev, dtype=torch.int64)
    drafts = draft_tokens.to(device=dev, dtype=torch.int64)
    safe = drafts.clamp(0, v - 1)  # ignored entries beyond l_i may hold anything
    rows = torch.arange(n, device=dev)
    in_block = torch.arange(g, device=dev)[None, :] < lengths[:, None]  # [n, g]

    if greedy:
        best = target_probs.argmax(dim=-1)  # [n, g + 1], first maximum on ties
        ok = (drafts == best[:, :g]) & in_block
        accepted = torch.cumprod(ok.to(torch.int64), dim=1).sum(dim=1)
        extra = best[rows, accepted]
    else:
        u = _uniforms(n, 2 * (g + 1), generators, dev)
        u_accept, u_sample = u[:, :g], u[:, g + 1:]
        tiny = torch.finfo(torch.float64).tiny
        z_p = target_probs.sum(dim=-1, dtype=torch.float64).clamp_min(tiny)  # [n, g + 1] row sums
        p_x = target_probs[:, :g].gather(2, safe[..., None]).squeeze(-1).to(torch.float64) / z_p[:, :g]  # [n, g]
        if draft_probs is None:
            ratio = p_x
        else:
            z_q = draft_probs.sum(dim=-1, dtype=torch.float64).clamp_min(tiny)  # [n, g]
            q_x = draft_probs.gather(2, safe[..., None]).squeeze(-1).to(torch.float64) / z_q
            inf = torch.full_like(p_x, float("inf"))
            ratio = torch.where(q_x > 0, p_x / q_x.clamp_min(tiny),
                                torch.where(p_x > 0, inf, torch.zeros_like(p_x)))
        ok = (u_accept < ratio) & in_block
        accepted = torch.cumprod(ok.to(torch.int64), dim=1).sum(dim=1)  # [n]
        rejected = accepted < lengths
        p_row = target_probs[rows, accepted].to(torch.float64) / z_p[rows, accepted][:, None]  # [n, V]
        if g > 0:
            k = accepted.clamp(max=g - 1)
            if draft_probs is None:
                residual = p_row.scatter(1, safe[rows, k][:, None], 0.0)  # p without the certain draft
            else:
                q_row = draft_probs[rows, k].to(torch.float64) / z_q[rows, k][:, None]
                residual = (p_row - q_row).clamp_min(0.0)
            weights = torch.where(rejected[:, None], residual, p_row)
            # a rejection with an all-zero residual can only come from rounding (p and q equal to
            # within an ulp): use p
            weights = torch.where((weights.sum(dim=1) > 0)[:, None], weights, p_row)
        else:
            weights = p_row
        extra = sample_rows(weights, u_sample.gather(1, accepted[:, None]).squeeze(1))

    cols = torch.arange(g + 1, device=dev)[None, :]
    padded = torch.cat((drafts, torch.zeros((n, 1), dtype=torch.int64, device=dev)), dim=1)
    tokens = torch.where(cols < accepted[:, None], padded,
                         torch.where(cols == accepted[:, None], extra[:, None],
                                     torch.full_like(padded, -1)))
    return VerifyResult(accepted=accepted, tokens=tokens, num_emitted=accepted + 1,
                        bonus=accepted == lengths)
