"""sparksched: confidence-scheduled speculative decoding (the DSpark method).

The public API is what this module exports (see `__all__`); everything else is private.

Names are loaded on first use (PEP 562 module `__getattr__`): `import sparksched` costs almost
nothing, and the torch-backed names (the verifier, the torch scheduler, the budget split, the
engine layouts) import torch only when one of them is touched. So do command-line paths that never
need torch (`sparksched --help`, `sparksched trace ...`, `sparksched simulate` without a model).
"""

import importlib as _importlib
import sys as _sys
import types as _types
from typing import Any as _Any

# public name -> the module that defines it
_SOURCES: dict[str, str] = {
    **dict.fromkeys(("admit_top_k", "plan_capacity"), "sparksched.async_scheduler"),
    **dict.fromkeys(("assign_budget", "budget_rates", "plan_budget"), "sparksched.budget"),
    **dict.fromkeys(("CalibrationReport", "apply_sts", "calibration_report", "expected_calibration_error",
                     "fit_sts", "roc_auc"), "sparksched.calibration"),
    **dict.fromkeys(("StepCost", "StepPrice"), "sparksched.cost"),
    "ThroughputCurve": "sparksched.curve",
    **dict.fromkeys(("vllm_cost_curves", "vllm_cost_table", "vllm_dynamic_k_table"), "sparksched.export"),
    **dict.fromkeys(("PaddedBatch", "compact_vllm_flat", "mrv2_cu_num_logits", "mrv2_to_padded", "schedule_mrv2",
                     "schedule_sglang", "schedule_vllm_flat", "sglang_to_padded", "verify_mrv2", "verify_sglang",
                     "verify_vllm_flat", "vllm_flat_to_padded"), "sparksched.layouts"),
    **dict.fromkeys(("PolicySpec", "compiled_policy", "conf_threshold", "library_policy", "parse_policy",
                     "policy_forms", "static", "threshold", "verify_all"), "sparksched.policies"),
    **dict.fromkeys(("Rounds", "RoundsWriter", "read_rounds", "write_rounds"), "sparksched.rounds"),
    **dict.fromkeys(("schedule", "schedule_numpy", "schedule_padded", "schedule_reference", "schedule_torch",
                     "step_time_table"),
                    "sparksched.scheduler"),
    **dict.fromkeys(("read_sglang_table", "sglang_additive_table", "sglang_sps_table"), "sparksched.sglang_tables"),
    **dict.fromkeys(("VerifyResult", "verify"), "sparksched.verify"),
}

__all__ = sorted(_SOURCES)
__version__ = "0.1.0"


def __getattr__(name: str) -> _Any:
    """Import the module defining a public `name` on first access, then cache the name here."""
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'sparksched' has no attribute {name!r}")
    value = getattr(_importlib.import_module(source), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))



class _Package(_types.ModuleType):
    """The package module: importing the submodule `sparksched.verify` must not bind the module over
    the public function `verify` (the import system sets a submodule as an attribute of its parent)."""

    def __setattr__(self, name: str, value: _Any) -> None:
        if name in _SOURCES and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
