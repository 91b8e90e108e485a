"""Shared test helpers: the exact-enumeration machinery of the losslessness tests, and the curves
and model shapes several test modules use. No test module imports another; they import this.

Enumeration: a toy "world" gives, for every context (a tuple of token ids), a target distribution p,
a draft distribution q (random, with zeros, equal pairs and disjoint supports), and Markov
confidences c_k = f(k, x_{k-1}) (exact 0 and 1 included). Other requests share the batch with their
own confidences (drawn from the context). For one subject request we enumerate every draft block,
call the scheduling policy on the whole batch, enumerate rejection sampling exactly, and chain
rounds until T tokens are emitted (`output_law`); `max_law_error` compares the law of the first T
tokens with the target's.

Engine runs: `write_profile` (a small profile file), `make_trace`, `run`, `check_invariants` and
`assert_same_run` for the simulator's tests.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import polars as pl
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st

from sparksched import ThroughputCurve
from sparksched.models.presets import DecoderConfig
from sparksched.scheduler import step_times

# a step time flat inside 8-token tiles and dearer past each boundary (GEMM tiles, CUDA-graph sizes)
JAGGED = ThroughputCurve.from_points([1, 8, 9, 16, 17, 64], [0.010, 0.010, 0.013, 0.013, 0.016, 0.04])

# a tiny decoder for model tests (2 layers, width 32, vocabulary 64)
TINY_DECODER = DecoderConfig("t", vocab_size=64, hidden=32, layers=2, heads=2, kv_heads=1, head_dim=16,
                             intermediate=64, max_positions=256)

TOL = 1e-12

Policy = Callable[[np.ndarray], np.ndarray]  # conf [n, g] -> lengths [n]; the subject is row 0


class World:
    """Deterministic random target/draft/confidence model keyed by context."""

    def __init__(self, seed: int, vocab: int, block: int, others: int, conf_mode: str = "markov"):
        self.seed, self.vocab, self.block, self.others, self.conf_mode = seed, vocab, block, others, conf_mode
        r = np.random.default_rng([seed, 7])
        # Markov confidence table c[k][prev token]: a mix of exact 0, exact 1 and interior values
        self.conf_table = np.where(r.random((block, vocab)) < 0.2, r.integers(0, 2, (block, vocab)),
                                   r.random((block, vocab)))
        self._cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def dists(self, ctx: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(p, q) at context ctx: float64 [V] each, normalised."""
        if ctx not in self._cache:
            r = np.random.default_rng([self.seed, 1, len(ctx), *ctx])
            p = r.dirichlet(np.ones(self.vocab) * 0.7)
            kind = r.integers(0, 6)
            if kind == 0:
                q = p.copy()  # p = q: never rejected
            elif kind == 1 and self.vocab > 1:
                cut = r.integers(1, self.vocab)  # disjoint supports
                p[:cut] = 0.0
                q = np.zeros(self.vocab)
                q[:cut] = r.dirichlet(np.ones(cut))
            else:
                q = r.dirichlet(np.ones(self.vocab) * 0.7)
                if kind == 2:
                    q[r.integers(0, self.vocab)] = 0.0  # q = 0 where p > 0
                if kind == 3:
                    p[r.integers(0, self.vocab)] = 0.0  # p = 0 where q > 0
            if p.sum() == 0:
                p[-1] = 1.0
            if q.sum() == 0:
                q[0] = 1.0
            self._cache[ctx] = (p / p.sum(), q / q.sum())
        return self._cache[ctx]

    def confidence(self, k: int, ctx: tuple[int, ...], block: tuple[int, ...]) -> float:
        """c_{k+1} (0-based k) for the draft block `block` after context ctx."""
        if self.conf_mode == "markov":  # allowed: a function of x_{k-1} (the anchor for k = 0)
            prev = (ctx + block[:k])[-1]
        else:  # "self": reads x_k itself, which the contract forbids
            prev = block[k]
        return float(self.conf_table[k, prev])

    def other_conf(self, ctx: tuple[int, ...]) -> np.ndarray:
        """Confidences of the other requests in the batch this round: [others, g]."""
        r = np.random.default_rng([self.seed, 3, len(ctx), *ctx])
        c = r.random((self.others, self.block))
        return np.where(r.random(c.shape) < 0.15, np.round(c), c)


