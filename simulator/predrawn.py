"""A backend base for acceptance models whose rounds can be drawn ahead: per-slot pre-drawn chunks.

A pre-drawn backend knows each request's round t (confidences [g] and the length of its accepted
prefix if all g drafts were verified) as a pure function of (seed, request, t). It keeps CHUNK rounds
per slot in numpy arrays and refills them vectorised, so `draft`/`verify` are a gather each. Because
draws are pure functions of the round, a slot can be re-drawn from any round at any time with the
same result; `peek(slots, T)` hands the engine T future rounds at once (its batched fast path) and
`advance(slots, T)` consumes them, equivalent to T draft/verify pairs.

Subclasses implement `_bind(slots, requests)` (per-request state at join) and
`_draw(slots, rounds)` -> (conf [r, R, g] float64, lead [r, R] int64) for rounds [r, R].
"""

from __future__ import annotations

import numpy as np

from simulator.backend import Draft, Requests, Verdict

CHUNK = 256  # rounds drawn per slot at a time (fewer when the request has fewer tokens left)
MAX_PEEK = 256  # most rounds `peek` returns at once
SCRATCH = 24  # extra slots past the real ones: `peek_requests` draws requests that have not joined there
_STEPS = np.arange(MAX_PEEK)[None, :]


class PredrawnBackend:
    """Per-slot pre-drawn rounds behind the Backend protocol, plus peek/advance for the fast path."""

    name = "predrawn"

    def __init__(self, block: int, slots: int) -> None:
        self.block = int(block)
        g = max(self.block, 1)
        self.slots = int(slots)  # real slots; per-slot arrays hold SCRATCH more (`peek_requests`)
        slots = self.slots + SCRATCH
        self._req = np.full(slots, -1, dtype=np.int64)
        self._base_round = np.zeros(slots, dtype=np.int64)  # request round at ptr 0
        self._ptr = np.zeros(slots, dtype=np.int64)
        self._conf = np.zeros((slots, CHUNK, g))
        self._lead = np.zeros((slots, CHUNK), dtype=np.int64)  # accepted prefix if all g verified
        self._next_round: dict[int, int] = {}  # request -> next round, kept across preemptions
        self._end_round = np.zeros(slots, dtype=np.int64)  # rounds the request can use at most
        self._avail = np.zeros(slots, dtype=np.int64)  # valid rounds in the slot's buffer
        self._peeked: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}  # (request, round) -> rounds

    # ---------------------------------------------------------------- subclass hooks
    def _bind(self, slots: np.ndarray, requests: Requests) -> None:
        """Per-request state for newly joined slots (called before the first draw)."""

    def _draw(self, slots: np.ndarray, rounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    # ---------------------------------------------------------------- Backend protocol
    def join(self, slots: np.ndarray, requests: Requests) -> None:
        """Bind requests to slots and draw their next CHUNK rounds."""
        slots = np.asarray(slots, dtype=np.int64)
        self._req[slots] = requests.index
        self._base_round[slots] = [self._next_round.pop(int(r), 0) for r in requests.index.tolist()]
        # every round emits >= 1 token, so a request never needs more rounds than tokens it has left
        self._end_round[slots] = self._base_round[slots] + np.maximum(requests.output_tokens - requests.emitted, 1)
        self._bind(slots, requests)
        peeked = self._peeked
        rest = []
        for s, r, b in zip(slots.tolist(), requests.index.tolist(), self._base_round[slots].tolist()):
            got = peeked.pop((r, b), None) if peeked else None
            if got is None:
                rest.append(s)
                continue
            n = got[0].shape[0]  # drawn by `peek_requests` exactly as `_refill` would draw them
            self._conf[s, :n] = got[0]
            self._lead[s, :n] = got[1]
            self._ptr[s] = 0
            self._avail[s] = n
        if rest:
            self._refill(np.asarray(rest, dtype=np.int64))

    def draft(self, slots: np.ndarray, block: int) -> Draft:
        """Confidences [n, block] of each slot's current round; every slot drafts `block` tokens."""
        if block > self.block:
            raise ValueError(f"draft block {block} exceeds the backend's block {self.block}")
        conf = self._conf[slots, self._ptr[slots], :block]
        return Draft(conf, np.full(slots.size, block, dtype=np.int64))

    def verify(self, slots: np.ndarray, lengths: np.ndarray) -> Verdict:
        """Accepted drafts [n]: the round's accepted prefix, cut at the verify length."""
        ptr = self._ptr[slots]
        accepted = np.minimum(self._lead[slots, ptr], lengths)
        self._move(slots, ptr + 1)
        return Verdict(accepted)

    def leave(self, slots: np.ndarray) -> None:
        """Free slots; remember each request's next round in case it joins again (preemption)."""
        for s in np.asarray(slots).tolist():
            if self._req[s] >= 0:
                self._next_round[int(self._req[s])] = int(self._base_round[s] + self._ptr[s])
        self._req[slots] = -1

    # ---------------------------------------------------------------- fast path
    def peek(self, slots: np.ndarray, rounds: int, block: int) -> tuple[np.ndarray, np.ndarray]:
        """The next `rounds` (<= MAX_PEEK) rounds: conf [T, n, block] and accepted prefix [T, n].

        Rows past a request's last possible round are stale (it finishes before reaching them).
        """
        rounds = min(int(rounds), MAX_PEEK)
        p = self._ptr[slots]
        avail = self._avail[slots]
        over = p + rounds > avail
        if over.any():
            short = slots[over & (self._base_round[slots] + avail < self._end_round[slots])]
            if short.size:  # re-draw from the current round (same values: draws are pure functions)
                self._base_round[short] += self._ptr[short]
                self._refill(short)
                p = self._ptr[slots]
        ptr = p[:, None] + _STEPS[:, :rounds]  # [n, T]
        if over.any():
            np.minimum(ptr, CHUNK - 1, out=ptr)
        rows = slots[:, None]
        if block == self.block:
            return self._conf[rows, ptr].transpose(1, 0, 2), self._lead[rows, ptr].T
        return (self._conf[rows, ptr, :block].transpose(1, 0, 2),
                np.minimum(self._lead[rows, ptr].T, block))

    def peek_buffered(self, slots: np.ndarray, rounds: int, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`peek` without drawing more: conf [T, n, block], accepted prefix [T, n] and the rounds [n]
        each slot has drawn (T when its buffer holds every round it may still need). Rows past those
        are stale; the caller stops before using them (`advance` then draws on)."""
        rounds = min(int(rounds), MAX_PEEK)
        p = self._ptr[slots]
        avail = self._avail[slots]
        valid = np.where(self._base_round[slots] + avail >= self._end_round[slots], rounds,
                         np.minimum(avail - p, rounds))
        ptr = np.minimum(p[:, None] + _STEPS[:, :rounds], CHUNK - 1)  # [n, T]
        rows = slots[:, None]
        if block == self.block:
            return self._conf[rows, ptr].transpose(1, 0, 2), self._lead[rows, ptr].T, valid
        return (self._conf[rows, ptr, :block].transpose(1, 0, 2), np.minimum(self._lead[rows, ptr].T, block),
                valid)

    def peek_requests(self, requests: Requests, rounds: int, block: int) -> tuple[np.ndarray, np.ndarray]:
        """The first `rounds` (<= MAX_PEEK) rounds each of `requests` ([q] <= SCRATCH, not joined) will
        draw when it joins: conf [T, q, block], accepted prefix [T, q] (what `peek` gives after `join`).

        The rounds are drawn as `join` would draw them and kept: `join` takes them over (each request's
        rounds are drawn once), and the next planned epoch peeks at a still-waiting request for free.
        """
        idx = requests.index.tolist()
        base = [self._next_round.get(int(r), 0) for r in idx]
        keys = list(zip(idx, base))
        cache = self._peeked
        miss = [j for j, k in enumerate(keys) if k not in cache]
        if miss:
            sl = np.arange(self.slots, self.slots + len(miss), dtype=np.int64)
            sub = Requests(index=requests.index[miss], ids=[requests.ids[j] for j in miss],
                           domains=[requests.domains[j] for j in miss],
                           prompt_tokens=requests.prompt_tokens[miss], output_tokens=requests.output_tokens[miss],
                           emitted=requests.emitted[miss],
                           prompts=None if requests.prompts is None else [requests.prompts[j] for j in miss])
            need = np.minimum(np.maximum(sub.output_tokens - sub.emitted, 1), CHUNK)  # as `join` draws
            self._req[sl] = sub.index
            self._bind(sl, sub)
            first = np.asarray([base[j] for j in miss], dtype=np.int64)
            conf, lead = self._draw(sl, first[:, None] + np.arange(int(need.max()))[None, :])
            self._req[sl] = -1
            for k, j in enumerate(miss):
                cache[keys[j]] = (conf[k, :need[k]], lead[k, :need[k]])
            while len(cache) > 4 * SCRATCH:
                cache.pop(next(iter(cache)))
        rounds = min(int(rounds), MAX_PEEK)
        rows = np.arange(rounds)
        conf = np.stack([cache[k][0][np.minimum(rows, cache[k][0].shape[0] - 1), :block] for k in keys], axis=1)
        lead = np.stack([cache[k][1][np.minimum(rows, cache[k][1].shape[0] - 1)] for k in keys], axis=1)
        return conf, (lead if block == self.block else np.minimum(lead, block))

    def finished(self, requests: np.ndarray) -> None:
        """Requests that finished: they never join again (their next rounds need not be kept)."""
        nxt = self._next_round
        for r in requests.tolist():
            nxt.pop(r, None)

    def advance(self, slots: np.ndarray, rounds: int) -> None:
        """Consume `rounds` rounds of each slot (as that many draft/verify pairs would)."""
        self._move(slots, self._ptr[slots] + rounds)

    # ---------------------------------------------------------------- internals
    def _move(self, slots: np.ndarray, ptr: np.ndarray) -> None:
        self._ptr[slots] = ptr
        full = slots[ptr >= self._avail[slots]]
        if full.size:
            self._base_round[full] += self._ptr[full]
            self._refill(full)

    def _refill(self, slots: np.ndarray) -> None:
        self._ptr[slots] = 0
        need = min(max(int((self._end_round[slots] - self._base_round[slots]).max()), 1), CHUNK)
        rounds = self._base_round[slots][:, None] + np.arange(need)[None, :]
        conf, lead = self._draw(slots, rounds)  # rows past `need` keep stale values, never consumed
        self._conf[slots, :need] = conf
        self._lead[slots, :need] = lead
        self._avail[slots] = need
