"""A model offered to other teams, as its owner sets it up: API keys from a Secret, TLS from a
kubernetes.io/tls Secret, a rate limit, and the NetworkPolicy the operator writes.

One ModelService (the digits ONNX model served as it is, so no optimization Job) carries it all:
no key is 401, a wrong key 403, the right key 200 over REST and gRPC with tritonclient's ssl
options; a rotated key and a renewed certificate arrive without a restart; a pod in a namespace
the policy does not allow cannot connect while one in an allowed namespace can; a burst past the
limit gets 429; a second ModelService takes ServiceAccount tokens, checked with a TokenReview.
The host reaches the Service through port-forwards, whose certificate names 127.0.0.1
(tests/support/tls_certs.py).
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from conftest import Forward, port_forward
from e2e_kube import Cluster, wait_until
from e2e_models import DigitsModel, modelservice, run_python_pod, wait_for_phase
from tritonclient.utils import InferenceServerException

from tests.support.tls_certs import Issued, issue

NAME = "guarded"
KEYS_SECRET = "team-keys"
TLS_SECRET = "guarded-tls"
RATE = {"requestsPerSecond": 2, "burst": 5}

# A pod that tries to open the model's health endpoint for `seconds`; any HTTP answer means the
# connection got through. TLS is not verified here: the question is only who may connect.
REACH = """
import ssl, sys, time, urllib.error, urllib.request
url, seconds = sys.argv[1], float(sys.argv[2])
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
deadline = time.monotonic() + seconds
while True:
    try:
        urllib.request.urlopen(url, timeout=3, context=context)
        print("reached"); sys.exit(0)
    except urllib.error.HTTPError as answer:
        print("reached", answer.code); sys.exit(0)
    except OSError as error:
        if time.monotonic() > deadline:
            print("unreachable:", error); sys.exit(1)
        time.sleep(1)
