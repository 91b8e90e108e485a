"""Serving metrics as the field defines them, from a run's per-request, per-step and per-round tables.

Definitions (times in seconds):
    TTFT      first token time - arrival (queueing and prefill included)
    E2E       finish - arrival
    TPOT      (E2E - TTFT) / (output tokens - 1); undefined (null) for one-token outputs
    user tok/s  1 / TPOT; its PXX is 1 / (PXX of TPOT): the speed XX % of users reach or beat
    ITL per step   gap between consecutive emissions of a request (speculation emits in bursts)
    ITL per token  each token of a burst of e tokens after a gap d counts d / e (d / e repeated e times)
    throughput     output tokens / (last finish - first arrival)
    goodput        requests with TTFT <= sla_ttft_s and user tok/s >= SLA (trace slo_tps when given,
                   else sla_tps; one-token outputs are judged on TTFT only); reported as the share of
                   all requests (rejected and unfinished count as misses), requests/s and tokens/s
    accepted length per round   emitted tokens per decoding round (accepted drafts + 1: the paper's tau)
    acceptance per block position  P(draft k accepted | drafts 1..k-1 accepted and k verified)
    verify budget   tokens verified per request per decoding step, INCLUDING the anchor (1 + l_i, the
                    paper's Figure 8 budget); `_excl` variants count drafts only (l_i)
All percentiles are P50 / P90 / P99 (linear interpolation).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

PERCENTILES = (50, 90, 99)


def _pct(x: np.ndarray, q: float) -> float | None:
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if x.size else None


def weighted_percentiles(values: np.ndarray, weights: np.ndarray, qs: tuple[float, ...]) -> list[float | None]:
    """Percentiles qs (0-100) of `values` with non-negative `weights` (inverted CDF), one sort."""
    keep = np.isfinite(values) & (weights > 0)
    v, w = values[keep], weights[keep]
    if v.size == 0:
        return [None for _ in qs]
    order = np.argsort(v, kind="stable")
    cw = np.cumsum(w[order])
    vs = v[order]
    idx = np.searchsorted(cw, np.asarray(qs, dtype=np.float64) / 100.0 * cw[-1], side="left")
    return [float(vs[min(int(i), v.size - 1)]) for i in idx]


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float | None:
    """Percentile q (0-100) of `values` with non-negative `weights` (inverted CDF)."""
    return weighted_percentiles(values, weights, (q,))[0]


def request_latencies(requests: pl.DataFrame) -> pl.DataFrame:
    """Add ttft_s, e2e_s, tpot_s and user_tps columns to a per-request table."""
    return requests.with_columns(
        ttft_s=pl.col("first_token_s") - pl.col("arrival_s"),
        e2e_s=pl.col("finish_s") - pl.col("arrival_s"),
    ).with_columns(
        tpot_s=pl.when(pl.col("output_tokens") > 1)
        .then((pl.col("e2e_s") - pl.col("ttft_s")) / (pl.col("output_tokens") - 1))
        .otherwise(None),
    ).with_columns(
        user_tps=pl.when(pl.col("tpot_s") > 0).then(1.0 / pl.col("tpot_s")).otherwise(None),
    )


def meets_sla(requests: pl.DataFrame, sla_tps: float, sla_ttft_s: float) -> pl.Series:
    """Boolean per request: finished, TTFT within the SLA, and per-user speed at or above it."""
    target = pl.col("slo_tps").fill_null(sla_tps) if "slo_tps" in requests.columns else pl.lit(sla_tps)
    ok = (
        (pl.col("status") == "finished")
        & (pl.col("ttft_s") <= sla_ttft_s)
        & (pl.col("user_tps").is_null() | (pl.col("user_tps") >= target)).fill_null(False)
    )
    return requests.select(ok.alias("meets_sla")).to_series()


def emission_gaps(rounds: pl.DataFrame, steps: pl.DataFrame,
                  requests: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every decoding round's gap since the request's previous emission, as streamed chunks.

    Emissions are each request's first token (the end of its prefill) and then one chunk per
    decoding round (all the tokens the round emitted arrive together). Rounds that emitted nothing
    are left out.

    Returns:
        (request [r] int64 row index into `requests`, gap [r] seconds, tokens [r] float64 emitted in
        the chunk), sorted by request, then time.
    """
    if rounds.height == 0:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    end = (steps["t_start"] + steps["duration_s"]).to_numpy()
    req = rounds["request"].to_numpy().astype(np.int64)
    t = end[rounds["step"].to_numpy()]
    e = rounds["emitted"].to_numpy().astype(np.float64)
    first = requests["first_token_s"].to_numpy()
    order = np.lexsort((t, req))
    req, t, e = req[order], t[order], e[order]
    prev = np.empty_like(t)
    prev[1:] = t[:-1]
    new = np.ones(req.size, dtype=bool)
    new[1:] = req[1:] != req[:-1]
    prev[new] = first[req[new]]
    gap = t - prev
    keep = (e > 0) & np.isfinite(gap)
    return req[keep], gap[keep], e[keep]