def round_law(world: World, ctx: tuple[int, ...], policy: Policy) -> dict[tuple[int, ...], float]:
    """Exact law of the tokens one round emits for the subject request after context ctx."""
    out: dict[tuple[int, ...], float] = defaultdict(float)
    v, g = world.vocab, world.block
    others = world.other_conf(ctx)
    for block in itertools.product(range(v), repeat=g):
        prob = 1.0
        for k in range(g):
            prob *= world.dists(ctx + block[:k])[1][block[k]]
        if prob == 0.0:
            continue
        conf = np.vstack([[world.confidence(k, ctx, block) for k in range(g)], others])
        length = int(policy(conf)[0])
        alive = prob
        for k in range(length):
            p, q = world.dists(ctx + block[:k])
            x = block[k]
            accept = 1.0 if q[x] <= 0 else min(1.0, p[x] / q[x])
            reject = alive * (1.0 - accept)
            if reject > 0.0:
                residual = np.maximum(p - q, 0.0)
                residual = residual / residual.sum() if residual.sum() > 0 else p
                for y in range(v):
                    out[block[:k] + (y,)] += reject * residual[y]
            alive *= accept
            if alive == 0.0:
                break
        else:
            p = world.dists(ctx + block[:length])[0]
            for y in range(v):
                out[block[:length] + (y,)] += alive * p[y]
    return out


def output_law(world: World, ctx: tuple[int, ...], tokens: int, policy: Policy,
               memo: dict | None = None) -> dict[tuple[int, ...], float]:
    """Exact law of the first `tokens` emitted tokens, chaining rounds."""
    memo = {} if memo is None else memo
    key = (ctx, tokens)
    if key in memo:
        return memo[key]
    law: dict[tuple[int, ...], float] = defaultdict(float)
    for seq, pr in round_law(world, ctx, policy).items():
        if pr == 0.0:
            continue
        if len(seq) >= tokens:
            law[seq[:tokens]] += pr
        else:
            for rest, pr2 in output_law(world, ctx + seq, tokens - len(seq), policy, memo).items():
                law[seq + rest] += pr * pr2
    memo[key] = law
    return law


def max_law_error(world: World, policy: Policy, tokens: int = 2, ctx: tuple[int, ...] = (0,)) -> float:
    """max over token sequences of |P_emitted - P_target| for the first `tokens` tokens."""
    law = output_law(world, ctx, tokens, policy)
    err = 0.0
    for seq in itertools.product(range(world.vocab), repeat=tokens):
        target = 1.0
        for t in range(tokens):
            target *= world.dists(ctx + seq[:t])[0][seq[t]]
        err = max(err, abs(law.get(seq, 0.0) - target))
    assert abs(sum(law.values()) - 1.0) < 1e-12
    return err


def global_search(curve: ThroughputCurve, extra: int = 0) -> Policy:
    """NEGATIVE CONTROL: the best R over every choice of verify lengths (retrospective, no early stop)."""

    def policy(conf: np.ndarray) -> np.ndarray:
        n, g = conf.shape
        surv = np.cumprod(conf, axis=1)
        best, best_l = -1.0, None
        for ls in itertools.product(range(g + 1), repeat=n):
            expected = n + sum(surv[i, :ls[i]].sum() for i in range(n))
            rate = expected / float(step_times(curve, np.asarray([extra + n + sum(ls)]))[0])
            if rate > best:
                best, best_l = rate, ls
        return np.asarray(best_l)

    return policy


# ---------------------------------------------------------------------------------------- strategies
@st.composite
def worlds_and_curves(draw, max_vocab: int = 4, max_block: int = 3, max_others: int = 2, min_others: int = 0,
                      min_block: int = 1):
    vocab = draw(st.integers(1, max_vocab))
    block = draw(st.integers(min_block, max_block))
    others = draw(st.integers(min_others, max_others))
    extra = draw(st.integers(0, 2))
    seed = draw(st.integers(0, 2**32 - 1))
    b_max = extra + (others + 1) * (block + 1)
    # non-decreasing step times with flat stretches and jumps: increments in {0, small, cliff}
    steps = draw(st.lists(st.sampled_from([0.0, 0.0, 0.02, 0.1, 0.7, 2.0]), min_size=b_max, max_size=b_max))
    base = draw(st.sampled_from([0.5, 1.0, 3.0]))
    times = base + np.cumsum(steps)
    curve = ThroughputCurve.from_points(np.arange(1, b_max + 1), times, extrapolate="clamp")
    return World(seed, vocab, block, others), curve, extra


FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def cliff_cases(cheat: bool, n: int = 12):
    """Appendix-A-like worlds: the step time jumps right after the base batch, then stays flat.

    For the global-search control, c_2 swings with x_1 (high after one token, 0 after the other)
    and the jump J lies between what verifying x_1 alone and x_1 x_2 is worth. For the
    own-token control, c_1 itself swings with x_1 and J lies between its two values.
    """
    for seed in range(n):
        world = World(seed, vocab=2, block=2, others=0, conf_mode="self" if cheat else "markov")
        r = np.random.default_rng([seed, 99])
        hi = r.uniform(0.8, 1.0)
        if cheat:
            lo = r.uniform(0.0, 0.5)
            world.conf_table[0] = r.permutation([hi, lo])
            jump = r.uniform(lo, hi)
        else:
            c1 = r.uniform(0.6, 0.9)
            world.conf_table[0] = [c1, c1]
            world.conf_table[1] = r.permutation([hi, 0.0])
            jump = c1 * (1 + hi / 2)
        times = np.array([1.0, 1.0 + jump, 1.0 + jump + r.uniform(0.0, 0.05)])
        yield world, ThroughputCurve.from_points([1, 2, 3], times, extrapolate="clamp")


def appendix_a_law(policy: Policy) -> np.ndarray:
    """First-token law in the paper's Appendix A (g = 2, one request, vocabulary {A, B})."""
    p, q = np.array([0.7, 0.3]), np.array([0.5, 0.5])
    p2 = np.array([0.6, 0.4])  # anything: the second position does not affect the first token
    law = np.zeros(2)
    for x1, x2 in itertools.product(range(2), repeat=2):
        prob = q[x1] * q[x2]
        conf = np.array([[0.8, 0.9 if x1 == 0 else 0.0]])
        length = int(policy(conf)[0])
        if length == 0:
            law += prob * p
            continue
        a = min(1.0, p[x1] / q[x1])
        law[x1] += prob * a
        residual = np.maximum(p - q, 0.0)
        law += prob * (1 - a) * residual / residual.sum()
        _ = p2
    return law


APPENDIX_A_CURVE = ThroughputCurve.from_points([1, 2, 3], [1 / 1.0, 1 / 0.5, 1 / 0.45])


@st.composite
def worlds_and_costs(draw, max_vocab: int = 4, max_block: int = 3, max_others: int = 2):
    """A world and a step-cost surface whose slice depends on the batch's request count and on a
    context drawn for the world (known before the round drafts): flat stretches and cliffs in t,
    a different shape at each n and L, sometimes a KV limit inside the batch."""
    from sparksched import StepCost

    vocab = draw(st.integers(1, max_vocab))
    block = draw(st.integers(1, max_block))
    others = draw(st.integers(0, max_others))
    seed = draw(st.integers(0, 2**32 - 1))
    per = list(range(1, block + 2))
    rows = []
    for ctx in (8, 64):
        for n in (1, 2, 3):
            steps = draw(st.lists(st.sampled_from([0.0, 0.0, 0.02, 0.1, 0.7, 2.0]), min_size=len(per),
                                  max_size=len(per)))
            base = draw(st.sampled_from([0.5, 1.0, 3.0])) * (1 + n / 4) * (1 + ctx / 64)
            rows += [{"requests": n, "tokens": n * t, "tokens_per_request": t, "context": ctx, "median_s": float(s)}
                     for t, s in zip(per, base + np.cumsum(steps))]
    prof = {"schema": 1, "device": {"name": "toy"}, "model": {"preset": "toy"}, "dtype": "float32", "verify": rows}
    if draw(st.booleans()):  # a KV limit: some wide steps at the long context do not fit
        limit = draw(st.integers(3 * 8 + 3, 3 * 64 + 3 * len(per)))
        for r in rows:
            r["fits"] = r["requests"] * r["context"] + r["tokens"] <= max(limit, 64 + len(per))
    context = draw(st.sampled_from([8.0, 20.0, 64.0, 100.0]))
    cost = StepCost.from_profile(prof)
    assume(cost.max_batch_tokens(others + 1, context) >= others + 1)  # the anchors alone must fit
    return World(seed, vocab, block, others), cost, context


