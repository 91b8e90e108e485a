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
from sparksched.policies import policy_forms

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


def knob(default: Any, help: str, **cli: Any) -> Any:
    """A config field whose metadata carries its command-line help, and in `cli` how the command line
    spells it (`flag="--horizon"`, `choices=ROUTERS`): the commands build their options from it
    (sparksched.commands._common.knob_option), so each knob has one default and one help text."""
    return dataclasses.field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class SimConfig:
    """One simulation's settings (times in seconds, sizes in tokens unless said otherwise)."""

    # --- method
    policy: str = knob("dspark", "Verify-length policy: " + policy_forms() + " (docs/policies.md).")
    drafter: str = knob("dspark", "Drafter acceptance preset family (the mtp1 policy implies mtp1, a one-token "
                                  "drafter).", choices=DRAFTERS)
    block: int = knob(7, "Drafted tokens per round g (the paper's offline tables use 7; production 5).")
    # --- engine
    max_running: int = knob(128, "Cap on resident (prefilling + decoding) requests.")
    kv_blocks: int | None = knob(None, "KV cache blocks [default: derived from the profile].")
    kv_block_size: int = knob(16, "Tokens per KV block (vLLM's default).")
    kv_watermark: float = knob(0.01, "Share of KV blocks kept free when admitting (vLLM's default).")
    prefill_chunk: int = knob(2048, "Prefill tokens per step (the chunked-prefill budget, mixed into decode).")
    disaggregated: bool = knob(False, "Prefill on separate prefill instances (PD disaggregation, the paper's decode "
                                      "engines): requests join with their prompt's KV and first token already "
                                      "made, and the replica only decodes (TTFT is the wait to join).")
    # --- fleet (simulator.fleet): replicas in one simulation, each its own engine, behind a router
    replicas: int = knob(1, "Replicas in one simulation, each its own engine behind --router (a fleet).")
    router: str = knob("least-loaded", "How a fleet assigns each arriving request: session needs the trace's "
                                       "session field, prefix its prefix_blocks.", choices=ROUTERS)
    replica_profiles: tuple[str, ...] = knob((), "Comma-separated profile per replica (cycled), for fleets of unlike "
                                                 "replicas [default: --profile].")
    prefix_cache: bool = knob(True, "With a trace carrying prefix_blocks: each replica caches prompt blocks in its "
                                    "KV cache and skips their prefill.", flag="--prefix-cache/--no-prefix-cache")
    # --- output
    log: tuple[str, ...] = knob(("steps", "rounds"), "Per-step and per-round tables to write: steps, rounds, both, "
                                                     "or none (requests.parquet always); they are written in row "
                                                     "groups as the run goes.")
    # --- workload
    rate_scale: float = knob(1.0, "Arrival-rate multiplier (arrival_s is divided by it).")
    max_requests: int | None = knob(None, "Simulate only the first N requests of the trace.")
    horizon_s: float | None = knob(None, "Stop the clock at this simulated time (s); still-open requests are "
                                         "reported unfinished.", flag="--horizon")
    seed: int = knob(0, "Seed of every random draw (acceptance, confidences).")
    # --- timing
    profile: str = knob("h100-qwen3-8b-roofline", "Profile JSON or bundled name: the step times.")
    clock: str = knob("profile", "Step time from the profile, or the backend's measured wall time (--engine model).",
                      choices=CLOCKS)
    # how the verify pass lays out the batch, which sets the tokens the clock charges
    verify_layout: str = knob("flat", "Verify tokens the clock charges: flat sum(1 + l_i) (vLLM, SGLang) or padded "
                                      "n * (1 + max l_i) (one [n, 1 + max l_i] tensor, like sparksched.speculative's "
                                      "loop).", choices=LAYOUTS)
    # --- acceptance model
    acceptance: str = knob("synthetic", "'synthetic' presets, or a recorded-rounds file to fit acceptance from.")
    recorded_donors: str = knob("domain", "With a recorded-rounds file: each request replays a random recorded "
                                          "request of its domain, or the recorded request with its own id (the same "
                                          "trace, replayed).", choices=DONORS)
    conf_auc: float = knob(0.85, "Synthetic confidence ROC-AUC (paper: 0.81-0.90).")
    conf_ece: float = knob(0.01, "Synthetic confidence calibration error (0.01 after STS; ~0.055 raw).")
    mtp1_acceptance: float | None = knob(None, "Override the MTP-1 preset's acceptance (DeepSeek: 0.85-0.9).")
    # --- SLA for goodput
    sla_tps: float = knob(80.0, "Per-user speed SLA, tokens/s/user (1 / TPOT; a trace's slo_tps overrides it): "
                                "DSpark goodput's target. 80 is the paper's moderate anchor (V4-Flash).")
    sla_ttft_s: float = knob(2.0, "Time to first token (s) a request must not exceed to meet the SLA (DSpark "
                                  "goodput).", flag="--sla-ttft")
    # vLLM's goodput SLOs, in its `--goodput` syntax: "ttft:MS tpot:MS e2el:MS" (any subset, in ms);
    # they give result.json its request_goodput. None: no SLOs (request_goodput is null, as in vLLM)
    goodput: str | None = knob(None, "vLLM's goodput SLOs in ms, e.g. --goodput ttft:500 tpot:50 e2el:3000 "
                                     "(result.json's request_goodput).")

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
