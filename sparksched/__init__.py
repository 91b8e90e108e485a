"""sparksched: confidence-scheduled speculative decoding (the DSpark method).

The public API is what this module exports (see `__all__`); everything else is private.
"""

from sparksched.async_scheduler import admit_top_k, plan_capacity
from sparksched.curve import ThroughputCurve
from sparksched.policies import static, threshold, verify_all
from sparksched.scheduler import schedule, schedule_numpy, schedule_reference, schedule_torch, step_time_table
from sparksched.verify import VerifyResult, verify

__all__ = [
    "ThroughputCurve",
    "VerifyResult",
    "admit_top_k",
    "plan_capacity",
    "schedule",
    "schedule_numpy",
    "schedule_reference",
    "schedule_torch",
    "static",
    "step_time_table",
    "threshold",
    "verify",
    "verify_all",
]
__version__ = "0.1.0"
