"""The serving engine as SimPy processes: continuous batching with confidence-scheduled speculation.

Covers: one GPU replica serving a trace, vLLM-style, with speculative decoding in every decode step.

Scenario. An arrival process releases requests at their trace times into a FCFS waiting queue. One
engine process runs steps back to back while there is work (and sleeps until the next arrival when
there is none). Each step:

1. reserve KV for every decoding request: its anchor plus all drafted tokens (the lookahead); when
   blocks run out, preempt the most recently admitted requests (recompute, counted);
2. admit waiting requests into free slots (at most `max_running` resident) while their whole
   prefill fits in KV above the watermark (none when this step preempted); with `disaggregated`
   (prefill instances apart, as in the paper's production decode engines) a request joins with its
   prompt's KV and its first token already made, and decodes from the next step;
3. chunked prefill: up to `prefill_chunk` prompt tokens, oldest admission first;
4. decode: draft for every decoding request, the policy picks verify lengths (the step's prefill
   tokens are `extra_tokens`), the backend verifies;
5. the clock advances by the step's price (sparksched.cost.StepCost): the verify pass T(n, B, L) at the
   step's own number of decoding requests n, its B = sum(1 + l_i) verify tokens (n * (1 + max l_i)
   with `verify_layout="padded"`) and the decoding requests' mean context L, plus the drafter's
   D(n, g, L) and the prefill chunks' price. The policy optimises against that whole step (the
   drafter and the prefill are constants in B): the paper's SPS(B) is the slice at the step's n and L;
6. results land at the step's end: emitted tokens (clipped at the trace's output length), first
   tokens of finished prefills, finished requests leave and free their blocks.

Running-request state is numpy arrays indexed by slot (simulator.slots.SlotTable, which also holds
the KV blocks, the prefix cache and the step log); a step costs a fixed number of vectorised calls
whatever the batch size. A step's parts travel as frozen records (simulator.steps). Between arrivals
and completions the batch does not change, and the engine plans up to MAX_PEEK such decode steps at
once (`_epoch_plan`: the same decisions, in one vectorised pass, then one SimPy timeout to the last
step's end); other steps take one timeout each.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Generator
from itertools import islice
from typing import Any

import numpy as np
import simpy

from simulator.backend import Backend, Requests, check_draft, check_verdict, debug_checks
from simulator.config import SimConfig, parse_policy
from simulator.epoch import (
    STATELESS,
    Arrivals,
    EpochOut,
    EpochState,
    Limits,
    Prices,
    plan_epoch,
    policy_code,
    speed_factor,
    step_lengths,
    step_seconds,
)
from simulator.kv import KVBlocks, blocks_for
from simulator.policies import Policy
from simulator.predrawn import MAX_PEEK
from simulator.records import Recorder, StepRow
from simulator.slots import SlotTable
from simulator.source import Book
from simulator.speed import HostSpeed
from simulator.steps import EpochPlan, StepOutcome, StepPlan, StepStart
from sparksched.cost import StepCost, StepPrice
from sparksched.cost_kernels import batch_cap, draft_at, empty_pass, knot_price, prefill_price, slice_knots
from sparksched.curve import ThroughputCurve

QUEUE_CANDIDATES = 8  # waiting requests a planned epoch may admit
ARRIVAL_CANDIDATES = 12  # arrivals a planned epoch may admit (a single replica: they are its own)
ARRIVAL_COUNTED = 32  # further arrivals a planned epoch counts into the queue length

# request status codes (SimResult.requests "status" column uses the names)
PENDING, WAITING, RUNNING, DONE, REJECTED, UNFINISHED = 0, 1, 2, 3, 4, 5
STATUS_NAMES = ("pending", "waiting", "running", "finished", "rejected", "unfinished")


class StepClock:
    """The run's prices: a StepCost in the compiled form, and the drafter's table for this run's drafter.

    `slice(n, context)` gives the verify slice's knots (sparksched.cost.slice_knots), `price(...)` the
    StepPrice a policy object sees; the compiled planner takes `cost`, `draft_ctx` and `draft_tab`.
    """

    def __init__(self, cost: StepCost, family: str, block: int, max_running: int) -> None:
        self.cost = cost
        self.arrays = cost.arrays
        self.extend = bool(cost.arrays.extend)
        self.draft_ctx, self.draft_tab, self.draft_note = cost.draft_table(family, block, max_running)

    def slice(self, n: int, context: float) -> tuple[np.ndarray, np.ndarray]:
        """(xs, ys): the verify slice at n decoding requests (at least 1) and mean context `context`."""
        k = self.arrays.knots.size
        xs, ys = np.empty(k), np.empty(k)
        slice_knots(self.arrays, float(max(n, 1)), float(context), xs, ys)
        return xs, ys

    def draft_seconds(self, n: int, context: float) -> float:
        """The drafter's seconds for n decoding requests at `context` (0 for n = 0)."""
        return float(draft_at(self.draft_ctx, self.draft_tab, int(n), float(context)))

    def prefill_seconds(self, chunk: np.ndarray | None, offsets: np.ndarray | None, n: int, xs: np.ndarray,
                        ys: np.ndarray) -> float:
        """The prefill chunks' seconds in a step with n decoding requests on the slice (xs, ys)."""
        if chunk is None or chunk.size == 0:
            return 0.0
        assert offsets is not None  # a chunk always comes with its offsets
        return float(prefill_price(self.arrays, chunk.astype(np.int64), offsets.astype(np.int64), int(n), xs, ys))

    def cap(self, n: int, context: float) -> float:
        """The largest verify batch whose KV fits at (n, context) (inf: no limit)."""
        return float(batch_cap(self.arrays, float(n), float(context)))

    def price(self, xs: np.ndarray, ys: np.ndarray, n: int, context: float, prefill_s: float,
              draft_s: float) -> StepPrice:
        """The StepPrice a policy object sees for this step."""
        curve = ThroughputCurve(xs, ys[None, :], np.zeros(1), "linear" if self.extend else "clamp")
        return StepPrice(curve, prefill_s, draft_s, self.cap(n, context))


