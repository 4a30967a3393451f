"""ModelPool builders: the pool's Deployment of `mserve serve --pool` pods, and each
member's own Service in front of them."""

from __future__ import annotations

import pytest
from mserve_operator.artifact import Artifact
from mserve_operator.builders.pool import (
    MEMBERS_ANNOTATION,
    PoolMember,
    build_member_service,
    build_pool_deployment,
    pool_owner,
    pool_selector,
)
from mserve_operator.builders.service import build_service
from mserve_operator.pool_member import fetches_member
from mserve_operator.pool_spec import parse_pool_spec
from mserve_operator.spec import parse_spec
from pydantic import ValidationError

from tests.unit.operator_fixtures import OWNER, all_containers, settings

POOL = pool_owner(
    {"metadata": {"name": "shared", "namespace": "models", "uid": "0f3c1f2e-0000-4000-8000-0000000000aa"}}
)


def _member(name: str, sha: str = "ab") -> PoolMember:
    artifact = Artifact(uri=f"s3://mserve-artifacts/models/{name}/model.onnx", sha256=sha * 32)
    return PoolMember(name, artifact, secret="store-models", endpoint="http://minio:9000")


MEMBERS = [_member("zeta"), _member("alpha", "cd"), _member("mid", "ef")]


def _deployment(spec: dict | None = None, members: list[PoolMember] = MEMBERS, **overrides) -> dict:
    return build_pool_deployment(POOL, parse_pool_spec(spec or {}), members, settings(**overrides))


def test_members_with_the_same_storage_access_share_one_fetch_process_in_name_order() -> None:
    pod = _deployment()["spec"]["template"]["spec"]
    (fetch,) = pod["initContainers"]
    assert fetch["args"] == [
        "fetch", "--role", "store", "--max-bytes", str(settings().fetch_max_bytes),
        "--item", "s3://mserve-artifacts/models/alpha/model.onnx", "/models/alpha.onnx", "cd" * 32,
        "--item", "s3://mserve-artifacts/models/mid/model.onnx", "/models/mid.onnx", "ef" * 32,
        "--item", "s3://mserve-artifacts/models/zeta/model.onnx", "/models/zeta.onnx", "ab" * 32,
    ]  # fmt: skip
    assert fetch["envFrom"] == [{"prefix": "MSERVE_STORE_", "secretRef": {"name": "store-models"}}]
    server = pod["containers"][0]
    assert server["args"] == ["serve", "--pool", "/models"]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in server["volumeMounts"]
    assert "envFrom" not in server, "the server never holds the store's credentials"


def test_a_member_with_other_credentials_gets_a_fetch_container_of_its_own() -> None:
    own = PoolMember(
        "private", Artifact(uri="s3://team/private.onnx"), role="source", secret="team-keys", endpoint=""
    )
    plain = PoolMember("public", Artifact(uri="https://models.example/public.onnx"), role="source")
    fetches = _deployment(members=[*MEMBERS, own, plain])["spec"]["template"]["spec"]["initContainers"]
    assert len(fetches) == 3
    by_item = {c["args"][c["args"].index("--item") + 2]: c for c in fetches}
    private = by_item["/models/private.onnx"]
    assert private["args"].count("--item") == 1
    assert private["args"][-1] == "-", "no digest: '-'"
    assert private["envFrom"] == [{"prefix": "MSERVE_SOURCE_", "secretRef": {"name": "team-keys"}}]
    assert "envFrom" not in by_item["/models/public.onnx"], "no Secret where the member names none"
    assert by_item["/models/alpha.onnx"]["args"].count("--item") == 3


