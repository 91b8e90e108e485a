"""A minimal speculative-decoding engine loop on sparksched's public API (runs in seconds on CPU).

Each step does what a vLLM-style engine step does, in the same order (docs/integration.md maps it
onto vLLM's and SGLang's hook points):

    1. propose   the drafter proposes g tokens per request: drafts [n, g], their distributions
                 q [n, g, V] and a confidence c [n, g] per position (c_k never reads x_k)
    2. schedule  sparksched decides how many drafts of each request to verify:
                 sync : lengths = schedule(conf, cost, context=L)               (Algorithm 1)
                 async: K = plan_budget(conf of 2 steps ago, cost, context=L) on the host,
                        then lengths = assign_budget(conf, K) on the device     (section 5.2)
                 (cost: the price of a step by requests, tokens and context, sliced here at
                 this step's n requests and mean context L)
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparksched import RoundsWriter, StepCost, ThroughputCurve, assign_budget, plan_budget, schedule, verify
from sparksched.models.decoder import Decoder, build_decoder
from sparksched.models.drafter import DrafterConfig, DSparkDrafter, build_drafter
from sparksched.models.presets import get_preset


@dataclass
class Proposal:
    """What the drafter hands the scheduler: drafts [n, g] int64, q [n, g, V], conf [n, g]."""

    drafts: torch.Tensor
    q: torch.Tensor
    conf: torch.Tensor


class DSparkModels:
    """Target + DSpark drafter: prefill, propose, forward, commit (the drafter's context cache rolls
    back by length exactly like the target's KV cache)."""

    def __init__(self, target: Decoder, drafter: DSparkDrafter, what: str) -> None:
        self.target, self.drafter, self.what = target, drafter, what
        self.block = drafter.config.block
        self._hidden: list[torch.Tensor] = []

    def prefill(self, prompts: torch.Tensor, max_len: int) -> torch.Tensor:
        """Prompt [n, P] into both caches; returns the last prompt position's logits [n, V]."""
        n, length = prompts.shape
        self.cache = self.target.new_cache(n, max_len)
        self.ctx = self.drafter.new_context(n, max_len)
        out = self.target(prompts, self.cache, hidden_layers=self.drafter.target_layers)
        self.drafter.extend_context(self.ctx, out.hidden)
        filled = torch.full((n,), length, device=prompts.device)
        self.cache.advance(filled)
        self.ctx.advance(filled)
        return out.logits[:, -1]

    def propose(self, anchor: torch.Tensor, gens: list[torch.Generator], greedy: bool) -> Proposal:
        d = self.drafter.draft(anchor, self.ctx, gens, greedy=greedy)   # one parallel pass + head loop
        return Proposal(d.tokens, d.probs, d.conf)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Target logits [n, g + 1, V] for [anchor, drafts]; keeps the hidden states for commit."""
        out = self.target(tokens, self.cache, hidden_layers=self.drafter.target_layers)
        self._hidden = out.hidden
        return out.logits

    def commit(self, num_emitted: torch.Tensor) -> None:
        """Keep the anchor and the accepted drafts in both caches; the rest is rolled back."""
        self.drafter.extend_context(self.ctx, self._hidden)
        self.cache.advance(num_emitted)
        self.ctx.advance(num_emitted)


class ToyModels:
    """A random target drafting for itself (off by a fixed logit bias, at a higher temperature).

    A stand-in with non-trivial acceptance when no trained drafter is bundled. Its confidence is the
    draft distribution's top probability: it reads q_k, never x_k. The draft pass writes keys and
    values past the valid cache length and restores the length, so the verify pass overwrites them.
    """

    def __init__(self, target: Decoder, block: int, temperature: float, seed: int, what: str) -> None:
        self.target, self.block, self.temperature, self.what = target, block, temperature, what
        self.bias = torch.randn(target.config.vocab_size, generator=torch.Generator().manual_seed(seed),
                                dtype=torch.float64).to(target.embed.weight.device)

    def prefill(self, prompts: torch.Tensor, max_len: int) -> torch.Tensor:
        self.cache = self.target.new_cache(prompts.shape[0], max_len)
        logits = self.target(prompts, self.cache).logits[:, -1]
        self.cache.advance(torch.full((prompts.shape[0],), prompts.shape[1], device=prompts.device))
        return logits

    def propose(self, anchor: torch.Tensor, gens: list[torch.Generator], greedy: bool) -> Proposal:
        n, tok, drafts, qs = anchor.shape[0], anchor, [], []
        for _ in range(self.block):
            logits = self.target(tok[:, None], self.cache).logits[:, -1]          # [n, V]
            q = torch.softmax((logits.double() + self.bias) / self.temperature, -1)
            tok = q.argmax(-1) if greedy else torch.stack(
                [torch.multinomial(q[i], 1, generator=gens[i])[0] for i in range(n)])
            drafts.append(tok)
            qs.append(q)
            self.cache.advance(torch.ones(n, dtype=torch.long, device=anchor.device))
        self.cache.lengths -= self.block                                         # roll the draft pass back
        q = torch.stack(qs, 1)                                                   # [n, g, V]
        return Proposal(torch.stack(drafts, 1), q, q.max(-1).values)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.target(tokens, self.cache).logits

    def commit(self, num_emitted: torch.Tensor) -> None:
        self.cache.advance(num_emitted)


Models = DSparkModels | ToyModels


def random_target(device: str, dtype: torch.dtype, seed: int) -> Decoder:
    """A random tiny target with peaked distributions: an untied, scaled-up LM head (a tied random
    head makes greedy decoding repeat its input token)."""
    config = get_preset("tiny").with_(vocab_size=512, max_positions=512, tie_embeddings=False)
    target = build_decoder(config, device=device, dtype=dtype, seed=seed)
    with torch.no_grad():
        target.lm_head.weight.mul_(25.0)
    return target


def load_models(drafter: str, device: str, dtype: torch.dtype, block: int, seed: int,
                checkpoints: str | None = None) -> tuple[Models, Any]:
    """(models, tokenizer or None).

    drafter "auto": the bundled target + DSpark drafter when present (or those in `checkpoints`),
    else the toy self-drafter; "dspark": the checkpoints, or a random target with a randomly
    initialised DSpark drafter; "toy": the random target drafting for itself.
    """
    bundle = _bundle(checkpoints, device, dtype)
    if drafter in ("auto", "dspark") and bundle is not None:
        tok, target, dspark = bundle
        where = checkpoints or "bundled"
        return DSparkModels(target, dspark, f"{where} target + DSpark drafter (g = {dspark.config.block})"), tok
    target = random_target(device, dtype, seed)
    if drafter == "dspark":
        config = DrafterConfig(block=block, target_layers=(0, target.config.layers - 1))
        return DSparkModels(target, build_drafter(config, target, seed),
                            "random tiny target + randomly initialised DSpark drafter"), None
    return ToyModels(target, block, 1.3, seed, "random tiny target + toy self-drafter"), None


def _bundle(directory: str | None, device: str, dtype: torch.dtype) -> tuple[Any, Decoder, DSparkDrafter] | None:
    """(tokenizer, target, drafter) from `directory` (default: sparksched/data/checkpoints/), or None
    when that directory has no trained pair yet."""
    from sparksched.training.checkpoint import BUNDLED, load_bundle

    d = Path(directory) if directory else BUNDLED
    if not all((d / f).exists() for f in ("tokenizer.json", "target.pt", "drafter-markov.pt")):
        if directory:
            raise SystemExit(f"{d}: no tokenizer.json + target.pt + drafter-markov.pt there")
        return None
    return load_bundle(d, head="markov", device=device, dtype=dtype)


PROMPTS = ["def fibonacci(n):\n    ", "The capital of France is", "Question: what is 17 + 25?\nAnswer:",
           "import numpy as np\n", "Once upon a time", "for i in range(10):\n    "]


def default_cost(device: str) -> tuple[StepCost, str]:
    """The price of a step the scheduler optimises, and where it comes from.

    On CPU: the bundled measurement of the tiny preset on a 2-core machine (`cpu-tiny`, the bundled
    target's architecture), by requests, tokens and context. Elsewhere: a stand-in keyed on batch
    tokens only, with a flat memory-bound start and tile-boundary steps (profile your device with
    `sparksched profile`).
    """
    if device == "cpu":
        try:
            return StepCost.from_profile("cpu-tiny"), "profile cpu-tiny"
        except ValueError:
            pass
    return (StepCost.from_curve(ThroughputCurve.from_points([1, 16, 17, 32, 33, 64, 65, 512],
                                                            [0.010, 0.010, 0.013, 0.013, 0.016, 0.016, 0.022, 0.080])),
            "stand-in curve")


@torch.no_grad()
def run(requests: int = 4, new_tokens: int = 48, block: int = 5, policy: str = "sync", greedy: bool = False,
        device: str = "cpu", seed: int = 0, dtype: torch.dtype = torch.float32,
        record: RoundsWriter | None = None, drafter: str = "auto", checkpoints: str | None = None) -> dict:
    """Decode `new_tokens` per request with speculative decoding; returns tokens and counters.

    With `record`, every round (confidences, drafted, verified, accepted) is logged in the
    recorded-rounds format that `fit_sts` and the simulator read.
    """
    models, tok = load_models(drafter, device, dtype, block, seed, checkpoints)
    block = models.block
    cost, curve_name = default_cost(device)
    vocab = models.target.config.vocab_size
    if tok is not None:                                                 # real text, left-truncated to 16
        ids = [tok.encode(PROMPTS[i % len(PROMPTS)]).ids[-16:] for i in range(requests)]
        ids = [[0] * (16 - len(x)) + x for x in ids]                    # pad with <|endoftext|>
        prompts = torch.as_tensor(ids, device=device)
    else:
        prompts = torch.as_tensor(np.random.default_rng(seed).integers(0, vocab, size=(requests, 16)),
                                  device=device)
    gens = [torch.Generator(device=device).manual_seed(seed * 1000 + i) for i in range(requests)]

    # prefill: the prompt enters the cache(s); its last logits give the first token (the anchor).
    # Finished requests keep decoding until all are (a static batch): room for the overshoot.
    logits = models.prefill(prompts, prompts.shape[1] + (new_tokens + 1) * (block + 2)).double()
    first = logits.argmax(-1) if greedy else torch.stack(
        [torch.multinomial(torch.softmax(logits[i], -1), 1, generator=gens[i])[0] for i in range(requests)])
    out = [[int(t)] for t in first]
    anchor = first
    stale: list[np.ndarray] = []                                        # confidences of past steps
    steps = verified = accepted_total = 0
    t0 = time.perf_counter()
    while min(len(o) for o in out) < new_tokens:
        # 1. propose: drafts [n, g], q [n, g, V], conf [n, g]
        prop = models.propose(anchor, gens, greedy)
        # 2. schedule, on the price of a step of this size: n requests at their mean context
        context = float(prompts.shape[1] + np.mean([len(o) for o in out]))
        if policy == "sync":
            lengths = schedule(prop.conf, cost, context=context)
        else:
            old = stale[-2] if len(stale) >= 2 else np.ones(tuple(prop.conf.shape))
            k = plan_budget(old, cost, context=context)                 # host: stale confidences only
            lengths = assign_budget(prop.conf, torch.tensor(k, device=device), validate=False)
            stale.append(prop.conf.cpu().numpy())                       # a real engine copies async
        # 3. forward: the target scores anchor + drafts in one pass
        tokens = torch.cat([anchor[:, None], prop.drafts], 1)           # [n, g + 1]
        p = torch.softmax(models.forward(tokens).double(), -1)          # [n, g + 1, V]
        # 4. verify
        r = verify(p, prop.q, prop.drafts, lengths, generators=gens, greedy=greedy, validate=False)
        # 5. rollback: keep anchor + accepted drafts; the extra token is the next anchor
        models.commit(r.num_emitted)
        anchor = r.tokens[torch.arange(requests, device=device), r.accepted]
        for i in range(requests):
            out[i].extend(r.tokens[i, : int(r.num_emitted[i])].tolist())
        if record is not None:                                          # optional: log for STS
            record.add([f"req-{i}" for i in range(requests)], step=steps, domain="example",
                       conf=prop.conf.cpu().numpy(), drafted=[block] * requests,
                       verified=lengths.cpu().numpy(), accepted=r.accepted.cpu().numpy())
        steps += 1
        verified += int(lengths.sum())
        accepted_total += int(r.accepted.sum())
    wall = time.perf_counter() - t0
    return {"tokens": [o[:new_tokens] for o in out], "steps": steps, "verified": verified,
            "accepted": accepted_total, "wall_s": wall, "models": models.what, "prompts": prompts,
            "target": models.target, "tokenizer": tok, "curve": curve_name}


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
    ap.add_argument("--block", type=int, default=5, help="drafted tokens per step (g; a bundled drafter sets its own)")
    ap.add_argument("--drafter", choices=["auto", "dspark", "toy"], default="auto",
                    help="auto: the bundled DSpark drafter if present, else the toy self-drafter")
    ap.add_argument("--policy", choices=["sync", "async"], default="sync")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoints", metavar="DIR", help="tokenizer + target + drafter (default: the bundled ones)")
    ap.add_argument("--record", metavar="PATH", help="write the rounds (.jsonl or .parquet) for fit_sts")
    ap.add_argument("--check", action="store_true",
                    help="greedy decoding in float64, compared token for token with plain greedy decoding")
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)  # tiny models: thread hand-offs cost more than they save on shared cores
    dtype = torch.float64 if args.check else torch.float32
    writer = RoundsWriter(args.record) if args.record else None
    res = run(args.requests, args.tokens, args.block, args.policy, args.check, args.device, args.seed, dtype,
              writer, args.drafter, args.checkpoints)
    if writer is not None:
        print(f"recorded {writer.close()} rounds to {args.record}")
    print(f"models: {res['models']}; step times: {res['curve']}; policy {args.policy}; device {args.device}")
    print(f"{args.requests} requests x {args.tokens} tokens in {res['steps']} steps "
          f"({args.requests * args.tokens / res['steps']:.2f} tokens/step, plain decoding: {args.requests:.2f}); "
          f"verified {res['verified']} drafts, accepted {res['accepted']} "
          f"({res['accepted'] / max(res['verified'], 1):.0%}); {res['wall_s']:.2f} s")
    if res["tokenizer"] is not None:
        print("sample:", repr(res["tokenizer"].decode(res["prompts"][0].tolist() + res["tokens"][0])))
    if args.check:
        want = plain_greedy(res["target"], res["prompts"], args.tokens)
        if res["tokens"] != want:
            raise SystemExit("MISMATCH: speculative greedy output differs from plain greedy decoding")
        print("check: speculative output equals plain greedy decoding token for token")


if __name__ == "__main__":
    main()