class Engine:
    """One replica: SimPy arrival and engine processes over slot-indexed numpy state."""

    def __init__(self, env: simpy.Environment, book: Book, config: SimConfig, backend: Backend,
                 policy: Policy, clock: StepClock, kv_blocks: int, recorder: Recorder, feed: Any,
                 progress: Callable[[float], None] | None = None, speed: HostSpeed | None = None,
                 replica: int = 0) -> None:
        self.env, self.book, self.cfg = env, book, config
        self.backend, self.policy, self.clock = backend, policy, clock
        self.feed = feed  # the dispatcher (simulator.fleet): releases arrivals into `waiting`
        self.replica = replica
        self.g = config.draft_block
        s = config.max_running
        # per request (the book's arrays: shared by the replicas of a fleet)
        self.status = book.status
        self.reason = book.reason
        self.emitted = book.emitted
        self.first_s = book.first_s
        self.finish_s = book.finish_s
        self.admit_s = book.admit_s
        self.preemptions = book.preemptions
        # per slot: the resident requests, their KV blocks and prefix-cache entries, the step log
        kv = KVBlocks(kv_blocks, config.kv_block_size, config.kv_watermark, s)
        self.slots = SlotTable(s, kv, recorder, backend.leave)
        self.waiting: deque[int] = deque()
        self.closed = 0  # finished + rejected + unfinished
        self._wake: simpy.Event | None = None
        self._pending: StepOutcome | None = None  # the step in flight on the step path
        self.progress = progress
        kind, param = parse_policy(config.policy)
        # stateless policies run compiled (bit-equal to the library, simulator.epoch): (kind code, param)
        self._code = policy_code(kind, param, self.g) if kind in STATELESS else None
        self._rows = np.arange(s, dtype=np.int64)
        # backends that can hand out future rounds (simulator.predrawn) enable the batched fast path
        self._ahead: Any = backend if hasattr(backend, "peek_buffered") and hasattr(backend, "advance") else None
        # ... and rounds of requests that have not joined yet: the planner admits them itself
        self._new: Any = getattr(backend, "peek_requests", None) if self._ahead is not None else None
        self._done_hook: Any = getattr(backend, "finished", None)  # requests that will never join again
        # SPARKSCHED_DEBUG: every draft and verdict is checked against the backend contract, so every
        # step takes the step path (simulator.backend)
        self.checking = debug_checks()
        self.fast = (self._code is not None and config.clock == "profile"
                     and (self.g == 0 or self._ahead is not None) and not self.checking)
        self._t_hint = MAX_PEEK
        self.horizon = config.horizon_s
        self.padded = config.verify_layout == "padded"  # the clock charges n * (1 + max l_i) verify tokens
        # the host's speed against the profile (simulator.speed; None: the profile's), as the compiled
        # code takes it: (factor by n, piece starts, piece factors, whether prefill is scaled)
        speed = speed or HostSpeed()
        self._speed = speed.arrays(s)
        self._fastest = speed.fastest()
        # the compiled planner's fixed inputs (simulator.epoch)
        self._prices = Prices(cost=clock.arrays, draft_ctx=clock.draft_ctx, draft_tab=clock.draft_tab,
                              padded=self.padded, speed=self._speed)
        self._limits = Limits(kv_total=kv.total, watermark=kv.watermark_blocks,
                              block_size=kv.block_size, prefill_chunk=config.prefill_chunk,
                              admit_ok=(self.g == 0 or self._new is not None) and not config.disaggregated,
                              horizon=math.inf if self.horizon is None else float(self.horizon))
        # prefix caching (simulator.prefix): on when asked for and the trace carries prefix blocks
        self.prefix_on = config.prefix_cache and not config.disaggregated

    @property
    def _backend_name(self) -> str:
        """The backend as a contract error names it."""
        return f"backend {getattr(self.backend, 'name', type(self.backend).__name__)!r}"

    @property
    def caching(self) -> bool:
        """Whether prompt blocks are being cached (the step path then takes every step)."""
        return self.prefix_on and self.book.has_prefix

    def kv_available(self) -> int:
        """Free KV blocks, counting cached blocks nobody references (a router's least-kv)."""
        return self.slots.kv.free + self.slots.cache.evictable_blocks

    def prefix_hit_blocks(self, hashes: np.ndarray) -> int:
        """Leading prompt blocks of `hashes` this replica's cache holds (a router's prefix)."""
        return self.slots.cache.match(hashes) if self.caching else 0

    @property
    def in_flight(self) -> int:
        """Requests routed here and not closed: waiting plus resident (a router's load)."""
        return len(self.waiting) + self.slots.running

    # ---------------------------------------------------------------- processes
    def wake(self) -> None:
        """Wake the engine if it sleeps for lack of work (an arrival joined its queue)."""
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def run(self) -> Generator[simpy.Event, Any, None]:
        """The engine loop: one SimPy timeout per step (or per epoch of steps); sleeps when idle, ends
        when it is idle and the dispatcher has released every request."""
        while True:
            if not self.waiting and not self.slots.occupied().any():
                if self.feed.released_all:
                    return
                self._wake = self.env.event()
                yield self._wake
                self._wake = None
                continue
            plan = self._epoch_plan() if self.fast and not self.caching else None
            if plan is not None:  # one event for the whole epoch, landing exactly on its last step's end
                yield self.env.timeout(_exact_delay(self.env.now, plan.end))
                self._finish_epoch(plan)
                continue
            start = self._prologue()
            if start is None:  # nothing could run (all waiting requests were rejected)
                continue
            self._pending = outcome = self._step(start)
            yield self.env.timeout(outcome.seconds)
            self._finish_step()

    # ---------------------------------------------------------------- one step
    def _prologue(self) -> StepStart | None:
        """A step's first half: KV lookahead reserve (preempting when it does not fit), admission,
        the prefill chunk. Returns who runs in the step, or None when the step has nothing to run."""
        now = self.env.now
        g, cfg, slots = self.g, self.cfg, self.slots
        kv = slots.kv
        dec = slots.decoding()
        preempted = 0
        if dec.size:
            # anchor + drafts, and the bonus token it may emit (less what lives in shared cache entries)
            want = slots.ctx[dec] + g + 1 - slots.shared[dec]
            growth = kv.growth(dec, want)
            if int(growth.sum()) > kv.free and slots.cache.lru:
                slots.cache.evict(int(growth.sum()) - kv.free)  # unused cached blocks go before anyone is preempted
            if int(growth.sum()) > kv.free:
                preempted = self._preempt(dec, growth)
                dec = slots.decoding()
                want = slots.ctx[dec] + g + 1 - slots.shared[dec]
            if dec.size:
                kv.resize(dec, np.maximum(want, kv.held[dec] * kv.block_size))
        if not preempted and self.waiting and slots.free:
            self._admit(now)
        # chunked prefill, oldest admission first
        pre = np.flatnonzero(slots.prefill > 0)
        p_tokens = 0
        if pre.size:
            pre = pre[np.argsort(slots.seq[pre], kind="stable")]
            left = slots.prefill[pre]
            before = np.cumsum(left) - left
            chunk = np.minimum(np.maximum(cfg.prefill_chunk - before, 0), left)
            keep = chunk > 0
            pre, chunk = pre[keep], chunk[keep]
            p_tokens = int(chunk.sum())
        if dec.size == 0 and p_tokens == 0:
            return None
        return StepStart(now=now, dec=dec, pre=pre, chunk=chunk if pre.size else None, prefill_tokens=p_tokens,
                         preempted=preempted)

    def _step(self, start: StepStart) -> StepOutcome:
        """A step's second half, after `_prologue`: draft, verify lengths, verify, the step's price."""
        now, dec, pre, chunk, p_tokens = start.now, start.dec, start.pre, start.chunk, start.prefill_tokens
        g, cfg, clock = self.g, self.cfg, self.clock
        n = dec.size
        ctx = float(self.slots.ctx[dec].mean()) if n else float(self.slots.ctx[pre].mean())
        xs, ys = clock.slice(n, ctx)
        prefill_s = clock.prefill_seconds(chunk, None if chunk is None else self.slots.offsets(pre), n, xs, ys)
        cap = clock.cap(n, ctx)
        draft_s = 0.0
        drafting_s = clock.draft_seconds(n, ctx) if n and g > 0 else 0.0
        if (n and g > 0 and self._code is None
                and self.policy.skips_draft(dec, g, clock.price(xs, ys, n, ctx, prefill_s, drafting_s))):
            # the policy planned no drafts before drafting: a plain step, the drafter does not run
            lengths = np.zeros(n, dtype=np.int64)
            verdict = self.backend.verify(dec, lengths)
            if self.checking:
                check_verdict(verdict, lengths, f"{self._backend_name}.verify")
            acc, drafted = verdict.accepted, lengths
            measured = verdict.seconds if cfg.clock == "measured" and verdict.seconds is not None else None
        elif n and g > 0:
            draft = self.backend.draft(dec, g)
            if self.checking:
                check_draft(draft, n, g, f"{self._backend_name}.draft")
            draft_s = drafting_s
            if self._code is not None:
                lengths = np.zeros(n, dtype=np.int64)
                step_lengths(self._code.kind, self._code.param, np.ascontiguousarray(draft.conf, dtype=np.float64),
                             draft.drafted.astype(np.int64), self._rows[:n], xs, ys, clock.extend, cap,
                             draft_s + prefill_s, lengths)
            else:
                lengths = self.policy.lengths(dec, draft.conf, draft.drafted,
                                              clock.price(xs, ys, n, ctx, prefill_s, draft_s))
            verdict = self.backend.verify(dec, lengths)
            if self.checking:
                check_verdict(verdict, lengths, f"{self._backend_name}.verify")
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
        verify_b = n * (1 + int(lengths.max())) if self.padded and n else n + int(lengths.sum())
        if verify_b > cap:
            raise ValueError(f"step at t={now:.6g} s: {clock.cost.why(n, verify_b, ctx)}; lower --max-running "
                             "or --kv-blocks")
        batch = p_tokens + verify_b
        if measured is not None:
            dt = measured + prefill_s
        else:
            decode_s = float(knot_price(xs, ys, clock.extend, float(verify_b)) if n else empty_pass(clock.arrays, xs, ys))
            sp = self._speed
            dt = float(step_seconds(decode_s, draft_s, prefill_s, speed_factor(sp.by_n, sp.times, sp.factors, now, n),
                                    sp.scale_prefill))
        return StepOutcome(start=start, plan=StepPlan(lengths=lengths, drafted=drafted, draft_s=draft_s, context=ctx),
                           accepted=acc, batch=batch, seconds=dt)

    def _finish_step(self) -> None:
        """A step's end (the clock at it): emissions, first tokens, finished requests leave, the records."""
        out = self._pending
        assert out is not None  # set by `_step` before the step's timeout
        start, plan, acc = out.start, out.plan, out.accepted
        dec, pre, chunk, lengths, drafted = start.dec, start.pre, start.chunk, plan.lengths, plan.drafted
        now = self.env.now
        slots, log = self.slots, self.slots.log
        done_slots = []
        emitted_total = 0
        step_index = log.n_steps
        if dec.size:
            req = slots.req[dec]
            if self.g > 0:
                self.policy.observe(dec, lengths, acc)
            e = np.minimum(acc + 1, self.book.output[req] - self.emitted[req])
            self.emitted[req] += e
            slots.ctx[dec] += e
            slots.kv.resize(dec, slots.ctx[dec] - slots.shared[dec])
            emitted_total = int(e.sum())
            same = drafted.size and int(drafted.min()) == int(drafted.max())
            log.add_rounds(np.full(dec.size, step_index), req, lengths, acc, e,
                                   int(drafted[0]) if same else drafted)
            fin = self.emitted[req] >= self.book.output[req]
            if fin.any():
                done_slots.append(dec[fin])
        if pre.size and chunk is not None:
            slots.prefill[pre] -= chunk
            ready = pre[slots.prefill[pre] == 0]
            if ready.size:
                req = slots.req[ready]
                self.emitted[req] += 1
                emitted_total += int(ready.size)
                slots.ctx[ready] += 1
                first = np.isnan(self.first_s[req])
                self.first_s[req[first]] = now
                if self.caching:
                    self._cache_prompts(ready)
                fin = self.emitted[req] >= self.book.output[req]
                if fin.any():
                    done_slots.append(ready[fin])
        if done_slots:
            done = np.concatenate(done_slots)
            req = slots.req[done]
            self.finish_s[req] = now
            self.status[req] = DONE
            slots.release(done, self.caching)
            if self._done_hook is not None:
                self._done_hook(req)
            self.closed += int(done.size)
        i = log.add_step(StepRow(
            t_start=start.now, duration_s=out.seconds, draft_s=plan.draft_s, decode_requests=dec.size,
            prefill_requests=pre.size, prefill_tokens=start.prefill_tokens, batch_tokens=out.batch,
            verified=int(lengths.sum()), accepted=int(acc.sum()), emitted=emitted_total, mean_context=plan.context,
            running=slots.running, waiting=len(self.waiting), kv_free_blocks=slots.kv.free,
            preempted=start.preempted))
        self._pending = None
        if self.progress is not None and (i & 255) == 0:
            self.progress(now)

    # ---------------------------------------------------------------- fast path: many steps at once
    def _epoch_plan(self) -> EpochPlan | None:
        """Plan up to MAX_PEEK whole steps from now in one compiled call, or None (take one step).

        Exactly what the same number of `_prologue` + `_step` + `_finish_step` calls would do
        (`simulator.epoch.plan_epoch`): the lookahead reserve, admissions of the head of the waiting
        queue and of the next arrivals (the candidates, whose rounds the backend draws ahead), chunked
        prefill, the policy's verify lengths, emissions and finishes, each step priced at its own n
        and mean context. It stops before a step that would preempt, reject, admit a request past the
        candidates, or tie an arrival; a fleet's replica also before a step ending at or after the
        fleet's next arrival (the router must see it as it would step by step).
        """
        book, g, feed = self.book, self.g, self.feed
        slots = self.slots
        res = np.flatnonzero(slots.occupied())  # slot order
        n_res = res.size
        t_max = self._t_hint
        routed = feed.routed
        admit_ok = self._limits.admit_ok
        cands: list[int] = []
        queued_left = len(self.waiting)
        if admit_ok:
            cands = list(islice(self.waiting, QUEUE_CANDIDATES))
            queued_left -= len(cands)
        upcoming_from = feed.next_index
        if admit_ok and not routed and queued_left == 0:  # the next arrivals: this replica's (the only one)
            book.need(upcoming_from + ARRIVAL_CANDIDATES)
            top = min(book.n, upcoming_from + ARRIVAL_CANDIDATES)
            cands += list(range(upcoming_from, top))
            upcoming_from = top
        if routed:
            upc, beyond = np.zeros(0), math.inf
        else:
            book.need(upcoming_from + ARRIVAL_COUNTED)
            top = min(book.n, upcoming_from + ARRIVAL_COUNTED)
            upc = book.arrival[upcoming_from:top]
            beyond = book.next_arrival(top)
        q = len(cands)
        m = n_res + q
        if m == 0:
            return None
        req = np.empty(m, dtype=np.int64)
        req[:n_res] = slots.req[res]
        req[n_res:] = cands
        valid = np.full(m, t_max, dtype=np.int64)
        if g > 0 and n_res:
            conf_r, lead_r, valid_r = self._ahead.peek_buffered(res, t_max, g)
            t_max = conf_r.shape[0]
            valid[:n_res] = valid_r
        if g > 0 and q:
            idx = np.asarray(cands, dtype=np.int64)
            conf_c, lead_c = self._new(self._joining(idx), t_max, g)
            t_max = min(t_max, conf_c.shape[0])
        if g > 0:
            conf = np.concatenate([conf_r[:t_max], conf_c[:t_max]], axis=1) if n_res and q else (
                conf_r[:t_max] if n_res else conf_c[:t_max])
            lead = np.concatenate([lead_r[:t_max], lead_c[:t_max]], axis=1) if n_res and q else (
                lead_r[:t_max] if n_res else lead_c[:t_max])
        else:
            conf, lead = np.zeros((t_max, m, 0)), np.zeros((t_max, m), dtype=np.int64)
        emitted = self.emitted[req]
        m_slot = np.full(m, -1, dtype=np.int64)
        m_slot[:n_res] = res
        m_left = book.output[req] - emitted
        m_ctx = np.zeros(m, dtype=np.int64)
        m_ctx[:n_res] = slots.ctx[res]
        m_prefill = np.zeros(m, dtype=np.int64)
        m_prefill[:n_res] = slots.prefill[res]
        m_seq = np.zeros(m, dtype=np.int64)
        m_seq[:n_res] = slots.seq[res]
        m_arrival = np.full(m, -math.inf)
        queued = len(self.waiting) - queued_left  # candidates from the queue (arrived); the rest arrive later
        m_arrival[n_res + queued:] = book.arrival[req[n_res + queued:]]
        m_tokens = book.prompt[req] + emitted
        s = self.cfg.max_running
        slot_member = np.full(s, -1, dtype=np.int64)
        slot_member[res] = np.arange(n_res)
        held = slots.kv.held.copy()
        stack = np.zeros(s, dtype=np.int64)
        free0 = len(slots.free)
        stack[:free0] = slots.free
        out = EpochOut.empty(t_max, m)
        assert self._code is not None  # set with the policy: planned epochs run only for compiled kinds
        state = EpochState(conf=conf, lead=lead, m_valid=valid, m_slot=m_slot, m_left=m_left, m_ctx=m_ctx,
                           m_prefill=m_prefill, m_seq=m_seq, m_arrival=m_arrival, m_tokens=m_tokens, n_res=n_res,
                           slot_member=slot_member, held=held, stack=stack, free0=free0, kv_free0=slots.kv.free,
                           seq0=slots.next_seq, now=float(self.env.now))
        arrivals = Arrivals(waiting0=queued_left, upc_arrival=upc, next_arrival_s=beyond, cut=feed.cut_s())
        stop = plan_epoch(self._code, state, arrivals, self._prices, self._limits, out)
        self._t_hint = min(MAX_PEEK, max(32, 2 * stop))
        if stop < 1:
            return None
        return EpochPlan(steps=stop, req=req, n_res=n_res, state=state, out=out, emitted0=emitted,
                         end=float(out.clock[stop]))

    def _joining(self, idx: np.ndarray) -> Requests:
        """The backend's view of requests `idx` joining now (the same as `_admit` hands it)."""
        w = self.book
        return Requests(index=idx, ids=w.ids_of(idx.tolist()), domains=w.domains_of(idx.tolist()),
                        prompt_tokens=w.prompt[idx], output_tokens=w.output[idx], emitted=self.emitted[idx].copy(),
                        prompts=w.prompts_of(idx.tolist()))

    def _finish_epoch(self, p: EpochPlan) -> None:
        """Apply a planned epoch: requests' state, slots, KV, the backend, the records."""
        steps, req, n_res, st, out = p.steps, p.req, p.n_res, p.state, p.out
        fin, admit, first, clock = out.fin_step, out.admit_step, out.first_step, out.clock
        top, free, seq = (int(x) for x in out.after)
        book, g = self.book, self.g
        ends = clock[1:steps + 1]
        # admissions (the head of the queue, in order) and the backend: leave, then join, then advance
        joined = np.flatnonzero(admit >= 0)
        for i in joined.tolist():
            head = self.waiting.popleft()
            assert head == req[i], "the planned admissions are not the head of the waiting queue"
        if joined.size:
            r = req[joined]
            self.status[r] = RUNNING
            fresh = np.isnan(self.admit_s[r])
            self.admit_s[r[fresh]] = clock[admit[joined][fresh]]
        done = np.flatnonzero(fin >= 0)
        left_res = done[done < n_res]
        if left_res.size:
            self.backend.leave(st.m_slot[left_res])
        alive_new = joined[fin[joined] < 0]
        if alive_new.size:
            slots = st.m_slot[alive_new]
            self.backend.join(slots, Requests(
                index=req[alive_new], ids=book.ids_of(req[alive_new].tolist()),
                domains=book.domains_of(req[alive_new].tolist()), prompt_tokens=book.prompt[req[alive_new]],
                output_tokens=book.output[req[alive_new]], emitted=p.emitted0[alive_new].copy(),
                prompts=book.prompts_of(req[alive_new].tolist())))
        if g > 0:
            alive = np.flatnonzero((fin < 0) & (st.m_slot >= 0))
            if alive.size:
                self._ahead.advance(st.m_slot[alive], out.rnd[alive])
        # requests' state
        self.emitted[req] = book.output[req] - st.m_left
        got = np.flatnonzero(first >= 0)
        if got.size:
            r = req[got]
            fresh = np.isnan(self.first_s[r])
            self.first_s[r[fresh]] = ends[first[got][fresh]]
        if done.size:
            r = req[done]
            self.finish_s[r] = ends[fin[done]]
            self.status[r] = DONE
            self.closed += int(done.size)
            if self._done_hook is not None:
                self._done_hook(r)
        # slots, KV
        self.slots.load_epoch(st, req, top, free, seq)
        # records
        sums = out.sums
        log = self.slots.log
        first_index = log.add_epoch(steps, StepRow(
            t_start=clock[:steps], duration_s=out.dt[:steps], draft_s=out.draft[:steps],
            decode_requests=out.n_active[:steps], prefill_requests=out.pre_n[:steps],
            prefill_tokens=out.pre_tokens[:steps], batch_tokens=out.batch[:steps], verified=sums[:steps, 0],
            accepted=sums[:steps, 1], emitted=sums[:steps, 2], mean_context=out.mean_ctx[:steps],
            running=out.running[:steps], waiting=out.waits[:steps], kv_free_blocks=out.kv_free[:steps],
            preempted=np.zeros(steps, dtype=np.int64)))
        t_idx, i_idx = np.nonzero(out.active[:steps])
        # rounds: step-major, slot order within a step (a member keeps its slot while it runs)
        order = np.lexsort((st.m_slot[i_idx], t_idx))
        t_idx, i_idx = t_idx[order], i_idx[order]
        log.add_rounds(first_index + t_idx, req[i_idx], out.lengths[t_idx, i_idx], out.acc[t_idx, i_idx],
                       out.emit[t_idx, i_idx], g)
        log.maybe_flush()
        if self.progress is not None and ((first_index + steps) >> 8) != (first_index >> 8):
            self.progress(self.env.now)

    # ---------------------------------------------------------------- admission and preemption
    def _admit(self, now: float) -> None:
        """Admit the head of the waiting queue into free slots, FCFS, while its prefill fits (see the
        module docstring); the policy and the backend learn of the admitted requests together."""
        joined: list[tuple[int, int]] = []
        slots, w = self.slots, self.book
        kv, cache = slots.kv, slots.cache
        split = self.cfg.disaggregated
        while self.waiting and slots.free:
            r = self.waiting[0]
            tokens = int(w.prompt[r] + self.emitted[r])  # recompute prefills emitted tokens too
            if split and self.emitted[r] == 0 and w.output[r] <= 1:
                # prefilled elsewhere, and its first token is its last: done as it arrives
                self.waiting.popleft()
                self.emitted[r], self.first_s[r], self.finish_s[r] = 1, now, now
                self.admit_s[r] = now
                self.status[r] = DONE
                self.closed += 1
                continue
            if not kv.admissible(tokens + 1):
                self.waiting.popleft()
                self._close(r, REJECTED, f"prefill of {tokens} tokens exceeds the KV cache "
                                         f"({kv.total} blocks of {kv.block_size})")
                continue
            hit, refs = (self._prefix_hit(r, tokens) if self.caching else (0, []))
            if not kv.can_admit(tokens + 1 - hit):
                if cache.lru:
                    cache.evict(kv.watermark_blocks + int(blocks_for(tokens + 1 - hit, kv.block_size)) - kv.free)
                if not kv.can_admit(tokens + 1 - hit):
                    cache.release(refs)
                    break
            self.waiting.popleft()
            s = slots.admit(r, tokens, hit, refs)
            if self.caching:
                cache.looked_up += int(cache.usable(w.prefix_of(r), int(w.prompt[r])).size)
                cache.hit += len(refs)
                cache.saved_tokens += hit
                self.book.cached_tokens[r] += hit
            if split:  # the prompt's KV arrives from a prefill instance, with its first token
                slots.prefill[s] = 0
                if self.emitted[r] == 0:
                    self.emitted[r] = 1
                    self.first_s[r] = now
                    slots.ctx[s] = tokens + 1
            self.status[r] = RUNNING
            if math.isnan(self.admit_s[r]):
                self.admit_s[r] = now
            joined.append((s, r))
        if joined:
            into = np.asarray([s for s, _ in joined], dtype=np.int64)
            idx = np.asarray([r for _, r in joined], dtype=np.int64)
            self.policy.forget(into)
            self.backend.join(into, Requests(
                index=idx, ids=w.ids_of(idx.tolist()), domains=w.domains_of(idx.tolist()),
                prompt_tokens=w.prompt[idx], output_tokens=w.output[idx], emitted=self.emitted[idx].copy(),
                prompts=w.prompts_of(idx.tolist())))

    def _preempt(self, dec: np.ndarray, growth: np.ndarray) -> int:
        """Preempt newest-first until every remaining decoding request's lookahead fits; the victims
        go back to the head of the queue (the oldest first). Returns the slots preempted."""
        out = self.slots.preempt(dec, growth, self.caching)
        if out.hopeless >= 0:
            self._close(out.hopeless, UNFINISHED, "context outgrew the KV cache")
        req = out.requeue
        if req.size:
            self.preemptions[req] += 1
            self.status[req] = WAITING
            for r in req[::-1].tolist():  # oldest victim ends up first in the queue
                self.waiting.appendleft(r)
        return out.count

    def _prefix_hit(self, r: int, tokens: int) -> tuple[int, list[int]]:
        """(prompt tokens found in the cache, the entries referenced for them) for admitting request r
        with `tokens` to prefill; the entries are referenced now, so no eviction can take them."""
        cache = self.slots.cache
        full = cache.usable(self.book.prefix_of(r), int(self.book.prompt[r]))
        k = cache.match(full)
        while k and k * cache.block_tokens >= tokens:  # at least one prompt token is computed
            k -= 1
        refs = full[:k].tolist()
        cache.acquire(refs)
        return k * cache.block_tokens, refs

    def _cache_prompts(self, ready: np.ndarray) -> None:
        """Prefills that completed: their full prompt blocks enter the cache (simulator.prefix)."""
        slots, book = self.slots, self.book
        slots.cache_prompts(ready, [slots.cache.usable(book.prefix_of(r), int(book.prompt[r]))
                                    for r in slots.req[ready].tolist()])

    def _close(self, r: int, status: int, reason: str) -> None:
        self.status[r] = status
        self.reason[r] = reason
        self.closed += 1

    def close_open(self, reason: str) -> None:
        """Mark every request of the trace not yet closed as unfinished (e.g. at the horizon)."""
        self.book.read_all()
        for r in np.flatnonzero(self.status[:self.book.n] < DONE).tolist():
            self._close(r, UNFINISHED, reason)


def _exact_delay(now: float, end: float) -> float:
    """A delay d with now + d == end in floating point (what SimPy computes for a timeout)."""
    d = end - now
    while now + d < end:
        d = float(np.nextafter(d, np.inf))
    while now + d > end:
        d = float(np.nextafter(d, -np.inf))
    return max(d, 0.0)
