"""The engine's compiled hot loop: many decode steps of a shrinking batch planned in one call.

Covers: the simulator's speed. A one-hour trace at production scale is ~400,000 engine steps; even a
few dozen numpy calls per step cost more than the simulated work. Between arrivals the decode batch
can only shrink (requests finish and leave), so `plan_epoch` runs the engine's decode steps for it
back to back in compiled code (numba): the policy's verify lengths, acceptance, emission, finishes,
the step-time clock and the KV lookahead check, step by step, exactly as `Engine._step` would.

It stops before a step that the plain step path must take instead: one in which a request could be
admitted (a slot is free and a request is waiting or arrives), the KV lookahead would not fit
(preemption), or past the horizon; and when the peeked rounds run out.

`dspark_step` is Algorithm 1 (the greedy with early stop) for one step, bit-equal to
`sparksched.schedule`: the library's fixed-point expected-token sum, IEEE division by the step time,
ties by smaller k then smaller i. tests/test_epoch.py checks it (and static / both thresholds / verify-all)
against the library, and tests/test_engine.py the planned epochs against the step path, each with
deliberately wrong variants as negative controls.

Inputs travel by name: `plan_epoch(policy, state, arrivals, prices, limits, out)` takes NamedTuples
(PolicyCode, EpochState, Arrivals, Prices, Limits, EpochOut), checks their types, and spreads them
into the compiled `_plan_epoch`, whose parameter names must equal the groups' fields in order (checked
when the module loads): a group in the wrong place, or a field added to a group and not to the
planner, fails loudly instead of running on the wrong numbers.

Why numba: the work per step is ~100 scalar operations on arrays of a few dozen entries, where
numpy's per-call overhead (microseconds) is the whole cost; compiled, `plan_epoch` took
28 us a call, 1.5 us a planned step (cProfile over 930 s of the benchmark trace, about 100,000
steps), and the code stays a readable loop. Compiled once per machine (`cache=True`).
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import numpy as np
from numba import njit

from simulator.speed import SpeedArrays
from sparksched.cost import CostArrays
from sparksched.cost_kernels import batch_cap, draft_at, empty_pass, knot_price, prefill_price, slice_knots
from sparksched.policies import CONF_THRESHOLD, DSPARK, NONE, POLICIES, STATIC, THRESHOLD
from sparksched.scheduler import SCALE

# the kinds the compiled code runs, and the families that have one (the registry: sparksched.policies)
STATELESS = tuple(s.name for s in POLICIES.values() if s.compiled is not None)


def policy_code(kind: str, param: float | None, g: int) -> PolicyCode:
    """PolicyCode (kind code, parameter) of a stateless policy family `kind` (sparksched.policies.POLICIES): static-k
    keeps k, (conf-)threshold tau, verify-all g; NONE with no block."""
    spec = POLICIES.get(kind)
    if spec is None or spec.compiled is None:
        raise ValueError(f"policy kind {kind!r} has no compiled form (stateful: it runs step by step)")
    if g == 0:
        return PolicyCode(NONE, 0.0)
    return PolicyCode(spec.compiled, float(spec.compiled_param(param, g)))


@njit(cache=True)
def _price(xs, ys, extend, cap, b):  # pragma: no cover (compiled)
    """Verify seconds at b batch tokens on the slice (xs, ys); inf past `cap` (the KV does not fit)."""
    if b > cap:
        return np.inf
    return knot_price(xs, ys, extend, float(b))


@njit(cache=True)
def dspark_step(conf, drafted, rows, xs, ys, extend, cap, const, out):  # pragma: no cover (compiled)
    """Algorithm 1 on requests `rows` of conf [*, g]: verify lengths into out[rows].

    conf: [n, g] float64 conditional confidences; drafted: [n] int64; rows: [m] int64 the requests of
    this step, in candidate-index order; (xs, ys, extend): the verify slice at this step's n and
    context (sparksched.cost.slice_knots), priced by `knot_price`; cap: the largest batch B whose
    KV fits; const: the seconds of the step that do not depend on B (drafter + prefill chunk).
    """
    n = rows.size
    g = conf.shape[1]
    m = n * g
    flat = np.zeros(m)
    for j in range(n):
        r = rows[j]
        s = 1.0
        for k in range(min(g, drafted[r])):
            s = s * conf[r, k]
            flat[k * n + j] = s
        out[r] = 0
    order = np.argsort(-flat, kind="mergesort")  # S descending; ties keep (k, i) index order
    numer = n * SCALE
    rate = float(numer) / (_price(xs, ys, extend, cap, n) + const)
    for j in range(m):
        s = flat[order[j]]
        if not s > 0.0:
            break
        nxt = numer + np.int64(s * float(SCALE))
        r_next = float(nxt) / (_price(xs, ys, extend, cap, n + j + 1) + const)
        if not r_next > rate:
            break
        numer, rate = nxt, r_next
        out[rows[order[j] % n]] += 1


@njit(cache=True)
def step_lengths(kind, param, conf, drafted, rows, xs, ys, extend, cap, const, out):  # pragma: no cover (compiled)
    """One step's verify lengths into out[rows] under a stateless policy (kind codes above); the
    arguments as for `dspark_step`."""
    if kind == DSPARK:
        dspark_step(conf, drafted, rows, xs, ys, extend, cap, const, out)
        return
    g = conf.shape[1]
    for r in rows:
        d = min(g, drafted[r])
        if kind == STATIC:
            out[r] = min(int(param), d)
        elif kind == THRESHOLD:
            s, c = 1.0, 0
            for k in range(d):
                s = s * conf[r, k]
                if s >= param:
                    c += 1
            out[r] = c
        elif kind == CONF_THRESHOLD:  # each position's own c_k, stop at the first one below
            c = 0
            while c < d and conf[r, c] >= param:
                c += 1
            out[r] = c
        else:
            out[r] = 0


@njit(cache=True)
def speed_factor(speed_n, speed_t, speed_f, now, n):  # pragma: no cover (compiled)
    """The host's step-time factor at `now` (s) with `n` decoding requests (simulator.speed.HostSpeed):
    speed_n [N + 1] by n (past the end: the last entry) times the piece of speed_t [k] / speed_f [k]
    that `now` falls in (before speed_t[0]: speed_f[0])."""
    f = speed_n[min(n, speed_n.shape[0] - 1)]
    if speed_t.shape[0] > 1 or speed_f[0] != 1.0:
        k = np.searchsorted(speed_t, now, side="right") - 1
        f *= speed_f[max(k, 0)]
    return f


@njit(cache=True)
def step_seconds(decode_s, draft_s, prefill_s, f, speed_prefill):  # pragma: no cover (compiled)
    """A step's seconds from its parts: decode_s (the verify pass) + (draft_s + prefill_s) at the
    profile's speed (f = 1: the sum the scheduler optimised, bit for bit); else the decode part
    (drafter + verify) times f, and the prefill chunk's price times f when `speed_prefill`, else at
    the profile's price."""
    if f == 1.0:
        return decode_s + (draft_s + prefill_s)
    return f * (draft_s + decode_s) + (f * prefill_s if speed_prefill else prefill_s)


