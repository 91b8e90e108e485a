"""The slot table (simulator.slots): admission, LIFO preemption, release; and the step plumbing's
named groups (simulator.epoch, simulator.records, simulator.steps) failing loudly when misplaced."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.epoch import (
    PLANNER_PARAMETERS,
    Arrivals,
    EpochOut,
    EpochState,
    Limits,
    PolicyCode,
    Prices,
    _plan_epoch,
    check_planner_parameters,
    plan_epoch,
)
from simulator.kv import KVBlocks
from simulator.records import STEP_COLUMNS, StepRow
from simulator.slots import SlotTable
from simulator.speed import HostSpeed
from simulator.steps import StepStart
from sparksched.cost import StepCost
from sparksched.curve import ThroughputCurve
from sparksched.policies import DSPARK


def table(size: int = 4, blocks: int = 100, block_size: int = 16) -> tuple[SlotTable, list[np.ndarray]]:
    left: list[np.ndarray] = []
    return SlotTable(size, KVBlocks(blocks, block_size, 0.0, size), None, lambda s: left.append(s.copy())), left


def test_admit_fills_the_last_freed_slot_with_its_blocks_and_the_next_sequence_number():
    t, _ = table()
    a = t.admit(10, tokens=40, hit=0, refs=[])
    b = t.admit(11, tokens=16, hit=0, refs=[])
    assert (a, b) == (0, 1)  # the free stack pops its end: slot 0 first
    assert t.kv.held[a] == 3 and t.kv.held[b] == 2  # ceil((tokens + 1) / 16): the prompt and the token it makes
    assert t.kv.free == 100 - 5
    assert (t.req[a], t.prefill[a], t.ctx[a], t.seq[a]) == (10, 40, 40, 0)
    assert t.seq[b] == 1 and t.running == 2
    assert t.decoding().size == 0  # both still prefill
    t.prefill[a] = 0
    assert t.decoding().tolist() == [a]
    assert t.offsets(np.array([b])).tolist() == [0]


def test_release_frees_blocks_and_slots_and_tells_the_backend():
    t, left = table()
    s = [t.admit(r, tokens=40, hit=0, refs=[]) for r in range(3)]
    t.release(np.array([s[1]]), cached=False)
    assert [x.tolist() for x in left] == [[s[1]]]
    assert t.req[s[1]] == -1 and t.kv.held[s[1]] == 0 and t.kv.free == 100 - 6
    assert t.admit(7, tokens=1, hit=0, refs=[]) == s[1]  # the slot freed last is reused first


def occupied_table(contexts: list[int], blocks: int) -> SlotTable:
    t, _ = table(size=len(contexts), blocks=blocks, block_size=4)
    for r, c in enumerate(contexts):
        s = t.admit(r, tokens=c, hit=0, refs=[])
        t.prefill[s] = 0
    return t


def lifo_holds(t: SlotTable, contexts: list[int], grow: int) -> None:
    """After `preempt`, the survivors' lookahead fits, and every victim was admitted after every survivor."""
    before_seq = {r: i for i, r in enumerate(range(len(contexts)))}
    dec = t.decoding()
    growth = t.kv.growth(dec, t.ctx[dec] + grow)
    survivors_before = set(t.req[dec].tolist())
    out = t.preempt(dec, growth, cached=False)
    dec = t.decoding()
    assert int(t.kv.growth(dec, t.ctx[dec] + grow).sum()) <= t.kv.free, "the survivors' lookahead does not fit"
    gone = survivors_before - set(t.req[dec].tolist())
    assert gone == set(out.requeue.tolist()) | ({out.hopeless} - {-1})
    kept = set(t.req[dec].tolist())
    if gone and kept:
        assert min(before_seq[r] for r in gone) > max(before_seq[r] for r in kept), "a victim is older than a survivor"
    assert out.requeue.tolist() == sorted(out.requeue.tolist(), reverse=True), "victims are not newest first"