"""


@dataclass
class Guarded:
    namespace: str
    http: Forward
    grpc: Forward
    ca: Path
    keys: dict[str, str]
    issued: Issued

    @property
    def host(self) -> str:
        return self.http.url.removeprefix("http://")

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    @property
    def grpc_host(self) -> str:
        return self.grpc.url.removeprefix("http://")


def _secret(name: str, data: dict[str, bytes | str], type_: str = "Opaque") -> dict:
    encoded = {
        k: base64.b64encode(v if isinstance(v, bytes) else v.encode()).decode() for k, v in data.items()
    }
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": type_, "data": encoded}


def _tls_secret(issued: Issued) -> dict:
    return _secret(TLS_SECRET, {"tls.crt": issued.cert_pem, "tls.key": issued.key_pem}, "kubernetes.io/tls")


@pytest.fixture(scope="module")
def guarded(
    mserve: Cluster, module_namespace: str, digits: DigitsModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Guarded]:
    namespace, folder = module_namespace, tmp_path_factory.mktemp("access")
    keys = {"ci": f"ci-{secrets.token_hex(16)}", "load": f"load-{secrets.token_hex(16)}"}
    issued = issue(NAME)
    mserve.apply(_secret(KEYS_SECRET, keys), namespace)
    mserve.apply(_tls_secret(issued), namespace)
    manifest = modelservice(NAME, digits.uris["onnx"], quantize="none")
    manifest["spec"]["serving"]["tls"] = {"secretName": TLS_SECRET}
    manifest["spec"]["access"] = {
        "authentication": "apiKey",
        "apiKeySecrets": [KEYS_SECRET],
        "rateLimit": RATE,
    }
    mserve.apply(manifest, namespace)
    wait_for_phase(mserve, namespace, NAME, "Ready", timeout=420)
    http, grpc = port_forward(mserve, namespace, NAME, 8080), port_forward(mserve, namespace, NAME, 8081)
    yield Guarded(namespace, http, grpc, issued.write_ca(folder / "ca.pem"), keys, issued)
    http.process.terminate()
    grpc.process.terminate()


def _x() -> np.ndarray:
    return np.full((2, 64), 0.5, dtype=np.float32)


def _rest(guarded: Guarded, headers: dict[str, str]) -> httpx.Response:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 64], "data": _x().flatten().tolist()}]}
    verify = ssl.create_default_context(cafile=str(guarded.ca))
    return httpx.post(
        f"{guarded.url}/v2/models/{NAME}/infer", json=body, headers=headers, verify=verify, timeout=10
    )


def _triton_http(guarded: Guarded, headers: dict[str, str] | None) -> np.ndarray:
    client = triton_http.InferenceServerClient(
        guarded.host, ssl=True, ssl_options={"ca_certs": str(guarded.ca)}
    )
    try:
        tensor = triton_http.InferInput("x", [2, 64], "FP32")
        tensor.set_data_from_numpy(_x(), binary_data=True)
        return client.infer(NAME, [tensor], headers=headers).as_numpy("logits")
    finally:
        client.close()


def _triton_grpc(guarded: Guarded, headers: dict[str, str] | None) -> np.ndarray:
    client = triton_grpc.InferenceServerClient(guarded.grpc_host, ssl=True, root_certificates=str(guarded.ca))
    try:
        tensor = triton_grpc.InferInput("x", [2, 64], "FP32")
        tensor.set_data_from_numpy(_x())
        return client.infer(NAME, [tensor], headers=headers).as_numpy("logits")
    finally:
        client.close()


def test_status_url_is_https_and_the_service_has_no_admin_port(mserve: Cluster, guarded: Guarded) -> None:
    obj = mserve.get("-n", guarded.namespace, "msvc", NAME)
    assert obj["status"]["url"].startswith(f"https://{NAME}.{guarded.namespace}.svc")
    ports = {
        p["name"]: p["port"] for p in mserve.get("-n", guarded.namespace, "service", NAME)["spec"]["ports"]
    }
    assert ports == {"http": 8080, "grpc": 8081}


def test_rest_no_key_401_wrong_key_403_right_key_200(guarded: Guarded) -> None:
    assert _rest(guarded, {}).status_code == 401
    wrong = _rest(guarded, {"Authorization": "Bearer not-a-key"})
    assert wrong.status_code == 403, wrong.text
    assert wrong.json()["error"] == "invalid API key"
    right = _rest(guarded, {"Authorization": f"Bearer {guarded.keys['ci']}"})
    assert right.status_code == 200, right.text


def test_tritonclient_over_tls_with_the_key_on_rest_and_grpc(guarded: Guarded) -> None:
    assert _triton_http(guarded, {"Authorization": f"Bearer {guarded.keys['ci']}"}).shape == (2, 10)
    assert _triton_grpc(guarded, {"authorization": f"Bearer {guarded.keys['ci']}"}).shape == (2, 10)
    with pytest.raises(InferenceServerException) as refused:
        _triton_grpc(guarded, None)
    assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as refused:
        _triton_grpc(guarded, {"x-api-key": "not-a-key"})
    assert refused.value.status() == "StatusCode.PERMISSION_DENIED"


def test_burst_past_the_rate_limit_is_429_with_retry_after(guarded: Guarded) -> None:
    answers = [_rest(guarded, {"X-API-Key": guarded.keys["load"]}) for _ in range(RATE["burst"] * 3)]
    codes = [a.status_code for a in answers]
    assert set(codes) == {200, 429}, codes
    limited = next(a for a in answers if a.status_code == 429)
    assert float(limited.headers["retry-after"]) > 0


def _reach(mserve: Cluster, guarded: Guarded, namespace: str, seconds: int) -> tuple[str, str]:
    """A one-shot pod in `namespace` tries the model's health endpoint for `seconds`: its phase and log."""
    url = f"https://{NAME}.{guarded.namespace}.svc:8080/v2/health/ready"
    deployment = mserve.get("-n", guarded.namespace, "deployment", NAME)
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]  # the runtime's: it has a Python
    return run_python_pod(mserve, namespace, image, "reach", [REACH, url, str(seconds)])


def test_a_namespace_the_policy_does_not_allow_cannot_connect(mserve: Cluster, guarded: Guarded) -> None:
    phase, log = _reach(mserve, guarded, guarded.namespace, seconds=30)
    assert phase == "Succeeded", log
    outsider = f"e2e-outsider-{uuid.uuid4().hex[:4]}"
    mserve.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": outsider, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        }
    )
    try:
        wait_until(
            "the default ServiceAccount",
            lambda: mserve.try_kubectl("-n", outsider, "get", "sa", "default").returncode == 0,
        )
        phase, log = _reach(mserve, guarded, outsider, seconds=15)
        assert phase == "Failed", log
        assert "unreachable" in log, log
    finally:
        mserve.kubectl("delete", "namespace", outsider, "--wait=false", check=False)


