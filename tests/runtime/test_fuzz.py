"""Schemathesis fuzzes every route of the server's own OpenAPI document: no 5xx, process alive."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.support.models import DigitsModel
from tests.support.serving import Server, serving


@pytest.fixture(scope="module")
def fuzz_server(digits: DigitsModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("fuzz") / "mserve.log"
    with serving(digits.path, "digits", log, "--max-batch-size", "8", "--max-batch-delay-ms", "1") as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(fuzz_server: Server):
    return schemathesis.openapi.from_url(f"{fuzz_server.admin_url}/openapi.json")


def _aim_at_served_model(case) -> None:
    # Half the cases name the served model, so the fuzzer reaches the codec and the model checks.
    params = case.path_parameters or {}
    if "model_name" in params and hash(repr(case.body)) % 2:
        params["model_name"] = "digits"
        if "model_version" in params:
            params["model_version"] = "1"


def test_no_server_errors(api_schema, fuzz_server: Server) -> None:
    # schemathesis' own pytest plugin does not load under pytest 9, so drive its strategies directly.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 11
    failures: list[str] = []
    for operation in operations:
        # The decoders behind POST get most of the examples; GET routes only parse a path.
        examples = 60 if operation.method.upper() == "POST" else 15

        @given(case=operation.as_strategy())
        @settings(
            max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def fuzz(case) -> None:
            _aim_at_served_model(case)
            response = case.call(base_url=fuzz_server.url, timeout=30)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} {case.body!r:.200}: {response.text:.300}"
                )
            assert fuzz_server.alive(), fuzz_server.logs()

        fuzz()
    assert not failures, "\n".join(failures)


def test_server_survived_the_fuzzing(fuzz_server: Server) -> None:
    import httpx

    assert httpx.get(f"{fuzz_server.url}/v2/health/ready").status_code == 200
    assert "Traceback" not in fuzz_server.logs()


def test_openapi_document_lists_every_route(fuzz_server: Server) -> None:
    import httpx

    doc = httpx.get(f"{fuzz_server.admin_url}/openapi.json").json()
    paths = set(doc["paths"])
    plain = doc["paths"]["/v2/models/{model_name}"]["get"]["parameters"]
    assert [p["name"] for p in plain] == ["model_name"]
    for suffix in ("", "/ready", "/infer"):
        assert f"/v2/models/{{model_name}}{suffix}" in paths
        assert f"/v2/models/{{model_name}}/versions/{{model_version}}{suffix}" in paths
    assert {
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v1/models/{model_name}:predict",
    } <= paths
    assert "/metrics" not in paths  # the admin port's, not part of the serving API
