"""The real speculative decoding loop: a DSpark drafter + a target decoder, batched, with KV caches.

One round for the requests in `slots` (n of them, block g):

    1. draft   drafter backbone (one parallel pass) + sequential head loop -> x [n, g], q [n, g, V],
               confidences c [n, g] (from x_{k-1}, never x_k; STS-calibrated when the drafter has
               temperatures)
    2. policy  verify lengths l [n] = policy(c): the DSpark scheduler (`sparksched.schedule` with a
               throughput curve), static-k, threshold, verify-all, or none (plain decoding)
    3. verify  one target pass over [anchor, x_1..x_m] (m = max l, padded), then the core's lossless
               `sparksched.verify` on the first l_i drafts -> accepted a [n], emitted a + 1 tokens
    4. commit  the target KV cache and the drafter's context cache advance by a + 1 (the anchor and
               the accepted drafts); rejected positions are rolled back by not advancing. The last
               emitted token becomes the next anchor.

Randomness: every request owns a torch.Generator seeded from (seed, request index); the drafter and
the verifier draw from it, so a request's tokens do not depend on which other requests share the
batch. Greedy mode (temperature 0) accepts drafts equal to the target's argmax: the output equals
plain greedy decoding token for token.

`autoregressive_generate` is plain target decoding with the same cache, for comparison.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sparksched.models.decoder import Decoder, KVCache
from sparksched.models.drafter import DraftOutput, DSparkDrafter
from sparksched.sampling import sample_rows
from sparksched.verify import verify

Policy = Callable[[np.ndarray], np.ndarray]  # conf [n, g] float64 -> lengths [n] int64


def make_policy(name: str, curve: Any = None, layout: str = "padded") -> Policy:
    """A verify-length policy by name, any one-step policy of the registry (sparksched.policies:
    dspark | static-K | threshold-TAU | conf-threshold-TAU | verify-all | none).

    threshold-TAU verifies while the survival S_k = c_1 ... c_k >= TAU; conf-threshold-TAU while
    each position's own c_k >= TAU (the paper's static-threshold rule). dspark needs `curve` (a
    ThroughputCurve of the target's step time by verified tokens, or a StepPrice that adds the
    drafter's seconds). This loop verifies a padded [n, 1 + max l] block, so by default dspark
    prices a step as that block (`sparksched.scheduler.schedule_padded`: one width for the batch);
    layout="ragged" gives the per-request greedy of `schedule`, which prices sum_i (1 + l_i).
    """
    from sparksched.policies import library_policy, parse_policy
    from sparksched.scheduler import schedule_padded

    if layout not in ("padded", "ragged"):
        raise ValueError(f"layout must be 'padded' or 'ragged', got {layout!r}")
    if layout == "padded" and parse_policy(name)[0].name == "dspark":
        if curve is None:
            raise ValueError("policy 'dspark' needs the price of a step (a profile of this target)")
        return lambda conf: schedule_padded(conf, curve)
    return library_policy(name, curve)


def request_generator(seed: int, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The random stream of request `index` under run seed `seed`."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + index * 7919 + 12345) % (2**63 - 1))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rows(cache: KVCache, slots: np.ndarray) -> tuple[KVCache, bool]:
    """A cache over rows `slots`: a view when they are a contiguous range, else a copy (+ flag)."""
    s0 = int(slots[0])
    if np.array_equal(slots, np.arange(s0, s0 + slots.size)):
        sl = slice(s0, s0 + slots.size)
        return KVCache(cache.k[:, sl], cache.v[:, sl], cache.lengths[sl]), False
    idx = torch.as_tensor(slots, device=cache.k.device)
    return KVCache(cache.k[:, idx], cache.v[:, idx], cache.lengths[idx]), True


def _write_back(cache: KVCache, sub: KVCache, slots: np.ndarray, copied: bool) -> None:
    if copied:
        idx = torch.as_tensor(slots, device=cache.k.device)
        cache.k[:, idx] = sub.k
        cache.v[:, idx] = sub.v
        cache.lengths[idx] = sub.lengths


def _sample(probs: torch.Tensor, gens: Sequence[torch.Generator]) -> torch.Tensor:
    """One token per row of probs [n, V] by inverse CDF with each row's own generator."""
    u = torch.stack([torch.rand((), dtype=torch.float64, generator=g, device=probs.device) for g in gens])
    return sample_rows(probs.double(), u)


@dataclass
class Round:
    """What one round did for its n requests (numpy arrays)."""

    slots: np.ndarray  # [n]
    conf: np.ndarray  # [n, g] float64
    lengths: np.ndarray  # [n] verified drafts
    accepted: np.ndarray  # [n]
    emitted: list[list[int]]  # tokens emitted per request (accepted drafts + recovered/bonus)
    draft_seconds: float
    verify_seconds: float


@dataclass
class GenerateResult:
    """tokens: per request, the generated tokens (first token from prefill included); rounds; timings."""

    tokens: list[list[int]]
    rounds: list[Round] = field(default_factory=list)
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def decode_tokens(self) -> int:
        return sum(len(t) - 1 for t in self.tokens)

    def accepted_per_round(self) -> float:
        acc = [r.accepted for r in self.rounds]
        return float(np.concatenate(acc).mean()) if acc else 0.0


class SpeculativeDecoder:
    """Batched speculative decoding state for up to `max_batch` slots (see the module docstring)."""

    def __init__(self, target: Decoder, drafter: DSparkDrafter | None, max_batch: int, max_len: int,
                 greedy: bool = False, temperature: float = 1.0, calibrated: bool = True, seed: int = 0) -> None:
        if not greedy and temperature <= 0:
            raise ValueError(f"temperature must be > 0 (or greedy=True), got {temperature}")
        self.target, self.drafter = target.eval(), drafter
        self.device = target.embed.weight.device
        self.greedy, self.temperature, self.calibrated, self.seed = greedy, temperature, calibrated, seed
        self.block = drafter.config.block if drafter is not None else 0
        self.max_len = max_len
        self.cache = target.new_cache(max_batch, max_len)
        self.ctx = drafter.new_context(max_batch, max_len) if drafter is not None else None
        self.hidden_layers = drafter.target_layers if drafter is not None else ()
        self.anchor = torch.zeros(max_batch, dtype=torch.long, device=self.device)
        self.gens: list[torch.Generator | None] = [None] * max_batch
        self._pending: tuple[np.ndarray, DraftOutput] | None = None

    # --------------------------------------------------------------------------------- helpers
    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits / (1.0 if self.greedy else self.temperature), dim=-1)

    def _next(self, logits: torch.Tensor, slots: np.ndarray) -> torch.Tensor:
        if self.greedy:
            return logits.argmax(-1)
        return _sample(self._probs(logits), [self.gens[s] for s in slots])

    # --------------------------------------------------------------------------------- lifecycle
    @torch.no_grad()
    def prefill(self, slots: Sequence[int], prompts: Sequence[Sequence[int]], request_ids: Sequence[int],
                anchors: Sequence[int | None] | None = None,
                generators: Sequence[torch.Generator | None] | None = None) -> list[int]:
        """Run each prompt through the target (one request at a time); returns each first token.

        Resets the slots' caches. Each slot's generator is `generators[j]` when given (a resumed
        request keeps its stream), else seeded from (seed, request id). anchors[j], when not None,
        is the already-emitted next token (a request resuming after preemption): it becomes the
        anchor and nothing is sampled.
        """
        first = []
        for j, (s, prompt, rid) in enumerate(zip(slots, prompts, request_ids)):
            if not len(prompt):
                raise ValueError(f"request {rid}: empty prompt")
            if len(prompt) + 1 >= self.max_len:
                raise ValueError(f"request {rid}: prompt of {len(prompt)} tokens does not fit max_len {self.max_len}")
            gen = generators[j] if generators is not None else None
            self.gens[s] = gen if gen is not None else request_generator(self.seed, int(rid), self.device)
            sl = np.array([s])
            sub, _ = _rows(self.cache, sl)
            sub.lengths.zero_()
            toks = torch.as_tensor(list(prompt), dtype=torch.long, device=self.device)[None]
            out = self.target(toks, cache=sub, hidden_layers=self.hidden_layers)
            sub.advance(torch.tensor([toks.shape[1]], device=self.device))
            if self.ctx is not None and self.drafter is not None:
                csub, _ = _rows(self.ctx, sl)
                csub.lengths.zero_()
                self.drafter.extend_context(csub, out.hidden)
                csub.advance(torch.tensor([toks.shape[1]], device=self.device))
            given = anchors[j] if anchors is not None else None
            tok = self._next(out.logits[:, -1], sl) if given is None else torch.tensor([int(given)], device=self.device)
            self.anchor[s] = tok[0]
            first.append(int(tok[0]))
        return first

    @torch.no_grad()
    def draft(self, slots: np.ndarray) -> tuple[DraftOutput, float]:
        """Draft a block for `slots` ([n] int64); returns the draft and its wall seconds."""
        if self.drafter is None or self.ctx is None:
            raise ValueError("this decoder has no drafter")
        _sync(self.device)
        t0 = time.perf_counter()
        sub, _ = _rows(self.ctx, slots)
        idx = torch.as_tensor(slots, device=self.device)
        gens = None if self.greedy else [self.gens[s] for s in slots]
        out = self.drafter.draft(self.anchor[idx], sub, gens, greedy=self.greedy,
                                 temperature=1.0 if self.greedy else self.temperature, calibrated=self.calibrated)
        _sync(self.device)
        self._pending = (slots.copy(), out)
        return out, time.perf_counter() - t0

    @torch.no_grad()
    def verify(self, slots: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, list[list[int]], float]:
        """Verify the first `lengths` drafts of the last `draft` on `slots` (lengths all 0 = plain step).

        Returns accepted [n], the emitted tokens per request, and the wall seconds of the pass.
        """
        n = slots.size
        lengths = np.asarray(lengths, dtype=np.int64)
        m = int(lengths.max()) if n else 0
        if m > 0 and (self._pending is None or not np.array_equal(self._pending[0], slots)):
            raise ValueError("verify must follow draft on the same slots")
        _sync(self.device)
        t0 = time.perf_counter()
        idx = torch.as_tensor(slots, device=self.device)
        sub, copied = _rows(self.cache, slots)
        if int(sub.lengths.max()) + m + 1 > self.max_len:
            raise ValueError(f"a request would exceed max_len {self.max_len}")
        anchor = self.anchor[idx]
        if m > 0:
            draft = self._pending[1]  # type: ignore[index]
            tokens = torch.cat([anchor[:, None], draft.tokens[:, :m]], dim=1)
        else:
            tokens = anchor[:, None]
        out = self.target(tokens, cache=sub, hidden_layers=self.hidden_layers)
        if m > 0:
            res = verify(self._probs(out.logits), None if self.greedy else draft.probs[:, :m],
                         draft.tokens[:, :m], torch.as_tensor(lengths, device=self.device),
                         generators=None if self.greedy else [self.gens[s] for s in slots], greedy=self.greedy,
                         validate=False)
            accepted = res.accepted
            emitted_t = res.tokens
        else:
            accepted = torch.zeros(n, dtype=torch.long, device=self.device)
            emitted_t = self._next(out.logits[:, 0], slots)[:, None]
        keep = accepted + 1
        sub.advance(keep)
        _write_back(self.cache, sub, slots, copied)
        if self.ctx is not None and self.drafter is not None:
            csub, ccopied = _rows(self.ctx, slots)
            self.drafter.extend_context(csub, out.hidden)
            csub.advance(keep)
            _write_back(self.ctx, csub, slots, ccopied)
        self.anchor[idx] = emitted_t.gather(1, accepted[:, None]).squeeze(1)
        _sync(self.device)
        seconds = time.perf_counter() - t0
        acc = accepted.cpu().numpy().astype(np.int64)
        em = emitted_t.cpu().numpy()
        self._pending = None
        return acc, [em[i, : acc[i] + 1].tolist() for i in range(n)], seconds

    def keep_rows(self, rows: np.ndarray) -> None:
        """Move slots `rows` ([m], any order) to slots 0..m-1 (caches, anchors, generators), so a
        shrinking batch stays contiguous and later steps use views instead of copies."""
        idx = torch.as_tensor(rows, device=self.device)
        m = len(rows)
        for cache in (self.cache, self.ctx):
            if cache is not None:
                cache.k[:, :m] = cache.k[:, idx]
                cache.v[:, :m] = cache.v[:, idx]
                cache.lengths[:m] = cache.lengths[idx].clone()
        self.anchor[:m] = self.anchor[idx].clone()
        self.gens[:m] = [self.gens[int(r)] for r in rows]
        self._pending = None

    def copy_row(self, src: int, dst: int) -> None:
        """Copy slot `src`'s state (both caches, anchor, random stream) into slot `dst`."""
        for cache in (self.cache, self.ctx):
            if cache is not None:
                cache.k[:, dst] = cache.k[:, src]
                cache.v[:, dst] = cache.v[:, src]
                cache.lengths[dst] = cache.lengths[src]
        self.anchor[dst] = self.anchor[src]
        self.gens[dst] = self.gens[src]
        self._pending = None

    def step(self, slots: np.ndarray, policy: Policy) -> Round:
        """One full round (draft, policy, verify) for `slots`."""
        d, ds = self.draft(slots)
        conf = d.conf.double().cpu().numpy()
        lengths = np.asarray(policy(conf), dtype=np.int64)
        acc, em, vs = self.verify(slots, lengths)
        return Round(slots.copy(), conf, lengths, acc, em, ds, vs)


