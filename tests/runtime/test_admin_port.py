"""The admin port (MSERVE_ADMIN_PORT): /metrics, /openapi.json and /docs move there from the
serving port; health answers on both; careless access settings stop start-up by name."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.models import DigitsModel
from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.serving import MSERVE, Server, serving, wait_until_ready

GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}


def test_metrics_and_docs_live_on_the_admin_port_only(digits_server: Server) -> None:
    for path in ("/metrics", "/openapi.json", "/docs"):
        assert httpx.get(f"{digits_server.url}{path}").status_code == 404, path
        assert httpx.get(f"{digits_server.admin_url}{path}").status_code == 200, path
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert httpx.get(f"{digits_server.url}{path}").status_code == 200, path
        assert httpx.get(f"{digits_server.admin_url}{path}").status_code == 200, path
    # Inference is not served on the admin port.
    assert httpx.post(f"{digits_server.admin_url}/v2/models/digits/infer", json=GOOD).status_code == 404
    document = httpx.get(f"{digits_server.admin_url}/openapi.json").json()
    assert "/v2/models/{model_name}/infer" in document["paths"]
    assert "securitySchemes" not in document["components"]  # no authentication here


def test_docs_ui_can_be_switched_off_and_the_document_says_how_to_authenticate(
    digits: DigitsModel, tmp_path: Path
) -> None:
    (tmp_path / "keys").mkdir()
    args = ("--no-docs-ui", "--auth", "apiKey", "--api-keys-dir", str(tmp_path / "keys"))
    with serving(digits.path, "digits", tmp_path / "mserve.log", *args) as server:
        assert httpx.get(f"{server.admin_url}/docs").status_code == 404
        document = httpx.get(f"{server.admin_url}/openapi.json").json()
        assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}
        assert document["components"]["securitySchemes"]["apiKey"]["name"] == "X-API-Key"
        assert document["paths"]["/v2/health/ready"]["get"]["security"] == []
        # No key is needed on the admin port (the NetworkPolicy decides who reaches it).
        assert httpx.get(f"{server.admin_url}/metrics").status_code == 200
        assert httpx.get(f"{server.url}/metrics").status_code == 401


def test_admin_port_zero_picks_a_free_port_and_logs_it(digits: DigitsModel, tmp_path: Path) -> None:
    args = ("--admin-port", "0")
    with serving(digits.path, "digits", tmp_path / "mserve.log", *args, wait_ready=False) as server:
        found = wait_until(
            "the admin port in the log", lambda: re.search(r"on plain HTTP :(\d+)", server.logs()), 30, 0.1
        )
        server.admin_port = int(found.group(1))
        assert server.admin_port != 0
        wait_until_ready(server)
        assert "mserve_usage_requests_total" in server.metrics()


def _start_fails(model: Path, *args: str, env: dict[str, str] | None = None) -> str:
    import os

    command = [str(MSERVE), "serve", str(model), "--port", "0", "--grpc-port", "0", *args]
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )
    said = out.stdout + out.stderr
    assert out.returncode == 2, said
    assert "Traceback" not in said
    return said


def test_a_taken_admin_port_stops_start_up_naming_it(digits: DigitsModel) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        said = _start_fails(digits.path, "--host", "127.0.0.1", "--admin-port", str(port))
    assert f"cannot listen on 127.0.0.1:{port} (MSERVE_ADMIN_PORT)" in said


CARELESS = [
    ({"MSERVE_AUTH": "apikey"}, "MSERVE_AUTH"),
    ({"MSERVE_AUTH": ""}, "MSERVE_AUTH"),
    ({"MSERVE_AUTH": "none; rm -rf /"}, "MSERVE_AUTH"),
    ({"MSERVE_ALLOWED_SERVICE_ACCOUNTS": "default"}, "MSERVE_ALLOWED_SERVICE_ACCOUNTS"),
    ({"MSERVE_ALLOWED_SERVICE_ACCOUNTS": "Team/App"}, "MSERVE_ALLOWED_SERVICE_ACCOUNTS"),
    ({"MSERVE_ALLOWED_SERVICE_ACCOUNTS": "team/app,*/*"}, "MSERVE_ALLOWED_SERVICE_ACCOUNTS"),
    ({"MSERVE_KUBE_API_URL": "kubernetes.default"}, "MSERVE_KUBE_API_URL"),
    ({"MSERVE_TOKEN_AUDIENCE": ""}, "MSERVE_TOKEN_AUDIENCE"),
    ({"MSERVE_ADMIN_PORT": "70000"}, "MSERVE_ADMIN_PORT"),
    ({"MSERVE_DOCS_UI": "maybe"}, "MSERVE_DOCS_UI"),
    (
        {"MSERVE_AUTH": "kubernetes", "MSERVE_KUBE_API_URL": "", "KUBERNETES_SERVICE_HOST": ""},
        "MSERVE_KUBE_API_URL",
    ),
    (
        {
            "MSERVE_AUTH": "kubernetes",
            "MSERVE_KUBE_API_URL": "https://127.0.0.1:1",
            "MSERVE_KUBE_TOKEN_FILE": "/nope",
        },
        "MSERVE_KUBE_TOKEN_FILE",
    ),
]


@pytest.mark.parametrize(("env", "named"), CARELESS, ids=[str(c[0]) for c in CARELESS])
def test_careless_access_settings_stop_start_up_naming_them(
    digits: DigitsModel, env: dict[str, str], named: str
) -> None:
    said = _start_fails(digits.path, env={"MSERVE_ADMIN_PORT": "0", **env})
    assert named in said, said
    lines = [line for line in said.splitlines() if named in line]
    assert lines
    assert all(len(line) < 400 for line in lines)
