"""Tenancy in the builders and pure decisions: whose credentials reach which image, which images
and artifacts are trusted, what a pod may write to disk and reach on the network, whose objects
the operator may touch."""

from __future__ import annotations

import pytest
from mserve_operator.builders import build_deployment, build_job, build_optimizer_egress_policy
from mserve_operator.conditions import DEPLOYED, OPTIMIZED, Reason
from mserve_operator.images import image_refusal
from mserve_operator.optimization import OptimizationState
from mserve_operator.ownership import OwnershipConflictError, check_controlled, is_controlled_by
from mserve_operator.spec import parse_spec
from mserve_operator.status import Observation, compute
from operator_fixtures import ARTIFACT, OWNER, all_containers, cpu_spec, settings
from pydantic import ValidationError


def _pod(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]


def _with_image(image: str):
    return cpu_spec(replicas=1, image=image)


# --- credentials by role -------------------------------------------------------------------


def test_store_credentials_never_reach_a_user_named_image():
    spec = _with_image("registry.example/team-a/runtime:1")
    allowed = settings(runtime_image_allowlist=["registry.example/team-a/*"])
    pod = _pod(build_deployment(spec, OWNER, ARTIFACT, allowed, store_secret="store-creds"))
    (fetch,) = pod["initContainers"]
    (server,) = pod["containers"]
    assert server["image"] == "registry.example/team-a/runtime:1"
    assert fetch["image"] == "mserve-runtime:latest"  # the install's, never spec.serving.image
    for container in all_containers(pod):
        holds_store_keys = "store-creds" in str(container.get("envFrom"))
        assert not holds_store_keys or container["image"] == "mserve-runtime:latest", container["name"]
    assert "envFrom" not in server
    assert "MSERVE_STORE_" not in str(server)


def test_gpu_fetch_runs_the_installs_cpu_runtime_image_not_the_users():
    spec = parse_spec(
        {"model": {"uri": "s3://m/x.onnx"}, "serving": {"gpu": {"count": 1}, "image": "mine/gpu:1"}}
    )
    pod = _pod(build_deployment(spec, OWNER, ARTIFACT, settings(runtime_image_allowlist=["mine/*"])))
    assert pod["initContainers"][0]["image"] == "mserve-runtime:latest"
    assert pod["containers"][0]["image"] == "mine/gpu:1"


def test_store_endpoint_override_reaches_the_store_role_only():
    spec = parse_spec(
        {
            "model": {"uri": "s3://models/m.pt2", "format": "torch-export", "credentialsSecret": "src",
                      "inputs": [{"name": "x", "shape": [1, 4]}]},
            "artifactStore": {"uri": "s3://team-a-artifacts/", "endpoint": "https://s3.team-a.example",
                              "credentialsSecret": "team-a-store"},
        }
    )  # fmt: skip
    job = build_job(spec, OWNER, "a" * 16, settings(s3_endpoint="http://minio.storage:9000", s3_secret="x"))
    (container,) = _pod(job)["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MSERVE_STORE_AWS_ENDPOINT_URL"] == "https://s3.team-a.example"
    assert env["MSERVE_SOURCE_AWS_ENDPOINT_URL"] == "http://minio.storage:9000"
    assert container["envFrom"] == [
        {"prefix": "MSERVE_SOURCE_", "secretRef": {"name": "src"}},
        {"prefix": "MSERVE_STORE_", "secretRef": {"name": "team-a-store"}},
    ]
    assert "--output" in container["args"]
    assert container["args"][container["args"].index("--output") + 1] == "s3://team-a-artifacts/models/digits"


def test_http_source_credentials_go_under_the_source_prefix():
    spec = parse_spec({"model": {"uri": "https://hub.example/m.onnx", "credentialsSecret": "hub-token"}})
    (container,) = _pod(build_job(spec, OWNER, "a" * 16, settings(s3_secret="store")))["containers"]
    assert {"prefix": "MSERVE_SOURCE_", "secretRef": {"name": "hub-token"}} in container["envFrom"]


# --- disk ----------------------------------------------------------------------------------


