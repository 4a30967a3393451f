"""ModelPool builders: the pool's Deployment of `mserve serve --pool` pods, and each
member's own Service in front of them."""

from __future__ import annotations

import json

import pytest
from mserve_operator.artifact import Artifact
from mserve_operator.builders.pool import (
    PoolMember,
    build_member_service,
    build_members_config,
    build_pool_deployment,
    members_config_name,
    pool_owner,
    pool_selector,
)
from mserve_operator.builders.service import build_service
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


def _lists(members: list[PoolMember]) -> dict[str, list[dict]]:
    return {k: json.loads(v) for k, v in build_members_config(POOL, members)["data"].items()}


def test_members_with_the_same_storage_access_share_one_sync_sidecar_reading_its_list() -> None:
    pod = _deployment()["spec"]["template"]["spec"]
    (sync,) = pod["initContainers"]
    (key, items), = _lists(MEMBERS).items()  # fmt: skip
    gid = key.removesuffix(".json")
    assert items == [
        {"name": "alpha", "uri": "s3://mserve-artifacts/models/alpha/model.onnx", "file": "alpha.onnx",
         "sha256": "cd" * 32},
        {"name": "mid", "uri": "s3://mserve-artifacts/models/mid/model.onnx", "file": "mid.onnx",
         "sha256": "ef" * 32},
        {"name": "zeta", "uri": "s3://mserve-artifacts/models/zeta/model.onnx", "file": "zeta.onnx",
         "sha256": "ab" * 32},
    ]  # fmt: skip
    assert sync["name"] == f"sync-{gid}"
    assert sync["restartPolicy"] == "Always", "a native sidecar: it keeps running next to the server"
    state = f"/models/.sync-{gid}.json"
    assert sync["args"] == [
        "fetch", "--role", "store", "--max-bytes", str(settings().fetch_max_bytes),
        "--sync", f"/etc/mserve/members-{gid}/members.json", "--into", "/models", "--state", state,
    ]  # fmt: skip
    assert sync["startupProbe"]["exec"]["command"] == ["mserve", "fetch", "--state", state]
    assert sync["envFrom"] == [{"prefix": "MSERVE_STORE_", "secretRef": {"name": "store-models"}}]
    volume = next(v for v in pod["volumes"] if v["name"] == f"members-{gid}")
    assert volume["configMap"] == {
        "name": "shared.pool-members",
        "items": [{"key": f"{gid}.json", "path": "members.json"}],
    }, "the sidecar sees only its own group's list"
    assert sync["resources"]["requests"]["memory"] == "64Mi", "a sidecar adds to the pod's requests: small"
    server = pod["containers"][0]
    assert server["args"] == ["serve", "--pool", "/models"]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in server["volumeMounts"]
    assert "envFrom" not in server, "the server never holds the store's credentials"
    assert not [m for m in server["volumeMounts"] if m["name"].startswith("members-")]


def test_a_member_with_other_credentials_gets_a_sidecar_and_a_list_of_its_own() -> None:
    own = PoolMember(
        "private", Artifact(uri="s3://team/private.onnx"), role="source", secret="team-keys", endpoint=""
    )
    plain = PoolMember("public", Artifact(uri="https://models.example/public.onnx"), role="source")
    members = [*MEMBERS, own, plain]
    syncs = _deployment(members=members)["spec"]["template"]["spec"]["initContainers"]
    lists = _lists(members)
    assert len(syncs) == len(lists) == 3
    by_member = {items[0]["name"]: key.removesuffix(".json") for key, items in lists.items()}
    sync = {c["name"].removeprefix("sync-"): c for c in syncs}
    private = sync[by_member["private"]]
    assert lists[f"{by_member['private']}.json"] == [
        {"name": "private", "uri": "s3://team/private.onnx", "file": "private.onnx", "sha256": "-"}
    ]
    assert private["envFrom"] == [{"prefix": "MSERVE_SOURCE_", "secretRef": {"name": "team-keys"}}]
    assert "envFrom" not in sync[by_member["public"]], "no Secret where the member names none"
    assert len(lists[f"{by_member['alpha']}.json"]) == 3


def test_the_template_follows_the_access_groups_not_the_members() -> None:
    def template(members: list[PoolMember]) -> dict:
        return _deployment(members=members)["spec"]["template"]

    assert template(MEMBERS) == template(list(reversed(MEMBERS)))
    assert template(MEMBERS) == template(MEMBERS[:2]), "a member leaving its group"
    assert template(MEMBERS) == template([*MEMBERS, _member("newcomer")]), "one joining an existing group"
    assert template(MEMBERS) == template([*MEMBERS[:2], _member("mid", "00")]), "a new artifact of a member"
    other = PoolMember("private", Artifact(uri="s3://team/private.onnx"), role="source", secret="team-keys")
    assert template(MEMBERS) != template([*MEMBERS, other]), "a new access group: a sidecar with its Secret"
    # ... while the member list changes with each of them
    assert _lists(MEMBERS) != _lists([*MEMBERS, _member("newcomer")])
    assert _lists(MEMBERS) != _lists([*MEMBERS[:2], _member("mid", "00")])
    assert _lists(MEMBERS) == _lists(list(reversed(MEMBERS)))


def test_the_member_list_is_owned_by_the_pool_under_a_name_no_modelservice_takes() -> None:
    config = build_members_config(POOL, MEMBERS)
    assert config["metadata"]["name"] == members_config_name("shared") == "shared.pool-members"
    (ref,) = config["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["controller"]) == ("ModelPool", "shared", True)
    assert build_members_config(POOL, [])["data"] == {}


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
