"""`vllm bench serve`'s result keys, computed from one simulation's tables with vLLM's definitions.

A simulated run is a benchmark in which every trace request is sent at its arrival time. The keys
and their definitions follow vLLM's `vllm/benchmarks/serve.py` (`calculate_metrics`, the
speculative-decoding block of `benchmark`), so a dashboard that reads a `vllm bench serve
--save-result` JSON reads ours unchanged:

    completed, failed        requests that finished / did not (rejected for KV space, or still
                             running at the horizon: vLLM's failed requests)
    duration                 s, first arrival to last completion (vLLM: benchmark start to end)
    total_input_tokens       prompt tokens of completed requests
    total_output_tokens      output tokens of completed requests
    request_throughput       completed / duration (req/s)
    output_throughput        total_output_tokens / duration (tok/s)
    total_token_throughput   (total_input_tokens + total_output_tokens) / duration (tok/s)
    request_goodput          completed requests meeting every --goodput SLO / duration (req/s);
                             None without SLOs. A request is good when SLO >= its value for each
                             SLO given; TPOT counts as 0 for one-token outputs (vLLM's rule)
    max_concurrent_requests  peak number of requests in flight (arrival to completion), sweep line
                             over completed requests, departures before arrivals at equal times
    max_output_tokens_per_s  peak of streamed chunks per 1-second bucket from the first arrival
                             (vLLM counts one per chunk, so speculative bursts count once)
    {mean,median,std,pP}_{ttft,tpot,itl,e2el}_ms, in ms over completed requests:
        ttft   first token - arrival
        tpot   (e2el - ttft) / (output tokens - 1), requests with more than one output token
        itl    every gap between consecutive streamed chunks of a request (one chunk per engine
               step: a speculative round's tokens arrive together), pooled over requests
        e2el   completion - arrival
        std is the population standard deviation (numpy's default), percentiles interpolate
        linearly (numpy's default); an empty sample gives 0 (vLLM's `np.mean(x or 0)`).
    spec_decode_num_drafts, _draft_tokens, _accepted_tokens, _acceptance_rate (%),
    _acceptance_length, _per_position_acceptance_rates: counted as vLLM's scheduler counts them
        (`SpecDecodingStats.observe_draft`): a draft is one request's verification in one step
        with at least one draft token scheduled for it; its draft tokens are the ones scheduled,
        i.e. verified (under a DSpark budget, fewer than drafted: a request verifying none is not
        a draft, as vLLM's adaptive verification removes its speculative entry); accepted tokens
        exclude the bonus token. acceptance_rate = 100 x accepted / draft tokens, acceptance_length
        = 1 + accepted / drafts, per-position rate k = drafts with at least k accepted / drafts
        (unconditional: never increases with k; one entry per block position). Present only when
        the run drafted (vLLM omits them without speculative decoding).

DSpark's own figures carry a `dspark_` prefix so they cannot be read as vLLM's:
    dspark_rounds                decoding rounds (request x step), verify length 0 included
    dspark_drafted_tokens        draft tokens proposed (verified or not)
    dspark_verify_budget_mean    tokens verified per request per decoding step, anchor included
                                 (1 + l_i; the paper's Figure 8 budget)
    dspark_tokens_per_round      mean accepted drafts + 1 over all rounds (the paper's tau)
    dspark_conditional_acceptance_by_position
                                 P(draft k accepted | drafts 1..k-1 accepted and k verified)
    dspark_user_tok_s_1_over_pP_tpot
                                 1000 / pP_tpot_ms: the per-user speed P % of users reach or beat
    dspark_slo_attainment        share of ALL requests (failed ones count as misses) meeting every
                                 --goodput SLO; None without SLOs
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from simulator.metrics import emission_gaps

METRICS = ("ttft", "tpot", "itl", "e2el")
GOODPUT_KEYS = ("ttft", "tpot", "e2el")
DEFAULT_PERCENTILES = (50.0, 90.0, 99.0)
BACKEND = "sparksched-simulate"


def percentile_word(p: float) -> str:
    """vLLM's key spelling of a percentile: 99 -> "99", 99.9 -> "99.9"."""
    return str(int(p)) if int(p) == p else str(p)


