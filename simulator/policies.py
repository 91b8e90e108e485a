"""Verify-length policies for the simulator: a policy name -> an object the engine calls every step.

Covers: which drafted tokens each decoding request sends to verification, for every policy the
simulator compares on the same trace and profile.

    dspark          the non-anticipating greedy with early stop (sparksched.schedule, Algorithm 1)
    mtp1            a one-token drafter, always verified (static-1 on a block of 1)
    static-K        verify min(K, drafted) tokens per request
    threshold-TAU   verify the longest prefix whose survival S_k >= TAU
    conf-threshold-TAU
                    verify while each position's own confidence c_k >= TAU, stop at the first one
                    below (the paper's static-threshold rule, its Figure 5)
    verify-all      verify everything drafted
    none            plain decoding (no drafter runs)
    async-dspark    the paper's production scheduler (section 5.2): capacity K from a global search
                    over the confidences of two steps earlier, then top-K by current survival
    vllm-adaptive   vLLM's adaptive verification (vllm-project/vllm#47808): budget from the previous
                    step's per-request EMA-smoothed confidences (alpha 0.8; new requests count as
                    1.0), global argmax including the drafter's time, plain-decoding fallback (K = 0:
                    the step skips the drafter), then top-K by current survival
    sglang-adaptive SGLang's adaptive step count (sgl-project/sglang#21599): one draft depth for the
                    whole batch, picked from {1, 3, 7} by an EMA of accepted drafts per round with
                    hysteresis (thresholds here are ours: up at >= 0.75 x depth, down below 0.4 x depth,
                    at most one switch per 8 steps)

Lossless (exact-enumeration verdicts in tests/test_engine_policies_lossless.py and the core's tests):
dspark (early stop), static, both thresholds, verify-all and none decide [l_i >= k] from c_{i,<=k} only;
async-dspark and vllm-adaptive fix K from stale confidences (no dependence on the current tokens) and
admit by rank of a non-increasing survival; sglang-adaptive uses only past rounds' outcomes. All are
lossless under the confidence contract (c_k never reads x_k); none of them is lossless when fed a
confidence that reads x_k itself.

Step cost: every policy that weighs throughput sees the whole step as a `sparksched.cost.StepPrice`:
the verify slice at the step's own number of decoding requests and mean context (by verify batch
tokens B), plus the prefill chunk's and the drafter's seconds (constants in B). dspark and
async-dspark index `price.table(...)` (all three parts), vllm-adaptive's `plan_budget` gets the
drafter's seconds separately (its plain-decoding fallback runs without the drafter). Stateless
policies run in the engine through `simulator.epoch` (bit-equal to the library calls wrapped here,
tested), so a step does not pay the library's per-call validation.

Interface: before drafting, `policy.skips_draft(slots, block, price)` (True: a plain step, the
drafter does not run); then `policy.lengths(slots, conf, drafted, price) -> [n] int64`,
`policy.observe(slots, lengths, accepted)` after verification, and `policy.forget(slots)` when
slots change hands. `BasePolicy` gives the no-op defaults (never skip, no state).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from simulator.config import SimConfig, parse_policy
from sparksched.cost import StepPrice

CoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class Policy(Protocol):
    """What the engine calls each decoding step (see the module docstring)."""

    name: str

    def lengths(self, slots: np.ndarray, conf: np.ndarray, drafted: np.ndarray, price: StepPrice) -> np.ndarray: ...

    def observe(self, slots: np.ndarray, lengths: np.ndarray, accepted: np.ndarray) -> None: ...

    def forget(self, slots: np.ndarray) -> None: ...

    def skips_draft(self, slots: np.ndarray, block: int, price: StepPrice) -> bool: ...


class BasePolicy:
    """No-op defaults of the interface: drafts every step, keeps no state between steps."""

    name: str

    def skips_draft(self, slots, block, price) -> bool:  # noqa: D102
        return False

    def observe(self, slots, lengths, accepted) -> None:  # noqa: D102
        pass

    def forget(self, slots) -> None:  # noqa: D102
        pass


class Stateless(BasePolicy):
    """Wraps a core policy callable (conf, step-seconds table by B, drafted) -> lengths; the table is
    the whole step (`price.table`: verify slice + prefill + drafter)."""

    def __init__(self, name: str, fn: CoreFn) -> None:
        self.name, self.fn = name, fn

    def lengths(self, slots, conf, drafted, price):  # noqa: D102
        n, g = conf.shape
        return np.asarray(self.fn(conf, price.table(n * (g + 1) + 1), drafted), dtype=np.int64)


class Plain(BasePolicy):
    """Plain decoding: verify nothing (the engine does not even run the drafter)."""

    name = "none"

    def lengths(self, slots, conf, drafted, price):  # noqa: D102
        return np.zeros(slots.size, dtype=np.int64)


class StaleCapacity(BasePolicy):
    """Capacity K planned from stale per-slot confidences, then top-K by current survival.

    Args:
        name: policy name.
        slots: engine slot count (state arrays are per slot).
        block: draft block g.
        staleness: how many decoding steps old the planning confidences are (2: DSpark section 5.2;
            1: vLLM's double-buffered previous step).
        plan: (stale_conf [n, g], price (StepPrice)) -> K. It never sees this step's drafted counts:
            with drafters that stop early (EOS) they depend on the drafts themselves.
        admit: (conf [n, g], K, drafted [n]) -> lengths [n].
        ema: per-slot smoothing weight on the newest confidence (1.0: none).
        unknown: how rows without stale data are filled: "mean" of the known rows, or "one".
        skip_draft: when the planned K is 0, the engine runs a plain step without the drafter
            (`skips_draft`); that step leaves no confidences for the step `staleness` later.
    """

    def __init__(self, name: str, slots: int, block: int, staleness: int,
                 plan: Callable[..., int], admit: Callable[..., np.ndarray],
                 ema: float = 1.0, unknown: str = "mean", skip_draft: bool = False) -> None:
        self.name, self.staleness, self.plan, self.admit = name, staleness, plan, admit
        self.ema, self.unknown, self.skip_draft = ema, unknown, skip_draft
        self._k: int | None = None  # K planned by `skips_draft` for this step's `lengths`
        g = max(block, 1)
        self._ring = np.zeros((staleness, slots, g))
        self._valid = np.zeros((staleness, slots), dtype=bool)
        self._smooth = np.zeros((slots, g))
        self._has = np.zeros(slots, dtype=bool)
        self._t = 0

    def _planned(self, slots, g, price) -> int:
        """K from the stale ring entry of this step (rows without stale data filled per `unknown`)."""
        j = self._t % self.staleness
        ok = self._valid[j, slots]
        stale = self._ring[j, slots][:, :g]
        if not ok.all():
            if self.unknown == "mean" and ok.any():
                stale[~ok] = stale[ok].mean(axis=0)
            else:
                stale[~ok] = 1.0
        return int(self.plan(stale, price))

    def skips_draft(self, slots, block, price) -> bool:
        """Before drafting: plan K; True (the step runs plain, no drafter) when K is 0 and the policy
        skips. The planned K is kept for this step's `lengths`."""
        if not self.skip_draft:
            return False
        k = self._planned(slots, block, price)
        if k > 0:
            self._k = k
            return False
        j = self._t % self.staleness
        self._t += 1
        self._valid[j] = False  # no confidences from this step
        return True

    def lengths(self, slots, conf, drafted, price):  # noqa: D102
        j = self._t % self.staleness
        if self._k is None:
            k = self._planned(slots, conf.shape[1], price)
        else:
            k, self._k = self._k, None
        self._t += 1
        # remember this step's (smoothed) confidences for the step `staleness` later
        if self.ema < 1.0:
            prev = np.where(self._has[slots, None], self._smooth[slots, : conf.shape[1]], conf)
            now = self.ema * conf + (1.0 - self.ema) * prev
            self._smooth[slots, : conf.shape[1]] = now
            self._has[slots] = True
        else:
            now = conf
        self._valid[j] = False
        self._valid[j, slots] = True
        self._ring[j, slots, : conf.shape[1]] = now
        return np.asarray(self.admit(conf, k, drafted), dtype=np.int64)

    def forget(self, slots) -> None:  # noqa: D102
        self._valid[:, slots] = False
        self._has[slots] = False


class SGLangAdaptive(BasePolicy):
    """One draft depth for the batch from {1, 3, 7} (capped by the block), by EMA with hysteresis."""

    CANDIDATES = (1, 3, 7)

    def __init__(self, block: int, weight: float = 0.2, up: float = 0.75, down: float = 0.4,
                 cooldown: int = 8) -> None:
        self.name = "sglang-adaptive"
        self.depths = sorted({min(d, block) for d in self.CANDIDATES})
        self.level = len(self.depths) - 1  # start at the deepest, as SGLang's static7 flags do
        self.weight, self.up, self.down, self.cooldown = weight, up, down, cooldown
        self.avg: float | None = None
        self._since = 0

    @property
    def depth(self) -> int:
        """Current draft depth."""
        return self.depths[self.level]

    def lengths(self, slots, conf, drafted, price):  # noqa: D102
        return np.minimum(drafted, self.depth).astype(np.int64)

    def observe(self, slots, lengths, accepted) -> None:  # noqa: D102
        if accepted.size == 0:
            return
        a = float(accepted.mean())
        self.avg = a if self.avg is None else (1 - self.weight) * self.avg + self.weight * a
        self._since += 1
        if self._since < self.cooldown:
            return
        d = self.depth
        if self.avg >= self.up * d and self.level < len(self.depths) - 1:
            self.level += 1
            self._since = 0
        elif self.avg < self.down * d and self.level > 0:
            self.level -= 1
            self._since = 0


def make_policy(config: SimConfig) -> Policy:
    """The policy object for `config.policy` (ValueError for unknown names)."""
    kind, param = parse_policy(config.policy)
    g = config.draft_block
    if kind == "none":
        return Plain()
    if kind == "sglang-adaptive":
        return SGLangAdaptive(g)
    from sparksched.policies import POLICIES

    spec = POLICIES[kind]
    if spec.make is not None:  # a function of one step's confidences: the library's
        return Stateless(config.policy, spec.make(param))
    if kind == "async-dspark":
        from sparksched.async_scheduler import admit_top_k, plan_capacity

        def plan(stale, price):  # the whole step: verify slice + prefill + drafter
            return plan_capacity(stale, price.table(stale.shape[0] * (stale.shape[1] + 1) + 1))

        return StaleCapacity("async-dspark", config.max_running, g, 2, plan, admit_top_k)
    if kind == "vllm-adaptive":
        from sparksched.async_scheduler import admit_top_k
        from sparksched.budget import plan_budget

        def plan_v(stale, price):  # the drafter apart: the plain fallback step skips it
            table = price.table(stale.shape[0] * (stale.shape[1] + 1) + 1, draft=False)
            return plan_budget(stale, table, draft_seconds=price.draft_seconds, plain_fallback=True)

        return StaleCapacity("vllm-adaptive", config.max_running, g, 1, plan_v, admit_top_k,
                             ema=0.8, unknown="one", skip_draft=True)
    raise ValueError(f"policy {config.policy!r} is not implemented")
