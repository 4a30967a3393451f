"""Session fixtures: models built once per test run, and servers shared by a module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.models import (
    DigitsModel,
    build_datatypes_model,
    build_digits_mlp,
    build_fixed_batch_model,
    build_tiny_mlp,
)
from tests.support.serving import Server, serving


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def digits(model_dir: Path) -> DigitsModel:
    return build_digits_mlp(model_dir / "digits.onnx")


@pytest.fixture(scope="session")
def datatypes_model(model_dir: Path) -> Path:
    return build_datatypes_model(model_dir / "datatypes.onnx")


@pytest.fixture(scope="session")
def tiny_mlp(model_dir: Path) -> Path:
    return build_tiny_mlp(model_dir / "tiny.onnx")


@pytest.fixture(scope="session")
def fixed_batch_model(model_dir: Path) -> Path:
    return build_fixed_batch_model(model_dir / "fixed.onnx")


@pytest.fixture(scope="module")
def digits_server(digits: DigitsModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The digits MLP served without batching, small request limit for the 413 test."""
    log = tmp_path_factory.mktemp("digits-server") / "mserve.log"
    with serving(digits.path, "digits", log, "--max-request-bytes", "1000000") as server:
        yield server


@pytest.fixture(scope="module")
def datatypes_server(datatypes_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("datatypes-server") / "mserve.log"
    # Batching on here, so that every datatype also goes through concatenation and splitting.
    batching = ("--max-batch-size", "8", "--max-batch-delay-ms", "1")
    with serving(datatypes_model, "datatypes", log, *batching) as server:
        yield server
