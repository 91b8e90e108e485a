"""What one engine step (or one planned epoch of steps) carries from its start to its end.

Covers: the engine's step plumbing (simulator.engine). A step runs in three parts, with a SimPy
timeout between the second and the third:

    start = engine._prologue()        # StepStart: KV reserve, admissions, the prefill chunk
    outcome = engine._step(start)     # StepOutcome: draft, verify lengths (a StepPlan), verify, price
    ...the clock advances by outcome.seconds...
    engine._finish_step()             # emissions, finishes, the step's records

A planned epoch (simulator.epoch) is one EpochPlan: the planner's state and outputs, applied when
the clock reaches its last step's end. All are frozen dataclasses built by keyword, so a field can
neither be read in the wrong position nor be reassigned on the way; the arrays they hold are the
engine's own (not copies).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.epoch import EpochOut, EpochState


@dataclass(frozen=True)
class StepStart:
    """A step's first half: who runs in it.

    Attributes:
        now: the step's start (simulated s).
        dec: [n] int64 slots that decode in the step (slot order).
        pre: [p] int64 slots that prefill a chunk (oldest admission first).
        chunk: [p] int64 prompt tokens each prefills in the step; None when none prefills.
        prefill_tokens: the chunks' sum.
        preempted: requests preempted to make room for the step's KV lookahead.
    """

    now: float
    dec: np.ndarray
    pre: np.ndarray
    chunk: np.ndarray | None
    prefill_tokens: int
    preempted: int


@dataclass(frozen=True)
class StepPlan:
    """What the policy decided for the step's decoding requests, and the prices it decided against.

    Attributes:
        lengths: [n] int64 verify lengths (0: plain decoding).
        drafted: [n] int64 drafts proposed (the drafter's; zeros when it did not run).
        draft_s: the drafter's seconds (0 when it did not run).
        context: the mean context the step is priced at (tokens).
    """

    lengths: np.ndarray
    drafted: np.ndarray
    draft_s: float
    context: float


@dataclass(frozen=True)
class StepOutcome:
    """A step once verified and priced: what `_finish_step` applies at its end.

    Attributes:
        start: the step's StepStart.
        plan: its StepPlan.
        accepted: [n] int64 accepted drafts (the backend's verdict).
        batch: tokens in the step (prefill chunks + verify tokens).
        seconds: the step's duration (s).
    """

    start: StepStart
    plan: StepPlan
    accepted: np.ndarray
    batch: int
    seconds: float


@dataclass(frozen=True)
class EpochPlan:
    """A planned epoch (`Engine._epoch_plan`): `steps` steps of the members `req` ([m] requests: the
    `n_res` resident ones, then the candidates), the planner's state after them (its arrays updated in
    place), its outputs, the members' emitted tokens before it, and the clock at its last step's end."""

    steps: int
    req: np.ndarray
    n_res: int
    state: EpochState
    out: EpochOut
    emitted0: np.ndarray
    end: float
