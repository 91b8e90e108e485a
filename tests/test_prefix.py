"""Prefix caching: prefill saved equals the hash overlap computed independently here; LRU eviction under a
small KV cache; traces without prefix blocks are untouched; bad prefix_blocks and session fields."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from simulator.config import SimConfig
from simulator.convert import convert_mooncake
from simulator.prefix import PrefixCache
from simulator.run import simulate
from simulator.trace import PREFIX_BLOCK_TOKENS, load_trace, write_trace

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
# Mooncake-format samples: the one held in the repository (tests/data, 40 conversations x 5 turns, made
# by mooncake_sample below, seed 7) and any public Mooncake file placed in ../shared/data/traces
HELD_IN = [Path(__file__).parent / "data" / "mooncake_conversations.jsonl"] + (
    sorted(DATA.glob("*mooncake*.jsonl")) if DATA.exists() else [])


def mooncake_sample(path: Path, sessions: int = 12, turns: int = 4, gap_ms: int = 30_000, seed: int = 0) -> Path:
    """Mooncake-format conversations: a shared 2-block system prompt, each turn's prompt the previous
    prompt's full blocks plus new text; one request every `gap_ms` (each done before the next)."""
    rng = np.random.default_rng(seed)
    rows, fresh = [], 10**6
    for _ in range(sessions):
        prev = [1, 2]
        for _ in range(turns):
            prompt = len(prev) * PREFIX_BLOCK_TOKENS + int(rng.integers(100, 1500))
            hashes = list(prev)
            while len(hashes) < -(-prompt // PREFIX_BLOCK_TOKENS):
                hashes.append(fresh)
                fresh += 1
            rows.append({"input_length": prompt, "output_length": int(rng.integers(5, 60)), "hash_ids": hashes})
            prev = hashes[:prompt // PREFIX_BLOCK_TOKENS]
    order = rng.permutation(len(rows))  # conversations interleaved, turns of one in order
    by_session = sorted(range(len(rows)), key=lambda i: (order[i // turns], i))
    out = []
    for k, i in enumerate(sorted(by_session, key=lambda i: (i % turns, order[i // turns]))):
        out.append({"timestamp": k * gap_ms, **rows[i]})
    path.write_text("\n".join(json.dumps(r) for r in out) + "\n")
    return path


def leading_overlap(trace: pl.DataFrame) -> np.ndarray:
    """Per request, in arrival order: prompt tokens found cached when each earlier request's full prompt
    blocks stay cached (the leading run of full blocks seen before, at least one token left to compute)."""
    seen: set[int] = set()
    out = []
    for p, hashes in zip(trace["prompt_tokens"].to_list(), trace["prefix_blocks"].to_list()):
        full = (hashes or [])[:p // PREFIX_BLOCK_TOKENS]
        k = 0
        while k < len(full) and full[k] in seen:
            k += 1
        while k and k * PREFIX_BLOCK_TOKENS >= p:
            k -= 1
        out.append(k * PREFIX_BLOCK_TOKENS)
        seen.update(full)
    return np.asarray(out)


def converted(tmp_path: Path, **kw) -> pl.DataFrame:
    df, _ = convert_mooncake(mooncake_sample(tmp_path / "mc.jsonl", **kw), jitter=False)
    return df


def test_prefill_saved_equals_the_hash_overlap(tmp_path):
    trace = converted(tmp_path)
    expect = leading_overlap(trace)
    assert expect.sum() > 0
    res = simulate(trace, SimConfig(kv_blocks=200_000))
    pc = res.summary["prefix_cache"]
    assert pc["saved_prefill_tokens"] == int(expect.sum())
    np.testing.assert_array_equal(res.requests["cached_tokens"].to_numpy(), expect)
    assert int(res.steps["prefill_tokens"].sum()) == int(trace["prompt_tokens"].sum() - expect.sum())
    assert 0 < pc["hit_rate"] <= 1 and pc["blocks_evicted"] == 0
    plain = simulate(trace, SimConfig(kv_blocks=200_000, prefix_cache=False))
    assert "prefix_cache" not in plain.summary and "cached_tokens" not in plain.requests.columns
    assert int(plain.steps["prefill_tokens"].sum()) == int(trace["prompt_tokens"].sum())
    assert res.summary["ttft_p50_s"] < plain.summary["ttft_p50_s"]


def any_overlap(trace: pl.DataFrame) -> int:
    """A wrong expectation: every full block seen before counts, not only the leading run."""
    seen: set[int] = set()
    total = 0
    for p, hashes in zip(trace["prompt_tokens"].to_list(), trace["prefix_blocks"].to_list()):
        full = (hashes or [])[:p // PREFIX_BLOCK_TOKENS]
        total += min(sum(h in seen for h in full) * PREFIX_BLOCK_TOKENS, p - 1)
        seen.update(full)
    return total


def test_negative_control_any_block_overlap_is_not_what_caching_saves(tmp_path):
    """A request whose system prompt changed but whose later blocks repeat: an any-block overlap counts
    them, the prefix cache (a leading run) does not; the equality above tells the two apart."""
    rows = converted(tmp_path).to_dicts()
    rows[-1]["prefix_blocks"] = [777] + rows[-1]["prefix_blocks"][1:]
    trace = pl.DataFrame(rows, schema=converted(tmp_path).schema)
    res = simulate(trace, SimConfig(kv_blocks=200_000))
    saved = res.summary["prefix_cache"]["saved_prefill_tokens"]
    assert saved == int(leading_overlap(trace).sum())
    assert saved != any_overlap(trace)


def test_lru_eviction_under_a_small_kv_cache(tmp_path):
    trace = converted(tmp_path, sessions=20, gap_ms=200)
    big = simulate(trace, SimConfig(kv_blocks=200_000))
    small = simulate(trace, SimConfig(kv_blocks=900, max_running=8))
    assert small.summary["prefix_cache"]["blocks_evicted"] > 0
    assert small.summary["finished"] == trace.height
    assert (small.steps["kv_free_blocks"] >= 0).all()
    assert small.summary["prefix_cache"]["saved_prefill_tokens"] < big.summary["prefix_cache"]["saved_prefill_tokens"]


def test_cache_shares_the_kv_pool():
    from simulator.kv import KVBlocks

    kv = KVBlocks(100, 16, 0.0, 4)
    cache = PrefixCache(kv)
    kv.allocate(0, 1100)  # 69 blocks
    cache.insert([5, 6])  # two 512-token blocks move from the request to the cache
    kv.resize(np.array([0]), np.array([1100 - 1024]))
    assert kv.cached == 64 and kv.held[0] == 5 and kv.free == 100 - 64 - 5
    cache.release([5, 6])
    kv.release(np.array([0]))
    assert kv.free == 36 and cache.evictable_blocks == 64 and cache.match(np.array([5, 6, 7])) == 2
    assert cache.evict(10) == 32 and kv.free == 68 and cache.match(np.array([5, 6])) == 0  # oldest (5) first


def test_fleet_prefix_router(tmp_path):
    trace = converted(tmp_path, sessions=16, gap_ms=500)
    res = simulate(trace, SimConfig(replicas=3, router="prefix", kv_blocks=200_000))
    assert res.summary["finished"] == trace.height
    assert all("prefix_cache" in r for r in res.summary["replicas"])
    rr = simulate(trace, SimConfig(replicas=3, router="round-robin", kv_blocks=200_000))
    assert res.summary["prefix_cache"]["saved_prefill_tokens"] >= rr.summary["prefix_cache"]["saved_prefill_tokens"]


@pytest.mark.skipif(not HELD_IN, reason=f"held-in Mooncake samples absent ({DATA}/*mooncake*.jsonl)")
@pytest.mark.parametrize("path", HELD_IN, ids=[p.name for p in HELD_IN])
def test_held_in_mooncake_samples(path):
    trace, _ = convert_mooncake(path, jitter=False)
    trace = trace.head(2000)
    expect = leading_overlap(trace)
    # arrivals 1000x apart: each request finishes before the next arrives, as the overlap assumes
    res = simulate(trace, SimConfig(kv_blocks=2_000_000, rate_scale=1e-3))
    assert res.summary["prefix_cache"]["saved_prefill_tokens"] == int(expect.sum())


@pytest.mark.parametrize("field,value,what", [("prefix_blocks", '"abc"', "must be a list of integers"),
                                              ("prefix_blocks", "[1, -2]", "items must be integers"),
                                              ("hash_ids", "[1.5]", "items must be integers"),
                                              ("session", "7", "must be a string")])
def test_bad_prefix_blocks_and_session_name_file_line_field(tmp_path, field, value, what):
    good = '{"id": "a", "arrival_s": 0, "prompt_tokens": 5, "output_tokens": 2, "domain": "chat"}'
    bad = f'{{"id": "b", "arrival_s": 1, "prompt_tokens": 5, "output_tokens": 2, "domain": "chat", "{field}": {value}}}'
    path = tmp_path / "t.jsonl"
    path.write_text(good + "\n" + bad + "\n")
    with pytest.raises(ValueError) as err:
        load_trace(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: line 2: field '{field}': {what}") and "\n" not in msg
    with pytest.raises(ValueError, match=f"line 2: field '{field}'"):
        simulate(path, SimConfig())


def test_converter_writes_prefix_blocks_in_the_schema(tmp_path):
    trace = converted(tmp_path, sessions=2, turns=2)
    write_trace(trace, tmp_path / "t.jsonl")
    line = json.loads((tmp_path / "t.jsonl").read_text().splitlines()[0])
    assert "prefix_blocks" in line and "hash_ids" not in line
    assert load_trace(tmp_path / "t.jsonl")["prefix_blocks"].to_list() == trace["prefix_blocks"].to_list()
