"""timeline.json: a Chrome / Perfetto trace of steps and request lifetimes, faithful to the run's tables."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.config import SimConfig
from simulator.run import simulate
from simulator.timeline import REQUEST_TID0, STEP_TID, ReplicaTables, build_trace, pack_lanes, write_timeline
from simulator.vllm_metrics import peak_concurrency


@pytest.fixture(scope="module")
def run():
    return simulate("mixed", SimConfig(max_requests=120, max_running=16, rate_scale=4.0, seed=1))


@pytest.fixture(scope="module")
def doc(run, tmp_path_factory):
    path = tmp_path_factory.mktemp("tl") / "timeline.json"
    write_timeline(path, [ReplicaTables(run.requests, run.steps, "replica 0")], {"policy": "dspark"})
    return json.loads(path.read_text())


def test_events_follow_the_trace_event_format(doc):
    assert set(doc) == {"traceEvents", "displayTimeUnit", "metadata"}
    for ev in doc["traceEvents"]:
        assert ev["ph"] in ("X", "C", "M") and isinstance(ev["pid"], int) and isinstance(ev["name"], str)
        if ev["ph"] == "X":
            assert isinstance(ev["tid"], int) and ev["dur"] >= 0 and ev["ts"] >= 0
        if ev["ph"] == "C":
            assert all(isinstance(v, (int, float)) for v in ev["args"].values())
        if ev["ph"] == "M":
            assert ev["name"] in ("process_name", "thread_name", "thread_sort_index")


def test_steps_carry_the_steps_table(doc, run):
    steps = [e for e in doc["traceEvents"] if e["ph"] == "X" and e["tid"] == STEP_TID]
    assert len(steps) == run.steps.height
    s = run.steps
    for e in steps[:: max(1, len(steps) // 50)]:
        i = e["args"]["step"]
        assert e["args"]["n"] == s["decode_requests"][i] and e["args"]["B"] == s["batch_tokens"][i]
        assert e["args"]["budget"] == s["verified"][i] and e["args"]["prefill_tokens"] == s["prefill_tokens"][i]
        assert e["ts"] == pytest.approx(s["t_start"][i] * 1e6, abs=1e-3)
        assert e["dur"] == pytest.approx(s["duration_s"][i] * 1e6, abs=2e-3)
    counters = {e["name"] for e in doc["traceEvents"] if e["ph"] == "C"}
    assert counters == {"running", "waiting", "KV free blocks", "verify budget (draft tokens / step)"}


def _check_nesting(events):
    """Slices of one thread must nest or be disjoint (Perfetto's rule), in integer nanoseconds."""
    by_thread = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            start = round(e["ts"] * 1000)
            by_thread[(e["pid"], e["tid"])].append((start, -(start + round(e["dur"] * 1000))))
    for spans in by_thread.values():
        stack: list[int] = []
        for start, neg_end in sorted(spans):
            end = -neg_end
            while stack and stack[-1] <= start:
                stack.pop()
            if stack and end > stack[-1]:
                return False
            stack.append(end)
    return True


def test_slices_nest_properly(doc):
    assert _check_nesting(doc["traceEvents"])
    # negative control: a slice sticking out of its parent is caught
    bad = [{"ph": "X", "pid": 1, "tid": 5, "ts": 0.0, "dur": 10.0, "name": "a"},
           {"ph": "X", "pid": 1, "tid": 5, "ts": 5.0, "dur": 10.0, "name": "b"}]
    assert not _check_nesting(bad)


def test_requests_are_lifetimes_with_phases(doc, run):
    ev = [e for e in doc["traceEvents"] if e["ph"] == "X" and e["tid"] >= REQUEST_TID0]
    lives = {e["name"]: e for e in ev if e.get("cat") == "request"}
    assert len(lives) == run.requests.height
    phases = defaultdict(list)
    for e in ev:
        if e.get("cat") == "phase":
            phases[e["args"]["request"]].append(e)
    req = run.requests.filter(run.requests["status"] == "finished").head(40)
    for r in req.iter_rows(named=True):
        ph = sorted(phases[r["id"]], key=lambda e: e["ts"])
        assert [p["name"] for p in ph] == ["queued", "prefill", "decode"]
        assert ph[0]["ts"] == pytest.approx(r["arrival_s"] * 1e6, abs=1e-3)
        assert ph[1]["ts"] == pytest.approx(r["admitted_s"] * 1e6, abs=1e-3)
        assert ph[2]["ts"] == pytest.approx(r["first_token_s"] * 1e6, abs=1e-3)
        assert ph[2]["ts"] + ph[2]["dur"] == pytest.approx(r["finish_s"] * 1e6, abs=2e-3)
        assert all(p["tid"] == lives[r["id"]]["tid"] for p in ph)
    lanes = {e["tid"] for e in lives.values()}
    start = run.requests["arrival_s"].to_numpy()
    end = run.requests["finish_s"].to_numpy()
    assert len(lanes) == peak_concurrency(start, end)  # as few lanes as requests in flight at once


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 10)), min_size=1, max_size=40))
def test_pack_lanes_never_overlaps_and_uses_the_peak(spans):
    start = np.array([float(s) for s, _ in spans])
    end = start + np.array([float(d) for _, d in spans])
    lanes = pack_lanes(start, end)
    for lane in np.unique(lanes):
        idx = np.flatnonzero(lanes == lane)
        order = idx[np.argsort(start[idx])]
        assert np.all(start[order][1:] >= end[order][:-1])
    assert lanes.max() + 1 == peak_concurrency(start, end)


def test_pack_lanes_negative_control():
    """Round-robin lanes (a wrong packing) overlap on a case the greedy packing handles."""
    start, end = np.array([0.0, 0.0, 1.0]), np.array([5.0, 1.0, 2.0])
    wrong = np.arange(3) % 2
    assert start[2] < end[0] and wrong[2] == wrong[0]  # requests 0 and 2 overlap in lane 0
    lanes = pack_lanes(start, end)
    assert lanes[2] != lanes[0] and lanes.max() + 1 == 2


def test_replicas_get_one_process_each(run):
    doc = build_trace([ReplicaTables(run.requests, run.steps, "a"), ReplicaTables(run.requests, run.steps, "b")])
    names = {e["pid"]: e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "process_name"}
    assert names == {1: "a", 2: "b"}
