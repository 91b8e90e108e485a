"""Verify-length policies: the one registry of every policy (`POLICIES`), and the load-blind baselines.

The registry (`PolicySpec`, one per family) says how a policy is written, what it verifies, where
it runs, which kind the simulator's compiled step runs it as, and why it is lossless; the simulator,
the CLI, the real loop and docs/policies.md read it. Adding a policy: a `PolicySpec` here, its
function (here or in the simulator for a stateful one), its compiled kind if it has one
(simulator/epoch.py), and its losslessness test (CONTRIBUTING.md).

The baselines below have the scheduler's call shape.

Each factory returns a callable `(conf, curve, drafted=None, extra_tokens=0) -> lengths` that
accepts the same inputs as `sparksched.schedule` (numpy arrays or torch tensors: conf [n, g],
drafted [n]) and returns [n] int64 verify lengths of the same kind (a tensor stays on its
device). Values are checked as on the numpy path unless `validate=False`, which never reads a
tensor on the host (no synchronisation). `curve` and `extra_tokens` are accepted and ignored:
these policies are load-blind, which is what the scheduler is compared against.

    static(k)       l_i = min(k, drafted_i)  (MTP-1 is static(1) with a one-token drafter)
    threshold(tau)  l_i = largest k <= drafted_i with S_{i,k} = c_{i,1} * ... * c_{i,k} >= tau
    conf_threshold(tau)
                    l_i = number of leading positions with c_{i,k} >= tau: verify while each
                    position's own confidence clears tau, stop at the first one below (the DSpark
                    paper's static-threshold baseline, its Figure 5 sweep)
    verify_all      l_i = drafted_i

All four are non-anticipating (l_i >= k depends only on c_{i,1..k}), so they are lossless under
the same confidence contract as the scheduler.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparksched.scheduler import _is_torch, check_conf, check_drafted, check_torch_inputs, schedule
from sparksched.survival import survival, survival_torch

__all__ = ["POLICIES", "Policy", "PolicySpec", "compiled_policy", "conf_threshold", "library_policy", "parse_policy",
           "policy_forms", "static", "threshold", "verify_all"]

Policy = Callable[..., Any]


def _drafted_np(drafted: Any, n: int, g: int) -> np.ndarray:
    dr = check_drafted(drafted, n, g)
    return np.full(n, g, dtype=np.int64) if dr is None else dr


def _drafted_torch(conf: Any, drafted: Any, validate: bool) -> Any:
    """[n] int64 drafted counts on conf's device, after the numpy path's checks (shapes always;
    values, on the host, under `validate`)."""
    import torch

    check_torch_inputs(conf, drafted, validate)
    n, g = conf.shape
    if drafted is None:
        return torch.full((n,), g, dtype=torch.int64, device=conf.device)
    return drafted.to(device=conf.device, dtype=torch.int64)


def static(k: int) -> Policy:
    """Verify min(k, drafted_i) tokens for every request (k >= 0).

    Example:
        >>> static(2)(np.full((2, 4), 0.5), None, drafted=[4, 1]).tolist()
        [2, 1]
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"static(k): k must be an integer >= 0, got {k!r}")
    k = int(k)

    def policy(conf: Any, curve: Any = None, drafted: Any = None, extra_tokens: int = 0, *,
               validate: bool = True) -> Any:
        if _is_torch(conf):
            import torch

            return torch.clamp(_drafted_torch(conf, drafted, validate), max=k)
        arr = check_conf(conf)
        return np.minimum(_drafted_np(drafted, *arr.shape), k)

    policy.__name__ = f"static_{k}"
    return policy


