"""The simulator's clock against the profile: what each decode step was charged vs what the profile says.

    python benchmarks/clock_check.py                      # chat trace at 8x load, policies none and dspark
    python benchmarks/clock_check.py --rate-scale 1 -o out/clock   # also writes clock_check.parquet

Scenario: the bundled chat trace at 8x its arrival rate (the load where batches reach 100+ requests)
on the bundled H100 / Qwen3-8B roofline profile. For every decode-only step (no prefill chunk) the
steps table gives what the clock charged: the verify pass (duration_s - draft_s) at the step's n
decoding requests, B verify tokens and mean context L. Three references for the same step:

    roofline   the profile's own cost model evaluated at the step's exact (n, t = B / n, L)
               (profiler.passes.verify_cost: what a grid row at that point would hold)
    grid       scipy's RegularGridInterpolator, linear, over the profile's fitting (n, t, L) rows:
               an independent interpolation of the same grid (steps outside the grid are left out)
    B-average  the previous clock: rows of equal B averaged over request counts (non-fitting rows
               included), made non-decreasing, blended linearly in L: the negative control

and the drafter's charge (draft_s) against the roofline's drafter at (n, block, L). Prints the median
and 90th percentile relative error per policy, for all decode steps and for n >= 16.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl

from simulator.config import SimConfig
from simulator.run import simulate
from sparksched.curve import ThroughputCurve, isotonic_non_decreasing
from sparksched.io import write_parquet
from sparksched.profile import load_profile

PROFILE = "h100-qwen3-8b-roofline"


def averaged_clock(profile: dict) -> ThroughputCurve:
    """The previous model: one curve over B per context, rows of equal B averaged over n (fits or not)."""
    rows = profile["verify"]
    ctxs = sorted({float(r["context"]) for r in rows})
    bs = sorted({float(r["tokens"]) for r in rows})
    secs = []
    for c in ctxs:
        by: dict[float, list[float]] = {}
        for r in rows:
            if float(r["context"]) == c:
                by.setdefault(float(r["tokens"]), []).append(float(r["median_s"]))
        secs.append(isotonic_non_decreasing(np.asarray([np.mean(by[b]) for b in bs]),
                                            np.asarray([len(by[b]) for b in bs], dtype=np.float64)))
    return ThroughputCurve(np.asarray(bs), np.asarray(secs), np.asarray(ctxs), "linear")


def grid_interpolator(profile: dict):
    """Linear interpolation over the fitting (n, t, L) rows (scipy), NaN outside the grid."""
    from scipy.interpolate import RegularGridInterpolator

    rows = [r for r in profile["verify"] if r.get("fits", True)]
    ns = sorted({float(r["requests"]) for r in rows})
    ts = sorted({float(r["tokens"]) / float(r["requests"]) for r in rows})
    ls = sorted({float(r["context"]) for r in rows})
    vals = np.full((len(ns), len(ts), len(ls)), np.nan)
    for r in rows:
        vals[ns.index(float(r["requests"])), ts.index(float(r["tokens"]) / float(r["requests"])),
             ls.index(float(r["context"]))] = float(r["median_s"])
    return RegularGridInterpolator((ns, ts, ls), vals, bounds_error=False, fill_value=np.nan)


def references(steps: pl.DataFrame, profile: dict, block: int) -> pl.DataFrame:
    """Decode-only steps with the clock's charge and each reference's price (seconds)."""
    from profiler.devices import get_device_spec
    from profiler.drafters import draft_cost, drafter_presets
    from profiler.models import as_model_spec
    from profiler.parallel import SINGLE
    from profiler.passes import Precision, verify_cost
    from sparksched.models.presets import get_preset

    dec = steps.filter((pl.col("prefill_tokens") == 0) & (pl.col("decode_requests") > 0))
    n = dec["decode_requests"].to_numpy().astype(np.float64)
    b = dec["batch_tokens"].to_numpy().astype(np.float64)
    ctx = dec["mean_context"].to_numpy().astype(np.float64)
    spec, device = as_model_spec(get_preset(profile["model"]["preset"])), get_device_spec(profile["device"]["key"])
    roof = np.asarray([verify_cost(spec, x, y / x, z).seconds(device) for x, y, z in zip(n, b, ctx)])
    grid = grid_interpolator(profile)(np.c_[n, b / n, ctx])
    old = averaged_clock(profile)
    before = np.asarray([float(old.step_time(y, z)) for y, z in zip(b, ctx)])
    draft = dec["draft_s"].to_numpy()
    drafter = drafter_presets(spec)["dspark"] if draft.any() else None
    prec = Precision(profile["dtype"], profile.get("kv_dtype", profile["dtype"]))
    draft_ref = (np.asarray([sum(p.seconds(device) for p in draft_cost(spec, drafter, x, block, z, prec, SINGLE))
                             for x, z in zip(n, ctx)]) if drafter is not None else np.zeros_like(draft))
    return dec.select("t_start", "decode_requests", "batch_tokens", "mean_context").with_columns(
        charged_verify_s=dec["duration_s"] - dec["draft_s"], charged_draft_s=dec["draft_s"],
        roofline_s=roof, grid_s=grid, b_average_s=before, roofline_draft_s=draft_ref)


def summarise(df: pl.DataFrame, policy: str) -> list[dict]:
    out = []
    for label, sub in (("all decode steps", df), ("n >= 16", df.filter(pl.col("decode_requests") >= 16))):
        if sub.height == 0:
            continue
        row = {"policy": policy, "steps": label, "count": sub.height}
        charged = sub["charged_verify_s"].to_numpy()
        for ref in ("roofline_s", "grid_s", "b_average_s"):
            r = sub[ref].to_numpy()
            ok = np.isfinite(r)
            err = np.abs(charged[ok] / r[ok] - 1)
            row[f"clock vs {ref[:-2]} median %"] = round(100 * float(np.median(err)), 2)
            row[f"clock vs {ref[:-2]} p90 %"] = round(100 * float(np.percentile(err, 90)), 2)
        old = np.abs(sub["b_average_s"].to_numpy() / sub["roofline_s"].to_numpy() - 1)
        row["B-average vs roofline median %"] = round(100 * float(np.median(old)), 2)
        d, dr = sub["charged_draft_s"].to_numpy(), sub["roofline_draft_s"].to_numpy()
        if d.any():
            row["drafter vs roofline median %"] = round(100 * float(np.median(np.abs(d / dr - 1))), 2)
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default="chat")
    ap.add_argument("--rate-scale", type=float, default=8.0)
    ap.add_argument("--policies", default="none,dspark")
    ap.add_argument("-o", "--out", type=Path, default=None, help="folder for clock_check.parquet (per step)")
    args = ap.parse_args()
    profile = load_profile(PROFILE)
    t0 = time.perf_counter()
    rows, frames = [], []
    for pol in args.policies.split(","):
        cfg = SimConfig(policy=pol, rate_scale=args.rate_scale, profile=PROFILE)
        res = simulate(args.trace, cfg)
        df = references(res.steps, profile, cfg.draft_block)
        rows += summarise(df, pol)
        frames.append(df.with_columns(policy=pl.lit(pol)))
    table = pl.DataFrame(rows)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=250, tbl_hide_dataframe_shape=True):
        print(table)
    if args.out:
        write_parquet(args.out / "clock_check.parquet", pl.concat(frames))
        print(f"wrote {args.out / 'clock_check.parquet'}")
    print(f"({time.perf_counter() - t0:.0f} s; {args.trace} trace at {args.rate_scale:g}x, profile {PROFILE})")


if __name__ == "__main__":
    main()