@settings(max_examples=150, deadline=None)
@given(contexts=st.lists(st.integers(1, 60), min_size=1, max_size=8), grow=st.integers(1, 40), spare=st.integers(0, 30))
def test_property_preemption_takes_the_newest_until_the_rest_fit(contexts, grow, spare):
    need = sum(-(-(c + 1) // 4) for c in contexts)
    t = occupied_table(contexts, blocks=need + spare)
    lifo_holds(t, contexts, grow)


def test_preemption_of_a_request_that_can_never_fit_closes_it():
    t = occupied_table([8], blocks=3)
    out = t.preempt(t.decoding(), np.array([5]), cached=False)
    assert out.hopeless == 0 and out.requeue.size == 0 and out.count == 1 and t.running == 0


def test_negative_control_oldest_first_preemption_breaks_the_property():
    class OldestFirst(SlotTable):
        def preempt(self, dec, growth, cached):
            self.seq[:] = -self.seq  # flips who counts as newest
            try:
                return super().preempt(dec, growth, cached)
            finally:
                self.seq[:] = -self.seq

    contexts = [20, 20, 20, 20]
    t = OldestFirst(4, KVBlocks(26, 4, 0.0, 4), None, lambda s: None)
    for r, c in enumerate(contexts):
        s = t.admit(r, tokens=c, hit=0, refs=[])
        t.prefill[s] = 0
    with pytest.raises(AssertionError, match="older than a survivor|newest first"):
        lifo_holds(t, contexts, 8)


# ------------------------------------------------------------------ named groups fail loudly when misplaced
def test_step_row_fields_are_the_steps_table_columns():
    assert StepRow._fields == tuple(STEP_COLUMNS)
    with pytest.raises(TypeError):
        StepRow(t_start=0.0)  # every column must be named


def test_step_records_are_frozen():
    start = StepStart(now=0.0, dec=np.zeros(0, dtype=np.int64), pre=np.zeros(0, dtype=np.int64), chunk=None,
                      prefill_tokens=0, preempted=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        start.now = 1.0  # type: ignore[misc]


def planner_inputs():
    cost = StepCost.from_curve(ThroughputCurve.from_points([1, 64, 512], [0.01, 0.012, 0.03]), (), 1)
    ctx, tab, _ = cost.draft_table("dspark", 2, 4)
    kv = KVBlocks(100, 16, 0.0, 4)
    m, t_max, g = 1, 4, 2
    state = EpochState(conf=np.full((t_max, m, g), 0.9), lead=np.ones((t_max, m), dtype=np.int64),
                       m_valid=np.full(m, t_max, dtype=np.int64), m_slot=np.zeros(m, dtype=np.int64),
                       m_left=np.full(m, 50, dtype=np.int64), m_ctx=np.full(m, 100, dtype=np.int64),
                       m_prefill=np.zeros(m, dtype=np.int64), m_seq=np.zeros(m, dtype=np.int64),
                       m_arrival=np.full(m, -np.inf), m_tokens=np.full(m, 100, dtype=np.int64), n_res=1,
                       slot_member=np.array([0, -1, -1, -1], dtype=np.int64), held=np.array([7, 0, 0, 0]),
                       stack=np.array([3, 2, 1, 0], dtype=np.int64), free0=3, kv_free0=93, seq0=1, now=0.0)
    arrivals = Arrivals(waiting0=0, upc_arrival=np.zeros(0), next_arrival_s=np.inf, cut=np.inf)
    prices = Prices(cost=cost.arrays, draft_ctx=ctx, draft_tab=tab, padded=False, speed=HostSpeed().arrays(4))
    limits = Limits(kv_total=kv.total, watermark=kv.watermark_blocks, block_size=kv.block_size, prefill_chunk=512,
                    admit_ok=True, horizon=np.inf)
    return PolicyCode(DSPARK, 0.0), state, arrivals, prices, limits, EpochOut.empty(t_max, m)


def test_the_planner_runs_on_named_groups():
    policy, state, arrivals, prices, limits, out = planner_inputs()
    assert plan_epoch(policy, state, arrivals, prices, limits, out) == 4
    assert out.active[:4, 0].all() and (out.acc[:4, 0] <= out.lengths[:4, 0]).all()
    assert np.all(np.diff(out.clock[:5]) > 0)


def test_negative_control_groups_in_the_wrong_order_are_refused():
    """Swapped groups do not run on the wrong numbers: plan_epoch refuses them."""
    policy, state, arrivals, prices, limits, out = planner_inputs()
    with pytest.raises(TypeError, match=r"plan_epoch takes .* got \(PolicyCode, EpochState, Arrivals, Limits, Prices"):
        plan_epoch(policy, state, arrivals, limits, prices, out)  # type: ignore[arg-type]


def planner_taking(names):
    """A function whose parameters are `names` (what check_planner_parameters reads)."""
    def planner(*args):
        return None

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    planner.__signature__ = inspect.Signature([inspect.Parameter(n, kind) for n in names])
    return planner


def test_the_compiled_planner_reads_the_groups_fields_in_order():
    check_planner_parameters(_plan_epoch.py_func)  # (also when simulator.epoch loads)
    names = list(PLANNER_PARAMETERS)
    i, j = names.index("free0"), names.index("kv_free0")
    names[i], names[j] = names[j], names[i]
    with pytest.raises(TypeError, match="parameter 16 is 'kv_free0', plan_epoch's groups put 'free0' there"):
        check_planner_parameters(planner_taking(names))  # two fields the other way round
    with pytest.raises(TypeError, match="'after'"):
        check_planner_parameters(planner_taking(PLANNER_PARAMETERS[:-1]))  # one field short