def threshold(tau: float) -> Policy:
    """Verify the longest drafted prefix whose survival S_{i,k} is >= tau (tau in [0, 1]).

    Example:
        >>> threshold(0.5)(np.array([[0.9, 0.8, 0.9], [0.4, 1.0, 1.0]])).tolist()  # S = .9 .72 .648
        [3, 0]
    """
    tau = _check_tau(tau, "threshold")

    def policy(conf: Any, curve: Any = None, drafted: Any = None, extra_tokens: int = 0, *,
               validate: bool = True) -> Any:
        if _is_torch(conf):
            import torch

            dr = _drafted_torch(conf, drafted, validate)
            n, g = conf.shape
            s = survival_torch(conf)
            live = torch.arange(g, device=conf.device)[None, :] < dr[:, None]
            return ((s >= tau) & live).sum(dim=1, dtype=torch.int64)
        arr = check_conf(conf)
        n, g = arr.shape
        live = np.arange(g)[None, :] < _drafted_np(drafted, n, g)[:, None]
        return ((survival(arr) >= tau) & live).sum(axis=1, dtype=np.int64)

    policy.__name__ = f"threshold_{tau:g}"
    return policy


def _check_tau(tau: Any, what: str) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.floating)) or not math.isfinite(tau) \
            or not 0.0 <= tau <= 1.0:
        raise ValueError(f"{what}(tau): tau must be a number in [0, 1], got {tau!r}")
    return float(tau)


def conf_threshold(tau: float) -> Policy:
    """Verify while each position's own confidence c_{i,k} >= tau; stop at the first k below it.

    Unlike `threshold`, which compares the survival product S_{i,k} with tau, this compares each
    c_{i,k} alone (the paper's static-threshold rule): a confident position after a doubtful one
    is still verified as long as every position before it clears tau. [l_i >= k] depends on
    c_{i,1..k} only, so it keeps the scheduler's confidence contract (lossless).

    Example:
        >>> conf_threshold(0.5)(np.array([[0.9, 0.6, 0.9], [0.9, 0.4, 1.0]])).tolist()  # S = .9 .54 .486
        [3, 1]
    """
    tau = _check_tau(tau, "conf_threshold")

    def policy(conf: Any, curve: Any = None, drafted: Any = None, extra_tokens: int = 0, *,
               validate: bool = True) -> Any:
        if _is_torch(conf):
            import torch

            dr = _drafted_torch(conf, drafted, validate)
            n, g = conf.shape
            live = torch.arange(g, device=conf.device)[None, :] < dr[:, None]
            ok = (conf.to(torch.float64) >= tau) & live
            return torch.cumprod(ok.to(torch.int64), dim=1).sum(dim=1)
        arr = check_conf(conf)
        n, g = arr.shape
        live = np.arange(g)[None, :] < _drafted_np(drafted, n, g)[:, None]
        return np.cumprod((arr >= tau) & live, axis=1).sum(axis=1, dtype=np.int64)

    policy.__name__ = f"conf_threshold_{tau:g}"
    return policy


def verify_all(conf: Any, curve: Any = None, drafted: Any = None, extra_tokens: int = 0, *,
               validate: bool = True) -> Any:
    """Verify every drafted token: l_i = drafted_i (default g).

    Example:
        >>> verify_all(np.full((3, 4), 0.1), None, drafted=[4, 0, 2]).tolist()
        [4, 0, 2]
    """
    if _is_torch(conf):
        return _drafted_torch(conf, drafted, validate).clone()
    arr = check_conf(conf)
    return _drafted_np(drafted, *arr.shape).copy()


# ------------------------------------------------------------------------------------------ the registry
# The kinds the simulator's compiled step runs (simulator.epoch reads them from here).
NONE, DSPARK, STATIC, THRESHOLD, CONF_THRESHOLD = 0, 1, 2, 3, 4

_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)"


