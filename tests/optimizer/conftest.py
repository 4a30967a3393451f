"""Fixtures for the optimizer tests: digits models trained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from optimizer_harness import DigitsModel, make_digits

from tests.support.s3_store import moto_endpoint, s3  # noqa: F401


@pytest.fixture(scope="session")
def digits_mlp(tmp_path_factory: pytest.TempPathFactory) -> DigitsModel:
    return make_digits("mlp", 30, tmp_path_factory.mktemp("digits-mlp"))


@pytest.fixture(scope="session")
def digits_cnn(tmp_path_factory: pytest.TempPathFactory) -> DigitsModel:
    return make_digits("cnn", 15, tmp_path_factory.mktemp("digits-cnn"))


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"
