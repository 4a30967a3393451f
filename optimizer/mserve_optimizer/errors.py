"""The optimizer's two failure kinds, each mapped once to an exit code by the CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mserve_contract.exit_codes import OptimizerExit

if TYPE_CHECKING:
    from mserve_contract.optimization_report import OptimizationReport


class BadInputError(Exception):
    """The source, an option or a URI cannot work. The message is one line, fit to print."""

    exit_code = OptimizerExit.BAD_INPUT


class ValidationFailedError(Exception):
    """The optimized model misses its thresholds. Carries the report that says by how much."""

    exit_code = OptimizerExit.VALIDATION_FAILED

    def __init__(self, report: OptimizationReport) -> None:
        super().__init__(report.message)
        self.report = report