@njit(cache=True)
def _blocks(tokens, block_size):  # pragma: no cover (compiled)
    return -(-tokens // block_size)


class PolicyCode(NamedTuple):
    """A stateless policy as the compiled code takes it (`policy_code`): the kind code
    (sparksched.policies: DSPARK, STATIC, THRESHOLD, CONF_THRESHOLD, NONE) and its parameter."""

    kind: int
    param: float


class EpochState(NamedTuple):
    """The members and slots at a planned epoch's start; the planner updates the arrays in place.

    Members [m]: the n_res resident requests (slot order), then the candidates in FCFS order.
    conf [T, m, g] float64 / lead [T, m] int64: member i's r-th peeked round at conf[r, i] (its
    conditional confidences) and lead[r, i] (the drafts the target would accept); m_valid [m] rounds
    peeked; m_slot [m] slot (-1: not resident); m_left [m] tokens still to emit; m_ctx [m] context
    tokens; m_prefill [m] prompt tokens still to prefill; m_seq [m] admission sequence numbers;
    m_arrival [m] arrival time (s; -inf: already queued); m_tokens [m] tokens a candidate prefills when
    admitted. slot_member [slots] member in each slot (-1: free); held [slots] KV blocks held; stack
    [slots] free slots, the first free0 of them, popped from the end; kv_free0 free KV blocks; seq0 the
    next admission sequence number; now the epoch's start (s).
    """

    conf: np.ndarray
    lead: np.ndarray
    m_valid: np.ndarray
    m_slot: np.ndarray
    m_left: np.ndarray
    m_ctx: np.ndarray
    m_prefill: np.ndarray
    m_seq: np.ndarray
    m_arrival: np.ndarray
    m_tokens: np.ndarray
    n_res: int
    slot_member: np.ndarray
    held: np.ndarray
    stack: np.ndarray
    free0: int
    kv_free0: int
    seq0: int
    now: float


class Arrivals(NamedTuple):
    """What arrives while an epoch runs, beyond its candidates: waiting0 queued requests after the
    candidates; upc_arrival [u] arrival times (s) of requests that only join the queue; next_arrival_s
    the first arrival not counted (inf: none); cut the time a fleet's next arrival is routed (inf for a
    single replica)."""

    waiting0: int
    upc_arrival: np.ndarray
    next_arrival_s: float
    cut: float


class Prices(NamedTuple):
    """A step's price as the compiled code takes it: the step-cost model (sparksched.cost.CostArrays),
    the drafter's table (draft_ctx [Nc], draft_tab [Nc, N + 1]: sparksched.cost.StepCost.draft_table),
    whether the verify layout is padded (n * (1 + max l_i) tokens), and the host's speed."""

    cost: CostArrays
    draft_ctx: np.ndarray
    draft_tab: np.ndarray
    padded: bool
    speed: SpeedArrays


class Limits(NamedTuple):
    """The replica's fixed limits: KV blocks (total, watermark, block size in tokens), prompt tokens one
    step prefills, whether planned epochs may admit requests, and the horizon (s; inf: none)."""

    kv_total: int
    watermark: int
    block_size: int
    prefill_chunk: int
    admit_ok: bool
    horizon: float


class EpochOut(NamedTuple):
    """What a planned epoch writes (`EpochOut.empty`; the first `stop` steps are valid).

    Per step and member [T, m]: lengths (verified drafts), acc (accepted), emit (tokens emitted),
    active (decoded in the step). Per step [T]: dt (s), draft (drafter s), batch (tokens), mean_ctx,
    n_active (decoding requests), pre_n / pre_tokens (prefill requests / tokens), sums [T, 3]
    (verified, accepted, emitted), clock [T + 1] (step starts, then the last end), kv_free, running,
    waits. Per member [m]: fin_step, admit_step, first_step (the step that completed its prefill;
    -1: none), rnd (rounds decoded). after [3]: free slots, free KV blocks and the next admission
    sequence number once the epoch ran.
    """

    lengths: np.ndarray
    acc: np.ndarray
    emit: np.ndarray
    active: np.ndarray
    dt: np.ndarray
    draft: np.ndarray
    batch: np.ndarray
    mean_ctx: np.ndarray
    n_active: np.ndarray
    pre_n: np.ndarray
    pre_tokens: np.ndarray
    sums: np.ndarray
    clock: np.ndarray
    kv_free: np.ndarray
    running: np.ndarray
    waits: np.ndarray
    fin_step: np.ndarray
    admit_step: np.ndarray
    first_step: np.ndarray
    rnd: np.ndarray
    after: np.ndarray

    @classmethod
    def empty(cls, t_max: int, m: int) -> EpochOut:
        """Fresh output arrays for T = t_max steps of m members (fresh: the records keep views of them)."""
        def z(dtype: type = np.int64) -> np.ndarray:
            return np.zeros(t_max, dtype=dtype)

        def per_member() -> np.ndarray:
            return np.zeros(m, dtype=np.int64)

        return cls(np.zeros((t_max, m), dtype=np.int64), np.zeros((t_max, m), dtype=np.int64),
                   np.zeros((t_max, m), dtype=np.int64), np.zeros((t_max, m), dtype=np.bool_),
                   z(np.float64), z(np.float64), z(), z(np.float64), z(), z(), z(), np.zeros((t_max, 3), dtype=np.int64),
                   np.zeros(t_max + 1), z(), z(), z(), per_member(), per_member(), per_member(), per_member(),
                   np.zeros(3, dtype=np.int64))


def plan_epoch(policy: PolicyCode, state: EpochState, arrivals: Arrivals, prices: Prices, limits: Limits,
               out: EpochOut) -> int:
    """Plan up to T whole engine steps from `state.now` (T = state.conf.shape[0]); return the number
    planned (0: take the step path). The compiled `_plan_epoch` does the work (see there).

    The one entry point: the groups are checked by type, then spread into the compiled function's
    parameters, whose names are the groups' fields in order (`PLANNER_PARAMETERS`, checked when this
    module loads). numba could take the NamedTuples themselves, but reading them costs ~16 us more per
    call (25 us against 9 us for a 4-step epoch on the test planner inputs, benchmarks/bench_simulator.py
    runs ~10^4 to 10^5 calls); spread, a call costs what the positional call did.
    """
    if not (type(policy) is PolicyCode and type(state) is EpochState and type(arrivals) is Arrivals
            and type(prices) is Prices and type(limits) is Limits and type(out) is EpochOut):
        got = ", ".join(type(x).__name__ for x in (policy, state, arrivals, prices, limits, out))
        raise TypeError(f"plan_epoch takes (PolicyCode, EpochState, Arrivals, Prices, Limits, EpochOut), got ({got})")
    return int(_plan_epoch(*policy, *state, *arrivals, *prices[:-1], *prices.speed, *limits, *out))


@njit(cache=True)
def _plan_epoch(kind, param, conf, lead, m_valid, m_slot, m_left, m_ctx, m_prefill, m_seq, m_arrival, m_tokens, n_res,
                slot_member, held, stack, free0, kv_free0, seq0, now, waiting0, upc_arrival, next_arrival_s, cut, cost,
                draft_ctx, draft_tab, padded, by_n, times, factors, scale_prefill, kv_total, watermark, block_size,
                prefill_chunk, admit_ok, horizon, lengths, acc, emit, active, dt, draft, batch, mean_ctx, n_active,
                pre_n, pre_tokens, sums, clock, kv_free, running, waits, fin_step, admit_step, first_step, rnd,
                after):  # pragma: no cover (compiled)
    """Plan up to T whole engine steps from `now`, exactly as `Engine._prologue` + `_step` +
    `_finish_step` would take them one by one; return the number planned (0: take the step path).

    Members [m]: the n_res resident requests (slot order), then q candidates in FCFS order (the head
    of the waiting queue, m_arrival -inf, then requests yet to arrive at m_arrival). A step: reserve
    every decoding request's lookahead (stop if it does not fit: preemption), admit arrived candidates
    into free slots (the slot stack `stack[:free0]`, popped from the end) while their prefill fits above
    the watermark (stop on a request that can never fit, or one past the candidates), chunked prefill
    oldest admission first, verify lengths by the stateless policy `kind` on conf [T, m, g] / lead
    [T, m] (member i's r-th round at conf[r, i]; m_valid [m] of them drawn), the step's price, emissions, finished requests leave
    (decoders in slot order, then completed prefills in admission order, pushed on the stack).

    Stops before a step whose start ties an arrival, in which a request beyond the candidates could be
    admitted, that ends at or after `next_arrival_s` (the first arrival not counted: upc_arrival
    [u] are arrivals after the candidates that only join the queue; waiting0 queued requests after
    the candidates) or at or after `cut` (a fleet's next arrival: its router reads the replicas'
    state then, which a step shows from its start on) or past the horizon; and when a member's
    rounds run out. Member arrays, slot_member, held, stack are updated in place; `after` [3] returns
    (free slots, free KV blocks, next admission sequence number). Outputs per step (first `stop`):
    lengths / acc / emit / active [T, m]; dt, draft, batch, mean_ctx, n_active, pre_n, pre_tokens,
    sums [T, 3], clock [T + 1], kv_free, running, waits [T]; per member fin_step, admit_step,
    first_step (the step that completed its prefill), rnd (rounds decoded).

    The parameters are the fields of plan_epoch's groups, in order (PLANNER_PARAMETERS).
    """
    speed_n, speed_t, speed_f, speed_prefill = by_n, times, factors, scale_prefill
    t_max, m, g = conf.shape
    g1 = g + 1
    n_slots = slot_member.shape[0]
    out = np.zeros(m, dtype=np.int64)
    drafted = np.full(m, g, dtype=np.int64)
    step_conf = np.zeros((m, g))
    rows = np.empty(m, dtype=np.int64)
    pre = np.empty(m, dtype=np.int64)
    pre_seq = np.empty(m, dtype=np.int64)
    chunk = np.empty(m, dtype=np.int64)
    offs = np.empty(m, dtype=np.int64)
    xs = np.empty(cost.knots.shape[0])
    ys = np.empty(cost.knots.shape[0])
    top = free0
    free = kv_free0
    seq = seq0
    cp = n_res  # next candidate to admit
    q_end = m
    for i in range(m):
        fin_step[i] = -1
        admit_step[i] = -1
        first_step[i] = -1
        rnd[i] = 0
    clock[0] = now
    stop = t_max
    held0 = held.copy()  # the state at the step's start, restored when the step is not planned after all
    free_s, top_s, seq_s, cp_s = free, top, seq, cp
    for t in range(t_max):
        c0 = clock[t]
        for s in range(n_slots):
            held0[s] = held[s]
        free_s, top_s, seq_s, cp_s = free, top, seq, cp
        # a tie between an arrival and the step's start: which comes first is SimPy's event order
        tie = False
        for i in range(cp, q_end):
            if m_arrival[i] == c0:
                tie = True
        for k in range(upc_arrival.shape[0]):
            if upc_arrival[k] == c0:
                tie = True
        if tie:
            stop = t
            break
        # 1. lookahead reserve of every decoding request
        growth = 0
        for s in range(n_slots):
            i = slot_member[s]
            if i >= 0 and m_prefill[i] == 0:
                nb = _blocks(m_ctx[i] + g1, block_size)
                if nb > held[s]:
                    growth += nb - held[s]
        if growth > free:  # preemption: the step path
            stop = t
            break
        for s in range(n_slots):
            i = slot_member[s]
            if i >= 0 and m_prefill[i] == 0:
                nb = _blocks(m_ctx[i] + g1, block_size)
                if nb > held[s]:
                    held[s] = nb
        free -= growth
        # 2. admission, FCFS, while slots are free
        blocked = False
        while top > 0:
            if cp < q_end:
                if m_arrival[cp] > c0:
                    if waiting0 > 0:  # (cannot happen: queued requests come before arrivals)
                        blocked = True
                    break
                if not admit_ok:
                    blocked = True
                    break
                kb = _blocks(m_tokens[cp] + 1, block_size)
                if kb > kv_total - watermark:  # can never fit: rejected, on the step path
                    blocked = True
                    break
                if free - kb < watermark:
                    break
                top -= 1
                s = stack[top]
                slot_member[s] = cp
                held[s] = kb
                free -= kb
                m_slot[cp] = s
                m_prefill[cp] = m_tokens[cp]
                m_ctx[cp] = m_tokens[cp]
                m_seq[cp] = seq
                seq += 1
                admit_step[cp] = t
                cp += 1
            else:
                arrived = waiting0 > 0
                for k in range(upc_arrival.shape[0]):
                    if upc_arrival[k] <= c0:
                        arrived = True
                if arrived:  # a request past the candidates would be admitted
                    blocked = True
                break
        if blocked:
            stop = t
            break
        # 3. chunked prefill, oldest admission first
        npre = 0
        for s in range(n_slots):
            i = slot_member[s]
            if i >= 0 and m_prefill[i] > 0:
                pre[npre] = i
                pre_seq[npre] = m_seq[i]
                npre += 1
        order = np.argsort(pre_seq[:npre], kind="mergesort")
        before = 0
        kept = 0
        p_tokens = 0
        pre_ctx = 0
        for j in range(npre):
            i = pre[order[j]]
            left_p = m_prefill[i]
            c = min(max(prefill_chunk - before, 0), left_p)
            before += left_p
            if c > 0:
                rows[kept] = i  # (reused below as the decoding rows; copied out first)
                chunk[kept] = c
                offs[kept] = m_ctx[i] - m_prefill[i]
                kept += 1
                p_tokens += c
                pre_ctx += m_ctx[i]
        kept_pre = rows[:kept].copy()
        # decoding requests, slot order
        n = 0
        total = 0
        for s in range(n_slots):
            i = slot_member[s]
            if i >= 0 and m_prefill[i] == 0:
                if rnd[i] >= m_valid[i]:  # its peeked rounds ran out
                    stop = t
                    break
                rows[n] = i
                n += 1
                total += m_ctx[i]
        if stop == t:
            break
        if n == 0 and p_tokens == 0:  # nothing to run: the engine sleeps (or the step path decides)
            stop = t
            break
        mean = total / n if n > 0 else pre_ctx / kept
        slice_knots(cost, float(max(n, 1)), mean, xs, ys)
        cap = batch_cap(cost, float(n), mean)
        prefill_s = prefill_price(cost, chunk[:kept], offs[:kept], n, xs, ys) if kept > 0 else 0.0
        draft_s = draft_at(draft_ctx, draft_tab, n, mean) if (g > 0 and n > 0) else 0.0
        if g > 0 and n > 0:
            for j in range(n):
                i = rows[j]
                r = rnd[i]
                for k in range(g):
                    step_conf[i, k] = conf[r, i, k]
            step_lengths(kind, param, step_conf, drafted, rows[:n], xs, ys, cost.extend, cap, draft_s + prefill_s,
                         out)
        tokens = 0
        longest = 0
        for j in range(n):
            li = out[rows[j]] if g > 0 else 0
            tokens += li
            longest = max(longest, li)
        b = n * (1 + longest) if (padded and n > 0) else n + tokens
        if b > cap:  # the KV does not fit: the step path refuses it with the reason
            stop = t
            break
        decode_s = knot_price(xs, ys, cost.extend, float(b)) if n > 0 else empty_pass(cost, xs, ys)
        step = step_seconds(decode_s, draft_s, prefill_s, speed_factor(speed_n, speed_t, speed_f, c0, n),
                            speed_prefill)
        end = c0 + step
        if end > horizon or end >= cut:  # (a step the horizon cuts shows its admissions: the step path)
            stop = t
            break
        if next_arrival_s <= end:  # an arrival not counted would join the queue during the step
            stop = t
            break
        tie = False
        for i in range(cp, q_end):
            if m_arrival[i] == end:
                tie = True
        for k in range(upc_arrival.shape[0]):
            if upc_arrival[k] == end:
                tie = True
        if tie:
            stop = t
            break
        # the step runs: record it
        dt[t] = step
        draft[t] = draft_s
        batch[t] = p_tokens + b
        mean_ctx[t] = mean
        n_active[t] = n
        pre_n[t] = kept
        pre_tokens[t] = p_tokens
        clock[t + 1] = end
        for i in range(m):
            lengths[t, i] = 0
            acc[t, i] = 0
            emit[t, i] = 0
            active[t, i] = False
        s_ver = 0
        s_acc = 0
        s_emit = 0
        for j in range(n):
            i = rows[j]
            li = out[i] if g > 0 else 0
            a = min(lead[rnd[i], i], li)
            e = min(a + 1, m_left[i])
            active[t, i] = True
            lengths[t, i] = li
            acc[t, i] = a
            emit[t, i] = e
            s_ver += li
            s_acc += a
            s_emit += e
            rnd[i] += 1
            m_left[i] -= e
            m_ctx[i] += e
            nb = _blocks(m_ctx[i], block_size)  # the rejected drafts' blocks go back
            free += held[m_slot[i]] - nb
            held[m_slot[i]] = nb
        for j in range(kept):
            i = kept_pre[j]
            m_prefill[i] -= chunk[j]
            if m_prefill[i] == 0:  # the prefill completes: the first token
                m_left[i] -= 1
                m_ctx[i] += 1
                s_emit += 1
                first_step[i] = t
        sums[t, 0] = s_ver
        sums[t, 1] = s_acc
        sums[t, 2] = s_emit
        # finished requests leave: decoders in slot order, then completed prefills in admission order
        for j in range(n):
            i = rows[j]
            if m_left[i] <= 0:
                s = m_slot[i]
                fin_step[i] = t
                free += held[s]
                held[s] = 0
                slot_member[s] = -1
                stack[top] = s
                top += 1
        for j in range(kept):
            i = kept_pre[j]
            if first_step[i] == t and m_left[i] <= 0:
                s = m_slot[i]
                fin_step[i] = t
                free += held[s]
                held[s] = 0
                slot_member[s] = -1
                stack[top] = s
                top += 1
        kv_free[t] = free
        running[t] = n_slots - top
        queued = waiting0
        for i in range(cp, q_end):
            if m_arrival[i] <= end:
                queued += 1
        for k in range(upc_arrival.shape[0]):
            if upc_arrival[k] <= end:
                queued += 1
        waits[t] = queued
    if stop < t_max:  # undo the unplanned step's reserve and admissions
        for s in range(n_slots):
            held[s] = held0[s]
        for i in range(cp_s, cp):
            slot_member[m_slot[i]] = -1
            m_slot[i] = -1
            admit_step[i] = -1
        free, top, seq = free_s, top_s, seq_s
    after[0] = top
    after[1] = free
    after[2] = seq
    return stop


# the compiled planner's parameters: plan_epoch's groups' fields, in the order it spreads them (the
# host's speed, Prices' last field, spread in its place)
PLANNER_PARAMETERS = (PolicyCode._fields + EpochState._fields + Arrivals._fields + Prices._fields[:-1]
                      + SpeedArrays._fields + Limits._fields + EpochOut._fields)


def check_planner_parameters(fn: Any) -> None:
    """Raise TypeError unless `fn`'s parameters are PLANNER_PARAMETERS, in order (the first that
    differs named): the compiled planner reads by position what plan_epoch spreads by field."""
    names = tuple(inspect.signature(fn).parameters)
    if names != PLANNER_PARAMETERS:
        at = next((i for i, (a, b) in enumerate(zip(names, PLANNER_PARAMETERS)) if a != b),
                  min(len(names), len(PLANNER_PARAMETERS)))
        want = PLANNER_PARAMETERS[at] if at < len(PLANNER_PARAMETERS) else "(nothing)"
        got = names[at] if at < len(names) else "(nothing)"
        raise TypeError(f"{fn.__name__}: parameter {at} is {got!r}, plan_epoch's groups put {want!r} there")


check_planner_parameters(_plan_epoch.py_func)
