"""Bad input: exit 1, one line naming the problem, no traceback, and the termination message says so."""

from __future__ import annotations

import json
import socket
import zipfile
from pathlib import Path

import pytest
from optimizer_harness import DigitsModel, optimize_in_process, optimize_subprocess


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _garbage(tmp: Path) -> Path:
    path = tmp / "model.onnx"
    path.write_bytes(bytes(range(256)) * 40)
    return path


def _plain_zip(tmp: Path) -> Path:
    path = tmp / "weights.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weights/data.bin", b"\0" * 64)
    return path


CASES = {
    "garbage file": (lambda d, tmp: [_garbage(tmp)], "not a"),
    "unsupported format": (lambda d, tmp: [_plain_zip(tmp)], "neither TorchScript nor"),
    "format mismatch": (lambda d, tmp: [d.source("onnx"), "--format", "torchscript"], "the file is onnx"),
    "torch source without input shape": (lambda d, tmp: [d.source("pt2")], "--input-shape"),
    "unknown quantization mode": (
        lambda d, tmp: [d.source("onnx"), "--quantize", "int3"],
        "quantization mode",
    ),
    "unknown device": (lambda d, tmp: [d.source("onnx"), "--quantize", "auto", "--device", "tpu"], "device"),
    "auto in capitals": (lambda d, tmp: [d.source("onnx"), "--quantize", "AUTO"], "quantization mode"),
    "missing file": (lambda d, tmp: [tmp / "nope.onnx"], "no such file"),
    "unreachable uri": (
        lambda d, tmp: [f"http://127.0.0.1:{_free_port()}/model.onnx"],
        ": connection refused",
    ),
    "bad input shape": (lambda d, tmp: [d.source("onnx"), "--input-shape", "x=-1,abc"], "--input-shape"),
    "wrong input name": (
        lambda d, tmp: [d.source("onnx"), "--input-shape", "y=-1,64"],
        "model's inputs are x",
    ),
    "bad tolerance": (lambda d, tmp: [d.source("onnx"), "--tolerance", "speed=2"], "--tolerance"),
    "prune out of range": (lambda d, tmp: [d.source("onnx"), "--prune", "1.5"], "--prune"),
    "samples that do not fit": (
        lambda d, tmp: [d.source("onnx"), "--samples", d.source("onnx")],
        "--samples",
    ),
    "missing --output": (lambda d, tmp: ["model.onnx", "--no-output-flag"], "usage"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_1_with_one_line(case: str, digits_mlp: DigitsModel, tmp_path: Path) -> None:
    make_args, expected = CASES[case]
    termination = tmp_path / "termination-log"
    args = make_args(digits_mlp, tmp_path)
    if case != "missing --output":
        args += ["--output", tmp_path / "out"]
    run = optimize_subprocess(*args, "--termination-message", termination)
    assert run.exit_code == 1, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr + run.stdout
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 or (case == "missing --output" and "Error" in run.stderr), run.stderr
    assert expected.lower() in run.stderr.lower(), run.stderr
    summary = json.loads(termination.read_text())
    assert summary["verdict"] == "failed"
    assert summary["message"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    run = optimize_subprocess(_garbage(tmp_path), "--output", tmp_path / "out", "--debug")
    assert run.exit_code == 1
    assert "Traceback" in run.stderr


def test_pt2_with_a_static_batch_axis_is_refused_with_the_fix(
    digits_mlp: DigitsModel, tmp_path: Path
) -> None:
    import torch
    from optimizer_harness import load_example

    train = load_example("digits_train_example", "examples/digits/train.py")
    model = train.build("mlp").eval()
    path = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(2, 64),)), path)
    run = optimize_in_process(path, "--input-shape", "x=-1,64", "--output", tmp_path / "out")
    assert run.exit_code == 1
    assert "static batch axis" in run.stderr
    assert "torch.export.Dim" in run.stderr
    # Asking for that fixed batch works.
    fixed = optimize_in_process(path, "--input-shape", "x=2,64", "--output", tmp_path / "out")
    assert fixed.exit_code == 0, fixed.stdout + fixed.stderr


@pytest.mark.parametrize(
    ("value", "expected"), [("-1", "must be a positive number"), ("1e9", "must be a whole number")]
)
def test_a_careless_size_cap_is_named(value: str, expected: str, tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{_free_port()}/model.onnx"

    run = optimize_subprocess(uri, "--output", tmp_path / "out", env={"MSERVE_FETCH_MAX_BYTES": value})

    assert run.exit_code == 1
    assert run.stderr.startswith(f"error: MSERVE_FETCH_MAX_BYTES {expected}"), run.stderr
