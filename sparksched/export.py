"""Export a sparksched profile (or any StepCost) to the tables vLLM reads.

Two vLLM features consume a step-cost profile:

* **Adaptive verification** (Model Runner V2,
  `vllm/v1/worker/gpu/spec_decode/adaptive_verification.py`): `set_cost_curves(draft_curve,
  verify_curve)` takes two lists of `(size, milliseconds)` points, the drafter's step cost by number
  of requests and the target's verify-pass cost by number of tokens, and
  `build_cost_tables_from_curves` turns them into per-size lookup tables. `vllm_cost_curves`
  writes those two lists from our profile; `vllm_cost_table` writes the per-token lookup table.
* **Dynamic speculative decoding** (`docs/features/speculative_decoding/
  dynamic_speculative_decoding.md`): `num_speculative_tokens_per_batch_size`, a list of
  `[start_bs, end_bs, K]` meaning "at concurrency start_bs..end_bs (inclusive) draft K tokens";
  K = 0 turns speculation off. `vllm_dynamic_k_table` derives it (derivation below).

Which step each vLLM table entry stands for. vLLM keys its verify cost on batch tokens only and
measures it at engine start with dummy batches of B tokens spread over min(B, max_num_seqs)
requests at one context (default 8192 tokens). A sparksched profile prices a step by requests,
tokens and context (`sparksched.cost.StepCost`), so the exported verify curve is the price of that
same dummy step: T(min(B, max_num_seqs), B, context). The drafter's curve is D(n, block, context).

Derivation of the dynamic-K table. At concurrency b with K drafts per request and a typical
per-position conditional acceptance a_1, a_2, ... (the probability that draft k is accepted given
drafts 1..k-1 were), each request emits on average E(K) = 1 + sum_{k=1..K} a_1 a_2 ... a_k tokens
per step, and the step costs `draft_seconds(b, K) + step_time(b * (1 + K))` seconds (no drafter
runs when K = 0). Output throughput is b * E(K) / cost, with the step priced at its own b requests:
T(b, b (1 + K), context). For every b in 1..max_batch_size we take
the K in 0..max_k with the highest throughput (ties: the smaller K, as vLLM's own tuner does) and
merge adjacent batch sizes with the same K into one range. This is the static-K counterpart of
sparksched's scheduler: it uses an average acceptance instead of each request's confidences, so it
cannot trim a doubtful request while keeping a confident one; it is what a vLLM deployment without
adaptive verification can use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sparksched.cost import StepCost, as_step_cost
from sparksched.curve import ThroughputCurve

DraftSeconds = Callable[[int, int], float]
"""Drafter time (s) of one step as a function of (batch size b, drafted tokens per request K)."""

VLLM_MAX_NUM_SEQS = 256  # vLLM's default --max-num-seqs: requests in its dummy profiling batches

Source = StepCost | ThroughputCurve | str | Path | dict[str, Any]


def _context(cost: StepCost, context: float | None) -> float:
    return float(cost.arrays.ctxs[0]) if context is None else float(context)


def _verify_tokens(cost: StepCost, max_num_seqs: int) -> np.ndarray:
    """The batch sizes the profile measured on vLLM's dummy-batch ray (B requests up to max_num_seqs,
    then more tokens each): every grid B = n t with n <= max_num_seqs."""
    a = cost.arrays
    if a.mode == 1:
        return a.knots.copy()
    b = {float(n * t) for n in a.reqs for t in a.knots if n <= max_num_seqs}
    return np.asarray(sorted(b))


def vllm_verify_seconds(cost: StepCost, batch_tokens: np.ndarray, context: float,
                        max_num_seqs: int = VLLM_MAX_NUM_SEQS) -> np.ndarray:
    """Verify seconds of vLLM's dummy step of B tokens: min(B, max_num_seqs) requests at `context`."""
    b = np.asarray(batch_tokens, dtype=np.float64)
    out = np.empty(b.shape)
    for i, x in np.ndenumerate(b):
        n = max(1.0, min(float(x), float(max_num_seqs)))
        out[i] = float(cost.verify_seconds(n, max(float(x), n), context))
    return out


