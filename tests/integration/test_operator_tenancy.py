"""Two tenants, two namespaces, one operator: what one tenant tries against the other is refused,
and the message the attacker sees says why. Each tenant's own ModelService still deploys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException
from mserve_contract.optimization_report import TerminationSummary
from operator_harness import (
    Kube,
    OperatorProcess,
    artifact_digest_for,
    deployments_path,
    finish_job_pod,
    hpa_path,
    jobs_path,
    modelservice,
    msvc_path,
    ns_path,
    pdb_path,
    spec_digest_of,
)

from tests.support.chart_helm import render
from tests.support.polling import wait_until

NAME = "digits"
USER_IMAGE = "registry.example/team-a/runtime:1"


@pytest.fixture
def tenants(namespace: str, other_namespace: str, operator_kubeconfig: str, tmp_path) -> Iterator[tuple]:
    """One operator for both tenants' namespaces, allowing the install's image and team A's registry."""
    env = {"MSERVE_OPERATOR_RUNTIME_IMAGE_ALLOWLIST": '["mserve-runtime:it", "registry.example/team-a/*"]'}
    process = OperatorProcess(
        operator_kubeconfig, namespace, tmp_path / "operator.log", env=env, more_namespaces=(other_namespace,)
    ).start()
    yield namespace, other_namespace, process
    process.stop()
    assert "Forbidden" not in process.log(), process.log()[-4000:]


def _status(kube: Kube, namespace: str, name: str = NAME) -> dict:
    return (kube.get(msvc_path(namespace, name)) or {}).get("status") or {}


def _condition(kube: Kube, namespace: str, type_: str, name: str = NAME) -> dict:
    return next((c for c in _status(kube, namespace, name).get("conditions") or [] if c["type"] == type_), {})


def _events(kube: Kube, namespace: str) -> list[dict]:
    selector = f"involvedObject.kind=ModelService,involvedObject.name={NAME}"
    return kube.list(ns_path(namespace, "events"), fields=selector)


def _finish_job(kube: Kube, namespace: str, artifact_uri: str) -> dict:
    job = wait_until("the optimization Job", lambda: kube.list(jobs_path(namespace)), timeout=30)[0]
    summary = TerminationSummary(
        artifact_digest=artifact_digest_for(spec_digest_of(job)),
        artifact_uri=artifact_uri,
        artifact_sha256="e" * 64,
        verdict="passed",
        message="ok",
    )
    finish_job_pod(kube, namespace, job["metadata"]["name"], 0, summary.to_termination_message())
    return job


def _own_artifact(namespace: str) -> str:
    return f"s3://mserve-artifacts/{namespace}/{NAME}/{'0123456789abcdef' * 4}/model.onnx"


def _user_object(path: str, body: dict, kube: Kube) -> dict:
    return kube.create(path, body)


def test_same_named_service_hpa_pdb_of_the_user_are_left_alone_and_reported(installed: Kube, tenants):
    team_a, team_b, _ = tenants
    labels = {"app": "web"}
    service = _user_object(
        ns_path(team_a, "services"),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": NAME, "labels": labels},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8000}]},
        },
        installed,
    )
    hpa = _user_object(
        hpa_path(team_a),
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": NAME},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 1, "maxReplicas": 3},
        },
        installed,
    )  # fmt: skip
    pdb = _user_object(
        pdb_path(team_a),
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": NAME},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}},
        },
        installed,
    )
    # Team A's ModelService wants one replica (no HPA, no PDB); the operator would once have deleted both.
    for namespace in (team_a, team_b):
        installed.create(msvc_path(namespace), modelservice(NAME))
        _finish_job(installed, namespace, _own_artifact(namespace))

    deployed = wait_until(
        "Deployed=Conflict in team A",
        lambda: (c := _condition(installed, team_a, "Deployed")).get("reason") == "Conflict" and c,
        timeout=60,
    )
    assert deployed["message"].startswith(
        f"Service {team_a}/{NAME} already exists and is not controlled by any owner, "
        f"not by ModelService {NAME}"
    )
    assert _status(installed, team_a)["phase"] == "Degraded"
    warnings = wait_until(
        "a Conflict warning event",
        lambda: [e for e in _events(installed, team_a) if e["reason"] == "Conflict"],
    )
    assert warnings[0]["type"] == "Warning"
    assert f"Service {team_a}/{NAME}" in warnings[0]["message"]
    # The Deployment (ours) is made; the user's objects are exactly as they were.
    assert wait_until("team A's Deployment", lambda: installed.get(deployments_path(team_a, NAME)))
    for path, before in (
        (ns_path(team_a, "services", NAME), service),
        (hpa_path(team_a, NAME), hpa),
        (pdb_path(team_a, NAME), pdb),
    ):
        now = installed.get(path)
        assert now is not None, f"{path} was deleted"
        assert now["metadata"]["uid"] == before["metadata"]["uid"], path
        assert now["spec"] == before["spec"], path
        assert not now["metadata"].get("ownerReferences"), path
        managers = {entry["manager"] for entry in now["metadata"].get("managedFields") or []}
        assert "mserve-operator" not in managers, (path, managers)
    # Team B, with no such objects, gets its own Service and no conflict.
    b_service = wait_until("team B's Service", lambda: installed.get(ns_path(team_b, "services", NAME)))
    assert b_service["metadata"]["ownerReferences"][0]["kind"] == "ModelService"
    assert _condition(installed, team_b, "Deployed").get("reason") != "Conflict"