# ------------------------------------------------------------------------------------------ engine runs
# a small profile and traces for simulator tests (test_engine, test_speed, test_fleet, ...)

def write_profile(path, contexts=(512, 4096)) -> str:
    """A small schema-1 profile: verify grid at two contexts, drafter rows, model/device facts."""
    tokens = [1, 16, 64, 256, 1024, 4096]
    verify = [{"requests": 1, "tokens": b, "context": c, "median_s": 0.007 + 2e-5 * b + 1e-6 * c * (1 + b / 512)}
              for c in contexts for b in tokens]
    draft = [{"requests": n, "block": g, "median_s": 0.0004 + 1e-5 * n * g} for g in (1, 7) for n in (1, 16, 128)]
    prof = {"schema": 1, "kind": "estimated", "device": {"name": "test", "memory_bytes": 80 * 2**30},
            "model": {"layers": 36, "kv_heads": 8, "head_dim": 128, "parameters": 8_000_000_000},
            "dtype": "bfloat16", "verify": verify, "draft": draft}
    p = path / "profile.json"
    p.write_text(json.dumps(prof))
    return str(p)


def make_trace(n: int, rate: float, prompt: int | list[int], output: int | list[int], domain="chat", seed=0):
    """n requests arriving as a Poisson process of `rate` per second (seeded), with the given prompt and
    output lengths (one for all, or one per request)."""
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0 / rate, n))
    prompts = np.broadcast_to(np.asarray(prompt), (n,))
    outputs = np.broadcast_to(np.asarray(output), (n,))
    return pl.DataFrame({"id": [f"r{i}" for i in range(n)], "arrival_s": arrival,
                         "prompt_tokens": prompts.astype(np.int64), "output_tokens": outputs.astype(np.int64),
                         "domain": [domain] * n})


def check_invariants(res, trace: pl.DataFrame) -> None:
    """No request lost, output tokens match, clock monotone, KV within capacity."""
    req = res.requests
    assert req.height == trace.height, "a request is missing from the results"
    assert set(req["id"]) == set(trace["id"])
    fin = req.filter(pl.col("status") == "finished")
    other = req.filter(pl.col("status") != "finished")
    assert other.filter(pl.col("reason").is_null()).height == 0, "unfinished request without a reason"
    assert (fin["emitted_tokens"] == fin["output_tokens"]).all(), "emitted tokens differ from the trace"
    assert (fin["first_token_s"] >= fin["arrival_s"]).all()
    assert (fin["finish_s"] >= fin["first_token_s"]).all()
    st_ = res.steps
    t0, dur = st_["t_start"].to_numpy(), st_["duration_s"].to_numpy()
    assert np.all(dur > 0)
    assert np.all(np.diff(t0) >= 0), "the clock went backwards"
    assert np.all(t0[1:] >= t0[:-1] + dur[:-1] - 1e-9), "steps overlap"
    assert (st_["kv_free_blocks"] >= 0).all()
    # rounds add up to the per-request totals
    per = res.rounds.group_by("request").agg(pl.col("emitted").sum().alias("e"))
    tot = dict(zip(per["request"].to_list(), per["e"].to_list()))
    emitted = req["emitted_tokens"].to_numpy()
    decode = np.asarray([tot.get(i, 0) for i in range(req.height)])
    firsts = req["first_token_s"].is_not_null().to_numpy().astype(np.int64)
    assert np.all(decode + firsts * (1 + req["preemptions"].to_numpy()) >= emitted)


def run(trace, tmp_path, **kw):
    """`simulate(trace, SimConfig(**kw))` on `write_profile(tmp_path)` unless kw names a profile."""
    from simulator.config import SimConfig
    from simulator.run import simulate

    kw.setdefault("profile", write_profile(tmp_path))
    return simulate(trace, SimConfig(**kw))


def assert_same_run(fast, slow) -> None:
    """Two runs agree: rounds identical, requests and steps identical up to an ulp in float columns."""
    assert fast.rounds.equals(slow.rounds)  # every verify length, acceptance and emission identical
    # an epoch ends with one SimPy timeout, so its clock can differ from step-by-step sums by an ulp
    for a, b in ((fast.requests, slow.requests), (fast.steps, slow.steps)):
        assert a.columns == b.columns and a.height == b.height
        for col in a.columns:
            if a[col].dtype.is_float():
                np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-12, atol=0)
            else:
                assert a[col].equals(b[col]), col
