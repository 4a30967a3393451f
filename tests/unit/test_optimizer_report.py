"""The report contract: the termination message the operator parses, small and lossless."""

from __future__ import annotations

import pytest
from mserve_contract.optimization_report import (
    FileFacts,
    LatencyFigures,
    OptimizationReport,
    OutputValidation,
    TerminationSummary,
)


def _report(message: str = "ok") -> OptimizationReport:
    return OptimizationReport(
        digest="d" * 64,
        optimizer_version="0.1.0",
        source=FileFacts(uri="s3://m/model.onnx", sha256="a" * 64, size_bytes=1000),
        source_format="onnx",
        artifact=FileFacts(uri="s3://a/d/model.onnx", sha256="b" * 64, size_bytes=250),
        options={"quantize": "dynamic-int8"},
        validation=[
            OutputValidation(
                name="logits",
                max_abs_error=0.1,
                mean_rel_error=0.02,
                cosine=0.999,
                cosine_min=0.99,
                top1_agreement=0.995,
                passed=True,
            ),
            OutputValidation(
                name="aux", max_abs_error=0.1, mean_rel_error=0.02, cosine=0.995, cosine_min=0.98, passed=True
            ),
        ],
        latency=LatencyFigures(
            original_ms_small=2.0,
            optimized_ms_small=1.0,
            original_ms_large=8.0,
            optimized_ms_large=2.0,
            ratio_small=2.0,
            ratio_large=4.0,
        ),
        verdict="passed",
        message=message,
    )


def test_summary_round_trips_through_the_termination_message() -> None:
    summary = _report().summary("s3://a/d/model.onnx")
    text = summary.to_termination_message()
    parsed = TerminationSummary.parse_termination_message(text)
    assert parsed == summary
    assert (parsed.size_ratio, parsed.latency_ratio_b1, parsed.latency_ratio_bn) == (0.25, 2.0, 4.0)
    assert (parsed.min_cosine, parsed.top1_agreement, parsed.quantize) == (0.995, 0.995, "dynamic-int8")


def test_a_long_message_is_cut_not_the_figures() -> None:
    text = _report("x" * 20_000).summary("s3://a/d/model.onnx").to_termination_message()
    assert len(text.encode()) < 4096
    parsed = TerminationSummary.parse_termination_message(text)
    assert parsed.message.endswith("...")
    assert parsed.artifact_digest == "d" * 64
    assert parsed.latency_ratio_b1 == 2.0


def test_garbage_is_not_a_termination_message() -> None:
    for text in ("", "exit 1", "{}", '{"verdict": "maybe"}'):
        with pytest.raises(ValueError, match="termination message"):
            TerminationSummary.parse_termination_message(text)


def test_report_json_round_trip() -> None:
    report = _report()
    assert OptimizationReport.model_validate_json(report.model_dump_json()) == report
