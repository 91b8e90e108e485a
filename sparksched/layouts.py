"""Batch layouts that serving engines already use, converted to and from the padded [n, g] core.

sparksched's scheduler and verifier work on a padded block: row i is request i, column k-1 is its
k-th drafted token, and `lengths[i]` says how many columns are real. Engines lay the same data out
differently; this module converts exactly (same values, same order) in both directions, with static
shapes and no host synchronisation, so the converters can sit inside a CUDA graph beside the core.

Three layouts (each cited from the engine's own source):

* **vLLM V1, flattened variable length** (`vllm/v1/spec_decode/metadata.py` `SpecDecodeMetadata`,
  `vllm/v1/sample/rejection_sampler.py`): draft tokens of all requests concatenated into
  `draft_token_ids` [N]; `cu_num_draft_tokens` [B] is the *inclusive* cumulative count (request i
  owns flat rows `cu[i-1] .. cu[i]-1`, with `cu[-1] := 0`); draft and target probabilities are
  [N, V] in the same order; the bonus token is sampled outside the rejection sampler. The output
  `output_token_ids` is [B, max_spec_len + 1] int32, each row the emitted tokens then
  `PLACEHOLDER_TOKEN_ID = -1`.
* **vLLM Model Runner V2** (`vllm/v1/worker/gpu/spec_decode/rejection_sampler.py`,
  `rejection_sampler_utils.py`, `adaptive_verification.py`): target logits flattened as
  [num_logits, V] where request r owns rows `cu_num_logits[r] .. cu_num_logits[r+1]-1`
  (`cu_num_logits` [R+1], exclusive, starts at 0; one row per verified draft plus the bonus row);
  `draft_sampled` [num_logits] holds the input ids at those rows, i.e. the anchor then the drafts
  (draft j of request r sits at `cu_num_logits[r] + j + 1`); draft logits live in a persistent
  [max_num_reqs, K, V] buffer indexed through `idx_mapping` [R]. Output: `sampled` [R, K + 1]
  (-1 padded) and `num_sampled` [R].
* **SGLang EAGLE chain** (`python/sglang/srt/speculative/eagle_info.py`, `EagleVerifyInput.verify`):
  fixed `draft_token_num` per request, `candidates` [bs, draft_token_num] whose column 0 is the
  last verified token (the anchor) and columns 1.. the drafts; `target_probs`
  [bs, draft_token_num, V] (row j scores candidate j+1, the last row is the bonus position).
  Output: `predict` [bs * draft_token_num] int32, `accept_index` [bs, draft_token_num] int32 (flat
  indices into `predict` of the emitted tokens, -1 padded) and `accept_length` [bs] int32, the
  number of accepted drafts (emitted tokens = accept_length + 1).

Vocabulary (as in vLLM's RejectionSampler): *accepted* drafts, one *recovered* token at the first
rejection, or a *bonus* token when every verified draft is accepted; emitted = accepted + 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

PLACEHOLDER_TOKEN_ID = -1
"""Padding of output token rows, as vLLM's `PLACEHOLDER_TOKEN_ID`."""


