"""A fleet of replicas behind a router: one SimPy arrival process feeding every replica's engine.

Covers: "how many replicas for this rate at this SLA?". One `Dispatcher` process reads the trace as
its clock reaches each request (simulator.source.Book) and hands the request to one replica's
waiting queue, chosen by the router at the request's arrival time from the replicas' state then:

    round-robin   request i of the trace goes to replica i mod N
    least-loaded  the replica with the fewest requests in it (waiting + resident); ties: lowest index
    least-kv      the replica with the most free KV blocks (cached prefix blocks nobody uses count as
                  free: they are evicted on demand); ties: fewest requests, then lowest index
    session       every request of a session on one replica: crc32(session) mod N (stable across
                  processes, no table that grows with the sessions); requests without a session go
                  least-loaded. Needs the trace's `session` field.
    prefix        the replica whose prefix cache holds the longest leading run of the request's
                  prefix blocks; ties (and no hit anywhere): least-loaded. Needs `prefix_blocks`. As
                  SGLang's cache-aware router, it balances first when the fleet is imbalanced: when
                  the busiest replica holds more than BALANCE_ABS requests more than the idlest and
                  more than BALANCE_REL times as many, the request goes least-loaded.

Each replica is its own `Engine` (simulator.engine) with its own KV cache, prefix cache, step clock
(replicas may run different profiles) and policy state; all share the book of request state. A single
replica is the same process with one engine (no router).

Exactness. A replica plans many steps at once (simulator.epoch); the router must see every replica
as the step-by-step engine would at the arrival, so in a fleet a planned epoch never runs past the
next arrival (`cut_s`): the step during which a request arrives is taken step by step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from simulator.config import ROUTERS
from simulator.source import Book

BALANCE_ABS, BALANCE_REL = 32, 1.5  # the prefix router's imbalance guard (see the module docstring)
NEEDS = {"session": ("session", "has_session"), "prefix": ("prefix_blocks", "has_prefix")}


def check_router(router: str, book: Book) -> None:
    """ValueError before the run when `router` needs a trace field the trace lacks (read: its first chunk)."""
    if router not in ROUTERS:
        raise ValueError(f"router {router!r} is not one of {', '.join(ROUTERS)}")
    if router in NEEDS:
        field, flag = NEEDS[router]
        book.need(0)
        if not getattr(book, flag):
            raise ValueError(f"router {router!r} needs the trace's '{field}' field, and {book.name} has none "
                             f"(in its first {book.n:,} requests); use least-loaded or round-robin")


class Dispatcher:
    """The arrival process of a run: releases requests at their arrival times into the replicas' queues."""

    def __init__(self, env: Any, book: Book, router: str | None, waiting_code: int) -> None:
        self.env, self.book = env, book
        self.router = router
        self.engines: list[Any] = []
        self.next_index = 0  # the first request not yet released
        self.released_all = False
        self._waiting = waiting_code
        self.routed = False  # several replicas: planned epochs stop at the next arrival

    def attach(self, engines: Sequence[Any]) -> None:
        self.engines = list(engines)
        self.routed = len(self.engines) > 1

    # ---------------------------------------------------------------- what the engines ask
    def next_arrival_s(self) -> float:
        """The clock time of the next request not yet released (inf: none left)."""
        return self.book.next_arrival(self.next_index)

    def cut_s(self) -> float:
        """The time a planned epoch's later steps must end before (simulator.epoch.plan_epoch's cut)."""
        return self.next_arrival_s() if self.routed else math.inf

    def released_by(self, ends: np.ndarray) -> np.ndarray:
        """[t] requests not yet released that arrive by each time of `ends` (a single replica's queue growth)."""
        if self.routed:
            return np.zeros(ends.size, dtype=np.int64)
        book = self.book
        book.need_until(float(ends[-1]) if ends.size else -math.inf)
        return np.searchsorted(book.arrival[self.next_index:book.n], ends, side="right")

    # ---------------------------------------------------------------- the process
    def arrivals(self):
        """Release requests into the replicas' waiting queues at their (scaled) arrival times."""
        book, env = self.book, self.env
        i = 0
        while book.need(i):
            t = book.arrival[i]
            if t > env.now:
                yield env.timeout(t - env.now)
            woke = set()
            while book.need(i) and book.arrival[i] <= env.now:
                k = self.route(i)
                book.status[i] = self._waiting
                book.replica[i] = k
                self.engines[k].waiting.append(i)
                woke.add(k)
                i += 1
            self.next_index = i
            for k in sorted(woke):
                self.engines[k].wake()
        self.released_all = True
        for e in self.engines:
            e.wake()

    # ---------------------------------------------------------------- routing
    def route(self, r: int) -> int:
        """The replica request r goes to (see the module docstring)."""
        engines = self.engines
        if len(engines) == 1:
            return 0
        how = self.router
        if how == "round-robin":
            return r % len(engines)
        if how == "session":
            key = int(self.book.session[r])
            return key % len(engines) if key >= 0 else self._least_loaded(range(len(engines)))
        if how == "least-kv":
            free = [e.kv_available() for e in engines]
            best = max(free)
            return self._least_loaded([k for k, f in enumerate(free) if f == best])
        if how == "prefix":
            hashes = self.book.prefix_of(r)
            loads = [e.in_flight for e in engines]
            lo, hi = min(loads), max(loads)
            if hashes.size and not (hi - lo > BALANCE_ABS and hi > BALANCE_REL * lo):
                hits = [e.prefix_hit_blocks(hashes) for e in engines]
                best = max(hits)
                if best > 0:
                    return self._least_loaded([k for k, h in enumerate(hits) if h == best])
        return self._least_loaded(range(len(engines)))

    def _least_loaded(self, candidates: Any) -> int:
        loads = [(self.engines[k].in_flight, k) for k in candidates]
        return min(loads)[1]
