"""SPARKSCHED_DEBUG: the engine checks every draft and verdict against the backend contract
(simulator.backend); the shipped backend passes and gives the same results, broken ones are stopped."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from simulator.backend import DEBUG_ENV, Draft, Requests, Verdict, debug_checks
from simulator.config import SimConfig
from simulator.run import make_backend, simulate

CONFIG = SimConfig(max_requests=30, max_running=8, rate_scale=4.0)


class Bent:
    """The synthetic backend, its drafts or verdicts bent by `how` (every call on the step path)."""

    def __init__(self, config: SimConfig, how: str) -> None:
        self.inner = make_backend(config)
        self.block, self.name, self.how = self.inner.block, f"bent ({how})", how

    def join(self, slots: np.ndarray, requests: Requests) -> None:
        self.inner.join(slots, requests)

    def draft(self, slots: np.ndarray, block: int) -> Draft:
        d = self.inner.draft(slots, block)
        if self.how == "confidence above 1":
            return Draft(d.conf * 1.5 + 0.1, d.drafted, d.seconds)
        return d

    def verify(self, slots: np.ndarray, lengths: np.ndarray) -> Verdict:
        v = self.inner.verify(slots, lengths)
        if self.how == "accepts more than verified":
            # one more than verified (never more than the block: the run goes on, silently wrong)
            return Verdict(np.where((lengths > 0) & (lengths < self.block), lengths + 1, v.accepted), v.seconds)
        return v

    def leave(self, slots: np.ndarray) -> None:
        self.inner.leave(slots)


def test_debug_checks_read_the_environment(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    assert not debug_checks()
    monkeypatch.setenv(DEBUG_ENV, "0")
    assert not debug_checks()
    monkeypatch.setenv(DEBUG_ENV, "1")
    assert debug_checks()


@pytest.mark.parametrize("policy", ["dspark", "static-3", "vllm-adaptive", "none"])
def test_the_synthetic_backend_keeps_the_contract_and_checking_changes_no_result(monkeypatch, policy):
    config = CONFIG.replace(policy=policy)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    plain = simulate("chat", config)
    monkeypatch.setenv(DEBUG_ENV, "1")
    checked = simulate("chat", config)  # raises if any draft or verdict breaks the contract
    for name in ("requests", "steps", "rounds"):
        assert getattr(plain, name).equals(getattr(checked, name)), name


@pytest.mark.parametrize(("how", "message"), [
    ("accepts more than verified", r"backend 'bent \(accepts more than verified\)'.verify: accepted must lie in"),
    ("confidence above 1", r"backend 'bent \(confidence above 1\)'.draft: conf must lie in \[0, 1\]"),
])
def test_debug_mode_stops_a_backend_that_breaks_the_contract(monkeypatch, how, message):
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(ValueError, match=message):
        simulate("chat", CONFIG, backend=Bent(CONFIG, how))


def test_negative_control_without_debug_a_broken_backend_runs_silently(monkeypatch):
    """The same broken backend, unchecked: the run completes and its rounds accept more drafts than
    were verified (what the checks exist to stop)."""
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    res = simulate("chat", CONFIG, backend=Bent(CONFIG, "accepts more than verified"))
    assert res.rounds.filter(pl.col("accepted") > pl.col("verified")).height > 0
