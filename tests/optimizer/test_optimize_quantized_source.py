"""An artifact mserve made, given back as a source: refused by an explicit INT8 mode, served by auto."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mserve_contract.exit_codes import OptimizerExit
from optimizer_harness import DigitsModel, accuracy_of, optimize_in_process


@pytest.fixture(scope="module")
def quantized_artifact(digits_mlp: DigitsModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("first-pass")
    run = optimize_in_process(
        digits_mlp.source("onnx"), "--output", out, "--quantize", "dynamic-int8", "--latency-batch", "4"
    )
    assert run.exit_code == 0, run.stdout + run.stderr
    return run.artifact_dir() / "model.onnx"


@pytest.mark.parametrize("mode", ["dynamic-int8", "static-int8"])
def test_explicit_int8_mode_refuses_a_quantized_source(
    mode: str, quantized_artifact: Path, digits_mlp: DigitsModel, tmp_path: Path
) -> None:
    summary = tmp_path / "termination"
    run = optimize_in_process(
        quantized_artifact,
        "--output",
        tmp_path / "out",
        "--quantize",
        mode,
        "--samples",
        digits_mlp.paths["samples"],
        "--termination-message",
        summary,
    )
    assert run.exit_code == OptimizerExit.BAD_INPUT
    (line,) = run.stderr.strip().splitlines()
    assert "already quantized" in line, line
    assert "MatMulInteger" in line, line
    assert f"--quantize {mode}" in line, line
    assert "zip()" not in run.stdout + run.stderr
    assert "already quantized" in json.loads(summary.read_text())["message"]


def test_auto_serves_a_quantized_source_as_given(
    quantized_artifact: Path, digits_mlp: DigitsModel, tmp_path: Path
) -> None:
    run = optimize_in_process(
        quantized_artifact,
        "--output",
        tmp_path,
        "--quantize",
        "auto",
        "--samples",
        digits_mlp.paths["samples"],
        "--latency-batch",
        "4",
    )
    assert run.exit_code == 0, run.stdout + run.stderr
    report = run.report()
    assert report["chosen"].startswith("as given")
    (candidate,) = report["candidates"]
    assert "already quantized" in candidate["note"]
    served = run.artifact_dir() / "model.onnx"
    assert accuracy_of(served, digits_mlp.x_test, digits_mlp.y_test) == pytest.approx(
        accuracy_of(quantized_artifact, digits_mlp.x_test, digits_mlp.y_test), abs=0.003
    )
