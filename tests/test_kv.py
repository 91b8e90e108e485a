"""Paged KV block manager: accounting, watermark admission, newest-first preemption."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.kv import KVBlocks, blocks_for, lifo_victims


def test_blocks_for_rounds_up():
    assert blocks_for(np.array([0, 1, 16, 17, 32]), 16).tolist() == [0, 1, 1, 2, 2]


def test_admission_keeps_the_watermark_free():
    kv = KVBlocks(total=100, block_size=16, watermark=0.1, slots=4)
    assert kv.watermark_blocks == 10
    assert kv.can_admit(90 * 16) and not kv.can_admit(90 * 16 + 1)
    assert kv.admissible(90 * 16) and not kv.admissible(91 * 16)
    kv.allocate(0, 50 * 16)
    assert kv.free == 50 and not kv.can_admit(41 * 16)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 400)), min_size=1, max_size=40))
def test_accounting_conserves_blocks(ops):
    kv = KVBlocks(total=200, block_size=16, watermark=0.0, slots=4)
    for slot, tokens in ops:
        s = np.array([slot])
        if kv.held[slot] == 0 and kv.can_admit(tokens):
            kv.allocate(slot, tokens)
        elif kv.held[slot] and int(kv.growth(s, np.array([tokens])).sum()) <= kv.free:
            kv.resize(s, np.array([tokens]))
        elif kv.held[slot]:
            kv.release(s)
        assert kv.free + int(kv.held.sum()) == kv.total and kv.free >= 0


def test_resize_beyond_capacity_raises():
    kv = KVBlocks(total=4, block_size=16, watermark=0.0, slots=2)
    kv.allocate(0, 48)
    with pytest.raises(RuntimeError, match="more blocks needed"):
        kv.resize(np.array([0]), np.array([100]))


def fifo_victims(order, held, growth, free):
    """Negative control: preempting the OLDEST first (the wrong end of the queue)."""
    return lifo_victims(order[::-1], held[::-1], growth[::-1], free)


def test_lifo_victims_preempts_newest_first_and_only_as_many_as_needed():
    order = np.array([3, 2, 1, 0])  # newest first
    held = np.array([2, 5, 10, 20])
    growth = np.array([1, 1, 1, 1])
    assert lifo_victims(order, held, growth, free=4) == 0  # fits
    assert lifo_victims(order, held, growth, free=1) == 1  # freeing the newest (2 blocks) suffices
    assert lifo_victims(order, held, growth, free=0) == 2  # 2 blocks free 1 short of the 3 still needed
    assert lifo_victims(order, np.array([0, 0, 0, 0]), np.array([0, 0, 0, 9]), free=3) == 4  # oldest can't fit
    # negative control: preempting oldest-first frees the big old request and stops after one
    small_new = np.array([1, 1, 1, 20])
    assert lifo_victims(order, small_new, growth, free=0) == 2
    assert fifo_victims(order, small_new, growth, free=0) == 1