def vllm_cost_curves(source: Source, context: float | None = None, block: int | None = None,
                     max_num_seqs: int = VLLM_MAX_NUM_SEQS) -> dict[str, list[list[float]]]:
    """vLLM adaptive verification's cost curves, `{"verify_curve": [[tokens, ms], ...], "draft_curve": [[reqs, ms], ...]}`.

    Args:
        source: a profile (path, bundled name or parsed dict), a `StepCost` or a `ThroughputCurve`.
        context: context length (tokens) of the steps; None = the first measured context.
        block: drafter block size whose rows form `draft_curve` (profile `draft` section); None
            takes the largest block measured. A bare curve has no drafter rows: `draft_curve` is
            then `[]` and vLLM must get its drafter cost elsewhere.
        max_num_seqs: the engine's --max-num-seqs: a verify point of B tokens is the step of
            min(B, max_num_seqs) requests, as vLLM's own dummy profiling batches are.

    Returns:
        JSON-ready dict; pass the lists to vLLM's `AdaptiveVerificationManager.set_cost_curves`.
        Verify points are the profile's measured batch sizes on that ray (those whose KV does not
        fit at `context` are left out: vLLM's own dummy batch would not fit either); drafter points
        its measured request counts.

    Example:
        >>> c = ThroughputCurve.from_points([1, 64, 128], [0.010, 0.012, 0.020])
        >>> vllm_cost_curves(c)["verify_curve"]
        [[1, 10.0], [64, 12.0], [128, 20.0]]
    """
    cost = as_step_cost(source)
    ctx = _context(cost, context)
    b = _verify_tokens(cost, max_num_seqs)
    verify = [[int(round(x)), float(s * 1e3)] for x, s in zip(b, vllm_verify_seconds(cost, b, ctx, max_num_seqs))
              if np.isfinite(s)]
    if not verify:
        raise ValueError(f"no verify point fits at context {ctx:g}: {cost.why(1, 1, ctx)}")
    draft: list[list[float]] = []
    rows = cost.draft_rows
    if rows:
        blocks = sorted({int(r["block"]) for r in rows})
        if block is None:
            block = blocks[-1]
        if block not in blocks:
            raise ValueError(f"block={block}: the profile's draft rows measure blocks {blocks}")
        ns = sorted({int(r["requests"]) for r in rows if int(r["block"]) == block})
        draft = [[n, float(cost.draft_seconds(n, block, ctx) * 1e3)] for n in ns]
    return {"verify_curve": verify, "draft_curve": draft}


def vllm_cost_table(source: Source, max_batch_tokens: int, context: float | None = None,
                    capture_sizes: Sequence[int] | None = None,
                    max_num_seqs: int = VLLM_MAX_NUM_SEQS) -> np.ndarray:
    """Verify-pass cost in milliseconds for 0..max_batch_tokens tokens, float64 [max_batch_tokens + 1].

    Entry B is the step of B tokens over min(B, max_num_seqs) requests at `context` (vLLM's dummy
    batches; entry 0 holds entry 1). With `capture_sizes` (the engine's CUDA-graph batch sizes), a
    size at or below the largest capture size costs what the next capture size costs, because the
    engine pads the batch up to it (the step function vLLM's `build_cost_tables_from_curves`
    builds); above it the cost is used as is.

    Example:
        >>> c = ThroughputCurve.from_points([1, 8], [0.001, 0.008])
        >>> vllm_cost_table(c, 8, capture_sizes=[4, 8]).round(3).tolist()
        [4.0, 4.0, 4.0, 4.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    """
    if not isinstance(max_batch_tokens, int) or max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens must be an int >= 1, got {max_batch_tokens!r}")
    cost = as_step_cost(source)
    ctx = _context(cost, context)
    sizes = np.arange(max_batch_tokens + 1)
    table = vllm_verify_seconds(cost, np.maximum(sizes, 1).astype(np.float64), ctx, max_num_seqs) * 1e3
    if capture_sizes:
        caps = np.asarray(sorted(set(int(c) for c in capture_sizes)), dtype=np.int64)
        if caps[0] < 1:
            raise ValueError(f"capture_sizes must be >= 1, got {caps[0]}")
        padded = sizes <= caps[-1]
        target = caps[np.searchsorted(caps, sizes[padded], side="left")]
        table[padded] = vllm_verify_seconds(cost, target.astype(np.float64), ctx, max_num_seqs) * 1e3
    return table


