"""ONNX-only optimization works where torch cannot be imported (the runtime image has no torch)."""

from __future__ import annotations

from pathlib import Path

import pytest
from optimizer_harness import DigitsModel, optimize_subprocess

# Importing torch (or anything that imports it) raises ImportError in this process.
BLOCK_TORCH = "import sys\nsys.modules['torch'] = None"


@pytest.mark.parametrize("mode", ["dynamic-int8", "static-int8", "fp16"])
def test_onnx_optimization_without_torch(mode: str, digits_mlp: DigitsModel, tmp_path: Path) -> None:
    run = optimize_subprocess(
        digits_mlp.source("onnx"),
        "--output",
        tmp_path,
        "--quantize",
        mode,
        "--samples",
        digits_mlp.paths["samples"],
        python_prelude=BLOCK_TORCH,
    )
    assert run.exit_code == 0, run.stderr
    assert run.stdout.splitlines()[-2].startswith("passed:")


def test_torch_source_without_torch_is_a_clear_error(digits_mlp: DigitsModel, tmp_path: Path) -> None:
    run = optimize_subprocess(
        digits_mlp.source("ts"), "--output", tmp_path, "--input-shape", "x=-1,64", python_prelude=BLOCK_TORCH
    )
    assert run.exit_code == 1
    assert "torch" in run.stderr
    assert "Traceback" not in run.stderr
