"""How `mserve optimize` ends, as its exit code: the optimizer sets it, the operator's Job reads it."""

from __future__ import annotations

from enum import IntEnum


class OptimizerExit(IntEnum):
    PASSED = 0
    # The source, an option or a URI cannot work, or the optimizer itself failed; one line says which.
    BAD_INPUT = 1
    # The optimized model missed its thresholds; no artifact was written.
    VALIDATION_FAILED = 2


# Exit codes no retry can fix: the Job fails at once instead of spending its backoff.
PERMANENT_EXITS = (OptimizerExit.BAD_INPUT, OptimizerExit.VALIDATION_FAILED)