def generate(target: Decoder, drafter: DSparkDrafter | None, prompts: Sequence[Sequence[int]], max_new_tokens: int,
             policy: Policy | str = "verify-all", curve: Any = None, greedy: bool = False, temperature: float = 1.0,
             seed: int = 0, calibrated: bool = True) -> GenerateResult:
    """Generate `max_new_tokens` tokens for every prompt as one batch (speculative when a drafter is given).

    A request leaves the batch once it has `max_new_tokens` tokens (its output is cut there; the
    last round may overshoot by up to g tokens internally). drafter=None or
    policy='none' gives plain autoregressive decoding through the same code path.
    """
    pol = make_policy(policy, curve) if isinstance(policy, str) else policy
    n = len(prompts)
    g = drafter.config.block if drafter is not None else 0
    max_len = max(len(p) for p in prompts) + max_new_tokens + g + 2
    dec = SpeculativeDecoder(target, drafter, n, max_len, greedy, temperature, calibrated, seed)
    dev = target.embed.weight.device
    _sync(dev)
    t0 = time.perf_counter()
    first = dec.prefill(range(n), prompts, range(n))
    _sync(dev)
    t1 = time.perf_counter()
    out = [[t] for t in first]
    res = GenerateResult(out, prefill_seconds=t1 - t0)
    active = np.arange(n)  # request index held by each slot 0..m-1
    while True:
        keep = np.array([j for j, i in enumerate(active) if len(out[i]) < max_new_tokens], dtype=np.int64)
        if keep.size == 0:
            break
        if keep.size < active.size:  # some requests finished: compact the rest into slots 0..m-1
            dec.keep_rows(keep)
            active = active[keep]
        slots = np.arange(active.size)
        if drafter is None:
            m = slots.size
            acc, em, vs = dec.verify(slots, np.zeros(m, dtype=np.int64))
            res.rounds.append(Round(active.copy(), np.zeros((m, 0)), np.zeros(m, np.int64), acc, em, 0.0, vs))
        else:
            r = dec.step(slots, pol)
            r.slots = active.copy()  # report request indices, not slots
            res.rounds.append(r)
            em = r.emitted
        for j, i in enumerate(active):
            out[i].extend(em[j])
    res.decode_seconds = time.perf_counter() - t1
    res.tokens = [t[:max_new_tokens] for t in out]
    return res


