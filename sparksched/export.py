"""Export a sparksched profile to the tables vLLM reads.

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

Derivation of the dynamic-K table. At concurrency b with K drafts per request and a typical
per-position conditional acceptance a_1, a_2, ... (the probability that draft k is accepted given
drafts 1..k-1 were), each request emits on average E(K) = 1 + sum_{k=1..K} a_1 a_2 ... a_k tokens
per step, and the step costs `draft_seconds(b, K) + step_time(b * (1 + K))` seconds (no drafter
runs when K = 0). Output throughput is b * E(K) / cost. For every b in 1..max_batch_size we take
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

from sparksched.curve import ThroughputCurve

DraftSeconds = Callable[[int, int], float]
"""Drafter time (s) of one step as a function of (batch size b, drafted tokens per request K)."""


def _as_curve(source: ThroughputCurve | str | Path | dict[str, Any], context: float | None) -> ThroughputCurve:
    curve = source if isinstance(source, ThroughputCurve) else ThroughputCurve.from_profile(source)
    return curve.at_context(context) if context is not None else curve.at_context(float(curve.contexts[0]))


def vllm_cost_curves(source: ThroughputCurve | str | Path | dict[str, Any], context: float | None = None,
                     block: int | None = None) -> dict[str, list[list[float]]]:
    """vLLM adaptive verification's cost curves, `{"verify_curve": [[tokens, ms], ...], "draft_curve": [[reqs, ms], ...]}`.

    Args:
        source: a profile (path, bundled name or parsed dict) or a `ThroughputCurve`.
        context: context length (tokens) at which to read the verify curve; None = the first
            measured context.
        block: drafter block size whose rows form `draft_curve` (profile `draft` section); None
            takes the largest block measured. A bare curve has no drafter rows: `draft_curve` is
            then `[]` and vLLM must get its drafter cost elsewhere.

    Returns:
        JSON-ready dict; pass the lists to vLLM's `AdaptiveVerificationManager.set_cost_curves`.
        Verify points are the curve's measured batch sizes (monotone after the isotonic fit).

    Example:
        >>> c = ThroughputCurve.from_points([1, 64, 128], [0.010, 0.012, 0.020])
        >>> vllm_cost_curves(c)["verify_curve"]
        [[1, 10.0], [64, 12.0], [128, 20.0]]
    """
    curve = _as_curve(source, context)
    verify = [[int(round(b)), float(s * 1e3)] for b, s in zip(curve.tokens, curve.seconds[0])]
    draft: list[list[float]] = []
    if not isinstance(source, ThroughputCurve):
        from sparksched.profile import load_profile

        rows = load_profile(source).get("draft", [])
        if rows:
            blocks = sorted({int(r["block"]) for r in rows})
            if block is None:
                block = blocks[-1]
            if block not in blocks:
                raise ValueError(f"block={block}: the profile's draft rows measure blocks {blocks}")
            by_req: dict[int, list[float]] = {}
            for r in rows:
                if int(r["block"]) == block:
                    by_req.setdefault(int(r["requests"]), []).append(float(r["median_s"]))
            draft = [[n, float(np.median(v) * 1e3)] for n, v in sorted(by_req.items())]
    return {"verify_curve": verify, "draft_curve": draft}


def vllm_cost_table(source: ThroughputCurve | str | Path | dict[str, Any], max_batch_tokens: int,
                    context: float | None = None,
                    capture_sizes: Sequence[int] | None = None) -> np.ndarray:
    """Verify-pass cost in milliseconds for 0..max_batch_tokens tokens, float64 [max_batch_tokens + 1].

    Between measured points the cost is our curve's interpolation. With `capture_sizes` (the
    engine's CUDA-graph batch sizes), a size at or below the largest capture size costs what the
    next capture size costs, because the engine pads the batch up to it (the step function vLLM's
    `build_cost_tables_from_curves` builds); above it the curve is used as is.

    Example:
        >>> c = ThroughputCurve.from_points([1, 8], [0.001, 0.008])
        >>> vllm_cost_table(c, 8, capture_sizes=[4, 8]).round(3).tolist()
        [4.0, 4.0, 4.0, 4.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    """
    if not isinstance(max_batch_tokens, int) or max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens must be an int >= 1, got {max_batch_tokens!r}")
    curve = _as_curve(source, context)
    sizes = np.arange(max_batch_tokens + 1)
    table = curve.table(max_batch_tokens) * 1e3
    if capture_sizes:
        caps = np.asarray(sorted(set(int(c) for c in capture_sizes)), dtype=np.int64)
        if caps[0] < 1:
            raise ValueError(f"capture_sizes must be >= 1, got {caps[0]}")
        padded = sizes <= caps[-1]
        target = caps[np.searchsorted(caps, sizes[padded], side="left")]
        table[padded] = curve.step_time(target.astype(np.float64)) * 1e3
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


def vllm_dynamic_k_table(source: ThroughputCurve | str | Path | dict[str, Any],
                         acceptance: float | Sequence[float], max_batch_size: int, max_k: int,
                         draft_seconds: float | DraftSeconds = 0.0,
                         context: float | None = None) -> list[list[int]]:
    """vLLM's `num_speculative_tokens_per_batch_size` table `[[start_bs, end_bs, K], ...]` from a profile.

    See the module docstring for the derivation: per concurrency b, the K in 0..max_k that
    maximises b * E(K) / (draft_seconds(b, K) + step_time(b * (1 + K))); equal neighbours merged.

    Args:
        source: profile (path, bundled name, dict) or `ThroughputCurve`.
        acceptance: typical conditional acceptance per draft position (float or sequence).
        max_batch_size: largest concurrency to cover (ranges cover 1..max_batch_size).
        max_k: largest K considered (vLLM's `num_speculative_tokens`).
        draft_seconds: drafter time per step when K > 0: a constant (s) or a function (b, K) -> s.
        context: context length at which to read the curve.

    Example:
        >>> flat_then_steep = ThroughputCurve.from_points([1, 64, 512], [0.010, 0.010, 0.080])
        >>> vllm_dynamic_k_table(flat_then_steep, 0.7, 128, 3)
        [[1, 18, 3], [19, 27, 2], [28, 54, 1], [55, 128, 0]]
    """
    if not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise ValueError(f"max_batch_size must be an int >= 1, got {max_batch_size!r}")
    if not isinstance(max_k, int) or max_k < 0:
        raise ValueError(f"max_k must be an int >= 0, got {max_k!r}")
    curve = _as_curve(source, context)
    a = _acceptance_array(acceptance, max_k)
    e = np.concatenate([[1.0], 1.0 + np.cumsum(np.cumprod(a))])            # E(K), K = 0..max_k
    draft = draft_seconds if callable(draft_seconds) else (lambda b, k, _d=float(draft_seconds): _d)
    best_k: list[int] = []
    for b in range(1, max_batch_size + 1):
        ks = np.arange(max_k + 1)
        cost = curve.step_time(b * (1.0 + ks)) + np.asarray(
            [0.0 if k == 0 else float(draft(b, int(k))) for k in ks])
        if np.any(~np.isfinite(cost)) or np.any(cost <= 0):
            raise ValueError(f"step cost at batch size {b} is not a positive finite time: {cost.tolist()}")
        rate = b * e / cost
        best_k.append(int(np.flatnonzero(rate >= rate.max() * (1 - 1e-12))[0]))
    table: list[list[int]] = []
    for b, k in enumerate(best_k, start=1):
        if table and table[-1][2] == k:
            table[-1][1] = b
        else:
            table.append([b, b, k])
    return table