def test_artifact_outside_the_own_prefix_is_refused(installed: Kube, tenants):
    team_a, team_b, _ = tenants
    for namespace in (team_a, team_b):
        installed.create(msvc_path(namespace), modelservice(NAME))
    # Team A's Job claims team B's artifact (a planted report); team B's names its own.
    _finish_job(installed, team_a, _own_artifact(team_b))
    _finish_job(installed, team_b, _own_artifact(team_b))

    optimized = wait_until(
        "Optimized=UntrustedArtifact in team A",
        lambda: (c := _condition(installed, team_a, "Optimized")).get("reason") == "UntrustedArtifact" and c,
        timeout=60,
    )
    assert optimized["message"] == (
        f"the optimizer reported artifact '{_own_artifact(team_b)}', outside this ModelService's prefix "
        f"s3://mserve-artifacts/{team_a}/{NAME}/: refusing to serve it"
    )
    assert _status(installed, team_a)["phase"] == "Failed"
    assert installed.get(deployments_path(team_a, NAME)) is None
    deployment = wait_until("team B's Deployment", lambda: installed.get(deployments_path(team_b, NAME)))
    fetch = deployment["spec"]["template"]["spec"]["initContainers"][0]
    assert fetch["args"][:5] == ["fetch", _own_artifact(team_b), "/models/model.onnx", "--role", "store"]
    assert fetch["args"][-2:] == ["--sha256", "e" * 64]


def test_image_outside_the_allowlist_is_failed_and_store_keys_never_reach_a_user_image(
    installed: Kube, tenants
):
    team_a, team_b, _ = tenants
    installed.create(
        msvc_path(team_b), modelservice(NAME, serving={"replicas": 1, "image": "evil.example/x:1"})
    )
    installed.create(msvc_path(team_a), modelservice(NAME, serving={"replicas": 1, "image": USER_IMAGE}))

    status = wait_until(
        "phase Failed in team B", lambda: (s := _status(installed, team_b)).get("phase") == "Failed" and s
    )
    assert status["message"] == (
        "spec.serving.image 'evil.example/x:1' is not an allowed runtime image in this install "
        "(allowed: mserve-runtime:it, registry.example/team-a/*)"
    )
    assert _condition(installed, team_b, "Deployed")["reason"] == "ImageNotAllowed"
    assert installed.list(jobs_path(team_b)) == []

    _finish_job(installed, team_a, _own_artifact(team_a))
    deployment = wait_until("team A's Deployment", lambda: installed.get(deployments_path(team_a, NAME)))
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == USER_IMAGE
    assert "envFrom" not in pod["containers"][0]
    (fetch,) = pod["initContainers"]
    assert fetch["image"] == "mserve-runtime:it"
    assert fetch["envFrom"] == [{"prefix": "MSERVE_STORE_", "secretRef": {"name": "store-creds"}}]