def itl(rounds: pl.DataFrame, steps: pl.DataFrame, requests: pl.DataFrame) -> dict[str, float | None]:
    """Inter-token latency percentiles per step and per token (see the module docstring).

    Emissions are the decoding rounds plus each request's first token (end of its prefill).
    """
    out: dict[str, float | None] = {}
    _, gap, e = emission_gaps(rounds, steps, requests)
    if gap.size == 0:
        for q in PERCENTILES:
            out[f"itl_step_p{q}_s"] = out[f"itl_token_p{q}_s"] = None
        return out
    per_token = weighted_percentiles(gap / e, e, PERCENTILES)
    per_step = np.percentile(gap, PERCENTILES)
    for q, a, b in zip(PERCENTILES, per_step, per_token):
        out[f"itl_step_p{q}_s"] = float(a)
        out[f"itl_token_p{q}_s"] = b
    return out


def acceptance_by_position(rounds: pl.DataFrame, block: int, domains: pl.Series | None = None) -> pl.DataFrame:
    """Per block position k (and domain when given): trials, accepted, conditional acceptance.

    trials(k) = rounds with verified >= k and accepted >= k - 1; accepted(k) = rounds with accepted >= k.
    """
    cols = ["position", "trials", "accepted", "acceptance"]
    if block == 0 or rounds.height == 0:
        return pl.DataFrame(schema={"domain": pl.Utf8, **dict.fromkeys(cols[:-1], pl.Int64),
                                    "acceptance": pl.Float64})
    v = rounds["verified"].to_numpy().astype(np.int64)
    a = rounds["accepted"].to_numpy().astype(np.int64)
    dom = (np.zeros(v.size, dtype=np.int64), ["all"]) if domains is None else _codes(
        domains.to_numpy()[rounds["request"].to_numpy()])
    codes, names = dom
    frames = []
    for c, name in enumerate(names):
        sel = codes == c
        vv, aa = v[sel], a[sel]
        k = np.arange(1, block + 1)
        # counts by value, then tail sums: #(verified >= k & accepted >= k-1) etc.
        trials = np.array([np.count_nonzero((vv >= j) & (aa >= j - 1)) for j in k])
        acc = np.array([np.count_nonzero(aa >= j) for j in k])
        rate = np.where(trials > 0, acc / np.maximum(trials, 1), np.nan)
        frames.append(pl.DataFrame({"domain": [name] * block, "position": k, "trials": trials,
                                    "accepted": acc, "acceptance": rate}))
    return pl.concat(frames)