@dataclass(frozen=True)
class PolicySpec:
    """Everything about one verify-length policy: how it is written, what it does, where it runs and
    why it keeps decoding lossless. `POLICIES` holds one per family; the simulator, the CLI, the real
    drafter/target loop and docs/policies.md all read it.

    Attributes:
        name: the family, e.g. "static".
        form: how a policy of the family is written, e.g. "static-K" (K, TAU: its parameter).
        summary: one line: what it verifies.
        param: None, "count" (an integer >= 0) or "probability" (a number in [0, 1]).
        compiled: the kind the simulator's compiled step runs it as (None: stateful, step by step).
        where: where it runs: "library" (a function of one step's confidences), "simulator",
            "real loop".
        lossless: the verdict, and the test that checks it by exact enumeration.
        make: for a function of one step's confidences, parameter -> a callable with the scheduler's
            call shape (conf, price, drafted) -> lengths; None for a stateful policy (the simulator
            builds it).

    Example:
        >>> spec = POLICIES["threshold"]
        >>> spec.form, spec.parse("threshold-0.5"), spec.make(0.5)(np.array([[0.9, 0.5]])).tolist()
        ('threshold-TAU', (True, 0.5), [1])
    """

    name: str
    form: str
    summary: str
    param: str | None = None
    compiled: int | None = None
    where: tuple[str, ...] = ("library", "simulator")
    lossless: str = ""
    make: Callable[[float | None], Policy] | None = None

    def parse(self, text: str) -> tuple[bool, float | None]:
        """(matches, parameter) for a policy written `text`; ValueError for a family match with a bad parameter."""
        if self.param is None:
            return text == self.name, None
        pattern = r"(\d+)" if self.param == "count" else _NUMBER
        m = re.fullmatch(re.escape(self.name) + "-" + pattern, text)
        if m is None:
            if text.startswith(self.name + "-") and not any(
                    s.name != self.name and text.startswith(s.name + "-") for s in POLICIES.values()):
                what = "an integer >= 0" if self.param == "count" else "a number in [0, 1]"
                raise ValueError(f"policy {text!r}: {self.form.split('-')[-1]} must be {what}")
            return False, None
        value = float(m.group(1))
        if self.param == "probability" and not 0.0 <= value <= 1.0:
            raise ValueError(f"policy {text!r}: threshold must lie in [0, 1]")
        return True, value

    def compiled_param(self, param: float | None, block: int) -> float:
        """The parameter the compiled step takes: static keeps K, verify-all its block, mtp1 1, thresholds tau."""
        if self.name == "verify-all":
            return float(block)
        if self.name == "mtp1":
            return 1.0
        return float(param or 0.0)


_PROVEN = "tests/test_lossless.py"
_ENGINES = "tests/test_engine_policies_lossless.py"
POLICIES: dict[str, PolicySpec] = {s.name: s for s in (
    PolicySpec("dspark", "dspark", "the greedy with early stop (Algorithm 1) on the step's own price", None, DSPARK,
               ("library", "simulator", "real loop"),
               f"[l_i >= k] reads c_1..c_k and the other requests only (the early stop): exact ({_PROVEN})",
               lambda _: schedule),
    PolicySpec("async-dspark", "async-dspark", "capacity K by a global search over confidences of two steps "
               "before, then top-K by current survival (the paper's production scheduler)", None, None,
               ("simulator",), f"K never sees the current drafts; top-K by a non-increasing S: exact ({_ENGINES})"),
    PolicySpec("vllm-adaptive", "vllm-adaptive", "vLLM's adaptive verification: budget from the previous step's "
               "EMA confidences with the drafter's time and a plain fallback, top-K by current survival", None, None,
               ("simulator",), f"stale budget, top-K by a non-increasing S: exact ({_ENGINES})"),
    PolicySpec("sglang-adaptive", "sglang-adaptive", "SGLang's adaptive depth: one depth for the batch from "
               "{1, 3, 7} by an EMA of accepted drafts", None, None, ("simulator",),
               f"reads only past rounds: exact ({_ENGINES})"),
    PolicySpec("mtp1", "mtp1", "a one-token drafter, always verified (static-1 on a block of 1)", None, STATIC,
               ("simulator",), f"load-blind: exact ({_PROVEN})", lambda _: static(1)),
    PolicySpec("static", "static-K", "verify min(K, drafted) tokens per request", "count", STATIC,
               ("library", "simulator", "real loop"), f"load-blind: exact ({_PROVEN})",
               lambda k: static(int(k or 0))),
    PolicySpec("threshold", "threshold-TAU", "verify the longest prefix whose survival S_k >= TAU", "probability",
               THRESHOLD, ("library", "simulator", "real loop"),
               f"[l_i >= k] reads c_1..c_k: exact ({_PROVEN})", lambda tau: threshold(float(tau or 0.0))),
    PolicySpec("conf-threshold", "conf-threshold-TAU", "verify while each position's own confidence c_k >= TAU "
               "(the paper's static threshold)", "probability", CONF_THRESHOLD, ("library", "simulator", "real loop"),
               f"[l_i >= k] reads c_1..c_k: exact ({_PROVEN})", lambda tau: conf_threshold(float(tau or 0.0))),
    PolicySpec("verify-all", "verify-all", "verify everything drafted", None, STATIC,
               ("library", "simulator", "real loop"), f"load-blind: exact ({_PROVEN})", lambda _: verify_all),
    PolicySpec("none", "none", "plain decoding: no drafter runs", None, NONE, ("library", "simulator", "real loop"),
               "nothing is drafted: the target's own sampling", lambda _: _plain),
)}


