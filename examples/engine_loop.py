"""A minimal speculative-decoding engine loop on sparksched's public API (runs in seconds on CPU).

Each step does what a vLLM-style engine step does, in the same order (docs/integration.md maps it
onto vLLM's and SGLang's hook points):

    1. propose   the drafter proposes g tokens per request: drafts [n, g], their distributions
                 q [n, g, V] and a confidence c [n, g] per position (c_k never reads x_k)
    2. schedule  sparksched decides how many drafts of each request to verify:
                 sync : lengths = schedule(conf, curve)                        (Algorithm 1)
                 async: K = plan_budget(conf of 2 steps ago) on the host, then
                        lengths = assign_budget(conf, K) on the device          (section 5.2)
    3. forward   the target scores [anchor, x_1..x_g] for every request in one pass (static
                 shape [n, g + 1]; a varlen engine would send only 1 + lengths[i] tokens)
    4. verify    lossless rejection sampling: result = verify(p, q, drafts, lengths, generators)
    5. rollback  keep the anchor and the accepted drafts in the KV cache
                 (cache.advance(result.num_emitted)), everything after them is dropped by length;
                 the recovered / bonus token becomes the next anchor

Models: the bundled small target and DSpark drafter from `sparksched/data/checkpoints/` when
present; otherwise a randomly initialised tiny target drafting for itself at a higher temperature
(a toy drafter whose confidence is the draft distribution's own top probability: it reads q_k, never
x_k, so it meets the contract).

    python examples/engine_loop.py                   # sampled decoding, sync scheduler
    python examples/engine_loop.py --policy async    # the asynchronous top-K scheduler
    python examples/engine_loop.py --check           # greedy: must equal plain greedy decoding
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from sparksched import RoundsWriter, ThroughputCurve, assign_budget, plan_budget, schedule, verify
from sparksched.models.decoder import Decoder, KVCache, build_decoder
from sparksched.models.presets import get_preset


@dataclass
class Proposal:
    """What the drafter hands the scheduler: drafts [n, g] int64, q [n, g, V], conf [n, g]."""

    drafts: torch.Tensor
    q: torch.Tensor
    conf: torch.Tensor


Proposer = Callable[[torch.Tensor, KVCache, list[torch.Generator], bool], Proposal]


def toy_self_drafter(target: Decoder, block: int, temperature: float, seed: int = 0) -> Proposer:
    """The target drafting for itself, off by a fixed per-token logit bias and a higher temperature.

    A stand-in when no drafter is bundled. The bias makes its argmax differ from the target's now
    and then, so even greedy decoding rejects drafts and exercises the rollback.

    It writes draft keys/values into the target's own cache past the valid length and restores the
    length afterwards, so the verify pass simply overwrites them: rollback by length at work.
    """

    bias = 1.0 * torch.randn(target.config.vocab_size, generator=torch.Generator().manual_seed(seed),
                             dtype=torch.float64).to(target.embed.weight.device)

    @torch.no_grad()
    def propose(anchor: torch.Tensor, cache: KVCache, gens: list[torch.Generator], greedy: bool) -> Proposal:
        n = anchor.shape[0]
        tok = anchor
        drafts, qs = [], []
        for _ in range(block):
            logits = target(tok[:, None], cache).logits[:, -1]          # [n, V]
            q = torch.softmax((logits.double() + bias) / temperature, -1)
            if greedy:
                nxt = q.argmax(-1)
            else:
                nxt = torch.stack([torch.multinomial(q[i], 1, generator=gens[i])[0] for i in range(n)])
            drafts.append(nxt)
            qs.append(q)
            cache.advance(torch.ones(n, dtype=torch.long, device=anchor.device))
            tok = nxt
        cache.lengths -= block                                          # roll the draft pass back
        q = torch.stack(qs, 1)                                          # [n, g, V]
        conf = q.max(-1).values                                         # reads q_k only, never x_k
        if greedy:
            q = torch.nn.functional.one_hot(torch.stack(drafts, 1), q.shape[-1]).double()
        return Proposal(torch.stack(drafts, 1), q, conf)

    return propose


def load_models(device: str, dtype: torch.dtype, block: int, seed: int) -> tuple[Decoder, Proposer, str]:
    """The bundled checkpoints when present, else a random tiny target with the toy drafter."""
    config = get_preset("tiny").with_(vocab_size=512, max_positions=512, tie_embeddings=False)
    target = build_decoder(config, device=device, dtype=dtype, seed=seed)
    # an untied, scaled-up LM head: a random target whose distributions are peaked (greedy decoding
    # does not collapse onto repeating its input, as a tied random head would)
    with torch.no_grad():
        target.lm_head.weight.mul_(25.0)
    return target, toy_self_drafter(target, block, temperature=1.3, seed=seed), "random tiny target + toy self-drafter"


def default_curve() -> ThroughputCurve:
    """A step-time curve with a flat memory-bound start and tile-boundary steps (seconds)."""
    return ThroughputCurve.from_points([1, 16, 17, 32, 33, 64, 65, 512],
                                       [0.010, 0.010, 0.013, 0.013, 0.016, 0.016, 0.022, 0.080])


@torch.no_grad()
def run(requests: int = 4, new_tokens: int = 48, block: int = 5, policy: str = "sync", greedy: bool = False,
        device: str = "cpu", seed: int = 0, dtype: torch.dtype = torch.float32,
        record: RoundsWriter | None = None) -> dict:
    """Decode `new_tokens` per request with speculative decoding; returns tokens and counters.

    With `record`, every round (confidences, drafted, verified, accepted) is logged in the
    recorded-rounds format that `fit_sts` and the simulator read.
    """
    target, propose, what = load_models(device, dtype, block, seed)
    curve = default_curve()
    vocab = target.config.vocab_size
    rng = np.random.default_rng(seed)
    prompts = torch.as_tensor(rng.integers(0, vocab, size=(requests, 8)), device=device)
    gens = [torch.Generator(device=device).manual_seed(seed * 1000 + i) for i in range(requests)]

    # prefill: the prompt enters the cache; its last logits give the first token (the anchor)
    # requests that are done keep decoding until all are (a static batch): room for the overshoot
    cache = target.new_cache(requests, prompts.shape[1] + (new_tokens + 1) * (block + 2))
    logits = target(prompts, cache).logits[:, -1].double()
    cache.advance(torch.full((requests,), prompts.shape[1], device=device))
    first = logits.argmax(-1) if greedy else torch.stack(
        [torch.multinomial(torch.softmax(logits[i], -1), 1, generator=gens[i])[0] for i in range(requests)])
    out = [[int(t)] for t in first]
    anchor = first
    stale: list[np.ndarray] = []                                        # confidences of past steps
    steps = verified = accepted_total = 0
    t0 = time.perf_counter()
    while min(len(o) for o in out) < new_tokens:
        # 1. propose
        prop = propose(anchor, cache, gens, greedy)
        # 2. schedule
        if policy == "sync":
            lengths = schedule(prop.conf, curve)
        else:
            old = stale[-2] if len(stale) >= 2 else np.ones(tuple(prop.conf.shape))
            k = plan_budget(old, curve)                                 # host: stale confidences only
            lengths = assign_budget(prop.conf, torch.tensor(k, device=device))
            stale.append(prop.conf.cpu().numpy())                       # a real engine copies async
        # 3. forward: the target scores anchor + drafts in one pass
        tokens = torch.cat([anchor[:, None], prop.drafts], 1)           # [n, g + 1]
        p = torch.softmax(target(tokens, cache).logits.double(), -1)    # [n, g + 1, V]
        if greedy:
            p = torch.nn.functional.one_hot(p.argmax(-1), vocab).double()
        # 4. verify
        r = verify(p, prop.q, prop.drafts, lengths, generators=gens, greedy=greedy, validate=False)
        # 5. rollback: keep anchor + accepted drafts; the extra token is the next anchor
        cache.advance(r.num_emitted)
        anchor = r.tokens[torch.arange(requests, device=device), r.accepted]
        for i in range(requests):
            out[i].extend(r.tokens[i, : int(r.num_emitted[i])].tolist())
        if record is not None:                                          # optional: log for STS
            record.add([f"req-{i}" for i in range(requests)], step=steps, domain="toy",
                       conf=prop.conf.cpu().numpy(), drafted=[block] * requests,
                       verified=lengths.cpu().numpy(), accepted=r.accepted.cpu().numpy())
        steps += 1
        verified += int(lengths.sum())
        accepted_total += int(r.accepted.sum())
    wall = time.perf_counter() - t0
    return {"tokens": [o[:new_tokens] for o in out], "steps": steps, "verified": verified,
            "accepted": accepted_total, "wall_s": wall, "models": what, "prompts": prompts,
            "target": target}


@torch.no_grad()
def plain_greedy(target: Decoder, prompts: torch.Tensor, new_tokens: int) -> list[list[int]]:
    """Reference: plain greedy decoding, one target pass per token."""
    n = prompts.shape[0]
    cache = target.new_cache(n, prompts.shape[1] + new_tokens + 1)
    logits = target(prompts, cache).logits[:, -1]
    cache.advance(torch.full((n,), prompts.shape[1], device=prompts.device))
    tok = logits.argmax(-1)
    out = [[int(t)] for t in tok]
    for _ in range(new_tokens - 1):
        logits = target(tok[:, None], cache).logits[:, -1]
        cache.advance(torch.ones(n, dtype=torch.long, device=prompts.device))
        tok = logits.argmax(-1)
        for i in range(n):
            out[i].append(int(tok[i]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=48, help="new tokens per request")
    ap.add_argument("--block", type=int, default=5, help="drafted tokens per step (g)")
    ap.add_argument("--policy", choices=["sync", "async"], default="sync")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--record", metavar="PATH", help="write the rounds (.jsonl or .parquet) for fit_sts")
    ap.add_argument("--check", action="store_true",
                    help="greedy decoding in float64, compared token for token with plain greedy decoding")
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)  # tiny models: thread hand-offs cost more than they save on shared cores
    dtype = torch.float64 if args.check else torch.float32
    writer = RoundsWriter(args.record) if args.record else None
    res = run(args.requests, args.tokens, args.block, args.policy, args.check, args.device, args.seed, dtype,
              writer)
    if writer is not None:
        print(f"recorded {writer.close()} rounds to {args.record}")
    print(f"models: {res['models']}; policy {args.policy}; device {args.device}")
    print(f"{args.requests} requests x {args.tokens} tokens in {res['steps']} steps "
          f"({args.requests * args.tokens / res['steps']:.2f} tokens/step, plain decoding: {args.requests:.2f}); "
          f"verified {res['verified']} drafts, accepted {res['accepted']} "
          f"({res['accepted'] / max(res['verified'], 1):.0%}); {res['wall_s']:.2f} s")
    if args.check:
        want = plain_greedy(res["target"], res["prompts"], args.tokens)
        if res["tokens"] != want:
            raise SystemExit("MISMATCH: speculative greedy output differs from plain greedy decoding")
        print("check: speculative output equals plain greedy decoding token for token")


if __name__ == "__main__":
    main()
