"""A run as a Perfetto / Chrome trace (JSON `traceEvents`), to scroll through in ui.perfetto.dev.

Covers: what the engine did step by step and what each request went through, on one time axis.

Layout (Chrome trace event format; times in microseconds of simulated time):
- one process per replica (`pid` = replica index + 1, named "replica <i>"); a run of the simulator
  today is one replica, and a multi-replica run adds one `ReplicaTables` per replica;
- thread "engine steps": one complete slice ("ph": "X") per engine step, named by what it did
  ("decode", "prefill", "prefill+decode"), with args
      n               decoding requests in the step
      B               batch tokens the verify pass processed (prefill tokens + verify tokens)
      budget          draft tokens verified in the step (the scheduler's K, anchors excluded)
      budget_per_request  1 + budget / n: tokens verified per decoding request, anchor included
      prefill_tokens, prefill_requests, accepted, emitted, draft_ms (the drafter's share of the step);
- counter tracks ("ph": "C"): running, waiting, KV free blocks, verify budget (budget per step),
  one sample at the start of each step where the value changed;
- threads "requests <k>": each request's lifetime as a slice from arrival to completion with its
  phases nested inside: "queued" (arrival to admission), "prefill" (admission to first token),
  "decode" (first token to completion). Requests are packed greedily into as few threads as never
  overlap, so the number of request threads is the peak number of requests in flight. A request
  that did not finish ends at the end of the run with its status in the args. Admission is the first
  one: a request preempted after its first token recomputes inside its "decode" slice (its
  preemptions are in the args).

Pure function of the simulator's requests and steps tables; `write_timeline` writes the file
atomically (sparksched.io).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

US = 1e6  # trace-event times are microseconds
STEP_TID = 1
REQUEST_TID0 = 100  # request lanes: threads 100, 101, ...
COUNTERS = (("running", "running"), ("waiting", "waiting"), ("kv_free_blocks", "KV free blocks"),
            ("verified", "verify budget (draft tokens / step)"))


@dataclass(frozen=True)
class ReplicaTables:
    """One replica's tables: the simulator's `requests` and `steps` frames and a display name."""

    requests: pl.DataFrame
    steps: pl.DataFrame
    name: str = ""


def replica_tables(result: Any) -> list[ReplicaTables]:
    """A run's tables split by replica (a fleet's `replica` column; one replica otherwise)."""
    req, steps = result.requests, result.steps
    if "replica" not in req.columns:
        return [ReplicaTables(req, steps, "replica 0")]
    n = int(result.config.replicas)
    return [ReplicaTables(req.filter(pl.col("replica") == k).drop("replica"),
                          steps.filter(pl.col("replica") == k).drop("replica") if "replica" in steps.columns else steps,
                          f"replica {k}") for k in range(n)]


def _us(t: np.ndarray) -> np.ndarray:
    """Seconds -> microseconds rounded to ns; ends are rounded the same way as starts, so slices that
    touch in seconds touch in the file (Perfetto nests or clips slices that overlap by a rounding)."""
    return np.round(np.asarray(t, dtype=np.float64) * US, 3)


def _meta(pid: int, tid: int | None, name: str, sort: int | None = None) -> list[dict[str, Any]]:
    kind = "process_name" if tid is None else "thread_name"
    ev: dict[str, Any] = {"ph": "M", "pid": pid, "name": kind, "args": {"name": name}}
    out = [ev if tid is None else {**ev, "tid": tid}]
    if sort is not None and tid is not None:
        out.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_sort_index", "args": {"sort_index": sort}})
    return out


def step_events(steps: pl.DataFrame, pid: int) -> list[dict[str, Any]]:
    """One "X" slice per engine step plus the counter samples (see the module docstring)."""
    if steps.height == 0:
        return []
    c = {k: steps[k].to_numpy() for k in steps.columns}
    n = c["decode_requests"].astype(np.int64)
    pre = c["prefill_tokens"].astype(np.int64)
    names = np.where(pre > 0, np.where(n > 0, "prefill+decode", "prefill"), "decode")
    ts = _us(c["t_start"])
    dur = np.round(_us(c["t_start"] + c["duration_s"]) - ts, 3)  # rounded ends: consecutive steps never overlap
    out: list[dict[str, Any]] = []
    for i in range(steps.height):
        ni, ver = int(n[i]), int(c["verified"][i])
        out.append({
            "ph": "X", "pid": pid, "tid": STEP_TID, "name": str(names[i]), "cat": "step",
            "ts": float(ts[i]), "dur": float(dur[i]),
            "args": {"step": i, "n": ni, "B": int(c["batch_tokens"][i]), "budget": ver,
                     "budget_per_request": round(1 + ver / ni, 4) if ni else None,
                     "prefill_tokens": int(pre[i]), "prefill_requests": int(c["prefill_requests"][i]),
                     "accepted": int(c["accepted"][i]), "emitted": int(c["emitted"][i]),
                     "draft_ms": round(float(c["draft_s"][i]) * 1e3, 4)},
        })
    for col, label in COUNTERS:
        v = c[col].astype(np.int64)
        changed = np.ones(v.size, dtype=bool)
        changed[1:] = v[1:] != v[:-1]
        for j in np.flatnonzero(changed).tolist():
            out.append({"ph": "C", "pid": pid, "name": label, "ts": float(ts[j]),
                        "args": {col: int(v[j])}})
    return out


def pack_lanes(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Lane per interval [start, end) such that intervals in a lane never overlap (greedy by start;
    uses as many lanes as the most intervals open at once)."""
    lanes = np.zeros(start.size, dtype=np.int64)
    free: list[tuple[float, int]] = []  # (end time, lane) of lanes in use
    spare: list[int] = []
    used = 0
    for i in np.argsort(start, kind="stable"):
        while free and free[0][0] <= start[i]:
            heapq.heappush(spare, heapq.heappop(free)[1])
        if spare:
            lane = heapq.heappop(spare)
        else:
            lane, used = used, used + 1
        lanes[i] = lane
        heapq.heappush(free, (float(end[i]), lane))
    return lanes