def test_a_planted_job_with_the_optimizers_name_is_never_read(installed: Kube, tenants):
    from mserve_operator.names import job_name
    from mserve_operator.spec import parse_spec
    from mserve_operator.spec_digest import spec_digest

    team_a, _, _ = tenants
    manifest = modelservice(NAME)
    planted = job_name(NAME, spec_digest(parse_spec(manifest["spec"])))
    installed.create(
        jobs_path(team_a),
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": planted, "labels": {"app.kubernetes.io/managed-by": "mserve-operator",
                                                      "mserve.io/modelservice": NAME}},
            "spec": {"suspend": True, "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "optimize", "image": "evil.example/x:1"}]}}},
        },
    )  # fmt: skip
    installed.create(msvc_path(team_a), manifest)
    optimized = wait_until(
        "Optimized=Conflict",
        lambda: (c := _condition(installed, team_a, "Optimized")).get("reason") == "Conflict" and c,
        timeout=60,
    )
    assert optimized["message"].startswith(f"Job {team_a}/{planted} already exists and is not controlled by")
    assert _status(installed, team_a)["phase"] == "Degraded"
    job = installed.get(jobs_path(team_a, planted))
    assert job["spec"]["suspend"] is True
    assert not job["metadata"].get("ownerReferences")


def test_optimizer_pods_get_their_egress_policy_before_the_job(installed: Kube, tenants):
    team_a, _, _ = tenants
    installed.create(msvc_path(team_a), modelservice(NAME))
    wait_until("the Job", lambda: installed.list(jobs_path(team_a)), timeout=30)
    policy = installed.get(
        ns_path(team_a, "networkpolicies", f"{NAME}-optimizer-egress", "/apis/networking.k8s.io/v1")
    )
    assert policy["metadata"]["ownerReferences"][0]["name"] == NAME
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "optimizer"
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert policy["spec"]["egress"][0]["ports"] == [
        {"protocol": "UDP", "port": 53},
        {"protocol": "TCP", "port": 53},
    ]


# --- the admission policy, installed by this test, bound to this test's namespace only ---------


def _rendered_policy(tmp_path: Path, namespace: str) -> list[dict]:
    values = {"images": {"tag": "it", "runtimeAllowlist": ["mserve-runtime:it"]}}
    docs = render(
        tmp_path, values, "--show-only", "templates/admission-policy.yaml", "--namespace", namespace
    )
    unique = f"mserve-it-{namespace}"
    for doc in docs:
        doc["metadata"]["name"] = unique
        if doc["kind"] == "ValidatingAdmissionPolicyBinding":
            doc["spec"]["policyName"] = unique
            doc["spec"]["matchResources"] = {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            }
    return docs


def test_admission_policy_refuses_an_image_outside_the_allowlist(installed: Kube, namespace: str, tmp_path):
    docs = _rendered_policy(tmp_path, namespace)
    admission = "/apis/admissionregistration.k8s.io/v1"
    paths = {
        "ValidatingAdmissionPolicy": f"{admission}/validatingadmissionpolicies",
        "ValidatingAdmissionPolicyBinding": f"{admission}/validatingadmissionpolicybindings",
    }
    created = []
    try:
        for doc in docs:
            installed.create(paths[doc["kind"]], doc)
            created.append(f"{paths[doc['kind']]}/{doc['metadata']['name']}")
        evil = modelservice("evil", serving={"replicas": 1, "image": "evil.example/x:1"})

        def refused() -> str | None:
            try:
                installed.create(msvc_path(namespace), evil)
            except ApiException as exc:
                return exc.body if exc.status == 403 else None  # the policy says reason Forbidden
            installed.delete(msvc_path(namespace, "evil"))  # the policy was not active yet
            return None

        body = wait_until("the policy to refuse the image", refused, timeout=30, interval=1)
        assert (
            f"ValidatingAdmissionPolicy 'mserve-it-{namespace}' with binding 'mserve-it-{namespace}' denied "
            "request: spec.serving.image 'evil.example/x:1' is not an allowed runtime image in this install "
            "(allowed: mserve-runtime:it)"
        ) in body
        installed.create(
            msvc_path(namespace), modelservice("good", serving={"replicas": 1, "image": "mserve-runtime:it"})
        )
        installed.create(msvc_path(namespace), modelservice("plain"))
    finally:
        for path in reversed(created):
            installed.delete(path)