def parse_goodput(spec: str | Sequence[str] | Mapping[str, float] | None) -> dict[str, float]:
    """SLOs for goodput in vLLM's `--goodput` syntax: "ttft:500 tpot:50" (ms) -> {"ttft": 500.0, ...}.

    Accepts a string (pairs separated by spaces or commas), a sequence of "KEY:VALUE" strings, or a
    mapping. Keys: ttft, tpot, e2el; values: milliseconds >= 0. ValueError names the bad pair.
    """
    if spec is None:
        return {}
    items: list[tuple[str, Any]]
    if isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        parts = [spec] if isinstance(spec, str) else list(spec)
        items = []
        for part in parts:
            for pair in re.split(r"[\s,]+", str(part).strip()):
                if not pair:
                    continue
                name, sep, value = pair.partition(":")
                if not sep:
                    raise ValueError(f"goodput: {pair!r} is not KEY:VALUE (e.g. ttft:500 tpot:50, in ms)")
                items.append((name.strip(), value.strip()))
    out: dict[str, float] = {}
    for name, value in items:
        if name not in GOODPUT_KEYS:
            raise ValueError(f"goodput: {name!r} is not one of {', '.join(GOODPUT_KEYS)}")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"goodput: {name}:{value} is not a number of milliseconds") from None
        if isinstance(value, bool) or not math.isfinite(v) or v < 0:
            raise ValueError(f"goodput: {name}:{value} must be a number of milliseconds >= 0")
        out[name] = v
    return out


def format_goodput(slos: Mapping[str, float]) -> str:
    """{"ttft": 500.0, "tpot": 50.0} -> "ttft:500 tpot:50" (vLLM's syntax)."""
    return " ".join(f"{k}:{v:g}" for k, v in slos.items())


def latency_samples(requests: pl.DataFrame, steps: pl.DataFrame, rounds: pl.DataFrame) -> dict[str, np.ndarray]:
    """Per-request samples in seconds, as vLLM collects them (completed requests only).

    Returns ttft [c], e2el [c], tpot [m] (requests with more than one output token), tpot_all [c]
    (0 for one-token outputs: what goodput judges), itl [k] (chunk gaps, pooled), output [c] tokens,
    prompt [c] tokens, arrival [c] and finish [c] times, chunk_times [k + c] (every streamed chunk).
    """
    done = (requests["status"] == "finished").to_numpy()
    ttft = requests["ttft_s"].to_numpy().astype(np.float64)[done]
    e2el = requests["e2e_s"].to_numpy().astype(np.float64)[done]
    output = requests["emitted_tokens"].to_numpy().astype(np.int64)[done]
    prompt = requests["prompt_tokens"].to_numpy().astype(np.int64)[done]
    arrival = requests["arrival_s"].to_numpy().astype(np.float64)[done]
    finish = requests["finish_s"].to_numpy().astype(np.float64)[done]
    many = output > 1
    tpot_all = np.zeros(output.size)
    tpot_all[many] = (e2el[many] - ttft[many]) / (output[many] - 1)
    req, gap, _ = emission_gaps(rounds, steps, requests)
    kept = done[req] if req.size else np.zeros(0, dtype=bool)
    itl = gap[kept]
    end = (steps["t_start"] + steps["duration_s"]).to_numpy() if steps.height else np.zeros(0)
    chunk_ends = np.zeros(0)
    if rounds.height:
        rr = rounds["request"].to_numpy().astype(np.int64)
        sel = done[rr] & (rounds["emitted"].to_numpy() > 0)
        chunk_ends = end[rounds["step"].to_numpy()[sel]]
    chunk_times = np.concatenate([arrival + ttft, chunk_ends])
    return {"ttft": ttft, "e2el": e2el, "tpot": tpot_all[many], "tpot_all": tpot_all, "itl": itl,
            "output": output, "prompt": prompt, "arrival": arrival, "finish": finish, "chunk_times": chunk_times}


def _stats(name: str, x: np.ndarray, percentiles: Sequence[float]) -> dict[str, float]:
    """vLLM's mean/median/std/pP of a sample in seconds, as `<stat>_<name>_ms` keys."""
    v = x if x.size else np.zeros(1)  # vLLM: np.mean(values or 0)
    out = {f"mean_{name}_ms": float(np.mean(v)) * 1000, f"median_{name}_ms": float(np.median(v)) * 1000,
           f"std_{name}_ms": float(np.std(v)) * 1000}
    for p in percentiles:
        out[f"p{percentile_word(p)}_{name}_ms"] = float(np.percentile(v, p)) * 1000
    return out


def peak_concurrency(start: np.ndarray, end: np.ndarray) -> int:
    """Most intervals [start, end) open at once (a departure at t closes before an arrival at t opens)."""
    if start.size == 0:
        return 0
    times = np.concatenate([start, end])
    delta = np.concatenate([np.ones(start.size, np.int64), -np.ones(end.size, np.int64)])
    order = np.lexsort((delta, times))  # by time, then -1 before +1
    return int(np.max(np.cumsum(delta[order])))


