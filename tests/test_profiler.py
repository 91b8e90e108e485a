"""Profiler: timing statistics, grid, end-to-end CPU profile, schema errors, roofline, hold-out check."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from profiler.check import check_profile
from profiler.compare import compare, guess_device_key
from profiler.grid import Grid, parse_int_list
from profiler.roofline import DEVICES, get_device_spec, roofline_profile, verify_cost
from profiler.run import complete_grid, measure_profile, monotone_violations, write_json_atomic, write_profile
from profiler.timer import summarize, time_fn
from sparksched.cost import StepCost
from sparksched.curve import _pav, isotonic_non_decreasing
from sparksched.models.presets import get_preset
from sparksched.profile import load_profile

QWEN8 = get_preset("qwen3-8b")
TINY_GRID = Grid(requests=(1, 8), tokens_per_request=(1, 8), contexts=(8, 64), prompts=(8,),
                 draft_requests=(1,), blocks=(3,), draft_context=8)


# ---------------------------------------------------------------- timer and grid
def test_summarize_statistics() -> None:
    t = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (t.median_s, t.repeats) == (3.0, 5)
    assert t.p10_s == pytest.approx(1.4) and t.p90_s == pytest.approx(4.6)
    assert t.cv == pytest.approx(np.std([1, 2, 3, 4, 5], ddof=1) / 3.0)
    with pytest.raises(ValueError, match="finite values > 0"):
        summarize([1.0, -1.0])


def test_time_fn_measures_wall_time_on_cpu() -> None:
    t = time_fn(lambda: time.sleep(0.005), "cpu", warmup=1, repeats=3)
    assert 0.005 <= t.median_s < 0.5 and t.repeats == 3


def test_parse_int_list() -> None:
    assert parse_int_list("1,4,2-3", "tokens") == (1, 2, 3, 4)
    for bad, msg in [("1,x", "'x' is not an integer"), ("0,1", "must be > 0"), ("", "empty")]:
        with pytest.raises(ValueError, match=msg):
            parse_int_list(bad, "tokens")


def test_grid_points_and_block() -> None:
    g = Grid.for_block(3, requests=(1, 2), contexts=(0, 16))
    assert g.tokens_per_request == (1, 2, 3, 4)
    assert len(g.verify_points()) == 2 * 4 * 2 and g.batch_tokens == [1, 2, 3, 4, 6, 8]
    with pytest.raises(ValueError, match="requests"):
        Grid(requests=())


def test_complete_grid_drops_batch_sizes_missing_at_a_context() -> None:
    rows = [{"context": c, "tokens": b} for c in (1, 2) for b in (1, 2, 4)][:-1]  # B=4 missing at L=2
    kept, dropped = complete_grid(rows)
    assert dropped == [4] and {r["tokens"] for r in kept} == {1, 2}


def test_monotone_violations_flags_the_drop_and_the_peak() -> None:
    rows = [{"context": 0, "tokens": b, "median_s": s} for b, s in [(1, 1.0), (2, 2.0), (4, 1.0), (8, 3.0)]]
    assert monotone_violations(rows) == {(1, 0, 2), (1, 0, 4)}
    # rows of another request count are not compared with these (more requests may cost more)
    more = [{"requests": 8, "context": 0, "tokens": 8 * b, "median_s": 5.0} for b in (1, 2)]
    assert monotone_violations([dict(r, median_s=float(r["tokens"])) for r in rows] + more) == set()
    assert monotone_violations([dict(r, median_s=float(r["tokens"])) for r in rows]) == set()


def test_pav_fallback_equals_scipy() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        y = rng.normal(size=int(rng.integers(1, 20)))
        w = rng.uniform(0.1, 3.0, size=y.size)
        np.testing.assert_allclose(_pav(y, w), isotonic_non_decreasing(y, w))
    # negative control: a running maximum is non-decreasing too, but not the least-squares fit
    y = np.array([1.0, 3.0, 2.0])
    assert not np.allclose(np.maximum.accumulate(y), isotonic_non_decreasing(y))


# ---------------------------------------------------------------- end to end on CPU
@pytest.fixture(scope="module")
def cpu_profile() -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI does on CPU: one thread is far steadier on a busy host
    try:
        return measure_profile(get_preset("tiny"), torch.device("cpu"), "float32", TINY_GRID, warmup=1,
                               repeats=3, rounds=2, retries=5, progress=False, draft_layers=1, rank=8)
    finally:
        torch.set_num_threads(threads)


def test_cpu_profile_end_to_end(cpu_profile: dict, tmp_path: Path) -> None:
    path = write_profile(cpu_profile, tmp_path / "cpu.json")
    prof = load_profile(path)
    assert prof["kind"] == "measured" and prof["device"]["type"] == "cpu"
    assert len(prof["verify"]) == len(TINY_GRID.verify_points())
    for r in prof["verify"]:
        assert r["tokens"] == r["requests"] * r["tokens_per_request"]
        assert r["repeats"] == 6 or r.get("retimed")  # 2 rounds x 3, or re-timed (3)
        assert r["p10_s"] <= r["median_s"] <= r["p90_s"]
    assert [(r["requests"], r["block"]) for r in prof["draft"]] == [(1, 3)]
    assert prof["draft"][0]["backbone_s"] > 0 and prof["draft"][0]["head_s"] > 0
    assert prof["drafter"]["implementation"] == "sparksched.models.drafter.DSparkDrafter"
    assert prof["prefill"][0]["prompt_tokens"] == 8
    cost = StepCost.from_profile(path)
    assert cost.arrays.ctxs.tolist() == [8.0, 64.0] and cost.arrays.reqs.tolist() == [1.0, 8.0]
    assert cost.arrays.knots.tolist() == [1.0, 8.0] and np.all(np.diff(cost.arrays.secs, axis=2) >= 0)


def test_write_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "p.json"
    with pytest.raises(TypeError):
        write_json_atomic({"x": object()}, target)  # not serialisable: nothing written
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="does not exist"):
        write_json_atomic({}, tmp_path / "missing" / "p.json")


# ---------------------------------------------------------------- bad profile files
def _base_profile() -> dict:
    return roofline_profile("h100", get_preset("tiny"), TINY_GRID, "bfloat16")


@pytest.mark.parametrize("edit, message", [
    (lambda p: p.pop("verify"), "missing field 'verify'"),
    (lambda p: p["verify"][2].pop("median_s"), r"verify\[2\]: missing field 'median_s'"),
    (lambda p: p.update(schema=2), "field 'schema' is 2"),
    (lambda p: p.update(kind="guessed"), "field 'kind' is 'guessed'"),
    (lambda p: p["verify"][1].update(median_s=-1.0), r"verify\[1\]: field 'median_s' must be a finite number > 0"),
    (lambda p: [r.update(median_s=1.0 / r["tokens"]) for r in p["verify"]], "verify step time decreases"),
    # issue 15, 8: facts that cannot be true
    (lambda p: p["device"].update(memory_bytes=1), r"field 'device.memory_bytes' must be a number >= 1048576"),
    (lambda p: p["device"].update(memory_bytes=-8e10), r"field 'device.memory_bytes'"),
    (lambda p: p["model"].update(parameters=0), r"field 'model.parameters' must be a number > 0"),
    (lambda p: p["model"].update(kv_heads=-2), r"field 'model.kv_heads'"),
    (lambda p: p.update(dtype=4), r"field 'dtype' must be a name"),
    (lambda p: p.update(verify=[r for r in p["verify"] if r["tokens"] == p["verify"][0]["tokens"]]),
     "measure one batch size"),
    # issue 15, 10j: repeated rows count by their mean, as the curve reads them
    (lambda p: p["verify"].extend([dict(_largest(p), median_s=0.01 * _largest(p)["median_s"])] * 3),
     "verify step time decreases"),
])
def test_bad_profile_files_give_one_line_errors(tmp_path: Path, edit, message: str) -> None:
    prof = _base_profile()
    edit(prof)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(prof))
    with pytest.raises(ValueError, match=message) as info:
        load_profile(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def _largest(prof: dict) -> dict:
    """The verify row with the largest batch at the first context."""
    ctx = prof["verify"][0]["context"]
    return max((r for r in prof["verify"] if r["context"] == ctx), key=lambda r: r["tokens"])


def test_unreadable_profile_files_name_the_file(tmp_path: Path) -> None:
    """Issue 15, 5 and 9: a 5000-digit integer, binary bytes and a FIFO give one line each."""
    digits = tmp_path / "digits.json"
    digits.write_text('{"schema": 1,\n "device": ' + "9" * 5000 + "}")
    with pytest.raises(ValueError, match=r"digits.json: line 2: not valid JSON: an integer with more than 4300"):
        load_profile(digits)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b'{"schema": 1,\n\xff\xfe\x00\x81}')
    with pytest.raises(ValueError, match=r"binary.json: line 2: not valid UTF-8"):
        load_profile(binary)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"fifo.json: not a regular file"):
        load_profile(fifo)  # reading it would block forever


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"schema": 1,\n "device": }')
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        load_profile(path)


# ---------------------------------------------------------------- roofline
def _monotone_cost(cost_fn) -> bool:
    """True when cost_fn(n, t, L) never decreases as n, t or L grows, over a grid of points."""
    ns, ts, ls = (1, 2, 8, 64, 256), (1, 2, 4, 8), (0, 512, 4096)
    s = np.array([[[cost_fn(n, t, L) for L in ls] for t in ts] for n in ns])
    return all(np.all(np.diff(s, axis=a) >= 0) for a in range(3))


def test_roofline_monotone_in_requests_tokens_and_context() -> None:
    h100 = get_device_spec("h100")
    assert _monotone_cost(lambda n, t, L: verify_cost(QWEN8, n, t, L).seconds(h100))
    # negative control: a cost that amortises per token is rejected by the same check
    assert not _monotone_cost(lambda n, t, L: verify_cost(QWEN8, n, t, L).seconds(h100) / (n * t))


def test_roofline_h100_qwen3_8b_is_sane() -> None:
    h100 = get_device_spec("h100")
    one = verify_cost(QWEN8, 1, 1, 512)
    # decode of one request is memory-bound: ~15-16 GB of weights at ~3 TB/s
    assert one.bound(h100) == "memory" and 14e9 < one.bytes < 17e9
    assert 5e-3 < one.seconds(h100) < 6e-3
    big = verify_cost(QWEN8, 256, 8, 512)  # B = 2048: compute-bound, ~2 x 7.6 G params x B FLOPs
    assert big.bound(h100) == "compute"
    assert big.seconds(h100) == pytest.approx(2 * 7.57e9 * 2048 / 790e12, rel=0.15)
    # faster memory is faster when memory-bound; A100 and L40S are slower than H100
    t = {k: one.seconds(get_device_spec(k)) for k in DEVICES}
    assert t["h200"] < t["h100"] < t["a100"] < t["l40s"]
    with pytest.raises(ValueError, match="unknown roofline device 'b300'"):
        get_device_spec("b300")


def test_roofline_profile_validates_and_loads(tmp_path: Path) -> None:
    prof = roofline_profile("h100", QWEN8, Grid(requests=(1, 8, 64), tokens_per_request=(1, 8),
                                                contexts=(512, 8192)))
    assert prof["kind"] == "estimated"
    fits = {(r["requests"], r["context"]): r["fits"] for r in prof["verify"]}
    assert fits[(1, 512)] and not fits[(64, 8192)]  # 64 x 8 K tokens of KV + weights exceed 80 GB
    cost = StepCost.from_profile(write_profile(prof, tmp_path / "est.json"))
    h100 = get_device_spec("h100")
    # exact at the grid's rows (the roofline writes 6 significant digits)
    rows = {(r["requests"], r["tokens"], r["context"]): r["median_s"] for r in load_profile(tmp_path / "est.json")["verify"]}
    assert float(cost.verify_seconds(1, 1, 512)) == rows[(1, 1, 512)]
    assert float(cost.verify_seconds(8, 64, 8192)) == rows[(8, 64, 8192)]
    assert rows[(8, 64, 8192)] == pytest.approx(verify_cost(QWEN8, 8, 8, 8192).seconds(h100), rel=1e-5)
    assert not np.isfinite(cost.verify_seconds(64, 64, 8192)) and "KV tokens" in cost.why(64, 64, 8192)


def test_bundled_roofline_default() -> None:
    cost = StepCost.from_profile("h100-qwen3-8b-roofline")
    a = cost.arrays
    assert a.reqs[-1] * a.knots[-1] >= 1024 and {512.0, 2048.0, 8192.0} <= set(a.ctxs.tolist())
    assert load_profile("h100-qwen3-8b-roofline")["kind"] == "estimated"


# ---------------------------------------------------------------- hold-out check and compare
def test_check_is_exact_on_a_piecewise_linear_profile() -> None:
    prof = _base_profile()
    for r in prof["verify"]:  # exactly linear in B and in L: interpolation recovers every point
        r["median_s"] = 1e-3 * (1 + 0.01 * r["tokens"] + 1e-4 * r["context"])
    prof["verify"] += [dict(r, context=200) for r in prof["verify"] if r["context"] == 64]
    for r in prof["verify"]:
        r["median_s"] = 1e-3 * (1 + 0.01 * r["tokens"] + 1e-4 * r["context"])
    report = check_profile(prof)
    assert report.summary()["context"]["points"] > 0 and report.summary()["all"]["max"] < 1e-9
    # negative control: a kink at the interior context is caught
    for r in prof["verify"]:
        if r["tokens"] == 8 and r["context"] == 64:
            r["median_s"] *= 1.5
    assert check_profile(prof).summary()["context"]["max"] > 0.2


def test_check_holds_out_requests_and_tokens_per_request() -> None:
    """n x t x L linear-in-each grid: every leave-one-out is exact; a kink at one n is caught."""
    grid = Grid(requests=(1, 4, 16), tokens_per_request=(1, 2, 8), contexts=(64,), prompts=(8,),
                draft_requests=(1,), blocks=(3,), draft_context=8)
    prof = roofline_profile("h100", get_preset("tiny"), grid, "bfloat16")
    for r in prof["verify"]:
        r["median_s"] = 1e-3 * (1 + 0.01 * r["tokens"] + 0.02 * r["requests"])
    s = check_profile(prof).summary()
    assert s["requests"]["points"] == 3 and s["tokens"]["points"] == 3 and s["all"]["max"] < 1e-9
    for r in prof["verify"]:
        if r["requests"] == 4:
            r["median_s"] *= 1.3
    assert check_profile(prof).summary()["requests"]["max"] > 0.2


def test_compare_roofline_against_itself_and_other_device() -> None:
    prof = roofline_profile("h100", QWEN8, Grid(requests=(1, 8), tokens_per_request=(1, 4), contexts=(512,)))
    prof["device"]["name"] = "NVIDIA H100 80GB HBM3"
    assert guess_device_key(prof["device"]) == "h100"
    assert compare(prof).summary()["max"] < 1e-5  # the profile keeps 6 significant digits
    assert compare(prof, "a100").summary()["median"] > 0.3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_verify_pass_matches_eager() -> None:
    from profiler.verify import capture_graph
    from sparksched.models.decoder import build_decoder

    model = build_decoder(get_preset("tiny"), "cuda", torch.float32, 0)
    cache = model.new_cache(4, 40)
    cache.lengths.fill_(32)
    tokens = torch.randint(0, 4096, (4, 8), device="cuda")
    out: dict = {}

    def run() -> None:
        with torch.inference_mode():
            out["logits"] = model(tokens, cache).logits

    with torch.inference_mode():
        replay = capture_graph(run, torch.device("cuda"))
        eager = model(tokens, cache).logits.clone()
        replay()
        torch.cuda.synchronize()
    torch.testing.assert_close(out["logits"], eager)
