"""sparksched: confidence-scheduled speculative decoding (the DSpark method).

The public API is what this module exports (see `__all__`); everything else is private.
"""

from sparksched.curve import ThroughputCurve

__all__ = ["ThroughputCurve"]
__version__ = "0.1.0"
