"""The chart README's values table names every value a platform team can set."""

from __future__ import annotations

from typing import Any

import yaml

from tests.support.chart_helm import CHART


def leaf_keys(values: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if (
            isinstance(value, dict)
            and value
            and key not in {"resources", "podSecurityContext", "securityContext"}
        ):
            keys += leaf_keys(value, path)
        else:
            keys.append(path)
    return keys


def test_every_value_is_in_the_readme_table() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [key for key in leaf_keys(values) if key.rsplit(".", 1)[-1] not in readme]
    assert not missing, f"values missing from charts/mserve/README.md: {missing}"
