"""MSERVE_AUTH=kubernetes against the real kube-apiserver: a `mserve serve` process checks
callers' ServiceAccount tokens with TokenReviews made with its own ServiceAccount's token
(bound to system:auth-delegator, as a runtime pod's would be), audience-bound."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from kubernetes.client.exceptions import ApiException
from operator_harness import Kube, ns_path
from tritonclient.utils import InferenceServerException

from tests.support.models import DigitsModel, build_digits_mlp
from tests.support.polling import wait_until
from tests.support.serving import Server, serving

pytestmark = pytest.mark.cluster

AUDIENCE = "mserve-it"
GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}
BINDINGS = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"


@dataclass
class Callers:
    namespace: str
    allowed: str
    other: str
    wrong_audience: str


def _token(kube: Kube, namespace: str, account: str, audiences: list[str] | None) -> str:
    spec: dict = {"expirationSeconds": 3600}
    if audiences is not None:
        spec["audiences"] = audiences
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    return kube.create(ns_path(namespace, "serviceaccounts", account) + "/token", body)["status"]["token"]


@pytest.fixture
def cluster_callers(kube: Kube, tmp_path: Path) -> Iterator[tuple[Callers, dict[str, str]]]:
    """A namespace with three ServiceAccounts: `reviewer` (the runtime's identity, allowed to
    create TokenReviews), `allowed-app` and `other-app`; their tokens; the runtime's settings."""
    namespace = f"mserve-tr-{uuid.uuid4().hex[:6]}"
    binding = f"{namespace}-auth-delegator"
    kube.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    )
    try:
        for account in ("reviewer", "allowed-app", "other-app"):
            kube.create(
                ns_path(namespace, "serviceaccounts", ""),
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}},
            )
        kube.create(
            BINDINGS,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": binding},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "system:auth-delegator",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "reviewer", "namespace": namespace}],
            },
        )
        (tmp_path / "token").write_text(_token(kube, namespace, "reviewer", None))
        callers = Callers(
            namespace,
            allowed=_token(kube, namespace, "allowed-app", [AUDIENCE]),
            other=_token(kube, namespace, "other-app", [AUDIENCE]),
            wrong_audience=_token(kube, namespace, "allowed-app", ["not-" + AUDIENCE]),
        )
        env = {
            "MSERVE_AUTH": "kubernetes",
            "MSERVE_ALLOWED_SERVICE_ACCOUNTS": f"{namespace}/allowed-app,elsewhere/*",
            "MSERVE_TOKEN_AUDIENCE": AUDIENCE,
            "MSERVE_KUBE_API_URL": kube.configuration.host,
            "MSERVE_KUBE_TOKEN_FILE": str(tmp_path / "token"),
            "MSERVE_KUBE_CA_FILE": str(kube.configuration.ssl_ca_cert),
        }
        yield callers, env
    finally:
        with contextlib.suppress(ApiException):
            kube.delete(f"{BINDINGS}/{binding}")
        with contextlib.suppress(ApiException):
            kube.delete(f"/api/v1/namespaces/{namespace}")


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> DigitsModel:
    return build_digits_mlp(tmp_path_factory.mktemp("models") / "digits.onnx")


def _post(server: Server, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.post(f"{server.url}/v2/models/digits/infer", json=GOOD, headers=headers, timeout=30)


def _grpc_infer(server: Server, token: str) -> np.ndarray:
    client = triton_grpc.InferenceServerClient(server.grpc_url)
    try:
        tensor = triton_grpc.InferInput("x", [1, 64], "FP32")
        tensor.set_data_from_numpy(np.full((1, 64), 0.5, dtype=np.float32))
        headers = {"authorization": f"Bearer {token}"}
        return client.infer("digits", [tensor], headers=headers, client_timeout=30).as_numpy("logits")
    finally:
        client.close()


def test_service_account_tokens_are_reviewed_by_the_api_server(
    cluster_callers: tuple[Callers, dict[str, str]], digits: DigitsModel, tmp_path: Path
) -> None:
    callers, env = cluster_callers
    with serving(digits.path, "digits", tmp_path / "mserve.log", env=env, grpc=True) as server:
        # The binding of the reviewer may take a moment to reach the API server's authorizer.
        wait_until(
            "the allowed caller to be served",
            lambda: _post(server, callers.allowed).status_code == 200,
            30,
            0.5,
        )
        assert _grpc_infer(server, callers.allowed).shape == (1, 10)

        denied = _post(server, callers.other)
        assert denied.status_code == 403
        assert (
            f"ServiceAccount '{callers.namespace}/other-app' may not call this model"
            in denied.json()["error"]
        )
        with pytest.raises(InferenceServerException) as refused:
            _grpc_infer(server, callers.other)
        assert refused.value.status() == "StatusCode.PERMISSION_DENIED"

        wrong = _post(server, callers.wrong_audience)
        assert wrong.status_code == 401
        assert f"audience '{AUDIENCE}'" in wrong.json()["error"]
        assert wrong.headers["www-authenticate"].startswith("Bearer")
        assert _post(server, "not-a-token").status_code == 401
        assert _post(server, None).status_code == 401

        metrics = server.metrics()
        caller = f"sa:{callers.namespace}/allowed-app"
        assert re.search(rf'mserve_usage_requests_total{{caller="{caller}",model="digits"}} [1-9]', metrics)
        assert "other-app" not in metrics
        logs = server.logs()
        for token in (callers.allowed, callers.other, callers.wrong_audience):
            assert token not in logs