def test_every_emptydir_has_a_size_limit_and_pods_bound_their_ephemeral_storage():
    custom = settings(fetch_max_bytes=2 * 1024**3, optimizer_ephemeral_storage_limit="30Gi")
    deployment = build_deployment(cpu_spec(), OWNER, ARTIFACT, custom)
    job = build_job(cpu_spec(), OWNER, "a" * 16, custom)
    for pod in (_pod(deployment), _pod(job)):
        for volume in pod["volumes"]:
            if "emptyDir" in volume:
                assert volume["emptyDir"].get("sizeLimit"), volume
        for container in all_containers(pod):
            assert container["resources"]["limits"]["ephemeral-storage"], container["name"]
            assert container["resources"]["requests"]["ephemeral-storage"], container["name"]
    volumes = {v["name"]: v for v in _pod(deployment)["volumes"]}
    assert volumes["model"]["emptyDir"]["sizeLimit"] == str(2 * 1024**3)
    assert {v["name"]: v for v in _pod(job)["volumes"]}["tmp"]["emptyDir"]["sizeLimit"] == "30Gi"
    (optimizer,) = _pod(job)["containers"]
    assert {"name": "MSERVE_FETCH_MAX_BYTES", "value": str(2 * 1024**3)} in optimizer["env"]
    fetch = _pod(deployment)["initContainers"][0]
    assert fetch["args"][fetch["args"].index("--max-bytes") + 1] == str(2 * 1024**3)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"runtime_ephemeral_storage_limit": "lots"}, "not a Kubernetes quantity"),
        ({"optimizer_ephemeral_storage_request": "-"}, "not a Kubernetes quantity"),
        ({"fetch_max_bytes": 0}, "greater than or equal to 1"),
        ({"fetch_max_bytes": 10 * 1024**3}, "must hold fetch_max_bytes"),
        ({"runtime_image_allowlist": ["mserve-runtime:[12]"]}, "is not an image glob"),
        ({"runtime_image_allowlist": [""]}, "is not an image glob"),
        ({"runtime_image_allowlist": ["evil image"]}, "is not an image glob"),
    ],
)
def test_careless_install_settings_are_refused_with_the_setting_named(overrides, words):
    with pytest.raises(ValidationError, match=words):
        settings(**overrides)


# --- images --------------------------------------------------------------------------------


def test_default_allowlist_is_the_installs_own_runtime_images():
    own = settings(image_tag="1.4.0")
    assert image_refusal(cpu_spec(), own) == ""  # no image named: the install's
    assert image_refusal(_with_image("mserve-runtime:1.4.0"), own) == ""
    assert image_refusal(_with_image("mserve-runtime-gpu:1.4.0"), own) == ""
    refusal = image_refusal(_with_image("mserve-runtime:1.3.9"), own)
    assert refusal == (
        "spec.serving.image 'mserve-runtime:1.3.9' is not an allowed runtime image in this install "
        "(allowed: mserve-runtime:1.4.0, mserve-runtime-gpu:1.4.0)"
    )


def test_allowlist_globs_match_whole_references_only():
    install = settings(runtime_image_allowlist=["registry.example/mserve/*", "mserve-runtime:1.?"])
    assert image_refusal(_with_image("registry.example/mserve/runtime:2"), install) == ""
    assert image_refusal(_with_image("mserve-runtime:1.5"), install) == ""
    for hostile in (
        "evil.example/registry.example/mserve/runtime:2",
        "registry.example/mservex/runtime:2",
        "mserve-runtime:1.55",
        "MSERVE-RUNTIME:1.5",
    ):
        assert "is not an allowed runtime image" in image_refusal(_with_image(hostile), install), hostile


def test_refused_image_fails_the_modelservice_on_both_conditions():
    message = image_refusal(_with_image("evil:latest"), settings())
    status, conditions = compute(
        Observation(2, None, None, None, invalid_spec=message, invalid_reason=Reason.IMAGE_NOT_ALLOWED)
    )
    by_type = {c.type: c for c in conditions}
    assert status["phase"] == "Failed"
    assert status["message"] == message
    for type_ in (OPTIMIZED, DEPLOYED):
        assert (by_type[type_].status, by_type[type_].reason) == ("False", Reason.IMAGE_NOT_ALLOWED)


