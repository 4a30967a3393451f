"""Pruning: achieved sparsity, structured rewrites with consistent shapes, and a broken prune refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from optimizer_harness import DigitsModel, optimize_in_process

# Structured pruning without fine-tuning moves logits a lot; these tests check the rewrite,
# so they accept what validation would (rightly) refuse by default.
LOOSE = ["--tolerance", "cosine=0.5", "--tolerance", "mean_rel=2", "--tolerance", "top1=0.5"]


def _weights(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    inits = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    return {
        n.input[1]: inits[n.input[1]] for n in model.graph.node if n.op_type in ("Gemm", "MatMul", "Conv")
    }


def test_unstructured_pruning_reaches_the_requested_sparsity(digits_mlp: DigitsModel, out_dir: Path) -> None:
    run = optimize_in_process(
        digits_mlp.source("onnx"),
        "--output",
        out_dir,
        "--prune",
        "0.3",
        "--samples",
        digits_mlp.paths["samples"],
    )
    assert run.exit_code == 0, run.stdout + run.stderr
    report = run.report()
    weights = _weights(run.artifact_dir() / "model.onnx")
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    total = sum(w.size for w in weights.values())
    assert abs(zeros / total - 0.3) < 0.01
    assert report["pruning"]["unstructured_sparsity"] == round(zeros / total, 6)
    assert report["pruning"]["requested"] == 0.3


def test_structured_pruning_removes_neurons_and_rewrites_the_next_layer(
    digits_mlp: DigitsModel, out_dir: Path
) -> None:
    source = digits_mlp.source("onnx")
    run = optimize_in_process(
        source,
        "--output",
        out_dir,
        "--prune",
        "0.25",
        "--prune-structure",
        "structured",
        *LOOSE,
        "--samples",
        digits_mlp.paths["samples"],
    )
    assert run.exit_code == 0, run.stdout + run.stderr
    artifact = run.artifact_dir() / "model.onnx"
    before = sorted(w.shape for w in _weights(source).values())
    after = sorted(w.shape for w in _weights(artifact).values())
    # 64->128->64->10: the two hidden layers lose a quarter of their neurons, the next
    # layers the matching inputs; the 10 logits stay.
    assert before == [(10, 64), (64, 128), (128, 64)]
    assert after == [(10, 48), (48, 96), (96, 64)]
    pruning = run.report()["pruning"]
    assert (pruning["structured_removed"], pruning["structured_total"]) == (48, 192)
    assert pruning["size_after_bytes"] < pruning["size_before_bytes"]
    assert artifact.stat().st_size < source.stat().st_size
    onnx.checker.check_model(onnx.load(str(artifact)), full_check=True)
    session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": digits_mlp.x_test[:5]})[0].shape == (5, 10)


def test_structured_pruning_cuts_conv_channels_through_flatten(
    digits_cnn: DigitsModel, out_dir: Path
) -> None:
    run = optimize_in_process(
        digits_cnn.source("onnx"),
        "--output",
        out_dir,
        "--prune",
        "0.25",
        "--prune-structure",
        "structured",
        *LOOSE,
        "--samples",
        digits_cnn.paths["samples"],
    )
    assert run.exit_code == 0, run.stdout + run.stderr
    shapes = sorted(w.shape for w in _weights(run.artifact_dir() / "model.onnx").values())
    # conv1 16->12 channels, conv2 32->24 (and its inputs 12), fc1 reads 24*4*4 and has 48 outputs.
    assert shapes == [(10, 48), (12, 1, 3, 3), (24, 12, 3, 3), (48, 384)]
    session = ort.InferenceSession(str(run.artifact_dir() / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": digits_cnn.x_test[:3]})[0].shape == (3, 10)


def test_pruning_95_percent_fails_validation_and_writes_no_artifact(
    digits_mlp: DigitsModel, out_dir: Path, tmp_path: Path
) -> None:
    termination = tmp_path / "termination-log"
    run = optimize_in_process(
        digits_mlp.source("onnx"),
        "--output",
        out_dir,
        "--prune",
        "0.95",
        "--samples",
        digits_mlp.paths["samples"],
        "--termination-message",
        termination,
    )
    assert run.exit_code == 2, run.stdout + run.stderr
    assert "output 'logits'" in run.stderr
    assert "cosine" in run.stderr
    # Nothing at an artifact address: only the failure report, under failed/.
    assert sorted(p.name for p in out_dir.iterdir()) == ["failed"]
    (failed,) = (out_dir / "failed").iterdir()
    report = json.loads((failed / "report.json").read_text())
    assert report["verdict"] == "failed"
    assert report["artifact"] is None
    (validation,) = report["validation"]
    assert not validation["passed"]
    assert validation["cosine"] < validation["thresholds"]["cosine"]
    summary = json.loads(termination.read_text())
    assert summary["verdict"] == "failed"
    assert summary["artifact_uri"] == ""
    assert "logits" in summary["message"]
    assert summary["min_cosine"] < 0.98