# ------------------------------------------------------------------------------------------ helpers
def _check_1d_int(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 1:
        raise ValueError(f"{name} must be a 1-D integer tensor, got "
                         f"{type(x).__name__}{'' if not isinstance(x, torch.Tensor) else tuple(x.shape)}")
    if x.dtype.is_floating_point or x.dtype == torch.bool:
        raise ValueError(f"{name} must have an integer dtype, got {x.dtype}")


def _check_width(width: int, name: str) -> None:
    if not isinstance(width, int) or isinstance(width, bool) or width < 0:
        raise ValueError(f"{name} must be an int >= 0, got {width!r}")


def counts_from_cu(cu_num_tokens: torch.Tensor) -> torch.Tensor:
    """Per-request counts [B] from vLLM's inclusive cumulative counts [B] (no host sync).

    Example:
        >>> counts_from_cu(torch.tensor([2, 5, 6])).tolist()
        [2, 3, 1]
    """
    _check_1d_int(cu_num_tokens, "cu_num_tokens")
    prev = torch.cat([cu_num_tokens.new_zeros(1), cu_num_tokens[:-1]])
    return cu_num_tokens - prev


def cu_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """Inclusive cumulative counts [B] (vLLM's `cu_num_draft_tokens`) from counts [B], same dtype.

    Example:
        >>> cu_from_counts(torch.tensor([2, 3, 1], dtype=torch.int32)).tolist()
        [2, 5, 6]
    """
    _check_1d_int(counts, "counts")
    return torch.cumsum(counts, 0).to(counts.dtype)


def flat_to_padded(x: torch.Tensor, cu_num_tokens: torch.Tensor, width: int,
                   fill: float | int = 0) -> torch.Tensor:
    """Scatter flattened rows [N, ...] into a padded block [B, width, ...] (static shape, no sync).

    Request i owns flat rows `cu[i-1] .. cu[i]-1` (inclusive cumsum, vLLM V1). Slots past a
    request's count (or past `width`) get `fill`.

    Args:
        x: [N, ...] rows of all requests concatenated, any dtype, on any device.
        cu_num_tokens: [B] integer, inclusive cumulative counts; same device as `x`.
        width: the block width g (e.g. vLLM's `max_spec_len` or `num_speculative_tokens`); a
            Python int so the output shape never depends on tensor values.
        fill: value of the padding slots.

    Returns:
        [B, width, ...] with `out[i, j] = x[cu[i-1] + j]` for j < count_i.

    Example:
        >>> flat_to_padded(torch.tensor([10, 11, 20, 21, 22, 30]), torch.tensor([2, 5, 6]), 3,
        ...                fill=-1).tolist()
        [[10, 11, -1], [20, 21, 22], [30, -1, -1]]
    """
    _check_1d_int(cu_num_tokens, "cu_num_tokens")
    _check_width(width, "width")
    counts = counts_from_cu(cu_num_tokens)
    start = cu_num_tokens - counts                                       # [B]
    j = torch.arange(width, device=x.device)                              # [g]
    idx = start[:, None].to(torch.long) + j[None, :]                      # [B, g]
    valid = j[None, :] < counts[:, None]
    n_rows = x.shape[0]
    safe = idx.clamp(0, max(n_rows - 1, 0))
    if n_rows == 0:
        out = torch.full((cu_num_tokens.shape[0], width, *x.shape[1:]), fill, dtype=x.dtype,
                         device=x.device)
        return out
    gathered = x[safe.reshape(-1)].reshape(cu_num_tokens.shape[0], width, *x.shape[1:])
    mask = valid.reshape(*valid.shape, *([1] * (x.ndim - 1)))
    return torch.where(mask, gathered, torch.full_like(gathered, fill))


def padded_to_flat(x: torch.Tensor, cu_num_tokens: torch.Tensor, num_rows: int,
                   fill: float | int = 0) -> torch.Tensor:
    """Inverse of `flat_to_padded`: gather a padded block [B, g, ...] into flat rows [num_rows, ...].

    `num_rows` is the static flat capacity (at least `cu[-1]`); rows past `cu[-1]` get `fill`, so
    an engine can keep one fixed-size buffer while the real token count varies step to step.

    Example:
        >>> padded = torch.tensor([[10, 11, -1], [20, 21, 22], [30, -1, -1]])
        >>> padded_to_flat(padded, torch.tensor([2, 5, 6]), 7, fill=-1).tolist()
        [10, 11, 20, 21, 22, 30, -1]
    """
    _check_1d_int(cu_num_tokens, "cu_num_tokens")
    _check_width(num_rows, "num_rows")
    b, g = x.shape[0], x.shape[1]
    if cu_num_tokens.shape[0] != b:
        raise ValueError(f"cu_num_tokens has {cu_num_tokens.shape[0]} requests, x has {b}")
    t = torch.arange(num_rows, device=x.device)
    req = torch.searchsorted(cu_num_tokens.to(torch.long), t, right=True)    # owner of flat row t
    valid = req < b
    req_c = req.clamp(max=max(b - 1, 0))
    start = (cu_num_tokens - counts_from_cu(cu_num_tokens)).to(torch.long)
    pos = (t - start[req_c]).clamp(0, max(g - 1, 0))
    if b == 0 or g == 0:
        return torch.full((num_rows, *x.shape[2:]), fill, dtype=x.dtype, device=x.device)
    gathered = x[req_c, pos]
    mask = valid.reshape(-1, *([1] * (x.ndim - 2)))
    return torch.where(mask, gathered, torch.full_like(gathered, fill))


def pad_tokens(tokens: torch.Tensor, counts: torch.Tensor,
               pad: int = PLACEHOLDER_TOKEN_ID) -> torch.Tensor:
    """Token rows [n, w] with every slot at or past `counts[i]` set to `pad`; int32 (vLLM's dtype).

    Example:
        >>> pad_tokens(torch.tensor([[5, 6, 7], [8, 9, 4]]), torch.tensor([2, 1])).tolist()
        [[5, 6, -1], [8, -1, -1]]
    """
    _check_1d_int(counts, "counts")
    j = torch.arange(tokens.shape[1], device=tokens.device)
    keep = j[None, :] < counts[:, None]
    return torch.where(keep, tokens, torch.full_like(tokens, pad)).to(torch.int32)


def _uniform_fill(x: torch.Tensor) -> float:
    return 1.0 / x.shape[-1] if x.shape[-1] else 0.0


# ----------------------------------------------------------------------- the padded core's inputs
@dataclass(frozen=True)
class PaddedBatch:
    """One verification batch in the padded core layout (all tensors on one device).

    Attributes:
        draft_tokens: [n, g] int64, drafted tokens x_1..x_g per request (padding: 0).
        target_probs: [n, g + 1, V] float, target distribution at each position; row k scores
            draft k+1, row `lengths[i]` is the bonus position. Padding rows repeat a real row.
        draft_probs: [n, g, V] float, or None for a drafter without probabilities.
        lengths: [n] int64, verify length l_i of each request (0 <= l_i <= g).

    Example:
        >>> b = PaddedBatch(torch.zeros(1, 2, dtype=torch.long), torch.full((1, 3, 4), 0.25), None,
        ...                 torch.tensor([2]))
        >>> b.width
        2
    """

    draft_tokens: torch.Tensor
    target_probs: torch.Tensor
    draft_probs: torch.Tensor | None
    lengths: torch.Tensor

    @property
    def width(self) -> int:
        """The block width g."""
        return int(self.draft_tokens.shape[1])


# ------------------------------------------------------------------------------------ vLLM V1
def vllm_flat_to_padded(draft_token_ids: torch.Tensor, cu_num_draft_tokens: torch.Tensor,
                        target_probs: torch.Tensor, bonus_probs: torch.Tensor,
                        draft_probs: torch.Tensor | None, max_spec_len: int) -> PaddedBatch:
    """vLLM V1's flattened variable-length batch -> the padded core layout.

    Args:
        draft_token_ids: [N] int, drafts of all requests concatenated (`SpecDecodeMetadata`).
        cu_num_draft_tokens: [B] int, inclusive cumulative draft counts.
        target_probs: [N, V] float, target distribution at each draft position (the rows vLLM's
            `compute_probs` returns for `target_logits_indices`).
        bonus_probs: [B, V] float, target distribution at each request's bonus position (the rows
            vLLM samples `bonus_token_ids` from).
        draft_probs: [N, V] float or None (n-gram-style drafters).
        max_spec_len: block width g of the padded result (>= every count; a Python int).

    Returns:
        `PaddedBatch` with `lengths` = the per-request draft counts.

    Example:
        >>> V = 3
        >>> pb = vllm_flat_to_padded(torch.tensor([1, 2, 0]), torch.tensor([2, 3]),
        ...                          torch.full((3, V), 1 / V), torch.full((2, V), 1 / V), None, 2)
        >>> pb.draft_tokens.tolist(), pb.lengths.tolist(), tuple(pb.target_probs.shape)
        ([[1, 2], [0, 0]], [2, 1], (2, 3, 3))
    """
    _check_1d_int(draft_token_ids, "draft_token_ids")
    _check_1d_int(cu_num_draft_tokens, "cu_num_draft_tokens")
    _check_width(max_spec_len, "max_spec_len")
    n_tok, b = draft_token_ids.shape[0], cu_num_draft_tokens.shape[0]
    if target_probs.ndim != 2 or target_probs.shape[0] != n_tok:
        raise ValueError(f"target_probs must be [N={n_tok}, V], got {tuple(target_probs.shape)}")
    v = target_probs.shape[1]
    if bonus_probs.shape != (b, v):
        raise ValueError(f"bonus_probs must be [B={b}, V={v}], got {tuple(bonus_probs.shape)}")
    if draft_probs is not None and draft_probs.shape != (n_tok, v):
        raise ValueError(f"draft_probs must be [N={n_tok}, V={v}] or None, got {tuple(draft_probs.shape)}")
    counts = counts_from_cu(cu_num_draft_tokens).to(torch.long)
    tokens = flat_to_padded(draft_token_ids.to(torch.long), cu_num_draft_tokens, max_spec_len)
    tp = flat_to_padded(target_probs, cu_num_draft_tokens, max_spec_len + 1, fill=_uniform_fill(target_probs))
    # the bonus row sits right after each request's last draft row
    pos = torch.arange(max_spec_len + 1, device=tp.device)
    is_bonus = (pos[None, :] == counts[:, None])[..., None]
    tp = torch.where(is_bonus, bonus_probs[:, None, :].to(tp.dtype), tp)
    dp = None
    if draft_probs is not None:
        dp = flat_to_padded(draft_probs, cu_num_draft_tokens, max_spec_len, fill=_uniform_fill(draft_probs))
    return PaddedBatch(tokens, tp, dp, counts)


def vllm_flat_output(emitted: torch.Tensor, num_emitted: torch.Tensor, max_spec_len: int) -> torch.Tensor:
    """The core's emitted tokens -> vLLM V1's `output_token_ids` [B, max_spec_len + 1] int32, -1 padded.

    Args:
        emitted: [B, w] int, emitted tokens per request (w >= 1), in order.
        num_emitted: [B] int, how many of them are real (accepted + 1).
        max_spec_len: vLLM's max_spec_len; the output has max_spec_len + 1 columns.

    Example:
        >>> vllm_flat_output(torch.tensor([[4, 5, 0], [7, 0, 0]]), torch.tensor([2, 1]), 2).tolist()
        [[4, 5, -1], [7, -1, -1]]
    """
    _check_width(max_spec_len, "max_spec_len")
    w = max_spec_len + 1
    if emitted.shape[1] < w:
        emitted = torch.cat([emitted, emitted.new_zeros(emitted.shape[0], w - emitted.shape[1])], 1)
    return pad_tokens(emitted[:, :w], num_emitted)


def vllm_parse_output(output_token_ids: torch.Tensor) -> list[list[int]]:
    """Host-side list of emitted tokens per request from vLLM's padded output (syncs; for tests/logs).

    Mirrors `RejectionSampler.parse_output` (drops `PLACEHOLDER_TOKEN_ID`).

    Example:
        >>> vllm_parse_output(torch.tensor([[4, 5, -1], [7, -1, -1]]))
        [[4, 5], [7]]
    """
    rows = output_token_ids.cpu().tolist()
    return [[t for t in row if t != PLACEHOLDER_TOKEN_ID] for row in rows]


def compact_vllm_flat(x: torch.Tensor, cu_num_draft_tokens: torch.Tensor, num_verify: torch.Tensor,
                      fill: float | int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the first `num_verify[i]` flat rows of each request (a prefix), in the same buffer size.

    This is the trim an engine does after scheduling, before the target forward: the verified
    drafts of all requests move to the front of a buffer of unchanged size N (tail = `fill`), and
    the new inclusive cumulative counts describe them (vLLM MRV2 does the same in
    `adaptive_verification.build_verification_layout`). No host sync, static shapes.

    Args:
        x: [N, ...] flat rows (draft token ids, confidences, draft probs, ...).
        cu_num_draft_tokens: [B] inclusive cumsum of the drafted counts.
        num_verify: [B] int, verify lengths (each <= its drafted count; clamped to it).

    Returns:
        (x_compact [N, ...], cu_num_verify [B]) with cu_num_verify inclusive.

    Example:
        >>> x, cu = compact_vllm_flat(torch.tensor([10, 11, 20, 21, 22, 30]), torch.tensor([2, 5, 6]),
        ...                           torch.tensor([1, 2, 0]), fill=-1)
        >>> x.tolist(), cu.tolist()
        ([10, 20, 21, -1, -1, -1], [1, 3, 3])
    """
    _check_1d_int(num_verify, "num_verify")
    counts = counts_from_cu(cu_num_draft_tokens)
    keep = torch.minimum(num_verify.to(counts.dtype), counts).clamp(min=0)
    g = x.shape[0]  # width large enough for any request (a request has at most N rows)
    padded = flat_to_padded(x, cu_num_draft_tokens, g, fill=fill)
    cu_new = cu_from_counts(keep)
    return padded_to_flat(padded, cu_new, x.shape[0], fill=fill), cu_new


# ---------------------------------------------------------------------------- vLLM Model Runner V2
def mrv2_to_padded(target_probs: torch.Tensor, cu_num_logits: torch.Tensor, draft_sampled: torch.Tensor,
                   num_speculative_steps: int, draft_probs: torch.Tensor | None = None,
                   idx_mapping: torch.Tensor | None = None) -> PaddedBatch:
    """vLLM Model Runner V2's verification layout -> the padded core layout.

    Args:
        target_probs: [num_logits, V] float, target distribution per logits row; request r owns
            rows `cu_num_logits[r] .. cu_num_logits[r+1]-1` (its verified drafts, then its bonus).
        cu_num_logits: [R + 1] int, exclusive cumulative logits counts starting at 0.
        draft_sampled: [num_logits] int, input ids at the logits rows: per request the anchor,
            then its drafts (`input_ids[logits_indices]` in MRV2).
        num_speculative_steps: K, the block width (a Python int).
        draft_probs: [max_num_reqs, K, V] float (MRV2's persistent per-request-state buffer,
            already softmaxed) or None for a one-hot drafter.
        idx_mapping: [R] int, batch row -> request-state row of `draft_probs` (default: identity).

    Returns:
        `PaddedBatch` with lengths = `cu_num_logits[r+1] - cu_num_logits[r] - 1`.

    Example:
        >>> V = 2
        >>> pb = mrv2_to_padded(torch.full((5, V), 0.5), torch.tensor([0, 3, 5]),
        ...                     torch.tensor([9, 1, 0, 9, 1]), 2)
        >>> pb.draft_tokens.tolist(), pb.lengths.tolist()
        ([[1, 0], [1, 0]], [2, 1])
    """
    _check_1d_int(cu_num_logits, "cu_num_logits")
    _check_1d_int(draft_sampled, "draft_sampled")
    _check_width(num_speculative_steps, "num_speculative_steps")
    k = num_speculative_steps
    if target_probs.ndim != 2:
        raise ValueError(f"target_probs must be [num_logits, V], got {tuple(target_probs.shape)}")
    if draft_sampled.shape[0] != target_probs.shape[0]:
        raise ValueError(f"draft_sampled has {draft_sampled.shape[0]} rows, target_probs "
                         f"{target_probs.shape[0]}")
    cu_incl = cu_num_logits[1:]                                       # inclusive cumsum of 1 + l_r
    lengths = (counts_from_cu(cu_incl) - 1).to(torch.long)
    tp = flat_to_padded(target_probs, cu_incl, k + 1, fill=_uniform_fill(target_probs))
    sampled = flat_to_padded(draft_sampled.to(torch.long), cu_incl, k + 1)   # [R, K+1]: anchor, drafts
    j = torch.arange(k, device=sampled.device)
    tokens = torch.where(j[None, :] < lengths[:, None], sampled[:, 1:], torch.zeros_like(sampled[:, 1:]))
    dp = None
    if draft_probs is not None:
        if draft_probs.ndim != 3 or draft_probs.shape[1] != k:
            raise ValueError(f"draft_probs must be [max_num_reqs, K={k}, V], got {tuple(draft_probs.shape)}")
        dp = draft_probs if idx_mapping is None else draft_probs[idx_mapping.to(torch.long)]
        if dp.shape[0] != lengths.shape[0]:
            raise ValueError(f"draft_probs selects {dp.shape[0]} requests, cu_num_logits describes "
                             f"{lengths.shape[0]}; pass idx_mapping")
    return PaddedBatch(tokens, tp, dp, lengths)


def mrv2_cu_num_logits(num_verify: torch.Tensor) -> torch.Tensor:
    """MRV2's `cu_num_logits` [R + 1] (exclusive, from 0) for verify lengths [R] (1 bonus each).

    Example:
        >>> mrv2_cu_num_logits(torch.tensor([2, 0, 3], dtype=torch.int32)).tolist()
        [0, 3, 4, 8]
    """
    _check_1d_int(num_verify, "num_verify")
    return torch.cat([num_verify.new_zeros(1), torch.cumsum(num_verify + 1, 0).to(num_verify.dtype)])


def mrv2_output(emitted: torch.Tensor, num_emitted: torch.Tensor,
                num_speculative_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The core's emitted tokens -> MRV2's (`sampled` [R, K + 1] int32, -1 padded; `num_sampled` [R] int32).

    Example:
        >>> s, n = mrv2_output(torch.tensor([[4, 5, 0], [7, 0, 0]]), torch.tensor([2, 1]), 2)
        >>> s.tolist(), n.tolist()
        ([[4, 5, -1], [7, -1, -1]], [2, 1])
    """
    return vllm_flat_output(emitted, num_emitted, num_speculative_steps), num_emitted.to(torch.int32)


# ------------------------------------------------------------------------------------- SGLang
def sglang_to_padded(candidates: torch.Tensor, target_probs: torch.Tensor,
                     draft_probs: torch.Tensor | None = None,
                     num_verify: torch.Tensor | None = None) -> PaddedBatch:
    """SGLang's chain (topk = 1) EAGLE verify input -> the padded core layout.

    Args:
        candidates: [bs, draft_token_num] int; column 0 is the anchor (last verified token),
            columns 1.. the drafts.
        target_probs: [bs, draft_token_num, V] float; row j scores candidate j+1, the last row is
            the bonus position.
        draft_probs: [bs, draft_token_num - 1, V] float, or None (SGLang's target-only sampling
            kernel treats the draft as one-hot, i.e. the core's `draft_probs=None`).
        num_verify: [bs] int verify lengths (default: every draft).

    Example:
        >>> pb = sglang_to_padded(torch.tensor([[9, 1, 2]]), torch.full((1, 3, 4), 0.25))
        >>> pb.draft_tokens.tolist(), pb.lengths.tolist()
        ([[1, 2]], [2])
    """
    if candidates.ndim != 2:
        raise ValueError(f"candidates must be [bs, draft_token_num], got {tuple(candidates.shape)}")
    bs, dtn = candidates.shape
    if target_probs.ndim != 3 or target_probs.shape[:2] != (bs, dtn):
        raise ValueError(f"target_probs must be [bs={bs}, draft_token_num={dtn}, V], got "
                         f"{tuple(target_probs.shape)}")
    if draft_probs is not None and draft_probs.shape != (bs, dtn - 1, target_probs.shape[2]):
        raise ValueError(f"draft_probs must be [bs={bs}, {dtn - 1}, V] or None, got {tuple(draft_probs.shape)}")
    g = dtn - 1
    if num_verify is None:
        lengths = torch.full((bs,), g, dtype=torch.long, device=candidates.device)
    else:
        _check_1d_int(num_verify, "num_verify")
        lengths = num_verify.to(torch.long).clamp(0, g)
    return PaddedBatch(candidates[:, 1:].to(torch.long), target_probs, draft_probs, lengths)


def sglang_output(emitted: torch.Tensor, num_emitted: torch.Tensor,
                  draft_token_num: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The core's emitted tokens -> SGLang's (`predict`, `accept_index`, `accept_length`).

    `predict` [bs * draft_token_num] int32 holds request i's j-th emitted token at
    `i * draft_token_num + j`; `accept_index` [bs, draft_token_num] int32 lists those flat indices
    (-1 padded); `accept_length` [bs] int32 counts accepted drafts (emitted - 1).

    Example:
        >>> p, idx, acc = sglang_output(torch.tensor([[4, 5, 0], [7, 0, 0]]), torch.tensor([2, 1]), 3)
        >>> idx.tolist(), acc.tolist(), p[idx[0, :2].long()].tolist()
        ([[0, 1, -1], [3, -1, -1]], [1, 0], [4, 5])
    """
    _check_width(draft_token_num, "draft_token_num")
    bs = emitted.shape[0]
    w = draft_token_num
    if emitted.shape[1] < w:
        emitted = torch.cat([emitted, emitted.new_zeros(bs, w - emitted.shape[1])], 1)
    emitted = emitted[:, :w]
    predict = pad_tokens(emitted, num_emitted, pad=0).reshape(-1)
    flat_idx = (torch.arange(bs, device=emitted.device)[:, None] * w
                + torch.arange(w, device=emitted.device)[None, :])
    accept_index = pad_tokens(flat_idx, num_emitted)
    return predict, accept_index, (num_emitted - 1).to(torch.int32)


# ------------------------------------------------------------------ verify / schedule per layout
def _verify_padded(pb: PaddedBatch, generators: Sequence[torch.Generator | None] | None, greedy: bool,
                   validate: bool) -> Any:
    from sparksched.verify import verify

    return verify(pb.target_probs, pb.draft_probs, pb.draft_tokens, pb.lengths, generators=generators,
                  greedy=greedy, validate=validate)


def _schedule_padded(conf: torch.Tensor, curve: Any, drafted: torch.Tensor | None, extra_tokens: int,
                     validate: bool) -> torch.Tensor:
    """schedule_torch on [n, g] confidences; a ThroughputCurve becomes a table first (host work)."""
    from sparksched.curve import ThroughputCurve
    from sparksched.scheduler import schedule_torch, step_time_table

    if isinstance(curve, ThroughputCurve):
        n, g = conf.shape
        curve = torch.as_tensor(step_time_table(curve, extra_tokens + n * (g + 1)), device=conf.device)
    elif not isinstance(curve, torch.Tensor):
        raise ValueError(f"curve must be a ThroughputCurve or a step-time table tensor, got {type(curve).__name__}")
    return schedule_torch(conf, curve, drafted, extra_tokens, validate=validate)


def verify_vllm_flat(draft_token_ids: torch.Tensor, cu_num_draft_tokens: torch.Tensor,
                     target_probs: torch.Tensor, bonus_probs: torch.Tensor, draft_probs: torch.Tensor | None,
                     max_spec_len: int, generators: Sequence[torch.Generator | None] | None = None,
                     greedy: bool = False, validate: bool = True) -> torch.Tensor:
    """`sparksched.verify` on vLLM V1's flattened layout; returns `output_token_ids` [B, max_spec_len + 1] int32.

    Every draft in the layout is verified (trim first with `schedule_vllm_flat` +
    `compact_vllm_flat`). Same draws as the padded core with width g = max_spec_len and the same
    generators, so the output equals `verify` on `vllm_flat_to_padded(...)` token for token.

    Args:
        draft_token_ids: [N] int drafts, concatenated over requests.
        cu_num_draft_tokens: [B] int inclusive cumulative draft counts.
        target_probs: [N, V] target probabilities at the draft positions.
        bonus_probs: [B, V] target probabilities at each request's bonus position.
        draft_probs: [N, V] draft probabilities, or None (certain drafts, e.g. n-gram).
        max_spec_len: g, the padded width (>= every count).
        generators: one `torch.Generator | None` per request, or None.
        greedy: temperature 0 (exact match against argmax).
        validate: host-side value checks (synchronise); False inside CUDA graphs.

    Example:
        >>> p = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])          # [N = 3, V = 2]
        >>> out = verify_vllm_flat(torch.tensor([1, 0, 0]), torch.tensor([2, 3]), p,
        ...                        torch.tensor([[1.0, 0.0], [1.0, 0.0]]), None, 2, greedy=True)
        >>> vllm_parse_output(out)
        [[1, 0, 0], [1]]
    """
    pb = vllm_flat_to_padded(draft_token_ids, cu_num_draft_tokens, target_probs, bonus_probs, draft_probs,
                             max_spec_len)
    r = _verify_padded(pb, generators, greedy, validate)
    return vllm_flat_output(r.tokens, r.num_emitted, max_spec_len)


def schedule_vllm_flat(conf: torch.Tensor, cu_num_draft_tokens: torch.Tensor, curve: Any, max_spec_len: int,
                       extra_tokens: int = 0, validate: bool = True) -> torch.Tensor:
    """`sparksched.schedule` on vLLM V1's flattened confidences; returns verify lengths [B] int64.

    Args:
        conf: [N] float conditional confidences, flattened like `draft_token_ids`.
        cu_num_draft_tokens: [B] int inclusive cumulative draft counts (drafted_i = count_i).
        curve: ThroughputCurve, or a step-time table tensor [>= extra + B * (g + 1) + 1] on
            conf's device (`step_time_table`); pass the table inside a CUDA graph.
        max_spec_len: g, the padded width.
        extra_tokens: non-speculative tokens sharing the step.
        validate: host-side value checks (synchronise); False inside CUDA graphs.

    Example:
        >>> from sparksched.curve import ThroughputCurve
        >>> flat = ThroughputCurve.from_points([1, 64], [0.01, 0.01])
        >>> schedule_vllm_flat(torch.tensor([0.9, 0.8, 0.5]), torch.tensor([2, 3]), flat, 2).tolist()
        [2, 1]
    """
    padded = flat_to_padded(conf, cu_num_draft_tokens, max_spec_len, fill=0.0)
    return _schedule_padded(padded, curve, counts_from_cu(cu_num_draft_tokens), extra_tokens, validate)


def verify_mrv2(target_probs: torch.Tensor, cu_num_logits: torch.Tensor, draft_sampled: torch.Tensor,
                num_speculative_steps: int, draft_probs: torch.Tensor | None = None,
                idx_mapping: torch.Tensor | None = None,
                generators: Sequence[torch.Generator | None] | None = None, greedy: bool = False,
                validate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """`sparksched.verify` on vLLM Model Runner V2's layout; returns (`sampled` [R, K+1] int32, `num_sampled` [R] int32).

    Arguments as `mrv2_to_padded`, plus generators / greedy / validate as `sparksched.verify`.
    Equal to the padded core with width K and the same generators.

    Example:
        >>> p = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])     # request 0: 1 draft + bonus; 1: bonus
        >>> s, n = verify_mrv2(p, torch.tensor([0, 2, 3]), torch.tensor([5, 1, 5]), 1, greedy=True)
        >>> s.tolist(), n.tolist()
        ([[1, 0], [0, -1]], [2, 1])
    """
    pb = mrv2_to_padded(target_probs, cu_num_logits, draft_sampled, num_speculative_steps, draft_probs,
                        idx_mapping)
    r = _verify_padded(pb, generators, greedy, validate)
    return mrv2_output(r.tokens, r.num_emitted, num_speculative_steps)


def schedule_mrv2(conf: torch.Tensor, num_drafts: torch.Tensor, curve: Any,
                  idx_mapping: torch.Tensor | None = None, extra_tokens: int = 0,
                  validate: bool = True) -> torch.Tensor:
    """`sparksched.schedule` for MRV2: confidences in the persistent [max_num_reqs, K] buffer; lengths [R] int64.

    Feed the result to `mrv2_cu_num_logits` to build the verification layout.

    Args:
        conf: [max_num_reqs, K] float conditional confidences (MRV2's `_confidence_probs`).
        num_drafts: [R] int scheduled drafts per batch row.
        curve: ThroughputCurve or step-time table tensor (see `schedule_vllm_flat`).
        idx_mapping: [R] int batch row -> request-state row of `conf` (default identity).
        extra_tokens: non-speculative tokens sharing the step.
        validate: host-side value checks (synchronise); False inside CUDA graphs.

    Example:
        >>> from sparksched.curve import ThroughputCurve
        >>> flat = ThroughputCurve.from_points([1, 64], [0.01, 0.01])
        >>> schedule_mrv2(torch.tensor([[0.9, 0.9], [0.5, 0.5]]), torch.tensor([2, 1]), flat,
        ...               torch.tensor([1, 0])).tolist()
        [2, 1]
    """
    rows = conf if idx_mapping is None else conf[idx_mapping.to(torch.long)]
    return _schedule_padded(rows, curve, num_drafts, extra_tokens, validate)


def verify_sglang(candidates: torch.Tensor, target_probs: torch.Tensor, draft_probs: torch.Tensor | None = None,
                  num_verify: torch.Tensor | None = None,
                  generators: Sequence[torch.Generator | None] | None = None, greedy: bool = False,
                  validate: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`sparksched.verify` on SGLang's chain layout; returns (`predict`, `accept_index`, `accept_length`).

    Arguments as `sglang_to_padded`; outputs as `sglang_output`. Equal to the padded core with
    width draft_token_num - 1 and the same generators.

    Example:
        >>> p = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]])        # bs 1, draft_token_num 3
        >>> pred, idx, acc = verify_sglang(torch.tensor([[7, 1, 1]]), p, greedy=True)
        >>> idx.tolist(), acc.tolist(), pred[idx[0, :2].long()].tolist()
        ([[0, 1, -1]], [1], [1, 0])
    """
    pb = sglang_to_padded(candidates, target_probs, draft_probs, num_verify)
    r = _verify_padded(pb, generators, greedy, validate)
    return sglang_output(r.tokens, r.num_emitted, candidates.shape[1])


def schedule_sglang(conf: torch.Tensor, curve: Any, extra_tokens: int = 0, validate: bool = True) -> torch.Tensor:
    """`sparksched.schedule` for SGLang's fixed draft_token_num: conf [bs, draft_token_num - 1] -> lengths [bs].

    Pass the lengths as `num_verify` to `verify_sglang`. `curve` and `validate` as in
    `schedule_vllm_flat`.

    Example:
        >>> from sparksched.curve import ThroughputCurve
        >>> flat = ThroughputCurve.from_points([1, 64], [0.01, 0.01])
        >>> schedule_sglang(torch.tensor([[0.9, 0.0]]), flat).tolist()
        [1]
    """
    return _schedule_padded(conf, curve, None, extra_tokens, validate)
