"""Asynchronous top-K (paper section 5.2) vs the synchronous greedy (Algorithm 1): decode capacity.

    python benchmarks/async_vs_sync.py            # prints the table (about a minute on 2 cores)
    python benchmarks/async_vs_sync.py --quick    # fewer concurrencies and tokens
    python benchmarks/async_vs_sync.py --more --docs docs/integration.md   # refresh the docs' tables

Scenario: a closed batch. `n` requests arrive at once with short prompts and long outputs, so after
the first steps the engine runs pure decode steps at concurrency n (max_running = n). Capacity is
the decode throughput over those steps: emitted tokens / their summed step time (drafter included),
counted only while all n requests are decoding and no prefill shares the step.

Step prices, all from the bundled H100 / Qwen3-8B roofline profile at context 2048:
    roofline the profile's step-cost surface as it is (sparksched.cost.StepCost): every step priced
             at its own n requests, B tokens and mean context
    smooth   a curve keyed on B only: the lower convex hull of the profile priced on vLLM's
             dummy-batch ray (B tokens over min(B, 128) requests); convex and non-decreasing, so the
             expected-throughput ratio R = (n + sum S) / t(B) is unimodal along the greedy's path and
             the early stop is optimal
    jagged   the same hull padded to 128-token tiles: t(B) = smooth(ceil(B / 128) * 128), flat inside
             a tile and a jump at each boundary (GEMM tiles, CUDA-graph capture sizes), where the
             greedy's early stop halts before a cliff that a global search jumps
    measured the bundled CPU profile's measured slice (cpu-tiny, 8 requests at its first context),
             rescaled to the smooth curve's step time at B = 1 (its jagged shape on a real device),
             when that profile is bundled

Policies: `dspark` (synchronous greedy with early stop), `async-dspark` (capacity K from a global
search over the confidences of two steps earlier, then top-K by current survival); `--more` adds
`vllm-adaptive`, `sglang-adaptive` and `static-3`. Acceptance: the simulator's synthetic DSpark
preset (block 7, chat domain, confidence AUC 0.85, ECE 1 %), same seed for every policy.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl

from simulator.config import SimConfig
from simulator.run import simulate
from sparksched.cost import StepCost
from sparksched.curve import ThroughputCurve
from sparksched.export import vllm_verify_seconds
from sparksched.profile import bundled_profiles

TILE = 128


def lower_convex_hull(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of the greatest convex minorant of the points (x increasing)."""
    hull: list[int] = []
    for i in range(xs.size):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # drop b when it lies on or above the segment a -> i
            if (ys[b] - ys[a]) * (xs[i] - xs[a]) >= (ys[i] - ys[a]) * (xs[b] - xs[a]):
                hull.pop()
            else:
                break
        hull.append(i)
    return xs[hull], ys[hull]


def curves() -> dict[str, ThroughputCurve | StepCost]:
    """The roofline surface and the smooth, jagged and (when bundled) measured curves of the module
    docstring."""
    roof = StepCost.from_profile("h100-qwen3-8b-roofline")
    b = np.asarray(sorted({float(n * t) for n in roof.arrays.reqs for t in roof.arrays.knots if n <= 128}))
    hx, hy = lower_convex_hull(b, vllm_verify_seconds(roof, b, 2048.0, max_num_seqs=128))
    hy = np.maximum.accumulate(hy)
    smooth = ThroughputCurve.from_points(hx, hy)
    # padded to tiles: flat from k*TILE + 1 to (k+1)*TILE, a jump right after each boundary
    edges = np.arange(TILE, 4096 + 1, TILE, dtype=np.float64)
    xs = np.concatenate([[1.0], np.ravel(np.column_stack([edges, edges + 1]))])
    jagged = ThroughputCurve.from_points(xs, smooth.step_time(np.ceil(xs / TILE) * TILE))
    out: dict[str, ThroughputCurve | StepCost] = {"roofline": roof, "smooth": smooth, "jagged": jagged}
    if "cpu-tiny" in bundled_profiles():
        tiny = StepCost.from_profile("cpu-tiny")
        cpu = tiny.curve(8, float(tiny.arrays.ctxs[0]))
        scale = float(smooth.step_time(1.0)) / float(cpu.step_time(1.0))
        out["measured"] = ThroughputCurve.from_points(cpu.tokens, cpu.seconds[0] * scale)
    return out


def closed_batch(n: int, output_tokens: int, prompt_tokens: int = 64) -> pl.DataFrame:
    """n requests arriving at t = 0 with short prompts and long outputs (trace schema)."""
    return pl.DataFrame({
        "id": [f"b-{i:05d}" for i in range(n)],
        "arrival_s": [0.0] * n,
        "prompt_tokens": [prompt_tokens] * n,
        "output_tokens": [output_tokens] * n,
        "domain": ["chat"] * n,
    })


def decode_capacity(steps: pl.DataFrame, n: int) -> tuple[float, float, int]:
    """(tokens/s, mean verify budget per request incl. the anchor, steps counted) at full concurrency."""
    full = steps.filter((pl.col("decode_requests") == n) & (pl.col("prefill_tokens") == 0))
    if full.height == 0:
        return float("nan"), float("nan"), 0
    seconds = float(full["duration_s"].sum())
    return (float(full["emitted"].sum()) / seconds,
            float((full["verified"].sum() + full["decode_requests"].sum()) / full["decode_requests"].sum()),
            full.height)


