"""The serving engine as SimPy processes: continuous batching with confidence-scheduled speculation.

Covers: one GPU replica serving a trace, vLLM-style, with speculative decoding in every decode step.

Scenario. An arrival process releases requests at their trace times into a FCFS waiting queue. One
engine process runs steps back to back while there is work (and sleeps until the next arrival when
there is none). Each step:

1. reserve KV for every decoding request: its anchor plus all drafted tokens (the lookahead); when
   blocks run out, preempt the most recently admitted requests (recompute, counted);
2. admit waiting requests into free slots (at most `max_running` resident) while their whole
   prefill fits in KV above the watermark (none when this step preempted);
3. chunked prefill: up to `prefill_chunk` prompt tokens, oldest admission first;
4. decode: draft for every decoding request, the policy picks verify lengths (the step's prefill
   tokens are `extra_tokens`), the backend verifies;
5. the clock advances by the profiled step time at the batch's mean context for
   B = prefill tokens + sum(1 + l_i) (or n * (1 + max l_i) with `verify_layout="padded"`), plus the drafter's latency for (decoding requests, block).
   The policy optimises against that whole step time (verify time at B plus the drafter's time,
   a constant in B): the paper's SPS(B) counts every step the engine takes. Prefill tokens ride in
   the same pass (the verify curve at B = P, context P / 2 is within 8 % of the bundled profile's
   prefill rows for P = 512..2048);
6. results land at the step's end: emitted tokens (clipped at the trace's output length), first
   tokens of finished prefills, finished requests leave and free their blocks.

Running-request state is numpy arrays indexed by slot; a step costs a fixed number of vectorised
calls whatever the batch size. Between arrivals and completions the batch does not change, and the
engine plans up to MAX_PEEK such decode steps at once (`_epoch_plan`: the same decisions, in one
vectorised pass, then one SimPy timeout to the last step's end); other steps take one timeout each.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from simulator.backend import Backend, Requests
from simulator.config import SimConfig, parse_policy
from simulator.fastpath import STATELESS, batched_lengths, dspark_lengths
from simulator.kv import KVBlocks, blocks_for, lifo_victims
from simulator.policies import Policy
from simulator.predrawn import MAX_PEEK
from sparksched.curve import ThroughputCurve

# request status codes (SimResult.requests "status" column uses the names)
PENDING, WAITING, RUNNING, DONE, REJECTED, UNFINISHED = 0, 1, 2, 3, 4, 5
STATUS_NAMES = ("pending", "waiting", "running", "finished", "rejected", "unfinished")
CONTEXT_BUCKET = 256  # tokens: the step-time curve is evaluated at the mean context bucketed by this


@dataclass(frozen=True)
class Workload:
    """The trace as arrays (all [N], arrival-sorted; times in seconds, lengths in tokens)."""

    ids: list[str]
    arrival: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    domains: list[str]
    prompts: list[str | None] | None = None


STEP_COLUMNS = {  # per-step table: column -> dtype
    "t_start": np.float64, "duration_s": np.float64, "draft_s": np.float64, "decode_requests": np.int32,
    "prefill_requests": np.int32, "prefill_tokens": np.int32, "batch_tokens": np.int32,
    "verified": np.int32, "accepted": np.int32, "emitted": np.int32, "mean_context": np.float32,
    "running": np.int32, "waiting": np.int32, "kv_free_blocks": np.int32, "preempted": np.int32}
STEP_VARYING = ("t_start", "duration_s", "batch_tokens", "verified", "accepted", "emitted", "mean_context",
                "waiting", "kv_free_blocks")  # per-step values within a chunk of steps
STEP_CONSTANT = ("draft_s", "decode_requests", "prefill_requests", "prefill_tokens", "running", "preempted")


class _Record:
    """Step and round rows, kept as one chunk per step or epoch and materialised at the end.

    A chunk of `steps` steps over the same `n` decoding requests adds per-step arrays (STEP_VARYING),
    per-chunk constants (STEP_CONSTANT, the last step may override `running`/`kv_free_blocks`),
    and rounds as [steps, n] arrays (verified, accepted, emitted) with the requests [n].
    """

    def __init__(self) -> None:
        self.varying: dict[str, list] = {k: [] for k in STEP_VARYING}
        self.constant: dict[str, list] = {k: [] for k in STEP_CONSTANT}
        self.counts: list[int] = []
        self.scalar: list[bool] = []
        self.n_steps = 0
        self.last_running: list[tuple[int, int, int]] = []  # (step index, running, kv free) overrides
        self.r_req: list[np.ndarray] = []
        self.r_drafted: list[int | np.ndarray] = []
        self.r_ver: list[np.ndarray] = []
        self.r_acc: list[np.ndarray] = []
        self.r_emit: list[np.ndarray] = []
        self.r_first: list[int] = []  # first step index of each rounds chunk
        self.r_steps: list[int] = []

    def add_steps(self, steps: int, varying: tuple, constant: tuple, scalar: bool = False) -> int:
        """Append `steps` steps (varying values as [steps] arrays, or scalars when `scalar`); return
        the index of the first."""
        self.scalar.append(scalar)
        for k, v in zip(STEP_VARYING, varying):
            self.varying[k].append(v)
        for k, v in zip(STEP_CONSTANT, constant):
            self.constant[k].append(v)
        self.counts.append(steps)
        first = self.n_steps
        self.n_steps += steps
        return first

    def add_rounds(self, first_step: int, req: np.ndarray, verified: np.ndarray, accepted: np.ndarray,
                   emitted: np.ndarray, drafted: int | np.ndarray) -> None:
        """Rounds of steps first_step.. over requests `req` [n]; value arrays [steps, n]; drafted per
        request [n] (or one int for all), the same in every step of the chunk."""
        self.r_drafted.append(drafted)
        self.r_req.append(req)
        self.r_ver.append(verified)
        self.r_acc.append(accepted)
        self.r_emit.append(emitted)
        self.r_first.append(first_step)
        self.r_steps.append(verified.shape[0])

    def step_columns(self) -> dict[str, np.ndarray]:
        counts = np.asarray(self.counts, dtype=np.int64)
        total = int(counts.sum())
        starts = np.cumsum(counts) - counts
        scalar = np.asarray(self.scalar, dtype=bool)
        single = np.flatnonzero(scalar)  # chunks of one step given as scalars
        multi = np.flatnonzero(~scalar)
        sizes = counts[multi]
        multi_idx = np.repeat(starts[multi], sizes) + (np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes))
        out: dict[str, np.ndarray] = {}
        for k, dtype in STEP_COLUMNS.items():
            if k in self.varying:
                parts = self.varying[k]
                col = np.zeros(total, dtype=dtype)
                if single.size:
                    col[starts[single]] = np.asarray([parts[i] for i in single.tolist()], dtype=np.float64)
                if multi.size:
                    col[multi_idx] = np.concatenate([parts[i] for i in multi.tolist()])
                out[k] = col
            else:
                out[k] = np.repeat(np.asarray(self.constant[k], dtype=dtype), counts)
        for i, running, free in self.last_running:
            out["running"][i] = running
            out["kv_free_blocks"][i] = free
        return out

    def _drafted_column(self, sizes: np.ndarray, ns: np.ndarray) -> np.ndarray:
        """drafted per round row: chunks with one int repeat it; per-request arrays tile over steps."""
        uniform = np.asarray([isinstance(d, (int, np.integer)) for d in self.r_drafted], dtype=bool)
        out = np.repeat(np.asarray([d if u else 0 for d, u in zip(self.r_drafted, uniform)], dtype=np.int64),
                        sizes)
        if not uniform.all():
            starts = np.cumsum(sizes) - sizes
            for c in np.flatnonzero(~uniform).tolist():
                out[starts[c]:starts[c] + sizes[c]] = np.tile(self.r_drafted[c], int(sizes[c] // ns[c]))
        return out.astype(np.int16)

    def round_columns(self) -> dict[str, np.ndarray]:
        if not self.r_req:
            return {"step": np.zeros(0, np.int32), "request": np.zeros(0, np.int32),
                    "drafted": np.zeros(0, np.int16), "verified": np.zeros(0, np.int16),
                    "accepted": np.zeros(0, np.int16), "emitted": np.zeros(0, np.int16)}
        ns = np.asarray([r.size for r in self.r_req], dtype=np.int64)
        steps = np.asarray(self.r_steps, dtype=np.int64)
        sizes = ns * steps
        starts = np.cumsum(sizes) - sizes
        j = np.arange(int(sizes.sum())) - np.repeat(starts, sizes)  # position inside its chunk
        n_rep = np.repeat(ns, sizes)
        req_cat = np.concatenate(self.r_req)
        req_off = np.repeat(np.cumsum(ns) - ns, sizes)
        return {
            "step": (np.repeat(np.asarray(self.r_first, dtype=np.int64), sizes) + j // n_rep).astype(np.int32),
            "request": req_cat[req_off + j % n_rep].astype(np.int32),
            "drafted": self._drafted_column(sizes, ns),
            "verified": np.concatenate([x.ravel() for x in self.r_ver]).astype(np.int16),
            "accepted": np.concatenate([x.ravel() for x in self.r_acc]).astype(np.int16),
            "emitted": np.concatenate([x.ravel() for x in self.r_emit]).astype(np.int16),
        }


class StepClock:
    """Step time (s) by batch tokens at a context bucket, from cached lookup tables."""

    def __init__(self, curve: ThroughputCurve, max_tokens: int, draft_latency: np.ndarray) -> None:
        self.curve = curve if curve.extrapolate != "error" else ThroughputCurve(
            curve.tokens, curve.seconds, curve.contexts, "linear", curve.meta)
        self.max_tokens = int(max_tokens)
        self.draft_latency = draft_latency  # [max_running + 1] seconds by decoding requests
        self._cache: dict[int, tuple[ThroughputCurve, np.ndarray]] = {}

    def at(self, context: float) -> tuple[ThroughputCurve, np.ndarray]:
        """(1-D curve, table [max_tokens + 1]) at the bucketed context."""
        key = int(context) // CONTEXT_BUCKET
        hit = self._cache.get(key)
        if hit is None:
            c1 = self.curve.at_context(key * CONTEXT_BUCKET + CONTEXT_BUCKET / 2)
            hit = (c1, c1.table(self.max_tokens))
            self._cache[key] = hit
        return hit


class Engine:
    """One replica: SimPy arrival and engine processes over slot-indexed numpy state."""

    def __init__(self, env: simpy.Environment, work: Workload, config: SimConfig, backend: Backend,
                 policy: Policy, clock: StepClock, kv_blocks: int, progress=None) -> None:
        self.env, self.work, self.cfg = env, work, config
        self.backend, self.policy, self.clock = backend, policy, clock
        self.g = config.draft_block
        n, s = len(work.ids), config.max_running
        self.n_requests = n
        # per request
        self.status = np.zeros(n, dtype=np.int8)
        self.reason: dict[int, str] = {}
        self.emitted = np.zeros(n, dtype=np.int64)
        self.first_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.admit_s = np.full(n, np.nan)
        self.preemptions = np.zeros(n, dtype=np.int64)
        # per slot
        self.slot_req = np.full(s, -1, dtype=np.int64)
        self.slot_prefill = np.zeros(s, dtype=np.int64)  # tokens still to prefill
        self.slot_ctx = np.zeros(s, dtype=np.int64)  # prompt + emitted tokens (KV incl. the anchor)
        self.slot_seq = np.zeros(s, dtype=np.int64)  # admission order (preemption: newest first)
        self.free_slots = list(range(s - 1, -1, -1))
        self.kv = KVBlocks(kv_blocks, config.kv_block_size, config.kv_watermark, s)
        self.waiting: deque[int] = deque()
        self.closed = 0  # finished + rejected + unfinished
        self._seq = 0
        self._wake: simpy.Event | None = None
        self.progress = progress
        kind, param = parse_policy(config.policy)
        # stateless policies run through the batched form (bit-equal to the library, simulator.fastpath)
        self.batched = (kind, param) if kind in STATELESS else None
        # backends that can hand out future rounds (simulator.predrawn) enable the batched fast path
        self._ahead: Any = backend if hasattr(backend, "peek") and hasattr(backend, "advance") else None
        self.fast = (self.batched is not None and config.clock == "profile"
                     and (self.g == 0 or self._ahead is not None))
        self.next_arrival = 0  # index of the next request the arrival process will release
        self._t_hint = MAX_PEEK
        self.horizon = config.horizon_s
        self.padded = config.verify_layout == "padded"  # the clock charges n * (1 + max l_i) verify tokens
        self.record = _Record()

    # ---------------------------------------------------------------- processes
    def arrivals(self):
        """Release requests into the waiting queue at their (scaled) arrival times."""
        arrival = self.work.arrival
        i, n = 0, self.n_requests
        while i < n:
            t = arrival[i]
            if t > self.env.now:
                yield self.env.timeout(t - self.env.now)
            j = i
            while j < n and arrival[j] <= self.env.now:
                self.status[j] = WAITING
                self.waiting.append(j)
                j += 1
            i = j
            self.next_arrival = i
            if self._wake is not None and not self._wake.triggered:
                self._wake.succeed()

    def run(self):
        """The engine loop: one SimPy timeout per step (or per epoch of steps); sleeps when idle."""
        while self.closed < self.n_requests:
            if not self.waiting and not (self.slot_req >= 0).any():
                self._wake = self.env.event()
                yield self._wake
                self._wake = None
                continue
            plan = self._epoch_plan() if self.fast else None
            if plan is not None:  # one event for the whole epoch, landing exactly on its last step's end
                yield self.env.timeout(_exact_delay(self.env.now, plan["end"]))
                self._finish_epoch(plan)
                continue
            dt = self._step()
            if dt is None:  # nothing could run (all waiting requests were rejected)
                continue
            yield self.env.timeout(dt)
            self._finish_step()

    # ---------------------------------------------------------------- one step
    def _step(self) -> float | None:
        now = self.env.now
        g, kv, cfg = self.g, self.kv, self.cfg
        occupied = self.slot_req >= 0
        dec = np.flatnonzero(occupied & (self.slot_prefill == 0))
        preempted = 0
        if dec.size:
            want = self.slot_ctx[dec] + g + 1  # anchor + drafts, and the bonus token it may emit
            growth = kv.growth(dec, want)
            if int(growth.sum()) > kv.free:
                preempted = self._preempt(dec, growth)
                occupied = self.slot_req >= 0
                dec = np.flatnonzero(occupied & (self.slot_prefill == 0))
                want = self.slot_ctx[dec] + g + 1
            if dec.size:
                kv.resize(dec, np.maximum(want, kv.held[dec] * kv.block_size))
        if not preempted and self.waiting and self.free_slots:
            self._admit(now)
        # chunked prefill, oldest admission first
        pre = np.flatnonzero(self.slot_prefill > 0)
        p_tokens = 0
        if pre.size:
            pre = pre[np.argsort(self.slot_seq[pre], kind="stable")]
            left = self.slot_prefill[pre]
            before = np.cumsum(left) - left
            chunk = np.clip(cfg.prefill_chunk - before, 0, left)
            keep = chunk > 0
            pre, chunk = pre[keep], chunk[keep]
            p_tokens = int(chunk.sum())
        n = dec.size
        if n == 0 and p_tokens == 0:
            return None
        draft_s = 0.0
        if n:
            ctx = float(self.slot_ctx[dec].mean())
        else:
            ctx = float(self.slot_ctx[pre].mean())
        curve, table = self.clock.at(ctx)
        if n and g > 0:
            draft = self.backend.draft(dec, g)
            draft_s = float(self.clock.draft_latency[n])
            if self.batched is not None:
                lengths = batched_lengths(self.batched[0], self.batched[1], draft.conf[None], draft.drafted,
                                          table + draft_s, p_tokens)[0]
            else:
                lengths = self.policy.lengths(dec, draft.conf, draft.drafted, curve, p_tokens, draft_s)
            verdict = self.backend.verify(dec, lengths)
            acc = verdict.accepted
            drafted = draft.drafted
            if cfg.clock == "measured" and draft.seconds is not None and verdict.seconds is not None:
                measured = draft.seconds + verdict.seconds
            else:
                measured = None
        else:
            lengths = np.zeros(n, dtype=np.int64)
            acc = lengths
            drafted = lengths
            measured = None
        batch = p_tokens + (n * (1 + int(lengths.max())) if self.padded and n else n + int(lengths.sum()))
        if batch > self.clock.max_tokens:
            raise RuntimeError(f"batch of {batch} tokens exceeds the step-time table ({self.clock.max_tokens})")
        if measured is not None:
            dt = measured + float(table[batch] - table[batch - p_tokens]) if p_tokens else measured
        else:
            dt = float(table[batch]) + draft_s
        self._pending = (now, dt, draft_s, dec, lengths, acc, drafted, pre, chunk if pre.size else None,
                         p_tokens, ctx, preempted, batch)
        return dt

    def _finish_step(self) -> None:
        (t0, dt, draft_s, dec, lengths, acc, drafted, pre, chunk, p_tokens, ctx,
         preempted, batch) = self._pending
        now = self.env.now
        done_slots = []
        emitted_total = 0
        step_index = self.record.n_steps
        if dec.size:
            req = self.slot_req[dec]
            if self.g > 0:
                self.policy.observe(dec, lengths, acc)
            e = np.minimum(acc + 1, self.work.output[req] - self.emitted[req])
            self.emitted[req] += e
            self.slot_ctx[dec] += e
            self.kv.resize(dec, self.slot_ctx[dec])
            emitted_total = int(e.sum())
            same = drafted.size and int(drafted.min()) == int(drafted.max())
            self.record.add_rounds(step_index, req, lengths[None, :], acc[None, :], e[None, :],
                                   int(drafted[0]) if same else drafted)
            fin = self.emitted[req] >= self.work.output[req]
            if fin.any():
                done_slots.append(dec[fin])
        if pre.size and chunk is not None:
            self.slot_prefill[pre] -= chunk
            ready = pre[self.slot_prefill[pre] == 0]
            if ready.size:
                req = self.slot_req[ready]
                self.emitted[req] += 1
                emitted_total += int(ready.size)
                self.slot_ctx[ready] += 1
                first = np.isnan(self.first_s[req])
                self.first_s[req[first]] = now
                fin = self.emitted[req] >= self.work.output[req]
                if fin.any():
                    done_slots.append(ready[fin])
        if done_slots:
            slots = np.concatenate(done_slots)
            req = self.slot_req[slots]
            self.finish_s[req] = now
            self.status[req] = DONE
            self._release(slots)
            self.closed += int(slots.size)
        verified = int(lengths.sum())
        # STEP_VARYING: t_start, duration_s, batch_tokens, verified, accepted, emitted, mean_context,
        # waiting, kv_free_blocks; STEP_CONSTANT: draft_s, decode_requests, prefill_requests,
        # prefill_tokens, running, preempted
        i = self.record.add_steps(
            1, (t0, dt, batch, verified, int(acc.sum()), emitted_total, ctx,
                len(self.waiting), self.kv.free),
            (draft_s, dec.size, pre.size, p_tokens, self.cfg.max_running - len(self.free_slots), preempted),
            scalar=True)
        if self.progress is not None and (i & 255) == 0:
            self.progress(now)

    # ---------------------------------------------------------------- fast path: many steps at once
    def _epoch_plan(self) -> dict | None:
        """Plan up to MAX_PEEK decode-only steps of an unchanging batch, or None (take a normal step).

        Exactly what the same number of `_step` calls would do: it stops before any step in which a
        request could be admitted (an arrival into an empty queue with a free slot), the KV lookahead
        would not fit (preemption), or the mean context changes step-time bucket; and after the first
        step in which a request finishes.
        """
        kv, w = self.kv, self.work
        if self.waiting and self.free_slots:
            r = self.waiting[0]
            tokens = int(w.prompt[r] + self.emitted[r]) + 1
            if not kv.admissible(tokens) or kv.can_admit(tokens):
                return None
        occ = self.slot_req >= 0
        if self.slot_prefill[occ].any():
            return None
        dec = np.flatnonzero(occ)
        n = dec.size
        if n == 0:
            return None
        g, t_max = self.g, self._t_hint  # plan about twice the last epoch's length (<= MAX_PEEK)
        ctx0 = self.slot_ctx[dec]
        mean0 = int(ctx0.sum()) / n
        curve, table = self.clock.at(mean0)
        draft_s = float(self.clock.draft_latency[n]) if g > 0 else 0.0
        admit_on_arrival = bool(self.free_slots) and not self.waiting and self.next_arrival < self.n_requests
        if admit_on_arrival:  # every step takes >= table[n]: no point planning past the next arrival
            gap = (w.arrival[self.next_arrival] - self.env.now) / (float(table[n]) + draft_s)
            t_max = int(min(t_max, max(gap, 0.0) + 2))
        kind, param = self.batched or ("none", None)
        if g > 0:
            conf, lead = self._ahead.peek(dec, t_max, g)
            t_max = conf.shape[0]
            lengths = (dspark_lengths(conf, None, table + draft_s, 0) if kind == "dspark" else
                       batched_lengths(kind, param, conf, np.full(n, g, dtype=np.int64), table + draft_s, 0))
            acc = np.minimum(lead, lengths)
        else:
            lengths = acc = np.zeros((t_max, n), dtype=np.int64)
        req = self.slot_req[dec]
        rem = w.output[req] - self.emitted[req]
        e = acc + 1
        cum = np.cumsum(e, axis=0)  # [T, n] emitted through each step
        before = cum - e  # emitted before each step
        stop = t_max
        fin = (cum >= rem[None, :]).any(axis=1)
        if fin.any():
            stop = int(fin.argmax()) + 1
        ctx = ctx0[None, :] + before  # [T, n] context at each step's start
        mean_ctx = ctx.sum(axis=1) / n
        if self.clock.curve.has_context:
            same = (mean_ctx.astype(np.int64) // CONTEXT_BUCKET) == int(mean0) // CONTEXT_BUCKET
            if not same.all():
                stop = min(stop, int(same.argmin()))
        avail = kv.free + int(kv.held[dec].sum())
        # the lookahead reserve grows step by step: check the last step first, then find the first miss
        if int(blocks_for(ctx[-1] + g + 1, kv.block_size).sum()) > avail:
            fits = blocks_for(ctx + g + 1, kv.block_size).sum(axis=1) <= avail
            stop = min(stop, int(fits.argmin()))
        batch = n * (1 + lengths.max(axis=1)) if self.padded else n + lengths.sum(axis=1)
        dt = table[batch] + draft_s
        clock = np.cumsum(np.concatenate([[self.env.now], dt]))  # sequential sums: SimPy's own clock
        if admit_on_arrival:
            stop = min(stop, int(np.searchsorted(clock[:-1], w.arrival[self.next_arrival], side="left")))
        if self.horizon is not None:
            stop = min(stop, max(1, int(np.searchsorted(clock[1:], self.horizon, side="right"))))
        self._t_hint = min(MAX_PEEK, max(16, 2 * stop))
        if stop < 1:
            return None
        e = np.minimum(e[:stop], rem[None, :] - before[:stop])
        # queue length at each step's end: arrivals released by then join the waiting queue
        j0 = self.next_arrival
        ends = clock[1:stop + 1]
        waits = len(self.waiting) + np.searchsorted(w.arrival[j0:], ends, side="right")
        return {"dec": dec, "req": req, "dt": dt[:stop], "start": clock[:stop], "lengths": lengths[:stop],
                "acc": acc[:stop], "e": e, "batch": batch[:stop], "mean_ctx": mean_ctx[:stop],
                "draft_s": draft_s, "avail": avail, "end": float(clock[stop]), "waits": waits}

    def _finish_epoch(self, p: dict) -> None:
        dec, req, e = p["dec"], p["req"], p["e"]
        steps, n = e.shape
        g = self.g
        if g > 0:
            self._ahead.advance(dec, steps)
        total = e.sum(axis=0)
        self.emitted[req] += total
        ctx_after = self.slot_ctx[dec][None, :] + np.cumsum(e, axis=0)  # [steps, n]
        self.slot_ctx[dec] = ctx_after[-1]
        self.kv.resize(dec, self.slot_ctx[dec])
        lengths, acc = p["lengths"], p["acc"]
        running = self.cfg.max_running - len(self.free_slots)
        i = self.record.add_steps(
            steps, (p["start"], p["dt"], p["batch"], lengths.sum(axis=1), acc.sum(axis=1), e.sum(axis=1),
                    p["mean_ctx"], p["waits"], p["avail"] - blocks_for(ctx_after, self.kv.block_size).sum(axis=1)),
            (p["draft_s"], n, 0, 0, running, 0))
        self.record.add_rounds(i, req, lengths, acc, e, g)
        fin = self.emitted[req] >= self.work.output[req]
        if fin.any():
            slots = dec[fin]
            r = req[fin]
            self.finish_s[r] = self.env.now
            self.status[r] = DONE
            self._release(slots)
            self.closed += int(slots.size)
            self.record.last_running.append((i + steps - 1, self.cfg.max_running - len(self.free_slots),
                                             self.kv.free))
        if self.progress is not None and ((i + steps) >> 8) != (i >> 8):
            self.progress(self.env.now)

    # ---------------------------------------------------------------- admission and preemption
    def _admit(self, now: float) -> None:
        joined: list[tuple[int, int]] = []
        kv, w = self.kv, self.work
        while self.waiting and self.free_slots:
            r = self.waiting[0]
            tokens = int(w.prompt[r] + self.emitted[r])  # recompute prefills emitted tokens too
            if not kv.admissible(tokens + 1):
                self.waiting.popleft()
                self._close(r, REJECTED, f"prefill of {tokens} tokens exceeds the KV cache "
                                         f"({kv.total} blocks of {kv.block_size})")
                continue
            if not kv.can_admit(tokens + 1):
                break
            self.waiting.popleft()
            s = self.free_slots.pop()
            kv.allocate(s, tokens + 1)
            self.slot_req[s] = r
            self.slot_prefill[s] = tokens
            self.slot_ctx[s] = tokens
            self.slot_seq[s] = self._seq
            self._seq += 1
            self.status[r] = RUNNING
            if math.isnan(self.admit_s[r]):
                self.admit_s[r] = now
            joined.append((s, r))
        if joined:
            slots = np.asarray([s for s, _ in joined], dtype=np.int64)
            idx = np.asarray([r for _, r in joined], dtype=np.int64)
            self.policy.forget(slots)
            self.backend.join(slots, Requests(
                index=idx, ids=[w.ids[r] for r in idx.tolist()], domains=[w.domains[r] for r in idx.tolist()],
                prompt_tokens=w.prompt[idx], output_tokens=w.output[idx], emitted=self.emitted[idx].copy(),
                prompts=None if w.prompts is None else [w.prompts[r] for r in idx.tolist()]))

    def _preempt(self, dec: np.ndarray, growth: np.ndarray) -> int:
        """Preempt newest-first until every remaining decoding request's lookahead fits."""
        kv = self.kv
        occ = np.flatnonzero(self.slot_req >= 0)
        order = occ[np.argsort(-self.slot_seq[occ], kind="stable")]
        grow_by_slot = np.zeros(self.slot_req.size, dtype=np.int64)
        grow_by_slot[dec] = growth
        j = lifo_victims(order, kv.held[order], grow_by_slot[order], kv.free)
        victims = order[:j]
        if j == order.size:  # even the oldest alone does not fit: it can never finish
            oldest = victims[-1:]
            r = int(self.slot_req[oldest[0]])
            self._release(oldest)
            self._close(r, UNFINISHED, "context outgrew the KV cache")
            victims = victims[:-1]
        if victims.size:
            req = self.slot_req[victims]
            self.preemptions[req] += 1
            self._release(victims)
            self.status[req] = WAITING
            for r in req[::-1].tolist():  # oldest victim ends up first in the queue
                self.waiting.appendleft(r)
        return int(j)

    def _release(self, slots: np.ndarray) -> None:
        self.backend.leave(slots)
        self.kv.release(slots)
        self.slot_req[slots] = -1
        self.slot_prefill[slots] = 0
        self.slot_ctx[slots] = 0
        self.free_slots.extend(slots.tolist())

    def _close(self, r: int, status: int, reason: str) -> None:
        self.status[r] = status
        self.reason[r] = reason
        self.closed += 1

    def close_open(self, reason: str) -> None:
        """Mark every request not yet finished as unfinished (e.g. at the horizon)."""
        for r in np.flatnonzero(self.status < DONE).tolist():
            self._close(r, UNFINISHED, reason)


