"""Helpers for the optimizer tests: the digits models they train and ways to run `mserve optimize`."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
MSERVE = Path(sys.executable).parent / "mserve"


def load_example(name: str, relative: str):  # -> module
    spec = importlib.util.spec_from_file_location(name, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@dataclass
class DigitsModel:
    arch: str
    shape: str  # the --input-shape flag value
    paths: dict[str, Path]
    accuracy: float
    x_test: np.ndarray
    y_test: np.ndarray

    def source(self, fmt: str) -> Path:
        return self.paths[fmt]


def make_digits(arch: str, epochs: int, folder: Path) -> DigitsModel:
    train = load_example("digits_train_example", "examples/digits/train.py")
    model, accuracy = train.train(arch, epochs)
    paths = train.save_all(model, arch, folder)
    _, x_test, _, y_test = train.load_split(arch)
    shape = "x=-1,64" if arch == "mlp" else "x=-1,1,8,8"
    return DigitsModel(arch, shape, paths, accuracy, x_test, y_test)


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str
    seconds: float
    output: Path | None = None

    def artifact_dir(self) -> Path:
        line = next(line for line in self.stdout.splitlines() if line.startswith(("passed:", "cached:")))
        return Path(line.split(": ", 1)[1].rsplit(" (", 1)[0]).parent

    def report(self) -> dict:
        return json.loads((self.artifact_dir() / "report.json").read_text())


def optimize_in_process(*args: str | Path) -> Run:
    """`mserve optimize ...` in this process (torch and onnxruntime stay imported between runs)."""
    from mserve_optimizer.cli import optimize

    started = time.perf_counter()
    result = CliRunner().invoke(optimize, [str(a) for a in args], catch_exceptions=False)
    return Run(result.exit_code, result.stdout, result.stderr, time.perf_counter() - started)


def optimize_subprocess(
    *args: str | Path, env: dict[str, str] | None = None, python_prelude: str = ""
) -> Run:
    """`mserve optimize ...` as its own process, as the Job runs it."""
    if python_prelude:
        code = f"{python_prelude}\nimport sys\nfrom mserve_cli.main import cli\nsys.exit(cli())"
        command = [sys.executable, "-c", code, "optimize", *map(str, args)]
    else:
        command = [str(MSERVE), "optimize", *map(str, args)]
    started = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}, cwd=REPO
    )
    return Run(done.returncode, done.stdout, done.stderr, time.perf_counter() - started)


def accuracy_of(model_path: Path, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    return float((logits.argmax(1) == y).mean())
