"""sparksched: confidence-scheduled speculative decoding (the DSpark method).

The public API is what this module exports (see `__all__`); everything else is private.
"""

from sparksched.async_scheduler import admit_top_k, plan_capacity
from sparksched.budget import assign_budget, budget_rates, plan_budget
from sparksched.calibration import (
    CalibrationReport,
    apply_sts,
    calibration_report,
    expected_calibration_error,
    fit_sts,
    roc_auc,
)
from sparksched.cost import StepCost, StepPrice
from sparksched.curve import ThroughputCurve
from sparksched.export import vllm_cost_curves, vllm_cost_table, vllm_dynamic_k_table
from sparksched.layouts import (
    PaddedBatch,
    compact_vllm_flat,
    mrv2_cu_num_logits,
    mrv2_to_padded,
    schedule_mrv2,
    schedule_sglang,
    schedule_vllm_flat,
    sglang_to_padded,
    verify_mrv2,
    verify_sglang,
    verify_vllm_flat,
    vllm_flat_to_padded,
)
from sparksched.policies import static, threshold, verify_all
from sparksched.rounds import Rounds, RoundsWriter, read_rounds, write_rounds
from sparksched.scheduler import schedule, schedule_numpy, schedule_reference, schedule_torch, step_time_table
from sparksched.sglang_tables import read_sglang_table, sglang_additive_table, sglang_sps_table
from sparksched.verify import VerifyResult, verify

__all__ = [
    "CalibrationReport",
    "PaddedBatch",
    "Rounds",
    "RoundsWriter",
    "StepCost",
    "StepPrice",
    "ThroughputCurve",
    "VerifyResult",
    "admit_top_k",
    "apply_sts",
    "assign_budget",
    "budget_rates",
    "calibration_report",
    "compact_vllm_flat",
    "expected_calibration_error",
    "fit_sts",
    "mrv2_cu_num_logits",
    "mrv2_to_padded",
    "plan_budget",
    "plan_capacity",
    "read_rounds",
    "read_sglang_table",
    "roc_auc",
    "schedule",
    "schedule_mrv2",
    "schedule_numpy",
    "schedule_reference",
    "schedule_sglang",
    "schedule_torch",
    "schedule_vllm_flat",
    "sglang_additive_table",
    "sglang_sps_table",
    "sglang_to_padded",
    "static",
    "step_time_table",
    "threshold",
    "verify",
    "verify_all",
    "verify_mrv2",
    "verify_sglang",
    "verify_vllm_flat",
    "vllm_cost_curves",
    "vllm_cost_table",
    "vllm_dynamic_k_table",
    "vllm_flat_to_padded",
    "write_rounds",
]
__version__ = "0.1.0"
