"""spec.access against a real API server: admission refuses careless access specs naming the
field; the operator's ingress NetworkPolicy, the runtime's ServiceAccount and its cluster-scoped
token-review binding appear, follow the spec and disappear; a missing Secret is a condition."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException
from mserve_contract.optimization_report import TerminationSummary
from operator_harness import (
    Kube,
    OperatorProcess,
    artifact_digest_for,
    deployments_path,
    finish_job_pod,
    jobs_path,
    modelservice,
    msvc_path,
    ns_path,
    spec_digest_of,
)

from tests.support.polling import wait_until

NAME = "digits"
# Served as it is (no optimization Job): the operator goes straight to the Deployment.
ONNX_AS_IS = {"model": {"uri": "s3://models/digits/model.onnx"}, "optimization": {"quantize": "none"}}
BINDINGS = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"


def _policy_path(namespace: str) -> str:
    return ns_path(namespace, "networkpolicies", f"{NAME}-ingress", "/apis/networking.k8s.io/v1")


def _binding_path(namespace: str) -> str:
    return f"{BINDINGS}/mserve:{namespace}:{NAME}:token-review"


def _condition(kube: Kube, namespace: str, type_: str) -> dict:
    status = (kube.get(msvc_path(namespace, NAME)) or {}).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def _allowed_namespaces(policy: dict | None) -> list[str] | None:
    if policy is None:
        return None
    peer = policy["spec"]["ingress"][0]["from"][0]
    return peer["namespaceSelector"]["matchExpressions"][0]["values"]


INVALID = [
    pytest.param(
        {"authentication": "apiKey"},
        "spec.access.apiKeySecrets must name at least one Secret when spec.access.authentication is apiKey",
        id="apiKey-without-secrets",
    ),
    pytest.param(
        {"authentication": "kubernetes"},
        "spec.access.allowedServiceAccounts must name at least one ServiceAccount",
        id="kubernetes-without-accounts",
    ),
    pytest.param(
        {"authentication": "kubernetes", "allowedServiceAccounts": ["robot"]},
        "spec.access.allowedServiceAccounts[] must be <namespace>/<serviceaccount> or <namespace>/*",
        id="account-without-namespace",
    ),
    pytest.param(
        {"apiKeySecrets": ["keys"]},
        "spec.access.apiKeySecrets is set but spec.access.authentication is not apiKey",
        id="keys-without-apiKey",
    ),
    pytest.param(
        {"authentication": "apiKey", "apiKeySecrets": ["Keys!"]},
        "spec.access.apiKeySecrets[] must be Secret names",
        id="secret-name",
    ),
    pytest.param(
        {"allowedNamespaces": ["Team_A"]},
        "spec.access.allowedNamespaces[] must be namespace names",
        id="namespace-name",
    ),
    pytest.param(
        {"rateLimit": {"requestsPerSecond": -1}},
        "spec.access.rateLimit.requestsPerSecond: Invalid value: -1",
        id="negative-rate",
    ),
    pytest.param(
        {"rateLimit": {"requestsPerSecond": 5, "burst": 0}},
        "spec.access.rateLimit.burst: Invalid value: 0",
        id="zero-burst",
    ),
    pytest.param(
        {"allowedPodSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}},
        "values must be non-empty for In and NotIn",
        id="selector-in-without-values",
    ),
    pytest.param(
        {"authentication": "oauth"}, 'spec.access.authentication: Unsupported value: "oauth"', id="enum"
    ),
]


@pytest.mark.parametrize(("access", "message"), INVALID)
def test_careless_access_is_refused_at_admission_naming_the_field(
    installed: Kube, namespace: str, access: dict, message: str
):
    with pytest.raises(ApiException) as refused:
        installed.create(msvc_path(namespace), modelservice(NAME, access=access))
    assert refused.value.status == 422
    assert message in json.loads(refused.value.body)["message"]


def test_tls_secret_name_is_checked_at_admission(installed: Kube, namespace: str):
    with pytest.raises(ApiException) as refused:
        installed.create(
            msvc_path(namespace), modelservice(NAME, serving={"tls": {"secretName": "Bad Name"}})
        )
    assert "spec.serving.tls.secretName must be a Secret name" in json.loads(refused.value.body)["message"]


def test_ingress_policy_appears_follows_allowed_namespaces_and_goes_with_the_model(
    installed: Kube, namespace: str, operator: OperatorProcess
):
    installed.create(msvc_path(namespace), modelservice(NAME))
    job = wait_until("the optimization Job", lambda: installed.list(jobs_path(namespace)), timeout=30)[0]
    summary = TerminationSummary(
        artifact_digest=artifact_digest_for(spec_digest_of(job)),
        artifact_uri=f"s3://mserve-artifacts/{namespace}/{NAME}/{'0123456789abcdef' * 4}/model.onnx",
        artifact_sha256="e" * 64,
        verdict="passed",
        message="ok",
    )
    finish_job_pod(installed, namespace, job["metadata"]["name"], 0, summary.to_termination_message())

    policy = wait_until(
        "the ingress NetworkPolicy", lambda: installed.get(_policy_path(namespace)), timeout=60
    )
    assert _allowed_namespaces(policy) == [namespace]
    assert policy["metadata"]["ownerReferences"][0]["kind"] == "ModelService"

    access = {
        "allowedNamespaces": ["clients", namespace],
        "allowedPodSelector": {"matchLabels": {"app": "web"}},
    }
    installed.merge_patch(msvc_path(namespace, NAME), {"spec": {"access": access}})
    updated = wait_until(
        "the policy to follow allowedNamespaces",
        lambda: (
            (p := installed.get(_policy_path(namespace)))
            and _allowed_namespaces(p) == ["clients", namespace]
            and p
        ),
        timeout=60,
    )
    assert updated["spec"]["ingress"][0]["from"][0]["podSelector"] == {"matchLabels": {"app": "web"}}
    # An access-only edit never runs the optimizer again.
    assert [j["metadata"]["name"] for j in installed.list(jobs_path(namespace))] == [job["metadata"]["name"]]

    installed.delete(msvc_path(namespace, NAME))
    wait_until(
        "the policy garbage-collected", lambda: installed.get(_policy_path(namespace)) is None, timeout=90
    )


def test_kubernetes_authentication_gets_an_identity_that_goes_when_no_longer_needed(
    installed: Kube, namespace: str, operator: OperatorProcess
):
    access = {"authentication": "kubernetes", "allowedServiceAccounts": [f"{namespace}/*"]}
    installed.create(msvc_path(namespace), modelservice(NAME, access=access, **ONNX_AS_IS))
    account_path = ns_path(namespace, "serviceaccounts", f"{NAME}-mserve")
    binding = wait_until(
        "the token-review binding", lambda: installed.get(_binding_path(namespace)), timeout=60
    )
    assert binding["roleRef"]["name"] == "system:auth-delegator"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{NAME}-mserve", "namespace": namespace}
    ]
    assert installed.get(account_path) is not None
    pod = wait_until("the Deployment", lambda: installed.get(deployments_path(namespace, NAME)), timeout=60)
    pod_spec = pod["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == f"{NAME}-mserve"

    # apiKey instead: the identity is not needed any more, and goes.
    installed.create(
        ns_path(namespace, "secrets"),
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"}, "stringData": {"ci": "k-1"}},
    )
    installed.merge_patch(
        msvc_path(namespace, NAME),
        {
            "spec": {
                "access": {
                    "authentication": "apiKey",
                    "apiKeySecrets": ["keys"],
                    "allowedServiceAccounts": None,
                }
            }
        },
    )
    wait_until("the binding deleted", lambda: installed.get(_binding_path(namespace)) is None, timeout=60)
    wait_until("the ServiceAccount deleted", lambda: installed.get(account_path) is None, timeout=60)

    # Back to kubernetes, then the ModelService goes: its cluster-scoped binding goes with it.
    installed.merge_patch(
        msvc_path(namespace, NAME),
        {"spec": {"access": {"authentication": "kubernetes", "apiKeySecrets": None, **access}}},
    )
    wait_until("the binding again", lambda: installed.get(_binding_path(namespace)), timeout=60)
    installed.delete(msvc_path(namespace, NAME))
    wait_until("the ModelService gone", lambda: installed.get(msvc_path(namespace, NAME)) is None, timeout=60)
    assert installed.get(_binding_path(namespace)) is None


def test_missing_secret_is_a_condition_naming_it_until_it_exists(
    installed: Kube, namespace: str, operator: OperatorProcess
):
    access = {"authentication": "apiKey", "apiKeySecrets": ["team-keys"]}
    installed.create(
        msvc_path(namespace),
        modelservice(
            NAME, access=access, **ONNX_AS_IS, serving={"replicas": 1, "tls": {"secretName": "cert"}}
        ),
    )
    deployed = wait_until(
        "Deployed=SecretNotFound",
        lambda: (c := _condition(installed, namespace, "Deployed")).get("reason") == "SecretNotFound" and c,
        timeout=60,
    )
    assert deployed["message"] == (
        f"Secret {namespace}/team-keys (named in spec.access.apiKeySecrets[0]) does not exist"
    )
    assert installed.get(deployments_path(namespace, NAME)) is None

    installed.create(
        ns_path(namespace, "secrets"),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "team-keys"},
            "stringData": {"ci": "k-1"},
        },
    )
    deployed = wait_until(
        "the TLS Secret named next",
        lambda: (
            "spec.serving.tls.secretName"
            in (c := _condition(installed, namespace, "Deployed")).get("message", "")
            and c
        ),
        timeout=75,  # no watch on Secrets: the next resync (30 s here) sees it
    )
    assert deployed["reason"] == "SecretNotFound"
    installed.create(
        ns_path(namespace, "secrets"),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cert"},
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": "not checked here", "tls.key": "not checked here"},
        },
    )
    deployment = wait_until(
        "the Deployment", lambda: installed.get(deployments_path(namespace, NAME)), timeout=75
    )
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["api-keys-0"]["secret"]["secretName"] == "team-keys"
    assert volumes["tls"]["secret"]["secretName"] == "cert"
    status = wait_until(
        "status.url",
        lambda: ((installed.get(msvc_path(namespace, NAME)) or {}).get("status") or {}).get("url"),
        timeout=60,
    )
    assert status.startswith("https://")