def serve(target: Decoder, drafter: DSparkDrafter | None, prompts: Sequence[Sequence[int]], max_new_tokens: int,
          concurrency: int, policy: Policy | str = "verify-all", curve: Any = None, greedy: bool = False,
          temperature: float = 1.0, seed: int = 0, calibrated: bool = True) -> GenerateResult:
    """Continuous batching: at most `concurrency` requests decode at once, and a finished request's
    slot is refilled from the queue (prompts in order) before the next round, as a serving engine
    does; a fixed batch instead runs its last rounds for its slowest requests alone.

    Each request's tokens are those `generate` gives it (its random stream is seeded from (seed,
    request index)); decode_seconds is the loop's wall time less the prefills (prefill_seconds).
    drafter=None or policy 'none': plain decoding through the same code path.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    pol = make_policy(policy, curve) if isinstance(policy, str) else policy
    g = drafter.config.block if drafter is not None else 0
    max_len = max(len(p) for p in prompts) + max_new_tokens + g + 2
    dec = SpeculativeDecoder(target, drafter, concurrency, max_len, greedy, temperature, calibrated, seed)
    dev = target.embed.weight.device
    out: list[list[int]] = [[] for _ in prompts]
    res = GenerateResult(out)
    queue = list(range(len(prompts)))
    active: list[int] = []  # request index held by each slot 0..m-1
    _sync(dev)
    start = time.perf_counter()
    while True:
        if queue and len(active) < concurrency:  # refill the free slots (timed apart from decoding)
            t0 = time.perf_counter()
            new = queue[:concurrency - len(active)]
            del queue[:len(new)]
            first = dec.prefill(range(len(active), len(active) + len(new)), [prompts[i] for i in new], new)
            _sync(dev)
            res.prefill_seconds += time.perf_counter() - t0
            for i, t in zip(new, first):
                out[i].append(t)
            active.extend(new)
        if not active:
            break
        slots = np.arange(len(active))
        if drafter is None:
            acc, em, vs = dec.verify(slots, np.zeros(slots.size, dtype=np.int64))
            res.rounds.append(Round(np.asarray(active), np.zeros((slots.size, 0)), np.zeros(slots.size, np.int64),
                                    acc, em, 0.0, vs))
        else:
            r = dec.step(slots, pol)
            r.slots = np.asarray(active)
            res.rounds.append(r)
            em = r.emitted
        for j, i in enumerate(active):
            out[i].extend(em[j])
        keep = np.array([j for j, i in enumerate(active) if len(out[i]) < max_new_tokens], dtype=np.int64)
        if keep.size < len(active):  # compact the unfinished requests into slots 0..m-1
            dec.keep_rows(keep)
            active = [active[j] for j in keep]
    res.decode_seconds = time.perf_counter() - start - res.prefill_seconds
    res.tokens = [t[:max_new_tokens] for t in out]
    return res


def autoregressive_generate(target: Decoder, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                            greedy: bool = False, temperature: float = 1.0, seed: int = 0) -> GenerateResult:
    """Plain target decoding (one token per request per step) with the same cache and seeds."""
    return generate(target, None, prompts, max_new_tokens, "none", greedy=greedy, temperature=temperature, seed=seed)


def rounds_rows(result: GenerateResult, request_ids: Sequence[str], domains: Sequence[str]) -> list[dict]:
    """The rounds of a `generate` call as recorded-rounds rows (sparksched.rounds format)."""
    rows = []
    for step, r in enumerate(result.rounds):
        g = r.conf.shape[1]
        for j, s in enumerate(r.slots):
            rows.append({"request": str(request_ids[s]), "step": step, "domain": str(domains[s]),
                         "conf": [float(x) for x in r.conf[j]], "drafted": g, "verified": int(r.lengths[j]),
                         "accepted": int(r.accepted[j])})
    return rows


@torch.no_grad()
def measure_step_curve(target: Decoder, n: int, context: int, block: int, max_len: int | None = None,
                       repeats: int = 5, hidden_layers: Sequence[int] = ()):
    """The target's verify step time by batch tokens B = n * t (t = 1..block + 1) on its device.

    A quick stand-in for a profile when the DSpark policy drives this loop: n requests with
    `context` cached tokens each, one forward of t tokens (median of `repeats`). Returns a
    ThroughputCurve over B = n, 2n, ..., (block + 1) n (padded verification costs n * (1 + max l)).
    """
    from sparksched.curve import ThroughputCurve

    dev = target.embed.weight.device
    max_len = max_len or context + block + 2
    cache = target.new_cache(n, max_len)
    cache.lengths.fill_(context)
    gen = torch.Generator(device="cpu").manual_seed(0)
    points, secs = [], []
    for t in range(1, block + 2):
        toks = torch.randint(0, target.config.vocab_size, (n, t), generator=gen).to(dev)
        times = []
        for r in range(repeats + 1):
            _sync(dev)
            t0 = time.perf_counter()
            target(toks, cache=cache, hidden_layers=hidden_layers)
            _sync(dev)
            if r:
                times.append(time.perf_counter() - t0)
        points.append(n * t)
        secs.append(float(np.median(times)))
    mono = np.maximum.accumulate(np.asarray(secs))  # step time never falls with more tokens
    return ThroughputCurve.from_points(points, mono.tolist())


@torch.no_grad()
def measure_loop_price(target: Decoder, drafter: DSparkDrafter, n: int, context: int, max_len: int | None = None,
                       repeats: int = 7, seed: int = 0):
    """The loop's own step price at n requests: a `StepPrice` for the DSpark policy of this loop.

    Times the calls a round makes, on a decoder of its own with `context` cached (random) tokens per
    request: one `draft` (its seconds are the price's drafter part, paid whatever is verified) and
    one `verify` of t - 1 drafts per request for t = 1..g + 1 (the padded [n, t] pass, rejection
    sampling and the drafter's context update included: everything that grows with the verified
    tokens). The t values take turns within each of `repeats` rounds, so load drift on a shared host
    hits all of them alike; each point is the median of its samples, and the curve (over B = n t) is
    the least-squares non-decreasing fit of the medians (no upward bias from a running maximum).
    """
    from sparksched.cost import StepPrice
    from sparksched.curve import ThroughputCurve, isotonic_non_decreasing

    g = drafter.config.block
    dev = target.embed.weight.device
    max_len = max_len or context + g + 2
    dec = SpeculativeDecoder(target, drafter, n, max_len, seed=seed)
    dec.gens = [request_generator(seed, i, dev) for i in range(n)]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    toks = torch.randint(1, target.config.vocab_size, (n, context), generator=gen).to(dev)
    out = target(toks, cache=dec.cache, hidden_layers=drafter.target_layers)
    drafter.extend_context(dec.ctx, out.hidden)  # type: ignore[arg-type]
    slots = np.arange(n)
    draft_s: list[float] = []
    verify_s: dict[int, list[float]] = {t: [] for t in range(1, g + 2)}
    for r in range(repeats + 1):
        for t in range(1, g + 2):
            dec.cache.lengths.fill_(context)
            dec.ctx.lengths.fill_(context)  # type: ignore[union-attr]
            ds = dec.draft(slots)[1]
            vs = dec.verify(slots, np.full(n, t - 1, dtype=np.int64))[2]
            if r:  # the first round warms up
                draft_s.append(ds)
                verify_s[t].append(vs)
    med = np.array([np.median(verify_s[t]) for t in range(1, g + 2)])
    curve = ThroughputCurve.from_points([n * t for t in range(1, g + 2)], isotonic_non_decreasing(med).tolist())
    return StepPrice(curve, draft_seconds=float(np.median(draft_s)))
