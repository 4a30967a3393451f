"""Run the `helm` binary on charts/mserve for the chart tests (no cluster needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mserve"


def helm_binary() -> str:
    """helm from $HELM, PATH, or hack/build.sh's cache (`make helm` builds it)."""
    candidates = [os.environ.get("HELM", ""), shutil.which("helm") or ""]
    versions = dict(
        line.split("#")[0].strip().split("=", 1)
        for line in (ROOT / "hack" / "versions.env").read_text().splitlines()
        if "=" in line.split("#")[0]
    )
    cache = Path(os.environ.get("MSERVE_CACHE", Path.home() / ".cache" / "mserve"))
    candidates.append(str(cache / "bin" / f"helm-{versions.get('HELM_VERSION', '')}"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    if os.environ.get("CI"):
        pytest.fail("helm not found: `make helm` builds it (hack/build.sh helm)")
    pytest.skip("helm not found: run `make helm`")


def run_helm(
    *args: str, values: dict[str, Any] | None = None, tmp_path: Path | None = None
) -> subprocess.CompletedProcess:
    command = [helm_binary(), *args]
    if values is not None:
        assert tmp_path is not None
        values_file = tmp_path / "values.yaml"
        values_file.write_text(yaml.safe_dump(values))
        command += ["-f", str(values_file)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def render(tmp_path: Path, values: dict[str, Any] | None = None, *extra: str) -> list[dict]:
    """`helm template` the chart and return its documents; fails with helm's message."""
    result = run_helm(
        "template",
        "mserve",
        str(CHART),
        "--namespace",
        "mserve-system",
        *extra,
        values=values or {},
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def container_env(deployment: dict) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}