def _runtime_pods(mserve: Cluster, namespace: str) -> list[dict]:
    return mserve.get("-n", namespace, "pods", "-l", f"mserve.io/modelservice={NAME}")["items"]


def test_rotated_key_and_renewed_certificate_arrive_without_a_restart(
    mserve: Cluster, guarded: Guarded
) -> None:
    before = sorted(p["metadata"]["name"] for p in _runtime_pods(mserve, guarded.namespace))
    old_key, new_key = guarded.keys["ci"], f"ci-{secrets.token_hex(16)}"
    mserve.apply(_secret(KEYS_SECRET, {**guarded.keys, "ci": new_key}), guarded.namespace)

    def rotated() -> bool | None:
        return _rest(guarded, {"Authorization": f"Bearer {old_key}"}).status_code == 403 or None

    # The kubelet refreshes Secret volumes on its sync period (about a minute).
    wait_until("the old key refused", rotated, timeout=180, interval=5)
    guarded.keys["ci"] = new_key
    assert _rest(guarded, {"Authorization": f"Bearer {new_key}"}).status_code == 200

    renewed = issue(NAME)
    mserve.apply(_tls_secret(renewed), guarded.namespace)
    renewed_ca = renewed.write_ca(guarded.ca.with_name("renewed-ca.pem"))

    def served_by_renewed() -> bool | None:
        verify = ssl.create_default_context(cafile=str(renewed_ca))
        try:
            return httpx.get(f"{guarded.url}/v2/health/ready", verify=verify, timeout=5).status_code == 200
        except httpx.ConnectError:  # still the old certificate
            return None

    wait_until("the renewed certificate served", served_by_renewed, timeout=180, interval=5)
    guarded.ca.write_bytes(renewed.ca_pem)
    after = _runtime_pods(mserve, guarded.namespace)
    assert sorted(p["metadata"]["name"] for p in after) == before
    for pod in after:
        assert all(s["restartCount"] == 0 for s in pod["status"]["containerStatuses"]), json.dumps(
            pod["status"]
        )


# A pod that calls the model with its own ServiceAccount token (audience mserve, projected by
# the kubelet) and prints the HTTP status; refused connections are retried (the policy agent).
CALL_WITH_TOKEN = """
import sys, time, urllib.error, urllib.request
url = sys.argv[1]
token = open("/var/run/secrets/mserve/token").read().strip()
body = b'{"inputs":[{"name":"x","shape":[1,64],"datatype":"FP32","data":[%s]}]}' % b",".join([b"0.5"] * 64)
request = urllib.request.Request(url, data=body, headers={"Authorization": "Bearer " + token})
deadline = time.monotonic() + 30
while True:
    try:
        print(urllib.request.urlopen(request, timeout=10).status); break
    except urllib.error.HTTPError as answer:
        print(answer.code, answer.read().decode()[:200]); break
    except OSError:
        if time.monotonic() > deadline: raise
        time.sleep(1)
"""
KUBE_NAME = "kube-guarded"


def _call_as(mserve: Cluster, namespace: str, account: str, image: str) -> str:
    url = f"http://{KUBE_NAME}.{namespace}.svc:8080/v2/models/{KUBE_NAME}/infer"
    _, log = run_python_pod(mserve, namespace, image, "caller", [CALL_WITH_TOKEN, url], account=account)
    return log.strip()


def test_kubernetes_tokens_checked_by_token_review(
    mserve: Cluster, module_namespace: str, digits: DigitsModel
) -> None:
    namespace = module_namespace
    mserve.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}}, namespace)
    manifest = modelservice(KUBE_NAME, digits.uris["onnx"], quantize="none")
    manifest["spec"]["access"] = {
        "authentication": "kubernetes",
        "allowedServiceAccounts": [f"{namespace}/robot"],
    }
    mserve.apply(manifest, namespace)
    wait_for_phase(mserve, namespace, KUBE_NAME, "Ready", timeout=420)
    image = mserve.get("-n", namespace, "deployment", KUBE_NAME)["spec"]["template"]["spec"]["containers"][0][
        "image"
    ]
    assert _call_as(mserve, namespace, "robot", image).startswith("200")
    refused = _call_as(mserve, namespace, "default", image)
    assert refused.startswith("403"), refused
    assert f"{namespace}/default" in refused, refused
