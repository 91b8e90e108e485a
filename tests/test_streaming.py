"""Bounded memory: streamed summaries equal the table-based ones, streamed tables equal in-memory ones,
and a trace without prefix blocks gives the same bytes as the simulator before streaming."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import simulator.records as records
import simulator.stats as stats_mod
from simulator.config import SimConfig
from simulator.metrics import summarize
from simulator.run import simulate
from simulator.vllm_metrics import bench_result, parse_goodput

GOLDEN = Path(__file__).parent / "data" / "before_streaming"


def _close(a, b, key: str) -> None:
    if isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-15), key
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), key
        for x, y in zip(a, b):
            _close(x, y, key)
    else:
        assert a == b, key


def _tables_agree(res) -> None:
    """The streamed summary and vLLM result equal the table-based ones (simulator.metrics, vllm_metrics)."""
    c = res.config
    ref = summarize(res.requests, res.steps, res.rounds, block=c.draft_block, sla_tps=c.sla_tps,
                    sla_ttft_s=c.sla_ttft_s)
    for k, v in ref.items():
        _close(res.summary[k], v, k)
    meta = {"label": c.policy, "model_id": res.meta.get("profile"), "trace": res.meta.get("trace")}
    bench = bench_result(res.requests, res.steps, res.rounds, block=c.draft_block,
                         goodput=parse_goodput(c.goodput), meta=meta)
    for k, v in bench.items():
        _close(res.bench[k], v, k)


@pytest.mark.parametrize("kw", [dict(max_requests=200), dict(max_requests=150, rate_scale=6.0, max_running=8,
                                                                kv_blocks=500, horizon_s=15.0, policy="static-3"),
                                dict(max_requests=120, policy="none", goodput="ttft:200 tpot:10")])
def test_streamed_summaries_equal_the_tables_in_small_batches(monkeypatch, kw):
    monkeypatch.setattr(records, "STEP_BATCH", 37)  # many flushes, each cutting epochs and requests apart
    monkeypatch.setattr(records, "ROUND_BATCH", 101)
    res = simulate("mixed", SimConfig(**kw))
    assert res.summary["requests"] == res.requests.height
    _tables_agree(res)


def test_negative_control_gaps_without_per_request_order_differ(monkeypatch):
    """A recorder that takes a round's gap from the previous round in the batch, whoever's it was,
    gives another ITL: the equality above can fail."""
    res = simulate("chat", SimConfig(max_requests=120))
    real = np.argsort
    monkeypatch.setattr(records.np, "argsort", lambda a, kind=None: np.arange(a.size) if kind == "stable" else real(a))
    wrong = simulate("chat", SimConfig(max_requests=120))
    assert wrong.summary["itl_step_p50_s"] != res.summary["itl_step_p50_s"]


def test_histogram_percentiles_past_the_exact_cap(monkeypatch):
    exact = simulate("chat", SimConfig(max_requests=150))
    monkeypatch.setattr(stats_mod, "EXACT_CAP", 200)
    binned = simulate("chat", SimConfig(max_requests=150))
    assert not binned.stats["gaps"].exact and exact.stats["gaps"].exact
    for q in (50, 90, 99):
        for kind in ("step", "token"):
            key = f"itl_{kind}_p{q}_s"
            assert binned.summary[key] == pytest.approx(exact.summary[key], rel=2e-4), key
    for key in ("mean_itl_ms", "std_itl_ms"):
        assert binned.bench[key] == pytest.approx(exact.bench[key], rel=1e-9), key
    for key in ("median_itl_ms", "p99_itl_ms"):
        assert binned.bench[key] == pytest.approx(exact.bench[key], rel=2e-4), key


def test_tables_streamed_to_a_folder_equal_the_in_memory_tables(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "STEP_BATCH", 50)
    monkeypatch.setattr(records, "ROUND_BATCH", 300)
    mem = simulate("chat", SimConfig(max_requests=150))
    disk = simulate("chat", SimConfig(max_requests=150), folder=tmp_path)
    assert (tmp_path / "steps.parquet").exists() and (tmp_path / "rounds.parquet").exists()
    assert not list(tmp_path.glob(".*part*")), "part files left behind"
    assert pl.read_parquet(tmp_path / "steps.parquet").equals(mem.steps)
    assert pl.read_parquet(tmp_path / "rounds.parquet").equals(mem.rounds)
    assert disk.requests.equals(mem.requests)


def test_log_chooses_the_tables(tmp_path):
    res = simulate("chat", SimConfig(max_requests=60, log=("steps",)))
    assert res.steps.height > 0 and res.rounds.height == 0
    assert res.summary["rounds"] > 0  # the summaries do not need the table
    res.write(tmp_path / "run")
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert "steps.parquet" in names and "rounds.parquet" not in names and "requests.parquet" in names
    with pytest.raises(ValueError, match="log"):
        SimConfig(log=("step",))


@pytest.mark.skipif(not GOLDEN.exists(), reason="golden files absent")
@pytest.mark.parametrize("case", ["chat", "code-tight"])
def test_same_bytes_as_before_streaming(tmp_path, case):
    """The simulator before bounded memory (commit 4ccae23) wrote these tables; a trace without prefix
    blocks gives the same rows, and with the same polars, the same Parquet bytes."""
    meta = json.loads((GOLDEN / "README.json").read_text())
    spec = meta["cases"][case]
    res = simulate(spec["trace"], SimConfig(**spec["config"]))
    res.write(tmp_path / "run")
    for table in ("requests", "steps", "rounds"):
        golden = GOLDEN / f"{case}.{table}.parquet"
        assert pl.read_parquet(tmp_path / "run" / f"{table}.parquet").equals(pl.read_parquet(golden)), table
        if pl.__version__ == meta["polars"]:
            assert (tmp_path / "run" / f"{table}.parquet").read_bytes() == golden.read_bytes(), table
