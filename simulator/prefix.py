"""Prefix caching: prompt blocks kept in a replica's KV cache, found by hash, evicted least recently used.

Covers: conversation traffic whose prompts repeat earlier context (multi-turn chats, shared system
prompts). A trace may carry, per request, the hashes of its prompt's consecutive blocks of
PREFIX_BLOCK_TOKENS tokens (`prefix_blocks`, simulator.trace; Mooncake's `hash_ids`). vLLM-style
(automatic prefix caching):

- an entry is one full prompt block (PREFIX_BLOCK_TOKENS tokens = ceil(512 / kv_block_size) KV
  blocks of the replica's pool: the cache shares the KV blocks with the running requests);
- admission looks up the longest leading run of the request's full prompt blocks present in the
  cache (a hit); the hit blocks are shared, not allocated again, and skip prefill (at least one
  prompt token is always computed, as engines recompute the last token to get its logits);
- when a request's prefill completes, its full prompt blocks enter the cache, referenced by it;
- a request that leaves (finished or preempted) drops its references; an entry nobody references
  stays cached and joins the LRU list, and is evicted (oldest first) only when blocks are needed:
  for an admission or for the running requests' lookahead, before anything is preempted.

Only prompt blocks are cached (a trace hashes only prompts); what a request generated is not.
Counters: blocks looked up and hit, prefill tokens saved, blocks evicted.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from simulator.kv import KVBlocks
from simulator.trace import PREFIX_BLOCK_TOKENS


class PrefixCache:
    """Cached prompt blocks of one replica: hash -> references, and the unreferenced ones in LRU order."""

    def __init__(self, kv: KVBlocks, block_tokens: int = PREFIX_BLOCK_TOKENS) -> None:
        self.kv = kv
        self.block_tokens = int(block_tokens)
        self.per_entry = -(-self.block_tokens // kv.block_size)  # KV blocks one entry holds
        self.refs: dict[int, int] = {}
        self.lru: OrderedDict[int, None] = OrderedDict()  # unreferenced entries, least recently used first
        self.looked_up = 0  # full prompt blocks looked up at admissions
        self.hit = 0  # of which found
        self.saved_tokens = 0  # prefill tokens the hits skipped
        self.evicted = 0  # entries evicted

    def __len__(self) -> int:
        return len(self.refs)

    def usable(self, hashes: np.ndarray, prompt_tokens: int) -> np.ndarray:
        """The hashes of the prompt's full blocks (a partial last block is never cached)."""
        return hashes[:min(hashes.size, prompt_tokens // self.block_tokens)]

    def match(self, hashes: np.ndarray) -> int:
        """Blocks of the longest leading run of `hashes` that the cache holds."""
        k = 0
        refs = self.refs
        for h in hashes.tolist():
            if h not in refs:
                break
            k += 1
        return k

    @property
    def evictable_blocks(self) -> int:
        """KV blocks held by entries nobody references (free on demand)."""
        return len(self.lru) * self.per_entry

    def acquire(self, hashes: list[int]) -> None:
        """Reference cached entries (a hit, or a prefill's own blocks found already cached)."""
        for h in hashes:
            c = self.refs[h]
            if c == 0:
                del self.lru[h]
            self.refs[h] = c + 1

    def release(self, hashes: list[int]) -> None:
        """Drop one reference of each; unreferenced entries join the LRU list (most recent last)."""
        for h in hashes:
            c = self.refs[h] - 1
            self.refs[h] = c
            if c == 0:
                self.lru[h] = None

    def insert(self, hashes: list[int]) -> int:
        """A completed prefill's full blocks: new entries referenced once (their KV blocks move from the
        request to the cache), existing ones referenced again; returns the entries added."""
        added = 0
        for h in hashes:
            c = self.refs.get(h)
            if c is None:
                self.refs[h] = 1
                added += 1
            else:
                if c == 0:
                    del self.lru[h]
                self.refs[h] = c + 1
        self.kv.cached += added * self.per_entry
        self.kv.free -= added * self.per_entry  # the request's blocks now belong to the cache (it resizes next)
        return added

    def evict(self, blocks: int) -> int:
        """Evict least recently used unreferenced entries until `blocks` KV blocks are freed (or none
        is left); returns the KV blocks freed."""
        freed = 0
        while freed < blocks and self.lru:
            h, _ = self.lru.popitem(last=False)
            del self.refs[h]
            freed += self.per_entry
            self.evicted += 1
        self.kv.cached -= freed
        self.kv.free += freed
        return freed

    def counters(self) -> dict[str, float | int | None]:
        """Hit rate and saved prefill tokens (the summary's `prefix_cache`)."""
        return {"blocks_looked_up": self.looked_up, "blocks_hit": self.hit,
                "hit_rate": self.hit / self.looked_up if self.looked_up else None,
                "saved_prefill_tokens": self.saved_tokens, "blocks_evicted": self.evicted,
                "entries_cached": len(self.refs)}
