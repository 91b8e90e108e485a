"""Load sweeps: one simulation per (policy, load), run in parallel local processes or on Ray.

Covers: the operator's "what happens as load grows" question. Load is a concurrency cap
(`max_running`) and/or an arrival-rate multiplier (`rate_scale`); every (policy, max_running,
rate_scale) combination is one `simulate` run, and one row of the result.

Scenario: the trace is loaded once by the caller and shipped to every worker once (a pool
initializer for local processes, one `ray.put` for Ray), each worker runs `simulate` for its
configs and sends back a summary row plus two small tables (verify budget by concurrency,
acceptance by block position). Every run is seeded by its config, so the rows are identical
whichever backend ran them and in whatever order the runs finished.

Backends:
- "local" (default): `concurrent.futures.ProcessPoolExecutor` with the "spawn" start method (polars
  runs thread pools, and forking a process with live threads can deadlock); `workers=1` runs
  in-process, which is also the way to debug. Workers die with their parent, even a SIGKILLed one
  (Linux parent-death signal), ignore Ctrl-C once started (the parent stops them; a Ctrl-C in the
  second or two a worker spends importing reaches it and it prints its own KeyboardInterrupt), and
  are terminated when the parent stops early (an error, Ctrl-C).
- "ray": a local Ray instance (`num_cpus=workers`) or an existing cluster (`ray_address`, whose
  port must answer within RAY_CONNECT_TIMEOUT_S, else a one-line error); Ray is an
  optional extra (`pip install sparksched[ray]`). If Ray is already initialised, it is reused and
  left running. On a multi-node cluster every node needs sparksched installed (the same version),
  and a `--profile` given as a file path must exist at that path on every node (bundled profile
  names always do).
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

Backend = Literal["local", "ray"]
BACKENDS = ("local", "ray")

# ------------------------------------------------------------------------------------------ generic map

_SHARED: Any = None  # the per-worker copy of the shared argument (set by the pool initializer)
RAY_CONNECT_TIMEOUT_S = 10.0  # a cluster address whose port does not answer by then is refused


def _set_shared(shared: Any, parent: int | None = None) -> None:
    """Pool initializer: keep the shared argument; die with the parent; leave Ctrl-C to the parent."""
    global _SHARED
    _SHARED = shared
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None and sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)


def _call_with_shared(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    return fn(_SHARED, *args)


def _ray_call(fn: Callable[..., Any], shared: Any, args: tuple[Any, ...]) -> Any:
    return fn(shared, *args)


def default_workers(n_tasks: int | None = None) -> int:
    """CPUs this process may use (its affinity mask), at most `n_tasks`; at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, n_tasks) if n_tasks else cpus)


def _bar(total: int, progress: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not progress, desc=desc, unit="run", leave=False)