# --- ownership -----------------------------------------------------------------------------


def _object(kind: str, refs: list[dict]) -> dict:
    return {"kind": kind, "metadata": {"name": "digits", "namespace": "models", "ownerReferences": refs}}


def test_only_objects_this_modelservice_controls_are_its_own():
    mine = _object("Service", [OWNER.reference()])
    assert is_controlled_by(mine, OWNER)
    assert check_controlled(mine, OWNER) is mine
    assert check_controlled(None, OWNER) is None
    same_name_other_uid = _object("Service", [{**OWNER.reference(), "uid": "another"}])
    owned_not_controlled = _object("Service", [{**OWNER.reference(), "controller": False}])
    for obj in (_object("Service", []), same_name_other_uid, owned_not_controlled):
        assert not is_controlled_by(obj, OWNER)
    rollout = {"kind": "Rollout", "name": "web", "uid": "u", "controller": True}
    with pytest.raises(OwnershipConflictError) as raised:
        check_controlled(_object("HorizontalPodAutoscaler", [rollout]), OWNER)
    assert str(raised.value).startswith(
        "HorizontalPodAutoscaler models/digits already exists and is controlled by Rollout web, "
        "not by ModelService digits"
    )


def test_conflicts_are_degraded_with_the_object_named():
    running = OptimizationState("d" * 16, "j", True, Reason.SUCCEEDED, "passed", ARTIFACT, {})
    conflict = "Service models/digits already exists and is not controlled by any owner, not by ..."
    status, conditions = compute(Observation(1, running, ARTIFACT, None, conflict=conflict))
    deployed = next(c for c in conditions if c.type == DEPLOYED)
    assert (status["phase"], deployed.reason, deployed.message) == ("Degraded", Reason.CONFLICT, conflict)
    job_conflict = OptimizationState("d" * 16, "j", False, Reason.CONFLICT, "Job models/x ...", None, {})
    status, _ = compute(Observation(1, job_conflict, None, None))
    assert status["phase"] == "Degraded"


# --- egress --------------------------------------------------------------------------------

DNS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
STORE_PEERS = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "minio"}}}]


def _egress(spec, **overrides) -> list[dict]:
    install = settings(
        s3_endpoint="http://minio.minio.svc:9000", optimizer_egress_store=STORE_PEERS, **overrides
    )
    policy = build_optimizer_egress_policy(spec, OWNER, install)
    assert policy["spec"]["podSelector"]["matchLabels"] == {
        "mserve.io/modelservice": "digits",
        "app.kubernetes.io/component": "optimizer",
    }
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert policy["metadata"]["ownerReferences"] == [OWNER.reference()]
    return policy["spec"]["egress"]


def test_optimizer_egress_allows_dns_and_the_store_where_the_source_is_in_the_store():
    (dns, store) = _egress(cpu_spec())
    assert dns["ports"] == DNS
    assert store == {"ports": [{"protocol": "TCP", "port": 9000}], "to": STORE_PEERS}


def test_optimizer_egress_allows_an_https_source_only_on_public_addresses():
    spec = parse_spec({"model": {"uri": "https://hub.example:8443/m.onnx"}})
    (_, store, source) = _egress(spec)
    assert store["ports"] == [{"protocol": "TCP", "port": 9000}]
    assert source["ports"] == [{"protocol": "TCP", "port": 8443}]
    (block,) = source["to"]
    assert block["ipBlock"]["cidr"] == "0.0.0.0/0"
    assert "10.0.0.0/8" in block["ipBlock"]["except"]


def test_optimizer_egress_for_volumes_has_no_network_rule_and_can_be_turned_off():
    spec = parse_spec({"model": {"uri": "pvc://models/m.onnx"}})
    assert [rule["ports"] for rule in _egress(spec, artifact_uri="pvc://artifacts/")] == [DNS]
    assert build_optimizer_egress_policy(cpu_spec(), OWNER, settings(optimizer_egress_policy=False)) is None
