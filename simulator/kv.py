"""Paged KV-cache block manager: capacity, block size, watermark, lookahead reserve, preemption.

Covers: how many requests fit in GPU memory, vLLM-style (PagedAttention). Each resident request
holds ceil(tokens / block_size) blocks. Admission needs the whole prefill (prompt, plus the tokens
already emitted when a preempted request is recomputed) and keeps `watermark` of all blocks free.
A request holds blocks for prompt + emitted tokens (the newest emitted token included). Before a
decoding step every decoding request reserves room for its anchor, all drafted tokens and the
bonus token (the "lookahead slots": prompt + emitted + g + 1); after verification the rejected
drafts give their blocks back. When the
reserve does not fit, the most recently admitted requests are preempted (recompute: their blocks
are freed and they re-queue at the front, to prefill prompt + emitted tokens again).

State is per slot (numpy arrays of length `slots`), so every operation is a few vectorised calls.
"""

from __future__ import annotations

import math

import numpy as np


def blocks_for(tokens: np.ndarray | int, block_size: int) -> np.ndarray:
    """ceil(tokens / block_size), vectorised (int64)."""
    return -(-np.asarray(tokens, dtype=np.int64) // block_size)


class KVBlocks:
    """Block accounting for `slots` resident requests over `total` blocks of `block_size` tokens."""

    def __init__(self, total: int, block_size: int, watermark: float, slots: int) -> None:
        if total < 1 or block_size < 1:
            raise ValueError(f"KV cache needs total >= 1 blocks and block_size >= 1, got {total}, {block_size}")
        self.total, self.block_size = int(total), int(block_size)
        self.watermark_blocks = int(math.ceil(watermark * total))
        self.free = self.total
        self.held = np.zeros(slots, dtype=np.int64)  # [slots] blocks held per slot
        self.cached = 0  # blocks held by prefix-cache entries (simulator.prefix), shared by requests

    @property
    def used(self) -> int:
        """Blocks in use."""
        return self.total - self.free

    def admissible(self, tokens: int) -> bool:
        """Whether a request of `tokens` KV tokens could ever be admitted (empty cache)."""
        return int(blocks_for(tokens, self.block_size)) <= self.total - self.watermark_blocks

    def can_admit(self, tokens: int) -> bool:
        """Whether `tokens` fit now while keeping the watermark free."""
        return self.free - int(blocks_for(tokens, self.block_size)) >= self.watermark_blocks

    def allocate(self, slot: int, tokens: int) -> None:
        """Give `slot` (empty) the blocks for `tokens`."""
        need = int(blocks_for(tokens, self.block_size))
        if need > self.free:
            raise RuntimeError(f"KV allocate: {need} blocks needed, {self.free} free")
        self.held[slot] = need
        self.free -= need

    def growth(self, slots: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Extra blocks [n] each slot needs to hold `tokens` [n] (0 where it already has room)."""
        return np.maximum(blocks_for(tokens, self.block_size) - self.held[slots], 0)

    def resize(self, slots: np.ndarray, tokens: np.ndarray) -> None:
        """Make each slot hold exactly the blocks for `tokens` [n] (grow or shrink)."""
        new = blocks_for(tokens, self.block_size)
        delta = int(new.sum() - self.held[slots].sum())
        if delta > self.free:
            raise RuntimeError(f"KV resize: {delta} more blocks needed, {self.free} free")
        self.held[slots] = new
        self.free -= delta

    def release(self, slots: np.ndarray) -> None:
        """Free every block of `slots`."""
        self.free += int(self.held[slots].sum())
        self.held[slots] = 0


def lifo_victims(order: np.ndarray, held: np.ndarray, growth: np.ndarray, free: int) -> int:
    """How many of the resident requests, newest first, to preempt so the rest fit.

    Args:
        order: [m] slots, most recently admitted first.
        held: [m] blocks each holds now (freed when preempted).
        growth: [m] extra blocks each would need this step (no longer needed once preempted).
        free: free blocks now.
    Returns:
        j in [0, m]: preempt order[:j]; m when even the oldest alone does not fit.
    """
    need = int(growth.sum())
    if need <= free:
        return 0
    avail = free + np.cumsum(held)
    still = need - np.cumsum(growth)
    ok = np.flatnonzero(avail >= still)
    return int(ok[0]) + 1 if ok.size else int(order.size)
