"""Every quantization mode on the digits MLP and CNN, from TorchScript, .pt2 and ONNX; accuracy holds."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from optimizer_harness import DigitsModel, accuracy_of, optimize_in_process

STEPS = [
    "fetch",
    "load",
    "export",
    "check",
    "graph-opt",
    "prune",
    "quantize",
    "validate",
    "latency",
    "session",
    "write",
]
# Held-out accuracy may drop by at most this much (the bar for dynamic INT8 and FP16).
ACCURACY_POINTS = {"none": 0.005, "dynamic-int8": 0.01, "fp16": 0.01, "static-int8": 0.03}

CASES = [
    ("mlp", "pt2", "dynamic-int8"),
    ("mlp", "ts", "fp16"),
    ("mlp", "onnx", "static-int8"),
    ("mlp", "ts", "dynamic-int8"),
    ("mlp", "pt2", "none"),
    ("cnn", "pt2", "fp16"),
    ("cnn", "ts", "dynamic-int8"),
    ("cnn", "onnx", "static-int8"),
    ("cnn", "onnx", "dynamic-int8"),
]


@pytest.mark.parametrize(("arch", "fmt", "mode"), CASES, ids=["-".join(case) for case in CASES])
def test_mode_keeps_held_out_accuracy(
    arch: str, fmt: str, mode: str, digits_mlp: DigitsModel, digits_cnn: DigitsModel, out_dir: Path
) -> None:
    digits = digits_mlp if arch == "mlp" else digits_cnn
    args = [digits.source(fmt), "--output", out_dir, "--quantize", mode, "--samples", digits.paths["samples"]]
    if fmt != "onnx":
        args += ["--input-shape", digits.shape]
    run = optimize_in_process(*args, "--latency-batch", "8")
    assert run.exit_code == 0, run.stdout + run.stderr
    report = run.report()
    assert report["verdict"] == "passed"
    artifact = run.artifact_dir() / "model.onnx"
    accuracy = accuracy_of(artifact, digits.x_test, digits.y_test)
    assert accuracy >= digits.accuracy - ACCURACY_POINTS[mode], (accuracy, digits.accuracy, report["chosen"])
    # The batch axis stayed dynamic: batch 1 and batch 7 both run.
    session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        assert session.run(None, {"x": digits.x_test[:batch]})[0].shape == (batch, 10)
    if mode == "fp16":
        assert session.get_inputs()[0].type == "tensor(float)"  # IO stays float32
        assert session.get_outputs()[0].type == "tensor(float)"


def test_steps_are_printed_in_order_with_durations(digits_mlp: DigitsModel, out_dir: Path) -> None:
    run = optimize_in_process(digits_mlp.source("ts"), "--input-shape", digits_mlp.shape, "--output", out_dir)
    assert run.exit_code == 0, run.stdout
    done = [line.split()[0] for line in run.stdout.splitlines() if " done in " in line]
    assert done == STEPS
    # The report is written by the last step, so it times every step before that one.
    assert [step["name"] for step in run.report()["steps"]] == STEPS[:-1]


def test_report_records_the_measured_session_options(
    digits_mlp: DigitsModel, out_dir: Path, tmp_path: Path
) -> None:
    from mserve_contract.optimization_report import SessionOptions, TerminationSummary
    from mserve_optimizer.session_search import MARGIN
    from mserve_runtime.cpu_limit import default_threads

    termination = tmp_path / "termination-message"
    run = optimize_in_process(
        digits_mlp.source("onnx"), "--output", out_dir, "--quantize", "dynamic-int8",
        "--termination-message", termination,
    )  # fmt: skip
    assert run.exit_code == 0, run.stdout
    report = run.report()
    trials = report["session_trials"]
    assert [t["name"] for t in trials][:2] == ["runtime defaults", "one thread"]
    assert {"spinning threads", "parallel execution", "graph level extended"} <= {t["name"] for t in trials}
    assert all(t["runs_per_s"] > 0 for t in trials)
    # As the runtime runs them: one thread per run leaves room for a run per CPU.
    assert trials[1]["concurrent_runs"] == default_threads() > trials[0]["concurrent_runs"] == 1
    chosen = SessionOptions.model_validate(report["session_options"])
    speed = {SessionOptions.model_validate(t["options"]): t["runs_per_s"] for t in trials}
    assert chosen in speed
    defaults = speed[SessionOptions()]
    if chosen == SessionOptions():  # nothing beat the runtime's defaults by the margin
        assert max(speed.values()) < defaults * (1 + MARGIN) or max(speed.values()) == defaults
    else:  # the fastest, and by more than the margin
        assert speed[chosen] == max(speed.values()) >= defaults * (1 + MARGIN)
    # The operator learns them from the termination message.
    assert TerminationSummary.parse_termination_message(termination.read_text()).session_options == chosen


def _independent_figures(original: np.ndarray, optimized: np.ndarray) -> dict[str, float]:
    a, b = original.astype(np.float64), optimized.astype(np.float64)
    cosines = [
        float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y))) for x, y in zip(a, b, strict=True)
    ]
    return {
        "max_abs_error": float(np.max(np.abs(a - b))),
        "mean_rel_error": float(np.sum(np.abs(a - b)) / np.sum(np.abs(a))),
        "cosine": float(np.mean(cosines)),
        "cosine_min": float(np.min(cosines)),
        "top1_agreement": float(np.mean(a.argmax(1) == b.argmax(1))),
    }


def test_report_matches_an_independent_recomputation(digits_mlp: DigitsModel, out_dir: Path) -> None:
    source = digits_mlp.source("onnx")
    run = optimize_in_process(
        source, "--output", out_dir, "--quantize", "dynamic-int8", "--samples", digits_mlp.paths["samples"]
    )
    assert run.exit_code == 0, run.stdout
    report = run.report()
    artifact = run.artifact_dir() / "model.onnx"

    assert report["source"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert report["source"]["size_bytes"] == source.stat().st_size
    assert report["artifact"]["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert report["artifact"]["size_bytes"] == artifact.stat().st_size
    assert report["digest"] == run.artifact_dir().name
    assert report["samples"] == len(digits_mlp.x_test)
    assert {"onnx", "onnxruntime", "torch"} <= set(report["versions"])
    assert report["versions"]["onnxruntime"] == ort.__version__

    outputs = {}
    for name, path in (("original", source), ("optimized", artifact)):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        # Batches of 32 as the optimizer feeds them: dynamic INT8 takes its activation
        # ranges per call, so its answers depend (slightly) on what shares the batch.
        chunks = [session.run(None, {"x": digits_mlp.x_test[i : i + 32]})[0] for i in range(0, 450, 32)]
        outputs[name] = np.concatenate(chunks)
    expected = _independent_figures(outputs["original"], outputs["optimized"])
    (validation,) = report["validation"]
    assert validation["name"] == "logits"
    for key, value in expected.items():
        assert validation[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert validation["passed"]
    assert validation["thresholds"]["cosine"] == 0.99

    latency = report["latency"]
    assert latency["ratio_small"] == pytest.approx(
        latency["original_ms_small"] / latency["optimized_ms_small"], 1e-3
    )
    assert latency["ratio_large"] == pytest.approx(
        latency["original_ms_large"] / latency["optimized_ms_large"], 1e-3
    )
    assert (latency["batch_small"], latency["batch_large"]) == (1, 32)

    quantized = {node.op_type for node in onnx.load(str(artifact)).graph.node}
    assert quantized & {"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}


def test_higher_graph_levels_still_quantize(digits_cnn: DigitsModel, out_dir: Path) -> None:
    source = digits_cnn.source("onnx")
    run = optimize_in_process(
        source,
        "--output",
        out_dir,
        "--quantize",
        "dynamic-int8",
        "--graph-level",
        "extended",
        "--samples",
        digits_cnn.paths["samples"],
    )
    assert run.exit_code == 0, run.stdout + run.stderr
    artifact = run.artifact_dir() / "model.onnx"
    assert artifact.stat().st_size < 0.5 * source.stat().st_size
    assert accuracy_of(artifact, digits_cnn.x_test, digits_cnn.y_test) >= digits_cnn.accuracy - 0.01


def test_static_int8_without_calibration_data_warns(digits_mlp: DigitsModel, out_dir: Path) -> None:
    run = optimize_in_process(digits_mlp.source("onnx"), "--output", out_dir, "--quantize", "static-int8")
    assert run.exit_code == 0, run.stdout + run.stderr
    assert "WARNING: static-int8 calibrated on GENERATED inputs" in run.stdout
    warnings = run.report()["warnings"]
    assert any("GENERATED" in w for w in warnings)
    assert any("validated on generated inputs" in w for w in warnings)


def test_static_int8_with_calibration_data(digits_mlp: DigitsModel, out_dir: Path) -> None:
    samples = digits_mlp.paths["samples"]
    run = optimize_in_process(
        digits_mlp.source("onnx"),
        "--output",
        out_dir,
        "--quantize",
        "static-int8",
        "--calibration",
        samples,
        "--samples",
        samples,
    )
    assert run.exit_code == 0, run.stdout + run.stderr
    report = run.report()
    # Real inputs given: no generated-input warning (a slower-than-fp32 one may come, measured).
    assert not [w for w in report["warnings"] if "generated" in w.lower()], report["warnings"]
    assert report["options"]["calibration_sha256"] == report["options"]["samples_sha256"]
    assert len(report["candidates"]) >= 3
    assert accuracy_of(run.artifact_dir() / "model.onnx", digits_mlp.x_test, digits_mlp.y_test) >= (
        digits_mlp.accuracy - 0.03
    )
