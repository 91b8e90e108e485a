"""sparksched: confidence-scheduled speculative decoding (the DSpark method).

The public API is what this module exports (see `__all__`); everything else is private.
"""

from sparksched.curve import ThroughputCurve
from sparksched.scheduler import schedule, schedule_numpy, schedule_reference, schedule_torch, step_time_table
from sparksched.verify import VerifyResult, verify

__all__ = [
    "ThroughputCurve",
    "VerifyResult",
    "schedule",
    "schedule_numpy",
    "schedule_reference",
    "schedule_torch",
    "step_time_table",
    "verify",
]
__version__ = "0.1.0"