def run(concurrency: list[int], output_tokens: int, policies: list[str], seed: int) -> pl.DataFrame:
    rows = []
    for cname, curve in curves().items():
        for n in concurrency:
            trace = closed_batch(n, output_tokens)
            for pol in policies:
                cfg = SimConfig(policy=pol, block=7, max_running=n, seed=seed, prefill_chunk=8192)
                res = (simulate(trace, cfg, cost=curve) if isinstance(curve, StepCost)
                       else simulate(trace, cfg, curve=curve))
                tps, budget, counted = decode_capacity(res.steps, n)
                rows.append({"curve": cname, "n": n, "policy": pol, "tokens_per_s": tps,
                             "verify_per_req": budget, "steps": counted})
    return pl.DataFrame(rows)


def table(df: pl.DataFrame, policies: list[str]) -> str:
    """Markdown table: capacity per policy, and async / sync."""
    head = "| curve | n | " + " | ".join(f"{p} tok/s (verify/req)" for p in policies) + " | async / sync |"
    lines = [head, "|" + "---|" * (len(policies) + 3)]
    for (cname, n), grp in df.group_by(["curve", "n"], maintain_order=True):
        by = {r["policy"]: r for r in grp.iter_rows(named=True)}
        cells = [f"{by[p]['tokens_per_s']:,.0f} ({by[p]['verify_per_req']:.2f})" for p in policies]
        ratio = by["async-dspark"]["tokens_per_s"] / by["dspark"]["tokens_per_s"]
        lines.append(f"| {cname} | {n} | " + " | ".join(cells) + f" | {ratio:.3f} |")
    return "\n".join(lines)


def docs_fragment(df: pl.DataFrame, policies: list[str]) -> str:
    """The tables docs/integration.md shows: sync / async per curve and n, geometric means, and the
    other engines' rules at a few n."""
    cnames = list(dict.fromkeys(df["curve"].to_list()))
    by = {(r["curve"], r["n"], r["policy"]): r for r in df.iter_rows(named=True)}
    ns = sorted(set(df["n"].to_list()))
    lines = ["| n | " + " | ".join(f"{c}: sync / async (ratio)" for c in cnames) + " |",
             "|---|" + "---|" * len(cnames)]
    for n in ns:
        cells = []
        for c in cnames:
            a, b = by[(c, n, "dspark")]["tokens_per_s"], by[(c, n, "async-dspark")]["tokens_per_s"]
            cells.append(f"{a:,.0f} / {b:,.0f} ({b / a:.3f})")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    means = []
    for c in cnames:
        r = np.asarray([by[(c, n, "async-dspark")]["tokens_per_s"] / by[(c, n, "dspark")]["tokens_per_s"]
                        for n in ns])
        means.append(f"{c} {np.exp(np.log(r).mean()):.3f} (min {r.min():.3f}, max {r.max():.3f})")
    lines += ["", "Geometric mean of async / sync over the n above: " + "; ".join(means) + "."]
    others = [p for p in policies if p not in ("dspark", "async-dspark")]
    if others:
        lines += ["", "Other engines' rules on the same runs (tokens/s, mean verify budget per request, anchor "
                  "included):", "", "| curve | n | " + " | ".join(f"`{p}`" for p in others) + " |",
                  "|---|---|" + "---|" * len(others)]
        for c in cnames:
            for n in [m for m in (16, 64, 128, 256) if m in ns]:
                cells = [f"{by[(c, n, p)]['tokens_per_s']:,.0f} ({by[(c, n, p)]['verify_per_req']:.2f})"
                         for p in others]
                lines.append(f"| {c} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


BEGIN, END = "<!-- async-vs-sync:begin -->", "<!-- async-vs-sync:end -->"


def write_docs(path: Path, fragment: str) -> None:
    """Replace the text between BEGIN and END markers in `path` (atomically)."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path}: no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    from sparksched.io import write_text

    write_text(path, head + BEGIN + "\n" + fragment + "\n" + END + tail)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 concurrencies, 128 output tokens")
    ap.add_argument("--more", action="store_true", help="also vllm-adaptive, sglang-adaptive, static-3")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--docs", metavar="MD", type=Path,
                    help="also rewrite the tables between the async-vs-sync markers of this file "
                         "(docs/integration.md)")
    args = ap.parse_args()
    conc = [16, 64, 160] if args.quick else [8, 16, 32, 48, 64, 96, 128, 160, 192, 256]
    out_tokens = 128 if args.quick else 384
    policies = ["dspark", "async-dspark"] + (["vllm-adaptive", "sglang-adaptive", "static-3"] if args.more else [])
    t0 = time.perf_counter()
    df = run(conc, out_tokens, policies, args.seed)
    print(table(df, policies))
    summary = df.pivot(on="policy", index=["curve", "n"], values="tokens_per_s")
    ratio = summary.with_columns((pl.col("async-dspark") / pl.col("dspark")).alias("r"))
    for cname, grp in ratio.group_by("curve", maintain_order=True):
        r = grp["r"].to_numpy()
        print(f"{cname[0]}: async/sync geometric mean {np.exp(np.log(r).mean()):.3f}, "
              f"min {r.min():.3f}, max {r.max():.3f}")
    if args.docs:
        write_docs(args.docs, docs_fragment(df, policies))
        print(f"updated {args.docs}")
    print(f"({time.perf_counter() - t0:.0f} s; closed batch of n requests, prompt 64, output {out_tokens} "
          f"tokens, block 7, synthetic DSpark chat acceptance, seed {args.seed})")


if __name__ == "__main__":
    main()
