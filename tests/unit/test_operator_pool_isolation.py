"""`spec.isolation` of a ModelPool: what reaches the pool's server, and careless values."""

from __future__ import annotations

import pytest
from mserve_operator.builders.pool import build_pool_deployment
from mserve_operator.pool_spec import parse_pool_spec
from pydantic import ValidationError

from tests.unit.operator_fixtures import settings
from tests.unit.test_operator_pools import MEMBERS, POOL


def _server_env(spec: dict) -> dict[str, str]:
    deployment = build_pool_deployment(POOL, parse_pool_spec(spec), MEMBERS, settings())
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in server["env"]}


def test_process_isolation_reaches_the_runtime() -> None:
    assert _server_env({"isolation": "Process"})["MSERVE_POOL_ISOLATION"] == "process"


@pytest.mark.parametrize("spec", [{}, {"isolation": "Shared"}])
def test_shared_is_the_default_and_sets_nothing(spec: dict) -> None:
    assert "MSERVE_POOL_ISOLATION" not in _server_env(spec)


@pytest.mark.parametrize("value", ["process", "PROCESS", "Thread", "", 1, None])
def test_a_careless_isolation_is_refused_naming_the_field(value: object) -> None:
    with pytest.raises(ValidationError, match="isolation"):
        parse_pool_spec({"isolation": value})
