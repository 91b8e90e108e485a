"""Streaming summaries of a run's steps and rounds: what the summary needs, in memory that does not grow.

Covers: a day of traffic is ~10 million engine steps and ~30 million decoding rounds; keeping them
to summarise at the end would need gigabytes. The engine hands its steps and rounds over in batches
(simulator.records) and these accumulators keep only what the summary, result.json and the plots
read:

- `StepStats`: sums over steps (step time, running, decoding requests, batch tokens, verified
  drafts), the verify budget per number of decoding requests, and one-second bins for the time
  series plot;
- `RoundStats`: per domain, a histogram of (verified, accepted) per round. Every round figure is a
  function of it: conditional acceptance by position, vLLM's speculative-decoding counters, the
  mean accepted length and verify budget;
- `GapStats`: inter-token latencies (the gap between a request's consecutive streamed chunks). A
  gap counts only once its request has finished (vLLM counts completed requests), so gaps wait in a
  small pending buffer (the rounds of requests still running) until their request closes. Up to
  EXACT_CAP gaps are kept exactly, so the percentiles equal numpy's on the pooled sample; past it
  they fold into log-spaced histograms of relative width 1e-4 (percentiles within 0.01 %, mean and
  standard deviation still exact sums).

The same accumulators fed a whole table at once give the table-based figures (simulator.metrics,
simulator.vllm_metrics); tests check both ways agree.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

EXACT_CAP = 1 << 21  # gaps kept exactly (24 bytes each, ~50 MB); a one-hour trace has ~1.2 M
_LOG_LO, _LOG_HI, _PER_DECADE = -7.0, 5.0, 23026  # gap histogram: 1e-7 s .. 1e5 s, bins 1e-4 wide in ratio
_NBINS = int((_LOG_HI - _LOG_LO) * _PER_DECADE) + 2


def _grow(a: np.ndarray, n: int) -> np.ndarray:
    """`a` extended with zeros to at least n entries (doubling)."""
    if a.size >= n:
        return a
    out = np.zeros(max(n, 2 * a.size), dtype=a.dtype)
    out[:a.size] = a
    return out


class StepStats:
    """Sums over engine steps, fed as column batches (STEP_COLUMNS names, numpy arrays)."""

    def __init__(self) -> None:
        self.steps = 0
        self.decode_steps = 0
        self.sum_dur = 0.0
        self.sum_run_dur = 0.0  # running x step time
        self.sum_dec_dur = 0.0  # decoding requests x step time
        self.sum_dec = 0
        self.sum_ver = 0
        self.sum_batch = 0
        self.sum_verify_s = 0.0  # step time less the drafter's
        # per number of decoding requests n: steps, verified drafts, accepted drafts
        self.by_n = np.zeros((3, 129), dtype=np.int64)
        # one-second bins of t_start: step time, and running / waiting / KV free / budget weighted by it
        self.bins = np.zeros((6, 1024))

    def add(self, c: dict[str, np.ndarray]) -> None:
        """Add a batch of steps (columns t_start, duration_s, draft_s, decode_requests, running,
        waiting, kv_free_blocks, batch_tokens, verified, accepted)."""
        dur = c["duration_s"].astype(np.float64)
        if dur.size == 0:
            return
        dec = c["decode_requests"].astype(np.int64)
        ver = c["verified"].astype(np.int64)
        run = c["running"].astype(np.float64)
        self.steps += int(dur.size)
        self.decode_steps += int(np.count_nonzero(dec))
        self.sum_dur += float(dur.sum())
        self.sum_run_dur += float((run * dur).sum())
        self.sum_dec_dur += float((dec * dur).sum())
        self.sum_dec += int(dec.sum())
        self.sum_ver += int(ver.sum())
        self.sum_batch += int(c["batch_tokens"].astype(np.int64).sum())
        self.sum_verify_s += float((dur - c["draft_s"].astype(np.float64)).sum())
        top = int(dec.max()) + 1
        if top > self.by_n.shape[1]:
            grown = np.zeros((3, max(top, 2 * self.by_n.shape[1])), dtype=np.int64)
            grown[:, :self.by_n.shape[1]] = self.by_n
            self.by_n = grown
        self.by_n[0, :top] += np.bincount(dec, minlength=top)
        self.by_n[1, :top] += np.bincount(dec, weights=ver, minlength=top).astype(np.int64)
        self.by_n[2, :top] += np.bincount(dec, weights=c["accepted"].astype(np.int64), minlength=top).astype(np.int64)
        sec = np.maximum(c["t_start"].astype(np.float64), 0.0).astype(np.int64)
        top = int(sec.max()) + 1
        if top > self.bins.shape[1]:
            grown_s = np.zeros((6, max(top, 2 * self.bins.shape[1])))
            grown_s[:, :self.bins.shape[1]] = self.bins
            self.bins = grown_s
        budget = np.where(dec > 0, 1.0 + ver / np.maximum(dec, 1), 0.0)
        for k, w in enumerate((dur, run * dur, c["waiting"] * dur, c["kv_free_blocks"] * dur,
                               np.where(dec > 0, dur, 0.0), budget * dur)):
            self.bins[k, :top] += np.bincount(sec, weights=w, minlength=top)

    def summary(self) -> dict[str, Any]:
        """The step keys of the run summary (simulator.metrics.summarize)."""
        s: dict[str, Any] = {"steps": self.steps, "decode_steps": self.decode_steps}
        if self.steps:
            s["mean_step_s"] = self.sum_dur / self.steps
            s["mean_decode_requests"] = self.sum_dec / self.steps
            s["time_weighted_running"] = self.sum_run_dur / self.sum_dur if self.sum_dur > 0 else 0.0
            s["mean_batch_tokens"] = self.sum_batch / self.steps
            s["busy_s"] = self.sum_dur
        return s

    def sweep_means(self) -> dict[str, float | None]:
        """The step means a sweep row adds to the summary (simulator.sweep).

        mean_running: running requests weighted by step time (the concurrency a user sees);
        time_weighted_decode_requests: decoding requests, weighted by step time (the summary's
        mean_decode_requests is the plain mean over steps); mean_batch_tokens, mean_step_s and
        mean_verify_s (step time less drafting): per step; budget_per_request: verified tokens per
        decoding request per step, anchor included (the paper's Figure 8 budget).
        """
        keys = ("mean_running", "time_weighted_decode_requests", "mean_batch_tokens", "mean_step_s", "mean_verify_s",
                "budget_per_request")
        if self.steps == 0:
            return dict.fromkeys(keys)
        tw = self.sum_dur if self.sum_dur > 0 else None
        return {"mean_running": self.sum_run_dur / tw if tw else None,
                "time_weighted_decode_requests": self.sum_dec_dur / tw if tw else None,
                "mean_batch_tokens": self.sum_batch / self.steps, "mean_step_s": self.sum_dur / self.steps,
                "mean_verify_s": self.sum_verify_s / self.steps,
                "budget_per_request": (self.sum_ver + self.sum_dec) / self.sum_dec if self.sum_dec else None}

    def budget_table(self) -> pl.DataFrame:
        """Per number of decoding requests: steps, verify budget and accepted length per request
        (simulator.metrics.budget_by_running's table)."""
        n = np.arange(self.by_n.shape[1])
        keep = (self.by_n[0] > 0) & (n > 0)
        k, cnt, ver, acc = n[keep], self.by_n[0][keep], self.by_n[1][keep], self.by_n[2][keep]
        tot = (k * cnt).astype(np.float64)
        return pl.DataFrame({"decode_requests": k.astype(np.int32), "steps": cnt.astype(np.uint32),
                             "verify_budget": (ver + tot) / tot, "accepted_per_round": (acc + tot) / tot})

    def timeseries(self) -> pl.DataFrame:
        """One row per simulated second with steps: a steps-like table (t_start, duration_s and the
        step-time-weighted running, waiting, kv_free_blocks; decode_requests / verified giving the
        mean verify budget) for simulator.run_plots.plot_timeseries."""
        dur = self.bins[0]
        keep = np.flatnonzero(dur > 0)
        d = dur[keep]
        dec_d = self.bins[4][keep]
        budget = np.where(dec_d > 0, self.bins[5][keep] / np.maximum(dec_d, 1e-300), 0.0)
        return pl.DataFrame({"t_start": keep.astype(np.float64), "duration_s": d,
                             "running": self.bins[1][keep] / d, "waiting": self.bins[2][keep] / d,
                             "kv_free_blocks": self.bins[3][keep] / d,
                             "decode_requests": (dec_d > 0).astype(np.float64),
                             "verified": np.maximum(budget - 1.0, 0.0)})


class RoundStats:
    """Per domain code, a histogram [g + 1, g + 1] of (verified, accepted) over decoding rounds."""

    def __init__(self, block: int) -> None:
        self.g = int(block)
        self.hist: dict[int, np.ndarray] = {}
        self.drafted = 0

    def add(self, domain: np.ndarray, verified: np.ndarray, accepted: np.ndarray, drafted: int) -> None:
        """Rounds [r]: domain code, verified and accepted drafts; `drafted` their drafted tokens in all."""
        self.drafted += int(drafted)
        if verified.size == 0:
            return
        g1 = self.g + 1
        key = (domain.astype(np.int64) * g1 + verified.astype(np.int64)) * g1 + accepted.astype(np.int64)
        codes = np.unique(domain)
        counts = np.bincount(key, minlength=(int(codes.max()) + 1) * g1 * g1).reshape(-1, g1, g1)
        for d in codes.tolist():
            h = self.hist.get(d)
            self.hist[d] = counts[d] if h is None else h + counts[d]

    def pooled(self) -> np.ndarray:
        """The histogram over every domain."""
        g1 = self.g + 1
        return sum(self.hist.values(), np.zeros((g1, g1), dtype=np.int64))

    @staticmethod
    def _position(h: np.ndarray, g: int) -> tuple[np.ndarray, np.ndarray]:
        """trials [g], accepted [g]: trials(k) = rounds with verified >= k and accepted >= k - 1."""
        tail_a = np.cumsum(h[:, ::-1], axis=1)[:, ::-1]  # [v, a]: rounds with this v and accepted >= a
        ver_tail = np.cumsum(tail_a[::-1], axis=0)[::-1]  # [v, a]: verified >= v and accepted >= a
        k = np.arange(1, g + 1)
        return ver_tail[k, k - 1], ver_tail[0, k]

    def acceptance_table(self, names: list[str] | None) -> pl.DataFrame:
        """acceptance_by_position's table: per domain (names[code], or "all" pooled when None) and position."""
        g = self.g
        if g == 0 or not self.hist or self.pooled().sum() == 0:
            return pl.DataFrame(schema={"domain": pl.Utf8, "position": pl.Int64, "trials": pl.Int64,
                                        "accepted": pl.Int64, "acceptance": pl.Float64})
        groups = ([("all", self.pooled())] if names is None else
                  sorted(((names[d], h) for d, h in self.hist.items() if h.sum()), key=lambda x: x[0]))
        frames = []
        for name, h in groups:
            trials, acc = self._position(h, g)
            rate = np.where(trials > 0, acc / np.maximum(trials, 1), np.nan)
            frames.append(pl.DataFrame({"domain": [name] * g, "position": np.arange(1, g + 1), "trials": trials,
                                        "accepted": acc, "acceptance": rate}))
        return pl.concat(frames)

    def unconditional(self, code: int) -> np.ndarray | None:
        """vLLM's per-position rate [g] of one domain: drafts with >= k accepted / drafts (None: no drafts)."""
        h = self.hist.get(code)
        if h is None or self.g == 0:
            return None
        drafts = int(h[1:].sum())
        if drafts == 0:
            return None
        tail = np.cumsum(h[1:].sum(axis=0)[::-1])[::-1]
        return tail[1:self.g + 1] / drafts

    def summary(self) -> dict[str, Any]:
        """The round keys of the run summary (simulator.metrics.summarize)."""
        h = self.pooled() if self.hist else np.zeros((self.g + 1, self.g + 1), dtype=np.int64)
        n = int(h.sum())
        s: dict[str, Any] = {"rounds": n}
        if n:
            v = np.arange(self.g + 1)
            sv, sa = int((h.sum(axis=1) * v).sum()), int((h.sum(axis=0) * v).sum())
            s["mean_accepted_per_round"] = (n + sa) / n  # = mean(accepted + 1): integer sums are exact
            s["mean_accepted_drafts"] = sa / n
            s["mean_verify_budget"] = (n + sv) / n
            s["mean_verify_budget_excl"] = sv / n
            s["draft_acceptance_rate"] = sa / sv if sv else None
        else:
            for k in ("mean_accepted_per_round", "mean_accepted_drafts", "mean_verify_budget",
                      "mean_verify_budget_excl", "draft_acceptance_rate"):
                s[k] = None
        if self.g and n:
            s["acceptance_by_position"] = [None if not np.isfinite(x) else round(float(x), 4)
                                           for x in self.acceptance_table(None)["acceptance"].to_numpy()]
        else:
            s["acceptance_by_position"] = []
        return s

    def spec_counters(self) -> dict[str, Any]:
        """vLLM's speculative-decoding result keys (simulator.vllm_metrics.spec_decode_counters)."""
        if self.g == 0 or not self.hist:
            return {}
        h = self.pooled()
        v = np.arange(self.g + 1)
        drafts = int(h[1:].sum())
        draft_tokens = int((h.sum(axis=1) * v).sum())
        accepted_tokens = int((h[1:].sum(axis=0) * v).sum())
        if draft_tokens == 0:
            return {}
        tail = np.cumsum(h[1:].sum(axis=0)[::-1])[::-1]
        return {
            "spec_decode_acceptance_rate": accepted_tokens / draft_tokens * 100,
            "spec_decode_acceptance_length": 1 + accepted_tokens / drafts,
            "spec_decode_num_drafts": drafts,
            "spec_decode_draft_tokens": draft_tokens,
            "spec_decode_accepted_tokens": accepted_tokens,
            "spec_decode_per_position_acceptance_rates": [int(tail[k]) / drafts for k in range(1, self.g + 1)],
        }

    def dspark_figures(self) -> dict[str, Any]:
        """DSpark's round figures (simulator.vllm_metrics.dspark_figures)."""
        h = self.pooled() if self.hist else np.zeros((self.g + 1, self.g + 1), dtype=np.int64)
        n = int(h.sum())
        out: dict[str, Any] = {"dspark_rounds": n}
        if n == 0:
            out.update(dspark_drafted_tokens=0, dspark_verify_budget_mean=None, dspark_tokens_per_round=None,
                       dspark_conditional_acceptance_by_position=[])
            return out
        v = np.arange(self.g + 1)
        out["dspark_drafted_tokens"] = self.drafted
        out["dspark_verify_budget_mean"] = (n + int((h.sum(axis=1) * v).sum())) / n
        out["dspark_tokens_per_round"] = (n + int((h.sum(axis=0) * v).sum())) / n
        cond = self.acceptance_table(None)["acceptance"].to_numpy() if self.g else np.zeros(0)
        out["dspark_conditional_acceptance_by_position"] = [float(x) if np.isfinite(x) else None for x in cond]
        return out


def _bin(x: np.ndarray) -> np.ndarray:
    """Log-spaced histogram bin of positive seconds (bin 0: below 1e-7 s, the last: above 1e5 s)."""
    with np.errstate(divide="ignore"):
        pos = (np.log10(np.maximum(x, 1e-300)) - _LOG_LO) * _PER_DECADE
    return np.clip(pos, -1, _NBINS - 2).astype(np.int64) + 1


def _bin_value(i: np.ndarray | int) -> np.ndarray:
    """The geometric middle of bins `i` (seconds)."""
    return 10.0 ** (_LOG_LO + (np.asarray(i, dtype=np.float64) - 0.5) / _PER_DECADE)


class GapStats:
    """Inter-token gaps: exact up to EXACT_CAP, then log histograms; over every request (the summary's
    ITL) and over finished requests only (vLLM's, in result.json).

    `add(req, t, gap, e)` stores each round's chunk (its end time t, the gap since the request's
    previous emission, tokens e) as pending; `settle(status)` moves the pending chunks of requests
    that closed into the pool, marked by whether their request finished.
    """

    def __init__(self, finished_code: int) -> None:
        self.done = finished_code
        self._pend: list[tuple[np.ndarray, ...]] = []
        self._exact: list[tuple[np.ndarray, ...]] = []  # (gap, e, t, finished)
        self.n = np.zeros(2, dtype=np.int64)  # [all, finished]
        self.sum = np.zeros(2)
        self.sumsq = np.zeros(2)
        self.hist_step: np.ndarray | None = None  # [2, bins] gap counts
        self.hist_token: np.ndarray | None = None  # [2, bins] gap / e weighted by e
        self.chunk_sec = np.zeros(1024, dtype=np.int64)  # finished requests' chunks per whole second

    def add(self, req: np.ndarray, t: np.ndarray, gap: np.ndarray, e: np.ndarray) -> None:
        keep = (e > 0) & np.isfinite(gap)
        if keep.all():
            self._pend.append((req, t, gap, e))
        elif keep.any():
            self._pend.append((req[keep], t[keep], gap[keep], e[keep]))

    def settle(self, status: np.ndarray, final: bool = False) -> None:
        """Pool the pending chunks of closed requests (status >= the finished code; all when `final`)."""
        if not self._pend:
            return
        req, t, gap, e = (np.concatenate(x) for x in zip(*self._pend))
        st = status[req]
        closed = np.ones(req.size, dtype=bool) if final else st >= self.done
        later = ~closed
        self._pend = [(req[later], t[later], gap[later], e[later])] if later.any() else []
        if closed.any():
            self._pool(gap[closed], e[closed].astype(np.float64), t[closed], st[closed] == self.done)

    def _pool(self, gap: np.ndarray, e: np.ndarray, t: np.ndarray, ok: np.ndarray) -> None:
        for k, sel in ((0, slice(None)), (1, ok)):
            g = gap[sel]
            self.n[k] += int(g.size)
            self.sum[k] += float(g.sum())
            self.sumsq[k] += float((g * g).sum())
        sec = np.maximum(t[ok], 0.0).astype(np.int64)
        if sec.size:
            self.chunk_sec = _grow(self.chunk_sec, int(sec.max()) + 1)
            np.add.at(self.chunk_sec, sec, 1)
        if self.hist_step is None:
            self._exact.append((gap, e, t, ok))
            if self.n[0] > EXACT_CAP:
                g, w, _, f = (np.concatenate(x) for x in zip(*self._exact))
                self._exact = []
                self.hist_step = np.zeros((2, _NBINS), dtype=np.int64)
                self.hist_token = np.zeros((2, _NBINS))
                self._fold(g, w, f)
        else:
            self._fold(gap, e, ok)

    def _fold(self, gap: np.ndarray, e: np.ndarray, ok: np.ndarray) -> None:
        assert self.hist_step is not None and self.hist_token is not None
        b_step, b_token = _bin(gap), _bin(gap / e)
        for k, sel in ((0, slice(None)), (1, ok)):
            self.hist_step[k] += np.bincount(b_step[sel], minlength=_NBINS)
            self.hist_token[k] += np.bincount(b_token[sel], weights=e[sel], minlength=_NBINS)

    @property
    def exact(self) -> bool:
        """Whether every gap is still kept (the percentiles are numpy's on the pooled sample)."""
        return self.hist_step is None

    def samples(self, finished: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(gap, tokens, chunk end time) of the pooled chunks (of finished requests only when
        `finished`); only while `exact`."""
        if not self._exact:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        g, e, t, ok = (np.concatenate(x) for x in zip(*self._exact))
        return (g[ok], e[ok], t[ok]) if finished else (g, e, t)

    def percentiles(self, qs: tuple[float, ...], finished: bool = False) -> tuple[list[float], list[float | None]]:
        """(per-step gap percentiles, per-token percentiles) qs (0-100); exact while `exact`."""
        from simulator.metrics import weighted_percentiles

        if self.exact:
            gap, e, _ = self.samples(finished)
            if gap.size == 0:
                return [], []
            return [float(x) for x in np.percentile(gap, qs)], weighted_percentiles(gap / e, e, qs)
        assert self.hist_step is not None and self.hist_token is not None
        k = int(finished)
        if self.n[k] == 0:
            return [], []
        return ([float(x) for x in _hist_percentiles(self.hist_step[k].astype(np.float64), qs, linear=True)],
                [float(x) for x in _hist_percentiles(self.hist_token[k], qs, linear=False)])

    def moments(self, finished: bool = False) -> tuple[float, float]:
        """(mean, population standard deviation) of the pooled gaps, s."""
        k = int(finished)
        if self.n[k] == 0:
            return 0.0, 0.0
        if self.exact:
            gap = self.samples(finished)[0]
            return float(np.mean(gap)), float(np.std(gap))
        mean = self.sum[k] / self.n[k]
        return float(mean), math.sqrt(max(self.sumsq[k] / self.n[k] - mean * mean, 0.0))

    def median(self, finished: bool = False) -> float:
        q, _ = self.percentiles((50.0,), finished)
        return q[0] if q else 0.0


def _hist_percentiles(counts: np.ndarray, qs: tuple[float, ...], linear: bool) -> list[float]:
    """Percentiles of a binned sample: the bin holding rank q (linear: numpy's (n - 1) q / 100 rank;
    else the inverted CDF of the weights)."""
    cw = np.cumsum(counts)
    total = cw[-1]
    out = []
    for q in qs:
        rank = (total - 1) * q / 100.0 + 1 if linear else q / 100.0 * total
        i = int(np.searchsorted(cw, rank, side="left"))
        last = int(counts.size) - 1
        out.append(float(_bin_value(i if i < last else last)))
    return out
