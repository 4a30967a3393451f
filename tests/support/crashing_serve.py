"""Test-only launcher: `python -m tests.support.crashing_serve serve ...` runs the real `mserve`
CLI in which a run of a model named `crasher` whose input holds the value CRASH_VALUE
dereferences NULL: a real SIGSEGV in the inference thread, standing in for a native crash in
onnxruntime. It lives in the tests: no client of a real server can reach it."""

from __future__ import annotations

import ctypes
import sys
from typing import Any

import numpy as np
from mserve_runtime import onnx_model

CRASH_VALUE = 666.0
_run = onnx_model.OnnxModel.run


def _run_or_crash(self: onnx_model.OnnxModel, feed: dict[str, np.ndarray], *args: Any) -> Any:
    if self.name == "crasher" and any(np.any(a == CRASH_VALUE) for a in feed.values()):
        ctypes.string_at(0)
    return _run(self, feed, *args)


if __name__ == "__main__":
    onnx_model.OnnxModel.run = _run_or_crash  # type: ignore[method-assign]
    from mserve_cli.main import cli

    sys.exit(cli())