def test_memory_budget_reaches_the_runtime_in_bytes() -> None:
    env = {
        e["name"]: e["value"]
        for e in _deployment({"memoryBudget": "2Gi"})["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MSERVE_POOL_MEMORY_BYTES"] == str(2 << 30)
    assert env["MSERVE_POOL_DIR"] == "/models"
    assert env["MSERVE_DEVICE"] == "cpu"
    unset = _deployment()["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "MSERVE_POOL_MEMORY_BYTES" not in {e["name"] for e in unset}, (
        "unset: the runtime takes half the limit"
    )


def test_pool_pods_are_owned_by_the_pool_and_restricted() -> None:
    deployment = _deployment({"replicas": 3})
    assert deployment["metadata"]["name"] == "shared"
    (ref,) = deployment["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["controller"]) == ("ModelPool", "shared", True)
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["selector"]["matchLabels"] == pool_selector("shared")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in all_containers(pod):
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_resources_from_the_spec_and_the_install_defaults_for_the_rest() -> None:
    spec = {"resources": {"limits": {"memory": "4Gi"}, "requests": {"memory": "4Gi"}}}
    server = _deployment(spec)["spec"]["template"]["spec"]["containers"][0]
    assert server["resources"]["limits"]["memory"] == "4Gi"
    assert server["resources"]["limits"]["cpu"] == settings().runtime_cpu_limit


def test_gpu_pool_asks_for_the_gpu_tolerates_its_taint_and_runs_cuda() -> None:
    pod = _deployment({"gpu": {"count": 1, "nodeSelector": {"gpu": "h100"}}})["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert server["image"].startswith(settings().runtime_gpu_image)
    assert {"name": "MSERVE_DEVICE", "value": "cuda"} in server["env"]
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    for fetch in pod["initContainers"]:
        assert "nvidia.com/gpu" not in fetch["resources"]["limits"]


def test_member_set_changes_roll_the_pods_and_order_does_not() -> None:
    def digest(members: list[PoolMember]) -> str:
        return _deployment(members=members)["spec"]["template"]["metadata"]["annotations"][MEMBERS_ANNOTATION]

    assert digest(MEMBERS) == digest(list(reversed(MEMBERS)))
    assert digest(MEMBERS) != digest(MEMBERS[:2])
    assert digest(MEMBERS) != digest([*MEMBERS[:2], _member("mid", "00")]), "a new artifact of a member"


def test_member_keeps_its_own_service_name_ports_and_url_but_selects_the_pool() -> None:
    dedicated = build_service(OWNER)
    pooled = build_member_service(OWNER, "shared")
    assert pooled["metadata"]["name"] == dedicated["metadata"]["name"] == OWNER.name
    assert pooled["spec"]["ports"] == dedicated["spec"]["ports"]
    assert pooled["spec"]["selector"] == pool_selector("shared")
    assert pooled["metadata"]["ownerReferences"] == dedicated["metadata"]["ownerReferences"]


@pytest.mark.parametrize("budget", ["lots", "-1Gi", "0", "1.5.Gi", ""])
def test_a_careless_memory_budget_is_refused_naming_the_field(budget: str) -> None:
    with pytest.raises(ValidationError, match=r"spec\.memoryBudget"):
        parse_pool_spec({"memoryBudget": budget})


@pytest.mark.parametrize("replicas", [0, -1, 101])
def test_replicas_out_of_range_are_refused(replicas: int) -> None:
    with pytest.raises(ValidationError, match="replicas"):
        parse_pool_spec({"replicas": replicas})


def test_a_modelservice_names_its_pool() -> None:
    spec = parse_spec({"model": {"uri": "s3://models/m.onnx"}, "serving": {"pool": "shared"}})
    assert spec.serving.pool == "shared"
    assert parse_spec({"model": {"uri": "s3://models/m.onnx"}}).serving.pool == ""


def test_a_member_is_served_only_by_a_template_that_loads_its_artifact() -> None:
    deployment = _deployment()
    assert fetches_member(deployment, "mid", MEMBERS[2].artifact)
    assert not fetches_member(deployment, "mid", _member("mid", "00").artifact), "an older artifact"
    assert not fetches_member(deployment, "newcomer", _member("newcomer").artifact)
    assert not fetches_member(_deployment(members=[]), "mid", MEMBERS[2].artifact)


@pytest.mark.parametrize(
    "extra",
    [
        {"serving": {"pool": "shared", "tls": {"secretName": "t"}}},
        {"serving": {"pool": "shared"}, "access": {"authentication": "apiKey", "apiKeySecrets": ["keys"]}},
    ],
)
def test_a_pool_member_cannot_have_its_own_tls_or_authentication(extra: dict) -> None:
    """The pool's pods serve every member with one configuration: a member's keys or certificate
    would silently not apply, so the spec is refused naming the field."""
    with pytest.raises(ValueError, match=r"spec\.serving\.pool"):
        parse_spec({"model": {"uri": "https://models.example/m.onnx"}, **extra})