def request_events(requests: pl.DataFrame, pid: int, end_of_run: float) -> tuple[list[dict[str, Any]], int]:
    """Each request's lifetime and its phases as nested "X" slices; returns (events, lanes used)."""
    if requests.height == 0:
        return [], 0
    arrival = requests["arrival_s"].to_numpy().astype(np.float64)
    admit = requests["admitted_s"].to_numpy().astype(np.float64)
    first = requests["first_token_s"].to_numpy().astype(np.float64)
    finish = requests["finish_s"].to_numpy().astype(np.float64)
    stop = np.where(np.isfinite(finish), finish, max(end_of_run, float(np.nanmax(arrival))))
    lanes = pack_lanes(arrival, stop)
    ids, status = requests["id"].to_list(), requests["status"].to_list()
    domain = requests["domain"].to_list()
    prompt, output = requests["prompt_tokens"].to_list(), requests["output_tokens"].to_list()
    pre = requests["preemptions"].to_list() if "preemptions" in requests.columns else [0] * requests.height
    # phase bounds in rounded microseconds: arrival, admission, first token, completion (or the end)
    bounds = _us(np.stack([arrival, admit, first, finish]))
    stop_us = _us(stop)
    out: list[dict[str, Any]] = []
    for i in range(requests.height):
        tid = REQUEST_TID0 + int(lanes[i])
        base = {"ph": "X", "pid": pid, "tid": tid}
        out.append({**base, "name": str(ids[i]), "cat": "request", "ts": float(bounds[0, i]),
                    "dur": round(float(stop_us[i] - bounds[0, i]), 3),
                    "args": {"status": status[i], "domain": domain[i], "prompt_tokens": int(prompt[i]),
                             "output_tokens": int(output[i]), "preemptions": int(pre[i])}})
        for k, phase in enumerate(("queued", "prefill", "decode")):
            a, b = bounds[k, i], bounds[k + 1, i]
            if not np.isfinite(a):
                break
            end = b if np.isfinite(b) else stop_us[i]
            out.append({**base, "name": phase, "cat": "phase", "ts": float(a), "dur": round(float(max(end - a, 0.0)), 3),
                        "args": {"request": str(ids[i])}})
            if not np.isfinite(b):
                break
    return out, int(lanes.max()) + 1


def build_trace(replicas: Sequence[ReplicaTables], metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The trace document {"traceEvents": [...], "displayTimeUnit": "ms", "metadata": ...}."""
    events: list[dict[str, Any]] = []
    for r, rep in enumerate(replicas):
        pid = r + 1
        end = float((rep.steps["t_start"] + rep.steps["duration_s"]).max()) if rep.steps.height else 0.0
        events += _meta(pid, None, rep.name or f"replica {r}")
        events += _meta(pid, STEP_TID, "engine steps", sort=0)
        events += step_events(rep.steps, pid)
        req_events, lanes = request_events(rep.requests, pid, end)
        for k in range(lanes):
            events += _meta(pid, REQUEST_TID0 + k, f"requests {k}", sort=1 + k)
        events += req_events
    return {"traceEvents": events, "displayTimeUnit": "ms", "metadata": metadata or {}}


def write_timeline(path: str | Path, replicas: Sequence[ReplicaTables],
                   metadata: dict[str, Any] | None = None) -> Path:
    """Write the trace JSON (compact) to `path` atomically; open it at https://ui.perfetto.dev."""
    from simulator.files import jsonable
    from sparksched.io import write_text

    doc = build_trace(replicas, jsonable(metadata or {}))
    return write_text(path, json.dumps(doc, separators=(",", ":"), allow_nan=False))
