"""Simulator fidelity: the real loop, measured, vs the simulator's prediction from its recorded rounds.

    python benchmarks/fidelity.py [--profile cpu-tiny.json] [--requests 40] [--policy dspark] [--out f.json]

1. A small trace (seeded): code / math / chat requests, 32-192 prompt tokens, 48-128 output tokens,
   Poisson arrivals (the backend uses exactly `prompt_tokens` held-out tokens, so the profile's
   context and the real one agree).
2. Measured: `simulator.run.simulate` drives the real drafter + target (bundled checkpoints) through
   `simulator.model_backend`; the clock advances by the measured wall time of each step's drafter and
   target passes (prefill from the profile, in both runs). Every round is recorded.
3. Predicted: the same trace and config, acceptance fitted from those recorded rounds
   (`simulator.recorded`), clock from a CPU profile of the same target measured on this machine
   (`sparksched profile --device cpu --model tiny ...`, run here when --profile is not given), in
   two versions: the profiler's raw forward-pass timings, and the same grid re-timed through the
   real loop's draft / verify calls (what the measured clock counts: sampling, rejection sampling,
   cache bookkeeping, drafter context update). The measured run's scheduler and prefill times use
   the loop-timed profile.
4. Compare aggregate output tokens/s and per-user tokens/s (mean and P50 of 1 / TPOT, and per request).
5. The acceptance model alone: the real loop once more on the loop-timed profile's clock (no wall-time
   noise) against the recorded-acceptance simulation on the same clock.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PROFILE_ARGS = ["--device", "cpu", "--model", "tiny", "--dtype", "float32", "--requests", "1,2,4,8,12,16",
                "--tokens", "1-8", "--contexts", "64,192,320", "--prompts", "32,64,128,192",
                "--draft-requests", "1,2,4,8,12,16", "--blocks", "7", "--draft-context", "192", "--draft-layers", "1",
                "--rank", "64", "--threads", "1", "--no-progress"]


def make_trace(path: Path, n: int, rate: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / rate, n))
    doms = ["code", "math", "chat"]
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"f-{i:04d}", "arrival_s": round(float(t[i]), 4),
                                "prompt_tokens": int(rng.integers(32, 193)), "output_tokens": int(rng.integers(48, 129)),
                                "domain": doms[i % 3]}) + "\n")
    return path


def repair_profile(invalid: Path, path: Path) -> Path:
    """Make a noisy CPU profile monotone (cumulative max of the step time over B per context).

    The profiler refuses a profile whose step time falls with more tokens (it keeps the samples in
    `<name>.invalid.json`); on a shared 2-core host that happens from noise alone. The repaired
    profile is the smallest non-decreasing curve above the measurements.
    """
    from sparksched.profile import validate_profile

    prof = json.loads(invalid.read_text())
    rows = prof["verify"]
    for ctx in sorted({r["context"] for r in rows}):
        sel = sorted((r for r in rows if r["context"] == ctx), key=lambda r: (r["tokens"], r["median_s"]))
        best = 0.0
        for r in sel:
            best = max(best, r["median_s"])
            r["median_s"] = best
            r["p10_s"], r["p90_s"] = min(r["p10_s"], best), max(r["p90_s"], best)
    prof.setdefault("notes", []).append("verify medians made monotone in B per context (benchmarks/fidelity.py)")
    validate_profile(prof)
    path.write_text(json.dumps(prof, indent=1))
    return path


def measure_profile(path: Path) -> Path:
    cmd = [sys.executable, "-m", "sparksched.cli", "profile", *PROFILE_ARGS, "-o", str(path)]
    done = subprocess.run(cmd)
    invalid = path.with_name(path.stem + ".invalid.json")
    if done.returncode != 0 and invalid.exists():
        return repair_profile(invalid, path)
    if done.returncode != 0:
        raise SystemExit(f"profiling failed ({done.returncode})")
    return path


@torch.no_grad()
def loop_profile(base: Path, path: Path, target, drafter, max_len: int = 400, repeats: int = 5,
                 rounds: int = 3) -> Path:
    """The base profile with its verify and draft step times re-measured through the real loop.

    Each verify grid point (n requests, t tokens each, context L) is timed as `SpeculativeDecoder.verify`
    (target pass + lossless rejection sampling + cache bookkeeping + the drafter's context update)
    and each draft point as `SpeculativeDecoder.draft` (backbone + sequential head, per-request
    random streams): what the measured clock of `--engine model` counts. Prefill rows are kept.
    Median of `rounds` interleaved sweeps x `repeats`; made monotone in B per context like `repair_profile`.
    """
    from sparksched.profile import validate_profile
    from sparksched.speculative import SpeculativeDecoder

    prof = json.loads(base.read_text())
    g = drafter.config.block
    decs: dict[int, SpeculativeDecoder] = {}

    def dec_for(n: int, ctx: int) -> SpeculativeDecoder:
        if n not in decs:
            d = SpeculativeDecoder(target, drafter, n, max_len, seed=0)
            d.gens = [torch.Generator().manual_seed(i) for i in range(n)]
            decs[n] = d
        d = decs[n]
        d.cache.lengths.fill_(ctx)
        d.ctx.lengths.fill_(ctx)
        return d

    samples: dict[int, list[float]] = {}
    drafts: dict[int, list[float]] = {}
    for _ in range(rounds):  # interleaved sweeps: a burst of load on the host hits few points
        for i, row in enumerate(prof["verify"]):
            n, t, ctx = int(row["requests"]), int(row["tokens_per_request"]), int(row["context"])
            slots = np.arange(n)
            for r in range(repeats + 1):
                d = dec_for(n, ctx)
                if t > 1:
                    d.draft(slots)
                sec = d.verify(slots, np.full(n, t - 1, dtype=np.int64))[2]
                if r:
                    samples.setdefault(i, []).append(sec)
        for i, row in enumerate(prof.get("draft", [])):
            if int(row["block"]) != g:
                continue
            n, ctx = int(row["requests"]), int(row["context"])
            drafts.setdefault(i, []).extend([dec_for(n, ctx).draft(np.arange(n))[1] for _ in range(repeats + 1)][1:])
    for i, row in enumerate(prof["verify"]):
        row["median_s"] = float(np.median(samples[i]))
        row["p10_s"], row["p90_s"] = float(np.quantile(samples[i], 0.1)), float(np.quantile(samples[i], 0.9))
    for i, row in enumerate(prof.get("draft", [])):
        if i in drafts:
            row["median_s"] = float(np.median(drafts[i]))
            row["p10_s"], row["p90_s"] = float(np.quantile(drafts[i], 0.1)), float(np.quantile(drafts[i], 0.9))
    for ctx in sorted({r["context"] for r in prof["verify"]}):
        best = 0.0
        for r in sorted((r for r in prof["verify"] if r["context"] == ctx), key=lambda r: (r["tokens"], r["median_s"])):
            best = max(best, r["median_s"])
            r["median_s"], r["p90_s"] = best, max(r["p90_s"], best)
            r["p10_s"] = min(r["p10_s"], best)
    prof.setdefault("notes", []).append("verify / draft re-timed through sparksched.speculative (benchmarks/fidelity.py)")
    validate_profile(prof)
    path.write_text(json.dumps(prof, indent=1))
    return path


def per_user(res) -> dict[str, float]:
    df = res.requests.filter(res.requests["status"] == "finished")
    tpot = df["tpot_s"].to_numpy().astype(np.float64)
    return dict(zip(df["id"].to_list(), np.where(tpot > 0, 1.0 / np.maximum(tpot, 1e-12), np.nan)))


def compare(measured, predicted) -> dict:
    sm, sp = measured.summary, predicted.summary
    um, up = per_user(measured), per_user(predicted)
    common = [k for k in um if k in up and np.isfinite(um[k]) and np.isfinite(up[k])]
    rel = np.array([(up[k] - um[k]) / um[k] for k in common])
    rows = []
    for key, label in [("throughput_tps", "aggregate output tok/s"), ("user_tps_mean", "per-user tok/s (mean)"),
                       ("user_tps_p50", "per-user tok/s (P50)"), ("tpot_p50_s", "TPOT P50 (s)"),
                       ("e2e_p50_s", "end-to-end latency P50 (s)"),
                       ("mean_accepted_drafts", "accepted drafts per round"),
                       ("mean_verify_budget", "verify tokens per round"), ("duration_s", "makespan (s)")]:
        m, p = sm.get(key), sp.get(key)
        rows.append({"metric": label, "measured": m, "predicted": p,
                     "error": (p - m) / m if (m and p is not None) else None})
    return {"rows": rows, "per_request_abs_rel_error_mean": float(np.mean(np.abs(rel))),
            "per_request_abs_rel_error_p90": float(np.quantile(np.abs(rel), 0.9)), "per_request_n": len(common),
            "predicted_steps": int(predicted.steps.height)}


def show(c: dict) -> None:
    print(f"{'metric':<28} {'measured':>10} {'predicted':>10} {'error':>8}")
    for r in c["rows"]:
        m, p, e = r["measured"], r["predicted"], r["error"]
        print(f"{r['metric']:<28} {m if m is None else round(m, 4):>10} {p if p is None else round(p, 4):>10} "
              f"{'' if e is None else f'{100 * e:+.1f}%':>8}")
    print(f"per-request per-user tok/s: mean |error| {100 * c['per_request_abs_rel_error_mean']:.1f}%, "
          f"P90 {100 * c['per_request_abs_rel_error_p90']:.1f}% over {c['per_request_n']} requests")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=None, help="CPU profile of the tiny target (measured here when absent)")
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--rate", type=float, default=4.0, help="arrivals per second")
    ap.add_argument("--policy", default="dspark")
    ap.add_argument("--max-running", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    from simulator.config import SimConfig
    from simulator.model_backend import ModelBackend
    from simulator.run import simulate
    from sparksched.training.checkpoint import BUNDLED, load_bundle, load_heldout

    work = Path(tempfile.mkdtemp(prefix="fidelity-"))
    trace = make_trace(work / "trace.jsonl", a.requests, a.rate, a.seed)
    if a.profile and a.profile.endswith(".invalid.json"):
        profile = repair_profile(Path(a.profile), work / "cpu-tiny.json")
    else:
        profile = Path(a.profile) if a.profile else measure_profile(work / "cpu-tiny.json")
    tok, target, drafter = load_bundle()
    backend = ModelBackend(target, drafter, tok, load_heldout(BUNDLED / "heldout.npz"), a.max_running, max_len=400,
                           max_prompt=256, seed=a.seed)
    looped = loop_profile(profile, work / "cpu-tiny-loop.json", target, drafter)
    cfg = SimConfig(policy=a.policy, block=drafter.config.block, max_running=a.max_running, seed=a.seed,
                    profile=str(looped), clock="measured")  # the scheduler and prefill use the loop-timed curve
    t0 = time.time()
    measured = simulate(str(trace), cfg, backend=backend)
    wall_measured = time.time() - t0
    rounds = work / "rounds.jsonl"
    backend.write_rounds(rounds)
    res = {"policy": a.policy, "requests": a.requests, "rate": a.rate, "max_running": a.max_running,
           "rounds_recorded": len(backend.rows), "wall_measured_s": wall_measured,
           "measured_steps": int(measured.steps.height), "comparisons": {}}
    profiles = {"loop-timed profile": looped, "profiler profile (raw passes)": profile}
    for label, prof in profiles.items():
        pcfg = dataclasses.replace(cfg, clock="profile", acceptance=str(rounds), profile=str(prof))
        predicted = simulate(str(trace), pcfg)
        res["comparisons"][label] = compare(measured, predicted)
        print(f"\n== predicted with the {label}: {prof}")
        show(res["comparisons"][label])
    # the acceptance model alone: the real loop again, but on the profile clock (no wall-time noise)
    backend2 = ModelBackend(target, drafter, tok, load_heldout(BUNDLED / "heldout.npz"), a.max_running, max_len=400,
                            max_prompt=256, seed=a.seed)
    real_on_profile = simulate(str(trace), dataclasses.replace(cfg, clock="profile"), backend=backend2)
    predicted = simulate(str(trace), dataclasses.replace(cfg, clock="profile", acceptance=str(rounds)))
    res["acceptance_only"] = compare(real_on_profile, predicted)
    print("\n== acceptance model only: real loop vs recorded model, both on the loop-timed profile clock")
    show(res["acceptance_only"])
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1, default=float))
    return res


if __name__ == "__main__":
    main()