def _exact_delay(now: float, end: float) -> float:
    """A delay d with now + d == end in floating point (what SimPy computes for a timeout)."""
    d = end - now
    while now + d < end:
        d = float(np.nextafter(d, np.inf))
    while now + d > end:
        d = float(np.nextafter(d, -np.inf))
    return max(d, 0.0)


def draft_latency_table(profile: dict | None, family: str, block: int, max_running: int) -> tuple[np.ndarray, str]:
    """Drafter seconds per step by decoding requests n = 0..max_running, and where it came from.

    From the profile's `draft` rows (median_s by requests and block; a DSpark drafter of
    `profile["drafter"]["layers"]` layers), linear in requests (extended linearly past the grid) and
    in block between measured blocks. dspark and dflash (parallel drafters) cost one pass at the
    block. mtp1 and eagle3 run one-layer drafters: one pass costs the profiled drafter at its
    smallest block divided by its layer count (an estimate: the LM head share is divided too);
    mtp1 makes one such pass, eagle3 (autoregressive) `block` passes. Zero without draft rows.
    """
    n = np.arange(max_running + 1, dtype=np.float64)
    rows = (profile or {}).get("draft") or []
    if block == 0 or not rows:
        return np.zeros(max_running + 1), "none in profile (0 s)" if block else "no drafter"
    by_block: dict[int, dict[float, list[float]]] = {}
    for r in rows:
        by_block.setdefault(int(r["block"]), {}).setdefault(float(r["requests"]), []).append(float(r["median_s"]))
    blocks = sorted(by_block)

    def at_block(b: int) -> np.ndarray:
        pts = by_block[b]
        xs = np.asarray(sorted(pts))
        ys = np.asarray([np.mean(pts[x]) for x in xs])
        out = np.interp(n, xs, ys)
        if xs.size >= 2:
            slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
            out = np.where(n > xs[-1], ys[-1] + slope * (n - xs[-1]), out)
        return out

    if family in ("mtp1", "eagle3"):
        layers = int(((profile or {}).get("drafter") or {}).get("layers", 1) or 1)
        one_pass = at_block(blocks[0]) / layers
        passes = block if family == "eagle3" else 1
        lat = passes * np.maximum(one_pass, 0.0)
        note = (f"profile draft rows (block {blocks[0]}) / {layers} layers"
                f"{f' x {passes} passes' if passes > 1 else ''}")
    else:
        if block in by_block:
            lat = at_block(block)
        elif block < blocks[0] or block > blocks[-1]:
            lat = at_block(blocks[0] if block < blocks[0] else blocks[-1])
        else:
            hi = next(b for b in blocks if b > block)
            lo = max(b for b in blocks if b < block)
            w = (block - lo) / (hi - lo)
            lat = (1 - w) * at_block(lo) + w * at_block(hi)
        lat = np.maximum(lat, 0.0)
        note = f"profile draft rows (block {block})"
    lat[0] = 0.0
    return lat, note


def _blocks_needed(tokens: int, block_size: int) -> int:
    return int(blocks_for(tokens, block_size))
