"""`helm lint` passes for the value sets the chart supports; the schema refuses wrong types."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.chart_helm import CHART, run_helm

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced-with-extras": {
        "operator": {"replicas": 2, "watchNamespaces": ["team-a"]},
        "networkPolicy": {"enabled": True},
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
    },
    "private-registry": {
        "images": {
            "tag": "0.2.0",
            "operator": "registry.example/mserve-operator",
            "pullSecrets": ["regcred"],
        },
        "artifactStore": {
            "uri": "s3://out/",
            "s3": {"endpoint": "https://s3.example", "credentialsSecret": "s3"},
        },
    },
    "metrics-off": {"metrics": {"enabled": False}},
}

BAD_VALUES: dict[str, dict[str, Any]] = {
    "replicas-not-a-number": {"operator": {"replicas": "two"}},
    "unknown-pull-policy": {"images": {"pullPolicy": "Sometimes"}},
    "unknown-top-level-key": {"operatr": {"replicas": 1}},
    "artifact-uri-scheme": {"artifactStore": {"uri": "ftp://models"}},
    "watch-namespace-not-a-list": {"operator": {"watchNamespaces": "team-a"}},
}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_passes(name: str, tmp_path: Path) -> None:
    result = run_helm("lint", str(CHART), "--strict", values=VALUE_SETS[name], tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", BAD_VALUES)
def test_schema_rejects_wrong_values(name: str, tmp_path: Path) -> None:
    result = run_helm("template", "mserve", str(CHART), values=BAD_VALUES[name], tmp_path=tmp_path)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