def map_tasks(fn: Callable[..., Any], items: Sequence[tuple[Any, ...]], shared: Any = None, *,
              backend: Backend = "local", workers: int | None = None, ray_address: str | None = None,
              progress: bool = False, desc: str = "sweep") -> list[Any]:
    """[fn(shared, *item) for item in items], in parallel; results in the order of `items`.

    Args:
        fn: a module-level (picklable) function; it must be deterministic given its arguments for
            backends to agree.
        items: per-task argument tuples.
        shared: one argument every task receives first (e.g. the trace), sent to each worker once.
        backend: "local" (process pool; in-process when workers == 1) or "ray".
        workers: parallel workers (local processes or Ray CPUs); default `default_workers`.
        ray_address: connect to this Ray cluster instead of starting a local instance.
        progress: show a progress bar over finished tasks (stderr).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    n = len(items)
    if n == 0:
        return []
    workers = workers or default_workers(n)
    if backend == "ray" or ray_address:
        return _ray_map(fn, items, shared, workers, ray_address, progress, desc)
    out: list[Any] = [None] * n
    with _bar(n, progress, desc) as bar:
        if workers == 1:
            for i, item in enumerate(items):
                out[i] = fn(shared, *item)
                bar.update()
            return out
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=min(workers, n), mp_context=ctx, initializer=_set_shared,
                                   initargs=(shared, os.getpid()))
        try:
            futures = {pool.submit(_call_with_shared, fn, item): i for i, item in enumerate(items)}
            for fut in as_completed(futures):
                out[futures[fut]] = fut.result()
                bar.update()
        except BaseException:  # an error or Ctrl-C: stop the workers now, not after their runs
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    return out


def _probe(address: str, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """ValueError unless `address` (host:port, optionally ray://) accepts a TCP connection in time.

    ray.init on an address where nothing listens waited for minutes, deaf to Ctrl-C.
    """
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and similar: Ray resolves them itself
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ValueError(f"cannot reach the Ray cluster at {address}: {reason} (within {timeout:g} s)") from None


def _ray_map(fn: Callable[..., Any], items: Sequence[tuple[Any, ...]], shared: Any, workers: int,
             address: str | None, progress: bool, desc: str) -> list[Any]:
    try:
        import ray
    except ImportError as e:
        raise ValueError("backend 'ray' needs Ray: pip install 'sparksched[ray]' (or pip install ray)") from e
    started = False
    if not ray.is_initialized():
        if address:
            _probe(address)
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError) as e:
                raise ValueError(
                    f"cannot connect to the Ray cluster at {address}: {e}. Clusters with token "
                    "authentication (the default for local clusters since Ray 2.59) need RAY_AUTH_MODE=token "
                    "and the cluster's token (~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)") from None
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(_ray_call)
        shared_ref = ray.put(shared)
        refs = [remote.remote(fn, shared_ref, item) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        out: list[Any] = [None] * len(items)
        pending = list(refs)
        with _bar(len(items), progress, desc) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    out[index[ref]] = ray.get(ref)
                    bar.update()
        return out
    finally:
        if started:
            ray.shutdown()


# ------------------------------------------------------------------------------------------ sweeps

# summary keys left out of rows: wall-clock facts differ from run to run (rows must not)
NONDETERMINISTIC = frozenset({"wall_s", "sim_per_wall"})

# result.json keys that describe the run's setup, not its outcome (left out of rows)
BENCH_SETUP = frozenset({"backend", "label", "model_id", "trace", "request_rate", "burstiness", "max_concurrency",
                         "num_prompts", "duration"})

# configuration fields copied into every row (what identifies a run)
CONFIG_COLUMNS = ("policy", "drafter", "block", "max_running", "rate_scale", "replicas", "router", "max_requests",
                  "horizon_s", "seed", "profile", "goodput")


def sweep_configs(base: Any, policies: Sequence[str], max_running: Sequence[int],
                  rate_scales: Sequence[float], replicas: Sequence[int] = ()) -> list[Any]:
    """Every (policy, max_running, rate_scale[, replicas]) combination as a validated `SimConfig` copy
    of `base` (a fleet sweep when `replicas` is given: replicas x rates x policies).

    Order: policy-major, then max_running, then rate_scale, then replicas (the order of the rows).
    """
    if not policies or not max_running or not rate_scales:
        raise ValueError("a sweep needs at least one policy, one max_running and one rate_scale")
    fleets = [int(n) for n in replicas] or [base.replicas]
    return [base.replace(policy=p, max_running=int(m), rate_scale=float(r), replicas=n)
            for p, m, r, n in itertools.product(policies, max_running, rate_scales, fleets)]


@dataclass(frozen=True)
class SweepResult:
    """A sweep's tables (polars), one run per config.

    Attributes:
        rows: one row per run: config columns, the simulator's summary scalars, the scalar keys of
            its vllm bench serve result (simulator.vllm_metrics: mean_ttft_ms, request_goodput, ...), and
            the sweep's step means (simulator.stats.StepStats.sweep_means): mean_running and
            time_weighted_decode_requests (weighted by step time: the concurrency a user sees),
            mean_verify_s (per step, drafting left out) and budget_per_request (verified tokens per
            decoding request per step, anchor included). The summary's own mean_decode_requests,
            mean_step_s and mean_batch_tokens are per-step means (simulator.metrics).
        budget: per run and per number of decoding requests in a step (simulator.metrics.budget_by_running's
            names): decode_requests, steps, verify_budget.
        acceptance: per run, domain and block position: trials, accepted, acceptance.
    """

    rows: pl.DataFrame
    budget: pl.DataFrame
    acceptance: pl.DataFrame


def run_sweep(trace: pl.DataFrame | str, configs: Sequence[Any], *, backend: Backend = "local",
              workers: int | None = None, ray_address: str | None = None,
              progress: bool = False) -> SweepResult:
    """Simulate every config on `trace` (loaded once here) and collect the tables.

    Rows come back in the order of `configs`, identical for the same configs whichever backend
    ran them. The local backend spawns processes: call it from under `if __name__ == "__main__":`
    in a script.
    """
    from simulator.trace import load_trace, resolve_trace

    df = trace if isinstance(trace, pl.DataFrame) else load_trace(resolve_trace(trace))
    items = [(i, c) for i, c in enumerate(configs)]
    results = map_tasks(simulate_point, items, df, backend=backend, workers=workers,
                        ray_address=ray_address, progress=progress, desc="simulate")
    rows = pl.DataFrame([r["row"] for r in results], infer_schema_length=None)
    budget = pl.concat([pl.DataFrame(r["budget"], schema=_BUDGET_SCHEMA) for r in results])
    acceptance = pl.concat([pl.DataFrame(r["acceptance"], schema=_ACC_SCHEMA) for r in results])
    return SweepResult(rows, budget, acceptance)


_BUDGET_SCHEMA = {"run": pl.Int64, "policy": pl.Utf8, "decode_requests": pl.Int64, "steps": pl.Int64,
                  "verify_budget": pl.Float64}
_ACC_SCHEMA = {"run": pl.Int64, "policy": pl.Utf8, "domain": pl.Utf8, "position": pl.Int64,
               "trials": pl.Int64, "accepted": pl.Int64, "acceptance": pl.Float64}


def simulate_point(trace: pl.DataFrame, run: int, config: Any) -> dict[str, Any]:
    """One sweep run: `simulate(trace, config)` reduced to a row and two small tables (picklable).

    Returns {"row": dict, "budget": list[dict], "acceptance": list[dict]} (see `SweepResult`).
    """
    from simulator.run import simulate

    res = simulate(trace, config.replace(log=()))  # a sweep reads the run's summaries, not its tables
    row: dict[str, Any] = {"run": run}
    row.update({k: getattr(config, k) for k in CONFIG_COLUMNS})
    row.update({k: v for k, v in res.summary.items()
                if k not in row and k not in NONDETERMINISTIC and _is_scalar(v)})
    # vllm bench serve's keys (mean_ttft_ms, request_goodput, ...): their names never clash with the summary's
    row.update({k: v for k, v in res.bench.items() if k not in row and k not in BENCH_SETUP and _is_scalar(v)})
    row.update(res.stats["steps"].sweep_means())
    budget = [{"run": run, "policy": config.policy, "decode_requests": int(r["decode_requests"]),
               "steps": int(r["steps"]), "verify_budget": float(r["verify_budget"])}
              for r in res.budget_by_running().iter_rows(named=True)]
    acc = [{"run": run, "policy": config.policy, "domain": r["domain"], "position": int(r["position"]),
            "trials": int(r["trials"]), "accepted": int(r["accepted"]),
            "acceptance": float(r["acceptance"]) if r["trials"] else None}
           for r in res.acceptance_by_position().iter_rows(named=True)] if config.draft_block else []
    return {"row": row, "budget": budget, "acceptance": acc}


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))