def peak_chunks_per_second(chunk_times: np.ndarray, start: np.ndarray, end: np.ndarray) -> float:
    """vLLM's max_output_tokens_per_s: most streamed chunks in one 1-second bucket from the first start."""
    if start.size == 0:
        return 0.0
    t0 = float(start.min())
    buckets = int(np.ceil(float(end.max()) - t0)) + 1
    b = np.floor(chunk_times - t0).astype(np.int64)
    b = b[(b >= 0) & (b < buckets)]
    return float(np.bincount(b, minlength=buckets).max()) if b.size else 0.0


def good_requests(samples: Mapping[str, np.ndarray], slos: Mapping[str, float]) -> np.ndarray:
    """[c] bool over completed requests: every SLO (ms) >= the request's value (vLLM's rule)."""
    ok = np.ones(samples["ttft"].size, dtype=bool)
    for key, column in (("ttft", "ttft"), ("tpot", "tpot_all"), ("e2el", "e2el")):
        if key in slos:
            ok &= slos[key] / 1000.0 >= samples[column]
    return ok


def _round_stats(rounds: pl.DataFrame, block: int) -> Any:
    """The rounds table as a simulator.stats.RoundStats (one domain)."""
    from simulator.stats import RoundStats

    st = RoundStats(block)
    if rounds.height:
        st.add(np.zeros(rounds.height, dtype=np.int64), rounds["verified"].to_numpy().astype(np.int64),
               rounds["accepted"].to_numpy().astype(np.int64),
               int(rounds["drafted"].to_numpy().astype(np.int64).sum()) if "drafted" in rounds.columns else 0)
    return st


def spec_decode_counters(rounds: pl.DataFrame, block: int) -> dict[str, Any]:
    """vLLM's speculative-decoding result keys from the rounds table (see the module docstring)."""
    return _round_stats(rounds, block).spec_counters()


def dspark_figures(requests: pl.DataFrame, rounds: pl.DataFrame, block: int) -> dict[str, Any]:
    """DSpark-specific round figures, under `dspark_` names (see the module docstring)."""
    return _round_stats(rounds, block).dspark_figures()


