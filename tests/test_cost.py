"""StepCost: the price of a step by requests, batch tokens and context.

Pinned here: exact at the profile's grid points and multilinear between them; monotone in B at fixed
(n, L) and never cheaper than a smaller step outside the grid; rows that do not fit are never read;
an infeasible step costs inf with a reason; the prefill chunk's price adds up to the whole prompt's;
the compiled kernels equal ThroughputCurve's own interpolation bit for bit; and the reason the
surface exists: the old average over request counts inverts the marginal price of a draft (negative
control).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparksched import StepCost, ThroughputCurve, schedule
from sparksched.cost_kernels import knot_price, knot_prices, slice_knots
from sparksched.curve import isotonic_non_decreasing
from sparksched.profile import load_profile

ROOF = "h100-qwen3-8b-roofline"


def grid_profile(reqs, per, ctxs, seconds, fits=None, prefill=None, draft=None) -> dict:
    """A schema-1 profile with verify rows seconds(n, t, L) (and fits(n, t, L) when given)."""
    rows = []
    for c in ctxs:
        for n in reqs:
            for t in per:
                r = {"requests": n, "tokens": n * t, "tokens_per_request": t, "context": c,
                     "median_s": float(seconds(n, t, c))}
                if fits is not None:
                    r["fits"] = bool(fits(n, t, c))
                rows.append(r)
    prof = {"schema": 1, "device": {"name": "test"}, "model": {"preset": "toy"}, "dtype": "float32",
            "verify": rows}
    if prefill is not None:
        prof["prefill"] = prefill
    if draft is not None:
        prof["draft"] = draft
    return prof


def averaged_curve(profile: dict, context: float) -> ThroughputCurve:
    """NEGATIVE CONTROL: the previous model, every row of equal B averaged over request counts."""
    by_b: dict[float, list[float]] = {}
    for r in profile["verify"]:
        if float(r["context"]) == context:
            by_b.setdefault(float(r["tokens"]), []).append(float(r["median_s"]))
    b = np.asarray(sorted(by_b))
    return ThroughputCurve.from_points(b, isotonic_non_decreasing(np.asarray([np.mean(by_b[x]) for x in b])))


# ------------------------------------------------------------------------------------ the bug it fixes
def test_average_over_requests_inverts_the_marginal_price_of_a_draft():
    """Per-request work (KV reads) makes a step of more requests dearer at the same B. A B-only
    average mixes steps of 8 and 64 requests: at 64 requests a plain step looks cheaper than it is and
    each draft several times dearer, so the scheduler verifies nothing where verifying pays."""
    reqs, per = (8, 64), (1, 2, 4, 8)
    cost_of = lambda n, t, c: 0.005 + 2e-4 * n + 2e-6 * n * t  # 0.2 ms a request, 2 us a token
    prof = grid_profile(reqs, per, (1024,), cost_of)
    cost = StepCost.from_profile(prof)
    true = cost.curve(64, 1024)
    np.testing.assert_array_equal(true.seconds[0], [cost_of(64, t, 0) for t in per])  # the rows themselves
    old = averaged_curve(prof, 1024)
    true_margin = (true.step_time(512) - true.step_time(64)) / 448
    old_margin = (old.step_time(512) - old.step_time(64)) / 448
    assert old.step_time(64) < 0.8 * true.step_time(64)  # a plain step looks ~25 % cheaper
    assert old_margin > 5 * true_margin  # a draft looks many times dearer
    conf = np.full((64, 7), 0.2)
    assert schedule(conf, cost, context=1024).sum() > 0  # cheap drafts pay even at S = 0.2
    assert schedule(conf, old).sum() == 0  # the averaged curve verifies nothing


# ------------------------------------------------------------------------------------ exactness
def test_bundled_profile_prices_its_own_rows_exactly():
    cost = StepCost.from_profile(ROOF)
    rows = [r for r in load_profile(ROOF)["verify"] if r.get("fits", True)]
    got = np.asarray([float(cost.verify_seconds(r["requests"], r["tokens"], r["context"])) for r in rows])
    want = np.asarray([r["median_s"] for r in rows])
    np.testing.assert_array_equal(got, want)


@settings(max_examples=60, deadline=None)
@given(a=st.floats(1e-4, 1e-2), b=st.floats(0, 1e-4), c=st.floats(0, 1e-5), d=st.floats(0, 1e-7),
       n=st.floats(1, 64), t=st.floats(1, 8), ctx=st.floats(128, 4096))
def test_interpolates_multilinearly_between_grid_points(a, b, c, d, n, t, ctx):
    """A price linear in n, in t and in L (and bilinear n t) is reproduced everywhere inside the grid."""
    f = lambda n, t, L: a + b * n + c * n * t + d * L
    cost = StepCost.from_profile(grid_profile((1, 4, 16, 64), (1, 2, 4, 8), (128, 1024, 4096), f))
    assert float(cost.verify_seconds(n, n * t, ctx)) == pytest.approx(f(n, t, ctx), rel=1e-9)


# ------------------------------------------------------------------------------------ monotone, extrapolation
@st.composite
def noisy_grids(draw):
    """Grids with noise (dips in t, within the profile check's 25 % tolerance), missing / non-fitting
    corners and few points per axis."""
    reqs = sorted(draw(st.sets(st.sampled_from([1, 2, 4, 8, 16, 32]), min_size=2, max_size=4)))
    per = sorted(draw(st.sets(st.sampled_from([1, 2, 4, 8]), min_size=2, max_size=4)))
    ctxs = sorted(draw(st.sets(st.sampled_from([64, 512, 2048]), min_size=1, max_size=3)))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    noise = {(n, t, c): rng.uniform(0.88, 1.12) for n in reqs for t in per for c in ctxs}
    cap = draw(st.sampled_from([math.inf, 3000.0, 20000.0]))
    prof = grid_profile(reqs, per, ctxs, lambda n, t, c: (0.004 + 2e-4 * n + 3e-5 * n * t + 1e-7 * n * c)
                        * noise[(n, t, c)], fits=lambda n, t, c: n * (c + t) <= max(cap, reqs[0] * (ctxs[0] + per[-1])))
    return prof


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(noisy_grids(), st.floats(1, 100), st.floats(0, 6000), st.floats(1, 40))
def test_monotone_in_batch_tokens_and_never_cheaper_than_a_smaller_step(prof, n, ctx, top):
    cost = StepCost.from_profile(prof)
    b = np.linspace(n, n * top, 300)
    y = cost.verify_seconds(n, b, ctx)
    finite = np.isfinite(y)
    assert np.all(np.diff(y[finite]) >= 0)  # monotone in B at fixed (n, L)
    assert np.all(y[finite] >= cost.arrays.floor) and np.all(y[finite] > 0)
    # past the grid in n or L, never cheaper than the grid's edge at the same tokens per request
    a = cost.arrays
    edge_n, edge_l = float(a.reqs[-1]), float(a.ctxs[-1])
    for t in (1.0, 3.0):
        big = float(cost.verify_seconds(edge_n * 3, edge_n * 3 * t, ctx))
        if math.isfinite(big):
            assert big >= float(cost.verify_seconds(edge_n, edge_n * t, ctx))
        far = float(cost.verify_seconds(n, n * t, edge_l * 2 + ctx))
        if math.isfinite(far):
            assert far >= float(cost.verify_seconds(n, n * t, edge_l))


def test_negative_control_raw_noisy_grid_is_not_monotone():
    """Without the isotonic fit and the running maximum, a noisy row decreases in B: the property
    above would catch it."""
    prof = grid_profile((1, 8), (1, 2, 4), (64,), lambda n, t, c: 0.01 * n + (0.003 if t == 2 else 0.001) * t)
    raw = {(r["requests"], r["tokens_per_request"]): r["median_s"] for r in prof["verify"]}
    assert raw[(8, 2)] > raw[(8, 4)]  # the dip is real in the rows
    cost = StepCost.from_profile(prof)
    y = cost.verify_seconds(8, np.arange(8, 33), 64)
    assert np.all(np.diff(y) >= 0)
    a = cost.arrays
    xs, ys = np.empty(a.knots.size), np.empty(a.knots.size)
    slice_knots(a._replace(secs=np.asarray([[[raw[(n, t)] for t in (1, 2, 4)] for n in (1, 8)]])),
                8.0, 64.0, xs, ys)
    assert np.all(np.diff(ys) >= 0)  # the kernel's running maximum holds even on the raw grid
    unfixed = [raw[(8, t)] for t in (1, 2, 4)]
    assert np.any(np.diff(unfixed) < 0)


def test_extrapolation_rules_past_the_grid():
    f = lambda n, t, L: 0.004 + 1e-4 * n + 1e-5 * n * t + 1e-7 * n * L
    cost = StepCost.from_profile(grid_profile((2, 8), (1, 4), (512, 1024), f))
    # above: the last segment goes on linearly in n, t and L (exact for a price linear in each)
    assert float(cost.verify_seconds(32, 32 * 4, 1024)) == pytest.approx(f(32, 4, 1024))
    assert float(cost.verify_seconds(8, 8 * 16, 1024)) == pytest.approx(f(8, 16, 1024))
    assert float(cost.verify_seconds(8, 32, 4096)) == pytest.approx(f(8, 4, 4096))
    # below the smallest request count the smallest row holds (fixed costs do not vanish)
    assert float(cost.verify_seconds(1, 1, 512)) == pytest.approx(f(2, 1, 512))
    # context below the grid extends the first segment, floored at the cheapest row
    assert float(cost.verify_seconds(2, 2, 0)) == pytest.approx(max(f(2, 1, 0), cost.arrays.floor))
    assert cost.outside(32, 64, 100) == ["requests 32 > 8", "context 100 outside [512, 1024]"]


# ------------------------------------------------------------------------------------ fit, infeasible
def test_rows_that_do_not_fit_are_never_read_and_infeasible_steps_cost_inf():
    f = lambda n, t, L: 0.004 + 1e-4 * n + 1e-5 * n * t + 1e-7 * n * L
    fits = lambda n, t, L: n * (L + t) <= 20000
    prof = grid_profile((1, 4, 16, 64), (1, 4), (512, 4096), f, fits=fits)
    for r in prof["verify"]:
        if not r["fits"]:
            r["median_s"] = 99.0  # absurd: must never be read
    cost = StepCost.from_profile(prof)
    assert cost.arrays.kv_cap == max(n * (L + t) for n in (1, 4, 16, 64) for t in (1, 4) for L in (512, 4096)
                                     if fits(n, t, L))
    # n = 4 at 4096 fits, n = 16 at 4096 does not: between them the model extends from n = 1, 4
    assert float(cost.verify_seconds(4, 16, 4096)) == pytest.approx(f(4, 4, 4096))
    assert float(cost.verify_seconds(6, 6, 2000)) < 1.0
    assert np.isinf(cost.verify_seconds(16, 16, 4096))
    assert "KV tokens" in cost.why(16, 16, 4096) and cost.why(4, 4, 512) is None
    # negative control: reading every row (the flags ignored) lets the absurd rows leak into prices
    for r in prof["verify"]:
        r["fits"] = True
    assert float(StepCost.from_profile(prof).verify_seconds(6, 6, 2000)) > 1.0


def test_bundled_capacity_is_the_stated_one_and_agrees_with_every_fits_flag():
    cost = StepCost.from_profile(ROOF)
    assert "kv_capacity_tokens" in cost.capacity_source
    assert cost.arrays.kv_cap == load_profile(ROOF)["deployment"]["kv_capacity_tokens"]
    rows = load_profile(ROOF)["verify"]
    for r in rows:  # the facts classify every row as its fits flag does
        need = r["requests"] * r["context"] + r["tokens"]
        assert (need <= cost.arrays.kv_cap) == r["fits"]


# ------------------------------------------------------------------------------------ prefill, drafter
def test_prefill_chunks_add_up_to_the_whole_prompt():
    cost = StepCost.from_profile(ROOF)
    rows = {r["prompt_tokens"]: r["median_s"] for r in load_profile(ROOF)["prefill"]}
    # one whole prompt in a prefill-only step costs the profile's row exactly
    assert cost.step_seconds(0, 0, 512, prefill_tokens=2048) == pytest.approx(rows[2048], rel=1e-12)
    # the same prompt in chunks of 512 adds up to the same work (plus one fixed part per step)
    chunks = [cost.prefill_seconds(512, o, n=8, context=512) for o in (0, 512, 1024, 1536)]
    whole = cost.prefill_seconds(2048, 0, n=8, context=512)
    assert sum(chunks) == pytest.approx(whole, rel=1e-12)
    assert chunks[-1] > chunks[0]  # later chunks attend to more of the prompt
    # a chunk riding with decoders costs its marginal work, less than a pass of its own
    assert cost.prefill_seconds(128, 0, n=64, context=2048) < 0.1 * rows[128]


def test_drafter_price_by_requests_block_and_context():
    draft = [{"requests": n, "block": g, "context": c, "median_s": 0.001 * g + 1e-5 * n + 1e-7 * c}
             for g in (4, 8) for n in (1, 16) for c in (256, 1024)]
    prof = grid_profile((1, 4), (1, 2), (256,), lambda n, t, c: 0.01 + 1e-3 * n * t, draft=draft)
    cost = StepCost.from_profile(prof)
    assert cost.draft_seconds(8, 4, 640) == pytest.approx(0.004 + 8e-5 + 640e-7)
    assert cost.draft_seconds(8, 6, 256) == pytest.approx(0.006 + 8e-5 + 256e-7)  # linear in the block
    assert cost.draft_seconds(0, 4, 256) == 0.0 and cost.draft_seconds(4, 0, 256) == 0.0
    assert cost.draft_seconds(32, 4, 5000) == pytest.approx(0.004 + 32e-5 + 1024e-7)  # context held at 1024
    assert cost.draft_seconds(2, 4, 256, family="mtp1") == pytest.approx((0.004 + 2e-5 + 256e-7) / 1)


# ------------------------------------------------------------------------------------ the kernels
@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.5, 300), min_size=1, max_size=6, unique=True),
       st.lists(st.floats(1e-4, 0.05), min_size=6, max_size=6), st.booleans(),
       st.lists(st.floats(0, 2000), min_size=1, max_size=30))
def test_kernel_price_equals_throughput_curve_bit_for_bit(xs, steps, extend, query):
    xs = np.sort(np.asarray(xs))
    ys = 0.003 + np.cumsum(np.asarray(steps[: xs.size]))
    curve = ThroughputCurve.from_points(xs, ys, extrapolate="linear" if extend else "clamp")
    q = np.asarray(query + [float(xs[0]), float(xs[-1])] + xs.tolist())
    out = np.empty(q.size)
    knot_prices(xs, ys, extend, q, out)
    np.testing.assert_array_equal(out, curve.step_time(q))
    assert knot_price(xs, ys, extend, float(q[0])) == float(curve.step_time(q[0]))


def test_slice_is_the_knots_the_engine_uses():
    cost = StepCost.from_profile(ROOF)
    xs, ys = cost.knots(48, 3000.0)
    curve = cost.curve(48, 3000.0)
    np.testing.assert_array_equal(curve.tokens, xs)
    np.testing.assert_array_equal(curve.seconds[0], ys)
    np.testing.assert_array_equal(cost.table(48, 3000.0, 400)[48:], curve.table(400)[48:])


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("n, ctx, match", [(0, 100, "requests must be a number >= 1"),
                                           (4, -1, "context must be a finite length >= 0"),
                                           (4, float("nan"), "context must be a finite length")])
def test_bad_queries(n, ctx, match):
    with pytest.raises(ValueError, match=match):
        StepCost.from_profile(ROOF).verify_seconds(n, 8, ctx)


def test_fewer_tokens_than_requests_is_an_error():
    with pytest.raises(ValueError, match="every decoding request verifies at least its anchor"):
        StepCost.from_profile(ROOF).verify_seconds(8, 4, 512)


def test_a_profile_without_fitting_rows_is_an_error(tmp_path):
    prof = grid_profile((1, 2), (1, 2), (64,), lambda n, t, c: 0.01 * n * t, fits=lambda n, t, c: False)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(prof))
    with pytest.raises(ValueError, match=r"p.json: no verify row fits in memory"):
        StepCost.from_profile(path)


def test_the_engine_clock_charges_what_the_step_cost_says(tmp_path):
    """Every decode-only step of a simulation costs T(n, B, L) + D(n, g, L) at its own n, B and mean
    context (the steps table stores L in float32: equal to 1e-6)."""
    from simulator.config import SimConfig
    from simulator.run import simulate

    res = simulate("chat", SimConfig(policy="dspark", rate_scale=8.0, max_requests=400))
    cost = StepCost.from_profile(SimConfig().profile)
    dec = res.steps.filter((res.steps["prefill_tokens"] == 0) & (res.steps["decode_requests"] > 0))
    assert dec.height > 50 and dec["decode_requests"].max() >= 16
    for r in dec.iter_rows(named=True):
        n, b, ctx = r["decode_requests"], r["batch_tokens"], float(r["mean_context"])
        want = float(cost.verify_seconds(n, b, ctx)) + cost.draft_seconds(n, 7, ctx)
        assert r["duration_s"] == pytest.approx(want, rel=1e-6)
        assert r["draft_s"] == pytest.approx(cost.draft_seconds(n, 7, ctx), rel=1e-6)


def test_past_the_context_edge_the_extended_slice_stays_above_the_edge():
    """Regression (found by the property above in CI): a grid whose last segment in t flattens with
    context; at twice the last context and 3 tokens per request (past the last knot, t = 2) the old
    slice priced 4.85 ms against the edge's 5.02 ms."""
    secs = {(1, 1, 64): 0.004811, (1, 2, 64): 0.003980, (2, 1, 64): 0.004216, (2, 2, 64): 0.005193,
            (1, 1, 512): 0.004815, (1, 2, 512): 0.004603, (2, 1, 512): 0.004368, (2, 2, 512): 0.004694}
    cost = StepCost.from_profile(grid_profile((1, 2), (1, 2), (64, 512), lambda n, t, c: secs[(n, t, c)]))
    for t in (2.0, 3.0, 6.0):
        assert float(cost.verify_seconds(2, 2 * t, 1024)) >= float(cost.verify_seconds(2, 2 * t, 512))
        assert float(cost.verify_seconds(6, 6 * t, 512)) >= float(cost.verify_seconds(2, 2 * t, 512))