def parse_policy(text: str) -> tuple[PolicySpec, float | None]:
    """(spec, parameter) of a policy written `text` ("static-3" -> (POLICIES["static"], 3.0)); one-line
    ValueError naming the forms for anything else.

    Example:
        >>> spec, k = parse_policy("static-3")
        >>> spec.name, k
        ('static', 3.0)
    """
    if not isinstance(text, str):
        raise ValueError(f"policy must be a name, got {text!r}")
    for spec in POLICIES.values():
        ok, value = spec.parse(text)
        if ok:
            return spec, value
    raise ValueError(f"policy {text!r} is not one of {policy_forms(', ')} (e.g. static-3, threshold-0.5, "
                     "conf-threshold-0.8)")


def policy_forms(sep: str = " | ") -> str:
    """Every policy as it is written.

    Example:
        >>> policy_forms(", ").split(", ")[:3]
        ['dspark', 'async-dspark', 'vllm-adaptive']
    """
    return sep.join(s.form for s in POLICIES.values())


def compiled_policy(text: str, block: int) -> tuple[int, float] | None:
    """(kind, parameter) the simulator's compiled step runs `text` as, or None for a stateful policy.
    A step that drafts nothing (block 0) runs as NONE.

    Example:
        >>> compiled_policy("verify-all", 7) == (STATIC, 7.0), compiled_policy("async-dspark", 7)
        (True, None)
    """
    spec, param = parse_policy(text)
    if spec.compiled is None:
        return None
    if block == 0:
        return NONE, 0.0
    return spec.compiled, spec.compiled_param(param, block)


def _plain(conf: Any, curve: Any = None, drafted: Any = None, extra_tokens: int = 0, **_: Any) -> Any:
    """Plain decoding: no draft is verified (the engine does not even run the drafter)."""
    return np.zeros(np.shape(conf)[0], dtype=np.int64)


def library_policy(text: str, price: Any = None) -> Callable[[Any], Any]:
    """conf [n, g] -> lengths [n] int64 for a policy that is a function of one step's confidences
    (the real drafter/target loop calls it each round). dspark needs `price`: what `schedule` takes
    (a ThroughputCurve, a table by batch tokens, a StepCost with its context, or a StepPrice).

    Example:
        >>> library_policy("static-2")(np.full((2, 4), 0.5)).tolist()
        [2, 2]
    """
    spec, param = parse_policy(text)
    if "library" not in spec.where:
        raise ValueError(f"policy {text!r} runs only in the simulator (it keeps state across steps); "
                         f"one-step policies: {', '.join(s.form for s in POLICIES.values() if 'library' in s.where)}")
    if spec.name == "dspark" and price is None:
        raise ValueError("policy 'dspark' needs the price of a step (a profile of this target)")
    assert spec.make is not None
    core = spec.make(param)
    return lambda conf: np.asarray(core(conf, price), dtype=np.int64)