def bench_result(requests: pl.DataFrame, steps: pl.DataFrame, rounds: pl.DataFrame, *, block: int,
                 goodput: Mapping[str, float] | None = None,
                 percentiles: Sequence[float] = DEFAULT_PERCENTILES,
                 meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One run's `vllm bench serve` result dict (keys and definitions: the module docstring).

    Args:
        requests, steps, rounds: the simulator's tables (simulator.run.SimResult).
        block: drafted tokens per round g (positions of the per-position rates); 0 without drafting.
        goodput: SLOs in ms, {"ttft": ..., "tpot": ..., "e2el": ...} (any subset); None or empty:
            request_goodput is None, as in vLLM without --goodput.
        percentiles: the pP keys to write (vLLM's --metric-percentiles), each in (0, 100].
        meta: extra setup keys written first (label, model_id, ...).
    """
    slos = dict(goodput or {})
    for p in percentiles:
        if not 0 < float(p) <= 100:
            raise ValueError(f"percentiles must lie in (0, 100], got {p!r}")
    s = latency_samples(requests, steps, rounds)
    n = requests.height
    completed = int(s["ttft"].size)
    arrivals = requests["arrival_s"].to_numpy().astype(np.float64)
    t0 = float(arrivals.min()) if n else 0.0
    duration = (float(s["finish"].max()) - t0) if completed else 0.0
    dur = duration if duration > 0 else math.inf  # no completion: every rate is 0
    span = float(arrivals.max() - arrivals.min()) if n else 0.0
    total_in, total_out = int(s["prompt"].sum()), int(s["output"].sum())
    good = good_requests(s, slos)
    out: dict[str, Any] = {
        "backend": BACKEND,
        "num_prompts": n,
        "request_rate": (n / span) if span > 0 else "inf",
        "burstiness": None,
        "max_concurrency": None,
    }
    out.update(meta or {})
    out.update({
        "duration": duration,
        "completed": completed,
        "failed": n - completed,
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": completed / dur,
        "request_goodput": (int(good.sum()) / dur) if slos else None,
        "output_throughput": total_out / dur,
        "total_token_throughput": (total_in + total_out) / dur,
        "max_output_tokens_per_s": peak_chunks_per_second(s["chunk_times"], s["arrival"], s["finish"]),
        "max_concurrent_requests": peak_concurrency(s["arrival"], s["finish"]),
    })
    for name in METRICS:
        out.update(_stats(name, s[name], percentiles))
    return _finish(out, _round_stats(rounds, block), percentiles, slos, good, n)


def _finish(out: dict[str, Any], rounds: Any, percentiles: Sequence[float], slos: Mapping[str, float],
            good: np.ndarray, n: int) -> dict[str, Any]:
    """The keys both result builders end with: vLLM's speculative counters, DSpark's figures, the
    per-user speeds and the SLO attainment."""
    out.update(rounds.spec_counters())
    out.update(rounds.dspark_figures())
    for p in percentiles:
        ms = out[f"p{percentile_word(p)}_tpot_ms"]
        out[f"dspark_user_tok_s_1_over_p{percentile_word(p)}_tpot"] = 1000.0 / ms if ms > 0 else None
    out["dspark_goodput_slos_ms"] = slos or None
    out["dspark_slo_attainment"] = (int(good.sum()) / n if n else 0.0) if slos else None
    return out


def bench_result_streamed(requests: pl.DataFrame, rounds: Any, gaps: Any, *, block: int,
                          goodput: Mapping[str, float] | None = None,
                          percentiles: Sequence[float] = DEFAULT_PERCENTILES,
                          meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`bench_result` from the requests table and the run's streaming summaries (simulator.stats:
    RoundStats for the speculative counters, GapStats for ITL and the streamed chunks): the same keys.

    While the run has at most simulator.stats.EXACT_CAP chunks, ITL's statistics are numpy's on the
    pooled gaps, as `bench_result` computes them; past it, percentiles come from a histogram (within
    0.01 %), the mean and standard deviation from exact sums, and max_output_tokens_per_s counts
    chunks per whole second of the clock.
    """
    slos = dict(goodput or {})
    for p in percentiles:
        if not 0 < float(p) <= 100:
            raise ValueError(f"percentiles must lie in (0, 100], got {p!r}")
    empty = pl.DataFrame(schema={"step": pl.Int32, "request": pl.Int32, "emitted": pl.Int16})
    s = latency_samples(requests, pl.DataFrame(schema={"t_start": pl.Float64, "duration_s": pl.Float64}), empty)
    n = requests.height
    completed = int(s["ttft"].size)
    arrivals = requests["arrival_s"].to_numpy().astype(np.float64)
    t0 = float(arrivals.min()) if n else 0.0
    duration = (float(s["finish"].max()) - t0) if completed else 0.0
    dur = duration if duration > 0 else math.inf
    span = float(arrivals.max() - arrivals.min()) if n else 0.0
    total_in, total_out = int(s["prompt"].sum()), int(s["output"].sum())
    good = good_requests(s, slos)
    if gaps.exact:
        gap, _, chunk_t = gaps.samples(finished=True)
        peak = peak_chunks_per_second(np.concatenate([s["arrival"] + s["ttft"], chunk_t]), s["arrival"], s["finish"])
        itl_stats = _stats("itl", gap, percentiles)
    else:
        peak = _peak_per_second(gaps.chunk_sec, s["arrival"] + s["ttft"], s["arrival"], s["finish"])
        mean, std = gaps.moments(finished=True)
        itl_stats = {"mean_itl_ms": mean * 1000, "median_itl_ms": gaps.median(finished=True) * 1000,
                     "std_itl_ms": std * 1000}
        step_q, _ = gaps.percentiles(tuple(float(p) for p in percentiles), finished=True)
        for p, v in zip(percentiles, step_q):
            itl_stats[f"p{percentile_word(p)}_itl_ms"] = v * 1000
    out: dict[str, Any] = {"backend": BACKEND, "num_prompts": n, "request_rate": (n / span) if span > 0 else "inf",
                           "burstiness": None, "max_concurrency": None}
    out.update(meta or {})
    out.update({
        "duration": duration, "completed": completed, "failed": n - completed,
        "total_input_tokens": total_in, "total_output_tokens": total_out,
        "request_throughput": completed / dur,
        "request_goodput": (int(good.sum()) / dur) if slos else None,
        "output_throughput": total_out / dur, "total_token_throughput": (total_in + total_out) / dur,
        "max_output_tokens_per_s": peak,
        "max_concurrent_requests": peak_concurrency(s["arrival"], s["finish"]),
    })
    for name in METRICS:
        out.update(itl_stats if name == "itl" else _stats(name, s[name], percentiles))
    return _finish(out, rounds, percentiles, slos, good, n)


def _peak_per_second(round_chunks: np.ndarray, first_chunks: np.ndarray, start: np.ndarray, end: np.ndarray) -> float:
    """max_output_tokens_per_s from round chunks counted per whole second of the clock plus the first
    tokens (past simulator.stats.EXACT_CAP chunks)."""
    if start.size == 0:
        return 0.0
    top = int(np.ceil(float(end.max()))) + 1
    counts = np.zeros(max(top, round_chunks.size), dtype=np.int64)
    counts[:round_chunks.size] += round_chunks
    b = np.floor(first_chunks).astype(np.int64)
    b = b[(b >= 0) & (b < counts.size)]
    counts += np.bincount(b, minlength=counts.size)[:counts.size]
    lo = int(np.floor(float(start.min())))
    return float(counts[lo:top].max()) if top > lo else 0.0
