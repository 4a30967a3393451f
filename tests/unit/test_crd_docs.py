"""docs/crd-reference.md is generated from the CRD; it must match what the generator writes now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_crd_reference_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "gen-crd-docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_crd_reference_documents_every_spec_field() -> None:
    text = (ROOT / "docs" / "crd-reference.md").read_text()
    for field in (
        "spec.model.uri",
        "spec.optimization.quantize",
        "spec.serving.gpu.count",
        "spec.artifactStore",
    ):
        assert f"`{field}`" in text
