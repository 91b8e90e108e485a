"""The acceptance-model interface ("backend") between the serving engine and whatever decides acceptance.

Covers: what the engine asks of a drafter + target pair, one decoding step at a time.

The engine (`simulator.engine`) owns the clock, batching, KV blocks and metrics. A backend owns
acceptance: for the requests that decode in a step it proposes per-position confidences, then
reports how many of the verified drafts the target accepted. Two backends ship with the simulator
(`simulator.acceptance.SyntheticAcceptance`, `simulator.recorded.RecordedAcceptance`); the real
drafter + target loop implements the same four methods.

Slots. The engine keeps at most `max_running` requests resident; each occupies one integer slot in
`[0, max_running)` from `join` until `leave`. Every call names the slots it is about (an int64
array, strictly increasing); a backend keeps its per-request state indexed by slot (numpy arrays of
length `max_running`, not Python objects per request, so a step costs O(1) numpy calls).

One decoding step, for the slots `s` that decode in it (n = len(s), g = block):

    draft = backend.draft(s, g)            # confidences [n, g] and drafted [n]
    lengths = policy(draft.conf, ...)      # verify lengths l [n], 0 <= l <= drafted
    verdict = backend.verify(s, lengths)   # accepted [n], 0 <= accepted <= l

`draft.conf[i, k-1]` is c_{i,k}: the predicted probability that draft token k survives verification
given that tokens 1..k-1 survived (docs/method.md). It must be computed without looking at
token k itself (the non-anticipating contract); positions k > drafted[i] are ignored and should be 0.
`verify` runs rejection sampling over the anchor plus l_i drafts: request i accepts the first
`accepted[i]` drafts and then emits one more token (the recovered or bonus token), so it emits
`accepted[i] + 1` tokens. A call with `lengths` all zero is plain decoding (one token each).
`draft` and `verify` are always called in pairs, on the same slots, in that order.

Lifecycle: `join(slots, requests)` when requests are admitted (after a preemption a request joins
again, possibly in another slot: it continues its own sequence, it does not restart);
`leave(slots)` when they finish or are preempted. Prefill is the engine's business (timed from the
profile); a real backend runs the prompt in `join`. The engine, not the backend, decides when a
request ends (the trace's `output_tokens`): a real backend must keep generating past EOS.

Clock. With `SimConfig.clock = "profile"` the engine advances time by the profiled step time and
ignores `seconds`; with `"measured"` it uses `Draft.seconds + Verdict.seconds` (wall time of the
real passes) when both are given.

Checking a backend. With the environment variable SPARKSCHED_DEBUG=1 the engine checks every
draft and verdict against this contract (`check_draft`, `check_verdict`: shapes, confidences in
[0, 1], 0 <= drafted <= g, 0 <= accepted <= l) and stops with a ValueError naming the call and what
is wrong. Every step then takes the step path (the compiled planner reads rounds drawn ahead and
calls neither), so a run is slower but its results are the same.

Randomness. A backend takes its seed at construction. Results should depend only on (seed, request,
round within the request, block position), not on which other requests share the batch, so that
two policies compared on the same trace see the same acceptance realisations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Requests:
    """The requests joining a backend, one entry per slot in `slots` (all arrays [m]).

    Attributes:
        index: int64 row of each request in the trace (stable across preemptions; use it as the
            request's identity for random streams).
        ids: the trace's request ids.
        domains: the trace's domain of each request ("chat", "code", "math", ...).
        prompt_tokens: int64 prompt length (tokens).
        output_tokens: int64 output length the engine will generate (tokens).
        emitted: int64 tokens already emitted before this join (> 0 after a preemption).
        prompts: prompt texts when the trace has them (real loops), else None.
    """

    index: np.ndarray
    ids: list[str]
    domains: list[str]
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    emitted: np.ndarray
    prompts: list[str | None] | None = None

    def __len__(self) -> int:
        return int(self.index.size)


@dataclass(frozen=True)
class Draft:
    """What the drafter proposed for the decoding slots of one step.

    Attributes:
        conf: [n, g] float64 in [0, 1], conditional confidences c_{i,k} (0 beyond drafted[i]).
        drafted: [n] int64 in [0, g], draft tokens actually proposed per request.
        seconds: measured drafter wall time for the step (s), or None.
    """

    conf: np.ndarray
    drafted: np.ndarray
    seconds: float | None = None


@dataclass(frozen=True)
class Verdict:
    """What verification decided for the decoding slots of one step.

    Attributes:
        accepted: [n] int64, accepted drafts per request, 0 <= accepted <= lengths (the request
            emits accepted + 1 tokens).
        seconds: measured target wall time for the verify pass (s), or None.
        extra: optional per-step facts a backend wants recorded (free-form, not interpreted).
    """

    accepted: np.ndarray
    seconds: float | None = None
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """The acceptance-model interface (see the module docstring for the protocol of a step).

    Attributes:
        block: the largest block g the backend can draft (draft(slots, g) needs g <= block).
        name: short description for the summary ("synthetic dspark", "recorded rounds.jsonl", ...).
    """

    block: int
    name: str

    def join(self, slots: np.ndarray, requests: Requests) -> None:
        """Bind `requests` to `slots` ([m] int64, free slots); called once per admission."""
        ...

    def draft(self, slots: np.ndarray, block: int) -> Draft:
        """Draft `block` tokens for each slot ([n] int64); return confidences [n, block]."""
        ...

    def verify(self, slots: np.ndarray, lengths: np.ndarray) -> Verdict:
        """Verify the first `lengths` ([n] int64) drafts of the last `draft` on the same slots."""
        ...

    def leave(self, slots: np.ndarray) -> None:
        """Release `slots` ([m] int64): their requests finished or were preempted."""
        ...


DEBUG_ENV = "SPARKSCHED_DEBUG"  # set (not "" or "0"): the engine checks the backend's every draft and verdict


def debug_checks() -> bool:
    """Whether the engine checks backends against the contract (the environment's SPARKSCHED_DEBUG)."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def check_draft(draft: Draft, n: int, block: int, where: str = "backend.draft") -> None:
    """Raise ValueError when a backend's draft breaks the contract (shapes, ranges)."""
    conf, drafted = draft.conf, draft.drafted
    if conf.shape != (n, block):
        raise ValueError(f"{where}: conf must have shape ({n}, {block}), got {conf.shape}")
    if drafted.shape != (n,):
        raise ValueError(f"{where}: drafted must have shape ({n},), got {drafted.shape}")
    if n and (np.any(drafted < 0) or np.any(drafted > block)):
        raise ValueError(f"{where}: drafted must lie in [0, {block}], got {drafted.tolist()}")
    if n and (not np.all(np.isfinite(conf)) or np.any(conf < 0) or np.any(conf > 1)):
        raise ValueError(f"{where}: conf must lie in [0, 1]")


def check_verdict(verdict: Verdict, lengths: np.ndarray, where: str = "backend.verify") -> None:
    """Raise ValueError when a verdict breaks the contract (0 <= accepted <= lengths)."""
    acc = verdict.accepted
    if acc.shape != lengths.shape:
        raise ValueError(f"{where}: accepted must have shape {lengths.shape}, got {acc.shape}")
    if acc.size and (np.any(acc < 0) or np.any(acc > lengths)):
        raise ValueError(f"{where}: accepted must lie in [0, lengths], got accepted={acc.tolist()} "
                         f"lengths={lengths.tolist()}")
