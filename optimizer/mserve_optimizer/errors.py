"""The optimizer's two failure kinds, each mapped once to an exit code by the CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mserve_contract.optimization_report import OptimizationReport


class BadInputError(Exception):
    """The source, an option or a URI cannot work (exit 1). The message is one line, fit to print."""

    exit_code = 1


class ValidationFailedError(Exception):
    """The optimized model misses its thresholds (exit 2). Carries the report that says by how much."""

    exit_code = 2

    def __init__(self, report: OptimizationReport) -> None:
        super().__init__(report.message)
        self.report = report
