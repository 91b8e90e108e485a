"""SimConfig: every knob of one simulation, with defaults that explain themselves.

A config is frozen and validated at construction (one-line ValueError naming the field and the
value). `SimConfig.replace(**changes)` returns a validated copy; sweeps build many of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sparksched.policies import POLICIES as _REGISTRY
from sparksched.policies import parse_policy as _parse

POLICIES = tuple(s.form for s in _REGISTRY.values())  # sparksched.policies.POLICIES, as they are written
DRAFTERS = ("dspark", "dflash", "eagle3", "mtp1")
CLOCKS = ("profile", "measured")
LAYOUTS = ("flat", "padded")
DONORS = ("domain", "request")
ROUTERS = ("round-robin", "least-loaded", "least-kv", "session", "prefix")  # simulator.fleet
LOGGABLE = ("steps", "rounds")  # simulator.records


def parse_log(text: str) -> tuple[str, ...]:
    """`--log steps,rounds` as a tuple ("" or "none": no per-step or per-round table); ValueError if unknown."""
    parts = tuple(p.strip() for p in text.split(",") if p.strip() and p.strip() != "none")
    bad = [p for p in parts if p not in LOGGABLE]
    if bad:
        raise ValueError(f"--log: {bad[0]!r} is not one of {', '.join(LOGGABLE)} (or none)")
    return tuple(dict.fromkeys(parts))


@dataclass(frozen=True)
class SimConfig:
    """One simulation's settings (times in seconds, sizes in tokens unless said otherwise)."""

    # --- method
    policy: str = "dspark"  # dspark (greedy, early stop) | mtp1 | static-K | threshold-TAU (survival S_k >= TAU)
    #                         | conf-threshold-TAU (each c_k >= TAU) | verify-all | none
    #                         | async-dspark (stale-capacity top-K) | vllm-adaptive | sglang-adaptive
    drafter: str = "dspark"  # acceptance preset family: dspark | dflash | eagle3 | mtp1 (one-token)
    block: int = 7  # drafted tokens per round g (the paper's offline tables use 7; production 5)
    # --- engine
    max_running: int = 128  # cap on resident (prefilling + decoding) requests
    kv_blocks: int | None = None  # paged KV capacity in blocks; None derives it from the profile
    kv_block_size: int = 16  # tokens per KV block (vLLM's default)
    kv_watermark: float = 0.01  # share of KV blocks kept free when admitting (vLLM's default)
    prefill_chunk: int = 2048  # prefill tokens per step (chunked prefill budget, mixed into decode)
    # prefill on separate prefill instances (PD disaggregation, the paper's decode engines): a request
    # joins this replica with its prompt's KV and its first token already made; the replica only decodes
    disaggregated: bool = False
    # --- fleet (simulator.fleet): replicas in one simulation, each its own engine, behind a router
    replicas: int = 1
    router: str = "least-loaded"  # round-robin | least-loaded | least-kv | session | prefix
    # profile of each replica (cycled when shorter than `replicas`); empty: every replica runs `profile`
    replica_profiles: tuple[str, ...] = ()
    # prefix caching (simulator.prefix): with a trace that carries `prefix_blocks`, each replica keeps
    # cached prompt blocks in its KV cache and skips their prefill; false ignores the hashes
    prefix_cache: bool = True
    # --- output: the per-step and per-round tables to write (the requests table always is)
    log: tuple[str, ...] = ("steps", "rounds")
    # --- workload
    rate_scale: float = 1.0  # arrival rate multiplier: arrival_s is divided by this
    max_requests: int | None = None  # simulate only the first N requests of the trace
    horizon_s: float | None = None  # stop the clock here; still-open requests are reported unfinished
    seed: int = 0  # seeds every random draw (acceptance, confidences)
    # --- timing
    profile: str = "h100-qwen3-8b-roofline"  # bundled profile name or path to a profile JSON
    clock: str = "profile"  # profile (step time from the curve) | measured (backend's wall times)
    # how the verify pass lays out the batch, which sets the tokens the clock charges: flat (vLLM V1,
    # SGLang: sum of 1 + l_i) | padded (one [n, 1 + max l_i] tensor, like sparksched.speculative's loop)
    verify_layout: str = "flat"
    # --- acceptance model
    acceptance: str = "synthetic"  # synthetic presets, or a path to a recorded-rounds file
    # which recorded request a simulated request takes its rounds from (simulator.recorded): a random one of
    # its domain, or the one with the same request id (replaying the recorded trace; else its domain's)
    recorded_donors: str = "domain"
    conf_auc: float = 0.85  # synthetic confidences' target ROC-AUC (paper: 0.81-0.90)
    conf_ece: float = 0.01  # synthetic confidences' target calibration error (paper: ~1% after STS)
    mtp1_acceptance: float | None = None  # override the MTP-1 preset acceptance (DeepSeek: 0.85-0.9)
    # --- SLA for goodput
    # per-user tokens/s a request must reach (1 / TPOT); trace slo_tps overrides. 80 tok/s/user is the
    # DSpark paper's moderate SLA anchor (V4-Flash), and the default of pareto and whatif too
    sla_tps: float = 80.0
    sla_ttft_s: float = 2.0  # time to first token a request must not exceed
    # vLLM's goodput SLOs, in its `--goodput` syntax: "ttft:MS tpot:MS e2el:MS" (any subset, in ms);
    # they give result.json its request_goodput. None: no SLOs (request_goodput is null, as in vLLM)
    goodput: str | None = None

    def __post_init__(self) -> None:
        _validate(self)

    # ---------------------------------------------------------------- derived
    @property
    def draft_block(self) -> int:
        """Tokens drafted per round: 1 for the MTP-1 policy/drafter, 0 for plain decoding."""
        if self.policy == "none":
            return 0
        if self.policy == "mtp1" or self.drafter == "mtp1":
            return 1
        return self.block

    @property
    def drafter_family(self) -> str:
        """The acceptance preset family actually used (the mtp1 policy implies the mtp1 drafter)."""
        return "mtp1" if self.policy == "mtp1" else self.drafter

    def replace(self, **changes: Any) -> SimConfig:
        """A validated copy with `changes` applied."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON-serialisable)."""
        return dataclasses.asdict(self)


