"""Sweeps (simulator/sweep.py): the parallel map, and small end-to-end sweeps on every backend."""

from __future__ import annotations

import importlib.util

import numpy as np
import polars as pl
import pytest

from simulator.sweep import default_workers, map_tasks

HAS_RAY = importlib.util.find_spec("ray") is not None


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module (start-up takes seconds); shut down at the end."""
    if not HAS_RAY:
        pytest.skip("ray is not installed (pip install 'sparksched[ray]')")
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _items() -> list[tuple[np.ndarray]]:
    # task i: shared + i * [0, 1, 2]; distinct per task, so a mixed-up order is visible
    return [(np.arange(3.0) * i,) for i in range(7)]


def test_map_tasks_local_processes_keep_order_and_use_shared():
    shared = np.ones(3)
    out = map_tasks(np.add, _items(), shared, workers=2)
    assert [o.tolist() for o in out] == [[1.0, 1.0 + i, 1.0 + 2 * i] for i in range(7)]
    # in-process (workers=1) gives the same list
    serial = map_tasks(np.add, _items(), shared, workers=1)
    assert all(np.array_equal(a, b) for a, b in zip(out, serial))
    assert map_tasks(np.add, [], shared) == []


def test_map_tasks_bad_arguments_and_errors_surface():
    with pytest.raises(ValueError, match="backend must be one of"):
        map_tasks(np.add, _items(), 1.0, backend="dask")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        map_tasks(np.add, _items(), 1.0, workers=0)
    # a failing task fails the map (shapes (2,) and (3,) do not broadcast)
    with pytest.raises(ValueError):
        map_tasks(np.add, _items(), np.ones(2), workers=2)
    assert 1 <= default_workers(1) <= 1 and default_workers() >= 1


def test_map_tasks_ray_equals_local(ray_instance):
    shared = np.full(3, 0.5)
    local = map_tasks(np.add, _items(), shared, workers=2)
    on_ray = map_tasks(np.add, _items(), shared, backend="ray", workers=2)
    assert len(on_ray) == len(local)
    assert all(np.array_equal(a, b) for a, b in zip(local, on_ray))
    # negative control: the comparison does see a difference when one exists
    shifted = map_tasks(np.add, _items(), shared + 1e-9, backend="ray", workers=2)
    assert not all(np.array_equal(a, b) for a, b in zip(local, shifted))
    assert ray_instance.is_initialized()  # an instance we did not start is left running


# ------------------------------------------------------------------------------------------ end to end


def _small_sweep_configs():
    from simulator.config import SimConfig
    from simulator.sweep import sweep_configs

    base = SimConfig(max_requests=40, seed=3)
    return sweep_configs(base, ["dspark", "mtp1"], [2, 8], [8.0])


def _chat():
    from simulator.trace import load_trace, resolve_trace

    return load_trace(resolve_trace("chat.jsonl"))


simulator_ready = pytest.mark.skipif(importlib.util.find_spec("simulator.run") is None,
                                     reason="simulator.run not available yet")


@pytest.fixture(scope="module")
def local_sweep():
    """The small sweep on 2 local processes (each spawned worker imports the simulator: seconds)."""
    if importlib.util.find_spec("simulator.run") is None:
        pytest.skip("simulator.run not available yet")
    from simulator.sweep import run_sweep

    return run_sweep(_chat(), _small_sweep_configs(), workers=2)


@simulator_ready
def test_small_sweep_end_to_end(local_sweep):
    res = local_sweep
    rows = res.rows
    assert rows.height == 4
    assert rows.get_column("policy").to_list() == ["dspark", "dspark", "mtp1", "mtp1"]
    assert rows.get_column("max_running").to_list() == [2, 8, 2, 8]
    for col in ("throughput_tps", "user_tps_p50", "user_tps_p90", "ttft_p90_s", "mean_verify_budget",
                "mean_running", "mean_decode_requests", "mean_batch_tokens", "mean_step_s", "mean_verify_s",
                "budget_per_request"):
        assert rows.get_column(col).is_finite().all(), col
    # every request of the 40 finishes (no horizon), nothing unfinished
    assert rows.get_column("finished").to_list() == [40] * 4
    # a concurrency cap is a cap
    assert (rows.get_column("mean_running") <= rows.get_column("max_running") + 1e-9).all()
    # more concurrency: more aggregate throughput, slower users
    for p in ("dspark", "mtp1"):
        g = rows.filter(pl.col("policy") == p).sort("max_running")
        assert g["throughput_tps"][1] > g["throughput_tps"][0]
        assert g["user_tps_p50"][1] < g["user_tps_p50"][0]
    # MTP-1 verifies exactly anchor + 1 draft per request per decode step
    mtp = res.budget.filter(pl.col("policy") == "mtp1")
    assert np.allclose(mtp.get_column("budget").to_numpy(), 2.0)
    # DSpark's budget is larger when idle than MTP-1's, and does not grow with load
    d = rows.filter(pl.col("policy") == "dspark").sort("max_running")
    assert d["budget_per_request"][0] > 2.0
    assert d["budget_per_request"][1] <= d["budget_per_request"][0] + 1e-9
    # acceptance per position is a probability, positions 1..block for dspark, 1 for mtp1
    acc = res.acceptance
    assert acc.get_column("acceptance").is_between(0, 1).all()
    assert set(acc.filter(pl.col("policy") == "mtp1").get_column("position").to_list()) == {1}
    assert acc.filter(pl.col("policy") == "dspark").get_column("position").max() <= 7


@simulator_ready
def test_small_sweep_ray_equals_local(ray_instance, local_sweep):
    from simulator.sweep import run_sweep

    configs = _small_sweep_configs()
    df = _chat()
    local = local_sweep
    # in-process (workers=1) gives the same tables as the process pool
    serial = run_sweep(df, configs, workers=1)
    assert serial.rows.equals(local.rows) and serial.budget.equals(local.budget)
    on_ray = run_sweep(df, configs, backend="ray", workers=2)
    for a, b in ((local.rows, on_ray.rows), (local.budget, on_ray.budget),
                 (local.acceptance, on_ray.acceptance)):
        assert a.equals(b)
    # negative control: another seed changes the rows, and the same comparison sees it
    other = run_sweep(df, [c.replace(seed=4) for c in configs], backend="ray", workers=2)
    assert not local.rows.equals(other.rows)
