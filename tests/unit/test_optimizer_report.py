"""The report contract: the termination message the operator parses, small and lossless."""

from __future__ import annotations

import pytest
from mserve_contract.optimization_report import (
    FileFacts,
    LatencyFigures,
    OptimizationReport,
    OutputValidation,
    SessionOptions,
    SessionTrial,
    TerminationSummary,
)
from pydantic import ValidationError


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
    assert parsed.digest == "d" * 64
    assert parsed.latency_ratio_b1 == 2.0


def test_garbage_is_not_a_termination_message() -> None:
    for text in ("", "exit 1", "{}", '{"verdict": "maybe"}'):
        with pytest.raises(ValueError, match="termination message"):
            TerminationSummary.parse_termination_message(text)


def test_report_json_round_trip() -> None:
    report = _report()
    assert OptimizationReport.model_validate_json(report.model_dump_json()) == report


CHOSEN = SessionOptions(intra_op_threads=1, allow_spinning=True, graph_level="extended")


def test_session_options_reach_the_operator_through_the_termination_message() -> None:
    report = _report()
    report.session_options = CHOSEN
    report.session_trials = [
        SessionTrial(name="one thread", options=CHOSEN, concurrent_runs=2, runs_per_s=80.5)
    ]
    again = OptimizationReport.model_validate_json(report.model_dump_json())
    assert again.session_options == CHOSEN
    assert again.session_trials == report.session_trials
    text = report.summary("s3://a/d/model.onnx").to_termination_message()
    assert TerminationSummary.parse_termination_message(text).session_options == CHOSEN


def test_session_options_read_both_spellings() -> None:
    # snake_case in the report and MSERVE_SESSION_OPTIONS, camelCase in the ModelService status.
    camel = CHOSEN.model_dump(by_alias=True)
    assert camel["intraOpThreads"] == 1
    assert SessionOptions.model_validate(camel) == CHOSEN
    assert SessionOptions.model_validate(CHOSEN.model_dump()) == CHOSEN
    assert SessionOptions.model_validate({}) == SessionOptions()


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ({"intra_op_threads": -1}, "intra_op_threads"),
        ({"inter_op_threads": 10**9}, "inter_op_threads"),
        ({"intra_op_threadz": 2}, "intra_op_threadz"),
        ({"execution_mode": "turbo"}, "execution_mode"),
        ({"graph_level": "ALL!"}, "graph_level"),
        ({"allow_spinning": "maybe"}, "allow_spinning"),
    ],
)
def test_careless_session_options_are_refused_naming_the_key(value: dict, named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        SessionOptions.model_validate(value)


def test_a_termination_message_with_bad_session_options_is_refused() -> None:
    text = TerminationSummary(verdict="passed").to_termination_message()
    hostile = text[:-1] + ',"session_options":{"intra_op_threads":-4}}'
    with pytest.raises(ValueError, match="intra_op_threads"):
        TerminationSummary.parse_termination_message(hostile)