def parse_policy(name: str) -> tuple[str, float | None]:
    """(family, parameter) of a policy name: "static-3" -> ("static", 3.0); one-line ValueError when
    unknown or out of range (the registry: sparksched.policies)."""
    spec, param = _parse(name)
    return spec.name, param


def _validate(c: SimConfig) -> None:
    kind, param = parse_policy(c.policy)
    if c.drafter not in DRAFTERS:
        raise ValueError(f"drafter {c.drafter!r} is not one of {', '.join(DRAFTERS)}")
    if c.clock not in CLOCKS:
        raise ValueError(f"clock {c.clock!r} is not one of {', '.join(CLOCKS)}")
    if c.verify_layout not in LAYOUTS:
        raise ValueError(f"verify_layout {c.verify_layout!r} is not one of {', '.join(LAYOUTS)}")
    if c.recorded_donors not in DONORS:
        raise ValueError(f"recorded_donors {c.recorded_donors!r} is not one of {', '.join(DONORS)}")
    _int_at_least("block", c.block, 1)
    if c.block > 64:
        raise ValueError(f"block must be <= 64, got {c.block}")
    if kind == "static" and param is not None and param > c.draft_block:
        raise ValueError(f"policy {c.policy!r} verifies more than the block drafts ({c.draft_block})")
    _int_at_least("max_running", c.max_running, 1)
    if c.kv_blocks is not None:
        _int_at_least("kv_blocks", c.kv_blocks, 1)
    _int_at_least("kv_block_size", c.kv_block_size, 1)
    _int_at_least("prefill_chunk", c.prefill_chunk, 1)
    if not isinstance(c.disaggregated, bool):
        raise ValueError(f"disaggregated must be true or false, got {c.disaggregated!r}")
    if c.disaggregated and c.clock == "measured":
        raise ValueError("disaggregated: the measured clock times the real loop, which prefills itself")
    _int_at_least("seed", c.seed, 0)
    if isinstance(c.replicas, bool) or not isinstance(c.replicas, int) or c.replicas < 1:
        raise ValueError(f"replicas must be an integer >= 1 (a fleet of at least one replica), got {c.replicas!r}")
    if c.router not in ROUTERS:
        raise ValueError(f"router {c.router!r} is not one of {', '.join(ROUTERS)}")
    if not isinstance(c.replica_profiles, tuple) or not all(isinstance(p, str) and p for p in c.replica_profiles):
        raise ValueError(f"replica_profiles must be a tuple of profile names or paths, got {c.replica_profiles!r}")
    if len(c.replica_profiles) > c.replicas:
        raise ValueError(f"replica_profiles names {len(c.replica_profiles)} profiles for {c.replicas} replicas")
    if not isinstance(c.prefix_cache, bool):
        raise ValueError(f"prefix_cache must be true or false, got {c.prefix_cache!r}")
    if not isinstance(c.log, tuple) or any(x not in LOGGABLE for x in c.log) or len(set(c.log)) != len(c.log):
        raise ValueError(f"log must name tables among {', '.join(LOGGABLE)} (each once; none is fine), got {c.log!r}")
    if c.max_requests is not None:
        _int_at_least("max_requests", c.max_requests, 1)
    _number_in("kv_watermark", c.kv_watermark, 0.0, 0.5)
    _positive("rate_scale", c.rate_scale)
    if c.horizon_s is not None:
        _positive("horizon_s", c.horizon_s)
    _number_in("conf_auc", c.conf_auc, 0.5, 0.999)
    _number_in("conf_ece", c.conf_ece, 0.0, 0.3)
    if c.mtp1_acceptance is not None:
        _number_in("mtp1_acceptance", c.mtp1_acceptance, 0.0, 0.999)
    _positive("sla_tps", c.sla_tps)
    _positive("sla_ttft_s", c.sla_ttft_s)
    if c.goodput is not None:
        from simulator.vllm_metrics import parse_goodput

        if not isinstance(c.goodput, str) or not parse_goodput(c.goodput):
            raise ValueError(f"goodput must be SLOs like 'ttft:500 tpot:50' (ms), got {c.goodput!r}")
    if not isinstance(c.profile, str) or not c.profile:
        raise ValueError(f"profile must be a bundled name or a path, got {c.profile!r}")
    if not isinstance(c.acceptance, str) or not c.acceptance:
        raise ValueError(f"acceptance must be 'synthetic' or a recorded-rounds path, got {c.acceptance!r}")


def _int_at_least(name: str, v: Any, lo: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _positive(name: str, v: Any) -> None:
    if not _is_number(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")


def _number_in(name: str, v: Any, lo: float, hi: float) -> None:
    if not _is_number(v) or not lo <= v <= hi:
        raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {v!r}")
