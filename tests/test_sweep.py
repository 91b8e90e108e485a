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
                "mean_running", "mean_decode_requests", "time_weighted_decode_requests", "mean_batch_tokens", "mean_step_s", "mean_verify_s",
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
    assert np.allclose(mtp.get_column("verify_budget").to_numpy(), 2.0)
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


def _fleet_configs(seed: int = 3):
    from simulator.config import SimConfig
    from simulator.sweep import sweep_configs

    base = SimConfig(max_requests=60, seed=seed, router="least-loaded")
    return sweep_configs(base, ["dspark", "mtp1"], [8], [6.0, 12.0], replicas=[1, 2, 3])


@simulator_ready
def test_fleet_sweep_ray_equals_local(ray_instance):
    """A fleet sweep (replicas x rates x policies) gives the same tables on Ray as in local processes."""
    from simulator.sweep import run_sweep

    configs = _fleet_configs()
    assert len(configs) == 12 and {c.replicas for c in configs} == {1, 2, 3}
    df = _chat()
    local = run_sweep(df, configs, workers=2)
    assert local.rows.get_column("replicas").to_list() == [c.replicas for c in configs]
    assert (local.rows.get_column("finished") == 60).all()
    on_ray = run_sweep(df, configs, backend="ray", workers=2)
    for a, b in ((local.rows, on_ray.rows), (local.budget, on_ray.budget), (local.acceptance, on_ray.acceptance)):
        assert a.equals(b)
    other = run_sweep(df, _fleet_configs(seed=4), backend="ray", workers=2)  # negative control
    assert not local.rows.equals(other.rows)


# ------------------------------------------------------------------------------------------ processes (issue 15, 6)
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
linux = pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
SWEEP = ["pareto", "--trace", "chat", "--policies", "dspark,mtp1,static-3", "--load", "8,16,32,64,96,128",
         "--max-requests", "1000", "--workers", "2", "--no-progress"]


def _children(pid: int) -> set[int]:
    """Live processes whose parent is `pid` (from /proc)."""
    import os

    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.add(int(entry))
    return out


def _alive(pids: set[int]) -> set[int]:
    """The pids among `pids` that still run (not gone, not zombies)."""
    alive = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.add(pid)
        except OSError:
            pass
    return alive


def _ignores_sigint(pid: int) -> bool:
    """True once the process ignores SIGINT (its SigIgn mask in /proc), i.e. a worker is initialised."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            line = next(x for x in fh if x.startswith("SigIgn:"))
    except (OSError, StopIteration):
        return False
    return bool(int(line.split()[1], 16) & (1 << (2 - 1)))  # SIGINT is signal 2


def _is_worker(pid: int) -> bool:
    """A multiprocessing spawn worker (not the resource tracker, which ignores SIGINT from birth)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"spawn_main" in fh.read()
    except OSError:
        return False


def _start_sweep(tmp_path):
    """`sparksched pareto` with two local workers, once both are initialised: (process, worker pids)."""
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "sparksched.cli", *SWEEP, "-o", str(tmp_path / "o")], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        workers = {pid for pid in _children(proc.pid) if _is_worker(pid) and _ignores_sigint(pid)}
        if len(workers) >= 2:
            return proc, _children(proc.pid)
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"the sweep never started two workers: {proc.stderr.read()[-2000:] if proc.stderr else ''}")


def _gone_within(pids: set[int], seconds: float) -> set[int]:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pids):
            return set()
        time.sleep(0.1)
    return _alive(pids)


@linux
def test_sigkill_of_the_parent_takes_its_workers_along(tmp_path):
    """Killing `pareto` with SIGKILL orphaned its workers (about 0.5 GB each)."""
    import os
    import signal

    proc, workers = _start_sweep(tmp_path)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert _gone_within(workers, 15) == set()
    finally:
        for pid in _alive(workers):
            os.kill(pid, signal.SIGKILL)


@linux
def test_ctrl_c_exits_130_and_stops_the_workers(tmp_path):
    import os
    import signal

    proc, workers = _start_sweep(tmp_path)
    try:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        code = proc.wait(timeout=60)
        err = proc.stderr.read() if proc.stderr else ""
        assert code == 130, err[-2000:]
        assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted"
        assert _gone_within(workers, 15) == set()
        assert not (tmp_path / "o").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    finally:
        for pid in _alive(workers):
            os.kill(pid, signal.SIGKILL)


def test_a_ray_address_where_nothing_listens_fails_fast_with_one_line(tmp_path):
    """`pareto --ray-address` pointing at nothing hung for more than 5 minutes, deaf to Ctrl-C."""
    if not HAS_RAY:
        pytest.skip("ray is not installed (pip install 'sparksched[ray]')")
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-m", "sparksched.cli", "pareto", "--trace", "chat", "--policies", "dspark",
                            "--load", "8", "--max-requests", "10", "--no-progress", "--ray-address",
                            f"127.0.0.1:{port}", "-o", str(tmp_path / "o")], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("pareto --ray-address to a dead port still running after 60 s")
    # the probe gives up within RAY_CONNECT_TIMEOUT_S (10 s); the rest is start-up (torch, ray) on a
    # loaded 2-core machine, so the bound here is looser than the 30 s the command promises
    assert time.monotonic() - t0 < 60
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"Error: cannot reach the Ray cluster at 127.0.0.1:{port}")


def test_the_ray_probe_refuses_a_dead_address_at_once():
    """The check `pareto --ray-address` runs before ray.init: a refused port fails in well under a second."""
    import socket
    import time

    from simulator.sweep import RAY_CONNECT_TIMEOUT_S, _probe

    assert RAY_CONNECT_TIMEOUT_S <= 10
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=f"cannot reach the Ray cluster at ray://127.0.0.1:{port}"):
        _probe(f"ray://127.0.0.1:{port}")
    assert time.monotonic() - t0 < 5
    _probe("auto")  # no host:port: left to Ray
