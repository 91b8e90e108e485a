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
ties by smaller k then smaller i. tests/test_epoch.py checks it (and static / threshold / verify-all)
against the library, and tests/test_engine.py the planned epochs against the step path, each with
deliberately wrong variants as negative controls.

Why numba: the work per step is ~100 scalar operations on arrays of a few dozen entries, where
numpy's per-call overhead (microseconds) is the whole cost; compiled, `plan_epoch` took
28 us a call, 1.5 us a planned step (cProfile over 930 s of the benchmark trace, about 100,000
steps), and the code stays a readable loop. Compiled once per machine (`cache=True`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from sparksched.cost_kernels import batch_cap, draft_at, empty_pass, knot_price, slice_knots
from sparksched.scheduler import SCALE

# policy kinds understood by the compiled code
NONE, DSPARK, STATIC, THRESHOLD = 0, 1, 2, 3
STATELESS = ("dspark", "mtp1", "static", "threshold", "verify-all", "none")  # parse_policy kinds it runs


def policy_code(kind: str, param: float | None, g: int) -> tuple[int, float]:
    """(kind code, parameter) for a stateless policy: static-k keeps k, threshold tau, verify-all g."""
    if g == 0 or kind == "none":
        return NONE, 0.0
    if kind == "dspark":
        return DSPARK, 0.0
    if kind == "static":
        return STATIC, float(param or 0)
    if kind == "mtp1":
        return STATIC, 1.0
    if kind == "verify-all":
        return STATIC, float(g)
    if kind == "threshold":
        return THRESHOLD, float(param or 0.0)
    raise ValueError(f"policy kind {kind!r} has no compiled form (stateful: it runs step by step)")


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
def plan_epoch(kind, param, conf, lead, start, left, ctx, cost, draft_ctx, draft_tab, avail, block_size, padded,
               now, ctx0_mean, prefill0, prefill0_s, next_arrival_s, free0, waiting0, horizon, cut,
               speed_n, speed_t, speed_f, speed_prefill, lengths, acc, emit, active, dt, draft, batch, mean_ctx,
               n_active, sums, clock, kv_free, fin_step):  # pragma: no cover (compiled)
    """Plan up to T steps of the n resident requests in conf [T, n, g]; return the number planned.

    Member i decodes from step start[i] on (0: decoding now; 1: its prefill completes in step 0, the
    step's `prefill0` prompt tokens, which emits its first token), its round r = t - start[i] at step t.

    Inputs: lead [T, n] accepted prefix of each round if all g drafts were verified; left [n] tokens
    each request has still to emit and ctx [n] its context (KV tokens), both updated in place; cost:
    the step-cost model (sparksched.cost.CostArrays), priced at each step's own number of decoding
    requests and mean context (step 0: ctx0_mean); draft_ctx [Cd], draft_tab [Cd, n + 1]: drafter
    seconds by decoding requests (sparksched.cost.draft_at); avail KV blocks these requests may hold;
    padded: charge n * (1 + max l) verify tokens; now: clock at step 0; prefill0_s: the seconds of
    step 0's prefill chunks; next_arrival_s: the next arrival not yet released (inf: none); free0
    free slots; waiting0 queued requests; horizon (inf: none); cut: steps after the first must end
    before it (a fleet's next arrival, which a router assigns from the replicas' state then; inf:
    none); speed_n [n_max + 1], speed_t [k],
    speed_f [k], speed_prefill: the host's speed (simulator.speed.HostSpeed.arrays, ones: the profile's).

    Outputs (first `stop` steps): lengths / acc / emit / active (decoded) [T, n]; dt, draft (the
    drafter's seconds), batch, mean_ctx, n_active [T]; sums [T, 3] verified, accepted, emitted tokens; clock [T + 1] step start times
    (clock[t + 1] = clock[t] + dt[t], as SimPy adds them); kv_free [T] after each step; fin_step [n]
    the step in which each request finished (-1: still running).
    """
    t_max, n, g = conf.shape
    g1 = g + 1
    alive = np.ones(n, dtype=np.bool_)
    rows = np.empty(n, dtype=np.int64)
    out = np.zeros(n, dtype=np.int64)
    drafted = np.full(n, g, dtype=np.int64)
    step_conf = np.zeros((n, g))
    xs = np.empty(cost.knots.shape[0])
    ys = np.empty(cost.knots.shape[0])
    finished = 0
    clock[0] = now
    for i in range(n):
        fin_step[i] = -1
    stop = t_max
    for t in range(t_max):
        m = 0
        total = 0
        alive_n = 0
        need = 0
        for i in range(n):
            if alive[i]:
                alive_n += 1
                if start[i] <= t:
                    rows[m] = i
                    m += 1
                    total += ctx[i]
                    need += -(-(ctx[i] + g1) // block_size)
                else:
                    need += -(-(ctx[i] + 1) // block_size)
        extra = prefill0 if t == 0 else 0
        if alive_n == 0 or (m == 0 and extra == 0):
            stop = t
            break
        # admission possible at this step's start: the plain step path takes it
        if free0 + finished > 0 and (next_arrival_s <= clock[t] or (t > 0 and waiting0 > 0 and finished > 0)):
            stop = t
            break
        if need > avail:  # the lookahead reserve does not fit: preemption, on the step path
            stop = t
            break
        mean = ctx0_mean if t == 0 else total / m
        slice_knots(cost, float(max(m, 1)), mean, xs, ys)
        cap = batch_cap(cost, float(m), mean)
        draft_s = draft_at(draft_ctx, draft_tab, m, mean) if (g > 0 and m > 0) else 0.0
        prefill_s = prefill0_s if t == 0 else 0.0
        if g > 0 and m > 0:
            for j in range(m):
                i = rows[j]
                r = t - start[i]
                for k in range(g):
                    step_conf[i, k] = conf[r, i, k]
            step_lengths(kind, param, step_conf, drafted, rows[:m], xs, ys, cost.extend, cap,
                         draft_s + prefill_s, out)
        tokens = 0
        longest = 0
        for j in range(m):
            li = out[rows[j]] if g > 0 else 0
            tokens += li
            longest = max(longest, li)
        b = m * (1 + longest) if (padded and m > 0) else m + tokens
        if b > cap:  # the KV does not fit: the step path refuses it with the reason
            stop = t
            break
        decode_s = knot_price(xs, ys, cost.extend, float(b)) if m > 0 else empty_pass(cost, xs, ys)
        step = step_seconds(decode_s, draft_s, prefill_s, speed_factor(speed_n, speed_t, speed_f, clock[t], m),
                            speed_prefill)
        end = clock[t] + step
        if t > 0 and (end > horizon or end >= cut):
            stop = t
            break
        dt[t] = step
        draft[t] = draft_s
        batch[t] = extra + b
        mean_ctx[t] = mean
        n_active[t] = m
        clock[t + 1] = end
        held = 0
        s_ver = 0
        s_acc = 0
        s_emit = 0
        for i in range(n):
            lengths[t, i] = 0
            acc[t, i] = 0
            emit[t, i] = 0
            active[t, i] = False
            if not alive[i]:
                continue
            if start[i] <= t:
                li = out[i] if g > 0 else 0
                a = min(lead[t - start[i], i], li)
                e = min(a + 1, left[i])
                active[t, i] = True
                lengths[t, i] = li
                acc[t, i] = a
                s_ver += li
                s_acc += a
            else:
                e = 1  # the prefill completes: the first token
            emit[t, i] = e
            s_emit += e
            left[i] -= e
            ctx[i] += e
            if left[i] <= 0:
                alive[i] = False
                fin_step[i] = t
                finished += 1
            else:
                held += -(-ctx[i] // block_size)
        sums[t, 0] = s_ver
        sums[t, 1] = s_acc
        sums[t, 2] = s_emit
        kv_free[t] = avail - held
    return stop
