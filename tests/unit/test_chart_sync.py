"""The chart's CRD and RBAC rules are copies of crds/ (hack/sync-chart.sh makes them)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.chart_helm import CHART, ROOT

FIX = "run hack/sync-chart.sh"


def is_crd(path: Path) -> bool:
    """The rule hack/sync-chart.sh uses: CRDs go to crds/, everything else to files/."""
    return re.search(r"^kind: CustomResourceDefinition", path.read_text(), re.MULTILINE) is not None


def test_chart_crds_are_identical_to_crds_folder() -> None:
    sources = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml") if is_crd(p)}
    copies = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    assert sources, "no CRD in crds/"
    assert copies == sources, FIX


def test_chart_rbac_rules_are_identical_to_crds_folder() -> None:
    sources = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml") if not is_crd(p)}
    copies = {p.name: p.read_text() for p in (CHART / "files").glob("*.yaml")}
    assert copies == sources, FIX
