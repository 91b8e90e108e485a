"""The slot table: one replica's resident requests, indexed by slot, with their KV blocks and step log.

Covers: who occupies the replica's `max_running` slots and what each holds. The engine
(simulator.engine) decides when to admit, preempt and release; the table does the bookkeeping the
same way every time:

- `admit` puts a request into a free slot (the last freed slot first) with the KV blocks of its
  prefill and the next admission sequence number;
- `preempt` picks the victims of a lookahead that does not fit, newest admission first
  (simulator.kv.lifo_victims), and releases them;
- `release` frees slots: their KV blocks, their prefix-cache references, their state;
- `load_epoch` takes a planned epoch's final state (simulator.epoch);
- `log` is the replica's step and round log (simulator.records.Recorder); `to_tables()` gives the
  run's steps and rounds tables once it has ended.

Per-slot state is numpy arrays of length `max_running` (a step costs O(1) vectorised calls): `req`
the request in each slot (-1: free), `prefill` prompt tokens still to prefill, `ctx` context tokens
(prompt + emitted, the anchor included), `seq` admission order, `shared` context tokens held in
shared prefix-cache entries, `refs` the cache entries each slot references.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from simulator.epoch import EpochState
from simulator.kv import KVBlocks, lifo_victims
from simulator.prefix import PrefixCache
from simulator.records import Recorder


@dataclass(frozen=True)
class Preempted:
    """What `SlotTable.preempt` did: `count` slots were chosen; `requeue` [v] requests preempted
    (newest admission first) go back to the queue; `hopeless` is the request that even alone could
    not fit (it can never finish; -1: none), released too."""

    count: int
    requeue: np.ndarray
    hopeless: int


class SlotTable:
    """`size` slots over the KV blocks `kv`, with a prefix cache over them and the step log `log`.

    `leave(slots)` is called with every group of slots released (the backend's `leave`), before the
    table forgets them.
    """

    def __init__(self, size: int, kv: KVBlocks, log: Recorder, leave: Callable[[np.ndarray], None]) -> None:
        self.size = size
        self.kv = kv
        self.cache = PrefixCache(kv)
        self.log = log
        self._leave = leave
        self.req = np.full(size, -1, dtype=np.int64)
        self.prefill = np.zeros(size, dtype=np.int64)
        self.ctx = np.zeros(size, dtype=np.int64)
        self.seq = np.zeros(size, dtype=np.int64)
        self.shared = np.zeros(size, dtype=np.int64)
        self.refs: list[list[int]] = [[] for _ in range(size)]
        self.free = list(range(size - 1, -1, -1))  # free slots, popped from the end
        self.next_seq = 0  # the next admission's sequence number

    # ---------------------------------------------------------------- reading
    @property
    def running(self) -> int:
        """Occupied slots."""
        return self.size - len(self.free)

    def occupied(self) -> np.ndarray:
        """[slots] bool: which slots hold a request."""
        return self.req >= 0

    def decoding(self) -> np.ndarray:
        """Slots whose request has finished its prefill (slot order)."""
        return np.flatnonzero((self.req >= 0) & (self.prefill == 0))

    def offsets(self, slots: np.ndarray) -> np.ndarray:
        """Where each prefilling slot's next chunk starts in its prompt (tokens already prefilled)."""
        return self.ctx[slots] - self.prefill[slots]

    # ---------------------------------------------------------------- changing
    def admit(self, r: int, tokens: int, hit: int, refs: list[int]) -> int:
        """Put request r into a free slot with `tokens` context tokens, of which `hit` are found in the
        prefix cache (the entries `refs`, already referenced): it holds the KV blocks for the rest plus
        the token it will make, and prefills tokens - hit. Returns the slot."""
        s = self.free.pop()
        self.kv.allocate(s, tokens + 1 - hit)
        self.req[s] = r
        self.prefill[s] = tokens - hit
        self.ctx[s] = tokens
        self.shared[s] = hit
        self.refs[s] = refs
        self.seq[s] = self.next_seq
        self.next_seq += 1
        return s

    def preempt(self, dec: np.ndarray, growth: np.ndarray, cached: bool) -> Preempted:
        """Release newest-first until every remaining decoding slot's lookahead (`growth` [n] more blocks
        for the slots `dec`) fits; `cached`: whether slots reference prefix-cache entries."""
        occ = np.flatnonzero(self.req >= 0)
        order = occ[np.argsort(-self.seq[occ], kind="stable")]
        grow_by_slot = np.zeros(self.size, dtype=np.int64)
        grow_by_slot[dec] = growth
        j = lifo_victims(order, self.kv.held[order], grow_by_slot[order], self.kv.free)
        victims = order[:j]
        hopeless = -1
        if j == order.size:  # even the oldest alone does not fit: it can never finish
            oldest = victims[-1:]
            hopeless = int(self.req[oldest[0]])
            self.release(oldest, cached)
            victims = victims[:-1]
        requeue = self.req[victims]
        if victims.size:
            self.release(victims, cached)
        return Preempted(count=int(j), requeue=requeue, hopeless=hopeless)

    def release(self, slots: np.ndarray, cached: bool) -> None:
        """Free `slots`: the backend lets go of them, their KV blocks and cache references are freed."""
        self._leave(slots)
        self.kv.release(slots)
        if cached:
            for s in slots.tolist():
                self.cache.release(self.refs[s])
                self.refs[s] = []
        self.shared[slots] = 0
        self.req[slots] = -1
        self.prefill[slots] = 0
        self.ctx[slots] = 0
        self.free.extend(slots.tolist())

    def cache_prompts(self, slots: np.ndarray, prefixes: list[np.ndarray]) -> None:
        """Prefills that completed: their full prompt blocks (`prefixes`, one array of block hashes per
        slot) enter the prefix cache, and the slots hold KV blocks only for what the cache does not."""
        cache = self.cache
        for s, full_blocks in zip(slots.tolist(), prefixes):
            full = full_blocks.tolist()
            have = len(self.refs[s])
            if len(full) <= have:
                continue
            cache.insert(full[have:])
            self.refs[s] = full
            self.shared[s] = len(full) * cache.block_tokens
        self.kv.resize(slots, self.ctx[slots] - self.shared[slots])

    def load_epoch(self, state: EpochState, req: np.ndarray, top: int, free: int, seq: int) -> None:
        """Take a planned epoch's final state (simulator.epoch.EpochState, updated in place by the planner):
        members' slots, prefill, context and admission order; KV blocks held and free; the free-slot
        stack (its first `top` entries); the next sequence number. `req` [m]: the members' requests."""
        sm = state.slot_member
        occ = sm >= 0
        self.req[:] = -1
        self.req[occ] = req[sm[occ]]
        self.prefill[:] = 0
        self.prefill[occ] = state.m_prefill[sm[occ]]
        self.ctx[:] = 0
        self.ctx[occ] = state.m_ctx[sm[occ]]
        self.seq[occ] = state.m_seq[sm[occ]]
        self.kv.held[:] = state.held
        self.kv.free = free
        self.free = state.stack[:top].tolist()
        self.next_seq = seq

    # ---------------------------------------------------------------- results
    def to_tables(self) -> dict[str, pl.DataFrame | Path]:
        """The run's steps and rounds tables (simulator.records.RunTables: every replica's log flushed,
        in replica order); call once the run has ended."""
        return self.log.tables.tables()
