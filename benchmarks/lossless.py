"""Losslessness of the real loop, measured on the bundled target + DSpark drafter.

    python benchmarks/lossless.py [--out docs/lossless.json] [--threads 1] [--device cpu|cuda]
                                  [--parts greedy,laws,ngrams] [--per-domain 16] [--new-tokens 96]

1. Greedy: speculative decoding (dspark, static-3, verify-all policies) vs plain greedy decoding,
   held-out prompts, float32 and float64: number of sequences identical token for token.
2. Next-token laws for fixed contexts: N independent requests share a context and anchor; one
   speculative round (dspark policy) each; the first and second emitted tokens are compared with
   the target's exact probabilities by a chi-square test (cells with expected count < 5 pooled).
   Negative control: a policy that peeks at x_1 (verifies it only when it is the drafter's
   favourite token) must fail the same test.
3. n-gram statistics over long sampled generations: unigram and bigram frequencies of speculative
   output vs plain sampling (different seeds), two-sample chi-square on the unigram counts and the
   total-variation distance, against the same numbers for two plain-sampling runs (noise floor).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np
import torch
from scipy import stats

from sparksched.speculative import (
    SpeculativeDecoder,
    autoregressive_generate,
    generate,
    make_policy,
    measure_step_curve,
    request_generator,
)
from sparksched.training.checkpoint import BUNDLED, load_bundle, load_heldout


def prompts(heldout, per_domain: int, length: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    out = []
    for dom in sorted(heldout):
        s = heldout[dom]
        for _ in range(per_domain):
            st = int(rng.integers(0, s.size - length))
            out.append(s[st:st + length].tolist())
    return out


def greedy_identity(per_domain: int, new_tokens: int, device: str = "cpu") -> dict:
    res = {}
    for dtype in (torch.float32, torch.float64):
        _, target, drafter = load_bundle(dtype=dtype, device=device, tokenizer=False)
        ps = prompts(load_heldout(BUNDLED / "heldout.npz"), per_domain, 48, seed=3)
        curve = measure_step_curve(target, 16, 96, drafter.config.block, hidden_layers=drafter.target_layers)
        ar = [t for i in range(0, len(ps), 16) for t in autoregressive_generate(target, ps[i:i + 16], new_tokens,
                                                                                  greedy=True).tokens]
        for pol in ("dspark", "static-3", "verify-all"):
            sp = [t for i in range(0, len(ps), 16)
                  for t in generate(target, drafter, ps[i:i + 16], new_tokens, pol, curve=curve, greedy=True).tokens]
            same = sum(a == b for a, b in zip(ar, sp))
            first_diff = [next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), None) for a, b in zip(ar, sp)]
            res[f"{str(dtype).split('.')[-1]}/{pol}"] = {"identical": same, "sequences": len(ar),
                                                          "tokens_each": new_tokens,
                                                          "first_divergence": [d for d in first_diff if d is not None]}
    return res


def _pvalue(samples: np.ndarray, probs: np.ndarray) -> float:
    counts = np.bincount(samples, minlength=probs.size).astype(np.float64)
    exp = probs * samples.size
    big = exp >= 5
    o = np.append(counts[big], counts[~big].sum())
    e = np.append(exp[big], exp[~big].sum())
    keep = e > 0
    o, e = o[keep], e[keep] * o[keep].sum() / e[keep].sum()
    return float(stats.chi2.sf(((o - e) ** 2 / e).sum(), o.size - 1))


@torch.no_grad()
def next_token_laws(n: int, contexts: int, seed: int = 0) -> list[dict]:
    _, target, drafter = load_bundle(dtype=torch.float64, tokenizer=False)
    heldout = load_heldout(BUNDLED / "heldout.npz")
    ctxs = prompts(heldout, max(1, contexts // 3 + 1), 24, seed=5)[:contexts]
    curve = measure_step_curve(target, 64, 32, drafter.config.block, hidden_layers=drafter.target_layers)
    dspark = make_policy("dspark", curve)
    out = []
    for ci, ctx in enumerate(ctxs):
        prompt, anchor = ctx[:-1], ctx[-1]
        with torch.no_grad():
            p1 = torch.softmax(target(torch.tensor([ctx])).logits[0, -1], -1)
        top = torch.topk(p1, 64).indices  # second token: exact law over the first token's top 64 (+ rest)
        seconds = torch.softmax(target(torch.tensor([ctx + [int(a)] for a in top])).logits[:, -1], -1)
        p2 = (p1[top, None] * seconds).sum(0) / p1[top].sum()
        for name, pol in (("dspark", lambda c, d: dspark(c)),
                          ("peeking (negative control)", lambda c, d: (d._pending[1].tokens[:, 0] ==
                                                                       d._pending[1].probs[:, 0].argmax(-1)).numpy()
                           .astype(np.int64))):
            dec = SpeculativeDecoder(target, drafter, n, len(ctx) + 2 * drafter.config.block + 4, seed=seed)
            dec.prefill([0], [prompt], [0], anchors=[anchor])
            for cache in (dec.cache, dec.ctx):
                cache.k[:, 1:] = cache.k[:, :1]
                cache.v[:, 1:] = cache.v[:, :1]
                cache.lengths[:] = len(prompt)
            dec.anchor[:] = anchor
            dec.gens = [request_generator(seed + 17 * ci, i) for i in range(n)]
            r = dec.step(np.arange(n), lambda c, dec=dec, pol=pol: pol(c, dec))
            first = np.array([e[0] for e in r.emitted])
            row = {"context": ci, "policy": name, "n": n, "p_first": _pvalue(first, p1.numpy()),
                   "mean_verified": float(r.lengths.mean()), "mean_accepted": float(r.accepted.mean())}
            if name == "dspark":  # second token where the first was one of the top 64
                r2 = dec.step(np.arange(n), lambda c, dec=dec, pol=pol: pol(c, dec))
                both = [(e + e2)[:2] for e, e2 in zip(r.emitted, r2.emitted)]
                mask = np.isin(first, top.numpy())
                second = np.array([b[1] for b, m in zip(both, mask) if m])
                row["p_second"] = _pvalue(second, p2.numpy())
            out.append(row)
    return out


def ngram_stats(per_domain: int, new_tokens: int) -> dict:
    _, target, drafter = load_bundle(tokenizer=False)
    ps = prompts(load_heldout(BUNDLED / "heldout.npz"), per_domain, 32, seed=9)
    curve = measure_step_curve(target, 16, 160, drafter.config.block, hidden_layers=drafter.target_layers)

    def run(spec: bool, seed: int) -> list[list[int]]:
        toks = []
        for i in range(0, len(ps), 16):
            grp = ps[i:i + 16]
            r = (generate(target, drafter, grp, new_tokens, "dspark", curve=curve, seed=seed) if spec
                 else autoregressive_generate(target, grp, new_tokens, seed=seed))
            toks.extend(r.tokens)
        return toks

    runs = {"speculative": run(True, 101), "plain A": run(False, 202), "plain B": run(False, 303)}
    uni = {k: Counter(t for s in v for t in s) for k, v in runs.items()}
    bi = {k: Counter(p for s in v for p in zip(s[:-1], s[1:])) for k, v in runs.items()}

    def tv(a: Counter, b: Counter) -> float:
        na, nb = sum(a.values()), sum(b.values())
        return 0.5 * sum(abs(a[x] / na - b[x] / nb) for x in set(a) | set(b))

    def chi2(a: Counter, b: Counter, top: int = 300) -> float:
        keys = [k for k, _ in (a + b).most_common(top)]
        ta = np.array([a[k] for k in keys] + [sum(a.values()) - sum(a[k] for k in keys)])
        tb = np.array([b[k] for k in keys] + [sum(b.values()) - sum(b[k] for k in keys)])
        keep = (ta + tb) > 0
        return float(stats.chi2_contingency(np.stack([ta[keep], tb[keep]]))[1])

    return {"sequences": len(ps), "tokens_each": new_tokens,
            "unigram_tv": {"speculative vs plain A": tv(uni["speculative"], uni["plain A"]),
                           "plain B vs plain A": tv(uni["plain B"], uni["plain A"])},
            "bigram_tv": {"speculative vs plain A": tv(bi["speculative"], bi["plain A"]),
                          "plain B vs plain A": tv(bi["plain B"], bi["plain A"])},
            "unigram_chi2_p": {"speculative vs plain A": chi2(uni["speculative"], uni["plain A"]),
                               "plain B vs plain A": chi2(uni["plain B"], uni["plain A"])}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=3000, help="requests per fixed context")
    ap.add_argument("--contexts", type=int, default=4)
    ap.add_argument("--device", default="cpu", help="device of the greedy-identity part (the others run on CPU)")
    ap.add_argument("--parts", default="greedy,laws,ngrams", help="comma separated: greedy, laws, ngrams")
    ap.add_argument("--per-domain", type=int, default=16, help="greedy part: held-out prompts per domain")
    ap.add_argument("--new-tokens", type=int, default=96, help="greedy part: tokens per sequence")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    parts = {p.strip() for p in a.parts.split(",") if p.strip()}
    unknown = parts - {"greedy", "laws", "ngrams"}
    if unknown:
        ap.error(f"--parts: unknown part(s) {sorted(unknown)}; known: greedy, laws, ngrams")
    res: dict = {"device": a.device}
    if "greedy" in parts:
        res["greedy"] = greedy_identity(a.per_domain, a.new_tokens, a.device)
        print(json.dumps(res["greedy"], indent=None))
    if "laws" in parts:
        res["next_token"] = next_token_laws(a.n, a.contexts)
        for r in res["next_token"]:
            print(r)
    if "ngrams" in parts:
        res["ngrams"] = ngram_stats(16, 192)
        print(json.dumps(res["ngrams"]))
    if a.out:
        from sparksched.io import write_json

        write_json(a.out, res, indent=1)
    return res


if __name__ == "__main__":
    main()