def _codes(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    names, codes = np.unique(values.astype(str), return_inverse=True)
    return codes, names.tolist()


def budget_by_running(steps: pl.DataFrame) -> pl.DataFrame:
    """Per number of decoding requests in a step: steps, mean verify budget per request (anchor incl.)."""
    dec = steps.filter(pl.col("decode_requests") > 0)
    return (dec.group_by("decode_requests")
            .agg(steps=pl.len(),
                 verify_budget=((pl.col("verified") + pl.col("decode_requests")).sum()
                                / pl.col("decode_requests").sum()),
                 accepted_per_round=((pl.col("accepted") + pl.col("decode_requests")).sum()
                                     / pl.col("decode_requests").sum()))
            .sort("decode_requests"))


def summarize(requests: pl.DataFrame, steps: pl.DataFrame, rounds: pl.DataFrame, *, block: int,
              sla_tps: float, sla_ttft_s: float) -> dict:
    """Scalar summary of one run (see the module docstring for every definition)."""
    s, span = _request_part(requests)
    n = requests.height
    s.update(itl(rounds, steps, requests))
    ok = requests["meets_sla"].to_numpy()
    s["goodput_share"] = float(ok.mean()) if n else 0.0
    s["goodput_rps"] = float(ok.sum()) / span
    s["goodput_tps"] = float(requests.filter(pl.col("meets_sla"))["emitted_tokens"].sum()) / span
    s["sla_tps"], s["sla_ttft_s"] = sla_tps, sla_ttft_s
    dec_steps = int((steps["decode_requests"] > 0).sum()) if steps.height else 0
    rounds_n = rounds.height
    if rounds_n:
        ver = rounds["verified"].to_numpy().astype(np.float64)
        acc = rounds["accepted"].to_numpy().astype(np.float64)
        s["rounds"] = rounds_n
        s["mean_accepted_per_round"] = float((acc + 1).mean())
        s["mean_accepted_drafts"] = float(acc.mean())
        s["mean_verify_budget"] = float((ver + 1).mean())
        s["mean_verify_budget_excl"] = float(ver.mean())
        s["draft_acceptance_rate"] = float(acc.sum() / ver.sum()) if ver.sum() else None
    else:
        s["rounds"] = 0
        for k in ("mean_accepted_per_round", "mean_accepted_drafts", "mean_verify_budget",
                  "mean_verify_budget_excl", "draft_acceptance_rate"):
            s[k] = None
    if block and rounds_n:
        pos = acceptance_by_position(rounds, block)
        s["acceptance_by_position"] = [None if not np.isfinite(x) else round(float(x), 4)
                                       for x in pos["acceptance"].to_numpy()]
    else:
        s["acceptance_by_position"] = []
    s["preemptions"] = int(requests["preemptions"].sum())
    s["steps"] = steps.height
    s["decode_steps"] = dec_steps
    if steps.height:
        dur = steps["duration_s"].to_numpy()
        s["mean_step_s"] = float(dur.mean())
        s["mean_decode_requests"] = float(steps["decode_requests"].to_numpy().mean())
        s["time_weighted_running"] = float((steps["running"].to_numpy() * dur).sum() / dur.sum())
        s["mean_batch_tokens"] = float(steps["batch_tokens"].to_numpy().mean())
        s["busy_s"] = float(dur.sum())
    return s


def _request_part(requests: pl.DataFrame) -> tuple[dict, float]:
    """The request-level keys of the summary up to user_tps_mean, and the span (s) rates divide by."""
    fin = requests.filter(pl.col("status") == "finished")
    s: dict = {}
    n = requests.height
    s["requests"] = n
    s["finished"] = fin.height
    s["rejected"] = int((requests["status"] == "rejected").sum())
    s["unfinished"] = n - fin.height - s["rejected"]
    reasons = requests.filter(pl.col("reason").is_not_null()).group_by("reason").len().sort("reason")
    s["unfinished_reasons"] = {r: int(c) for r, c in zip(reasons["reason"], reasons["len"])}
    t0 = float(requests["arrival_s"].to_numpy().min()) if n else 0.0
    t1 = float(fin["finish_s"].to_numpy().max()) if fin.height else t0
    span = max(t1 - t0, 1e-12)
    out_tokens = int(requests["emitted_tokens"].sum())
    s["duration_s"] = t1 - t0
    s["output_tokens"] = out_tokens
    s["throughput_tps"] = out_tokens / span if fin.height else 0.0
    s["request_rate"] = fin.height / span if fin.height else 0.0
    ttft = fin["ttft_s"].to_numpy()
    tpot = fin["tpot_s"].to_numpy().astype(np.float64)
    e2e = fin["e2e_s"].to_numpy()
    for q in PERCENTILES:
        s[f"ttft_p{q}_s"] = _pct(ttft, q)
        s[f"tpot_p{q}_s"] = _pct(tpot, q)
        s[f"e2e_p{q}_s"] = _pct(e2e, q)
    for q in PERCENTILES:
        p = s[f"tpot_p{q}_s"]
        s[f"user_tps_p{q}"] = 1.0 / p if p else None
    s["user_tps_mean"] = float(np.nanmean(1.0 / tpot[tpot > 0])) if np.any(tpot > 0) else None
    return s, span


def summarize_streamed(requests: pl.DataFrame, steps: Any, rounds: Any, gaps: Any, *, sla_tps: float,
                       sla_ttft_s: float) -> dict:
    """`summarize` from the requests table and the run's streaming summaries (simulator.stats:
    StepStats, RoundStats, GapStats) instead of the steps and rounds tables: the same keys."""
    s, span = _request_part(requests)
    step_q, token_q = gaps.percentiles(PERCENTILES)
    for i, q in enumerate(PERCENTILES):
        s[f"itl_step_p{q}_s"] = step_q[i] if step_q else None
        s[f"itl_token_p{q}_s"] = token_q[i] if token_q else None
    n = requests.height
    ok = requests["meets_sla"].to_numpy()
    s["goodput_share"] = float(ok.mean()) if n else 0.0
    s["goodput_rps"] = float(ok.sum()) / span
    s["goodput_tps"] = float(requests.filter(pl.col("meets_sla"))["emitted_tokens"].sum()) / span
    s["sla_tps"], s["sla_ttft_s"] = sla_tps, sla_ttft_s
    s.update(rounds.summary())
    s["preemptions"] = int(requests["preemptions"].sum())
    s.update(steps.summary())
    return s