def expected_tokens(acceptance: float | Sequence[float], k: int) -> float:
    """E(K) = 1 + sum_{j<=K} a_1 ... a_j, expected emitted tokens per step with K drafts.

    Args:
        acceptance: conditional per-position acceptance; a float means the same at every position,
            a sequence gives a_1, a_2, ... (its last value repeats past its end).
        k: drafted tokens K >= 0.

    Example:
        >>> expected_tokens(0.5, 2)
        1.75
    """
    a = _acceptance_array(acceptance, k)
    return float(1.0 + np.cumprod(a).sum()) if k else 1.0


def _acceptance_array(acceptance: float | Sequence[float], k: int) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(acceptance, dtype=np.float64))
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr > 1):
        raise ValueError(f"acceptance must be probabilities in [0, 1], got {arr.tolist()}")
    if k <= arr.size:
        return arr[:k]
    return np.concatenate([arr, np.full(k - arr.size, arr[-1])])


def vllm_dynamic_k_table(source: Source, acceptance: float | Sequence[float], max_batch_size: int, max_k: int,
                         draft_seconds: float | DraftSeconds | None = None,
                         context: float | None = None) -> list[list[int]]:
    """vLLM's `num_speculative_tokens_per_batch_size` table `[[start_bs, end_bs, K], ...]` from a profile.

    See the module docstring for the derivation: per concurrency b, the K in 0..max_k that
    maximises b * E(K) / (draft_seconds(b, K) + T(b, b (1 + K), context)); equal neighbours merged.

    Args:
        source: profile (path, bundled name, dict), `StepCost` or `ThroughputCurve`.
        acceptance: typical conditional acceptance per draft position (float or sequence).
        max_batch_size: largest concurrency to cover (ranges cover 1..max_batch_size).
        max_k: largest K considered (vLLM's `num_speculative_tokens`).
        draft_seconds: drafter time per step when K > 0: a constant (s) or a function (b, K) -> s;
            None: the profile's drafter at block K (0 without drafter rows).
        context: context length (tokens) of the steps; None = the first measured context.

    Example:
        >>> flat_then_steep = ThroughputCurve.from_points([1, 64, 512], [0.010, 0.010, 0.080])
        >>> vllm_dynamic_k_table(flat_then_steep, 0.7, 128, 3)
        [[1, 18, 3], [19, 27, 2], [28, 54, 1], [55, 128, 0]]
    """
    if not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise ValueError(f"max_batch_size must be an int >= 1, got {max_batch_size!r}")
    if not isinstance(max_k, int) or max_k < 0:
        raise ValueError(f"max_k must be an int >= 0, got {max_k!r}")
    cost = as_step_cost(source)
    ctx = _context(cost, context)
    a = _acceptance_array(acceptance, max_k)
    e = np.concatenate([[1.0], 1.0 + np.cumsum(np.cumprod(a))])            # E(K), K = 0..max_k
    def draft(b: int, k: int) -> float:
        if draft_seconds is None:
            return cost.draft_seconds(b, k, ctx)
        if callable(draft_seconds):
            return float(draft_seconds(b, k))
        return float(draft_seconds)
    best_k: list[int] = []
    for b in range(1, max_batch_size + 1):
        ks = np.arange(max_k + 1)
        step = np.asarray([float(cost.verify_seconds(b, b * (1.0 + k), ctx)) for k in ks])
        step = step + np.asarray([0.0 if k == 0 else float(draft(b, int(k))) for k in ks])
        if np.any(~np.isfinite(step)) or np.any(step <= 0):
            raise ValueError(f"step cost at batch size {b} is not a positive finite time: {step.tolist()}")
        rate = b * e / step
        best_k.append(int(np.flatnonzero(rate >= rate.max() * (1 - 1e-12))[0]))
    table: list[list[int]] = []
    for b, k in enumerate(best_k, start=1):
        if table and table[-1][2] == k:
            table[-1][1] = b
        else:
            table.append([b, b, k])
    return table
