"""The chart's tenancy values: the runtime image allowlist (operator setting and admission
policy from one list), download and disk limits, the optimizer's egress policy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mserve_operator.images import image_refusal
from mserve_operator.settings import OperatorSettings
from mserve_operator.spec import parse_spec

from tests.support.chart_helm import CHART, by_kind, container_env, one, render, run_helm

IMAGES = [
    "registry.example/mserve/runtime:1.2",
    "registry.example/mserve/runtime-gpu:1.2",
    "registry.example/mservex/runtime:1.2",
    "evil.example/registry.example/mserve/runtime:1.2",
    "mserve-runtime:1.2",
    "mserve-runtime:1.23",
    "mserve-runtime:1x2",
    "mserve-runtime-gpu:1.2",
]


def _settings_from(deployment: dict, monkeypatch: pytest.MonkeyPatch) -> OperatorSettings:
    """The settings the operator reads from the environment the chart gives it."""
    for name, value in container_env(deployment).items():
        monkeypatch.setenv(name, value)
    return OperatorSettings(_env_file=None)


def _policy_allows(policy: dict, image: str) -> bool:
    """What the admission policy's CEL does: any of its raw-string regexes matches (RE2 = re here)."""
    (allowed,) = (v["expression"] for v in policy["spec"]["variables"] if v["name"] == "allowed")
    return any(re.search(pattern, image) for pattern in re.findall(r"r'([^']*)'", allowed))


@pytest.mark.parametrize(
    "allowlist",
    [[], ["registry.example/mserve/*"], ["mserve-runtime:1.?", "registry.example/mserve/runtime-gpu:*"]],
)
def test_admission_policy_and_operator_allow_the_same_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, allowlist: list[str]
) -> None:
    docs = render(tmp_path, {"images": {"tag": "1.2", "runtimeAllowlist": allowlist}})
    settings = _settings_from(one(docs, "Deployment"), monkeypatch)
    policy = one(docs, "ValidatingAdmissionPolicy")
    for image in IMAGES:
        spec = parse_spec({"model": {"uri": "s3://m/x.onnx"}, "serving": {"image": image}})
        assert _policy_allows(policy, image) == (image_refusal(spec, settings) == ""), image
    (validation,) = policy["spec"]["validations"]
    assert f"(allowed: {', '.join(settings.allowed_runtime_images)})" in validation["messageExpression"]


def test_admission_policy_fails_closed_and_binds_to_watched_namespaces(tmp_path: Path) -> None:
    docs = render(tmp_path, {"operator": {"watchNamespaces": ["team-a", "team-b"]}})
    policy = one(docs, "ValidatingAdmissionPolicy")
    binding = one(docs, "ValidatingAdmissionPolicyBinding")
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert "paramKind" not in policy["spec"]  # no parameter lookup that could fail (kubernetes#133827)
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    (selector,) = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
    assert selector["values"] == ["team-a", "team-b"]


def test_admission_policy_can_be_left_out(tmp_path: Path) -> None:
    docs = render(tmp_path, {"admission": {"imagePolicy": {"enabled": False}}})
    assert not by_kind(docs, "ValidatingAdmissionPolicy")
    assert not by_kind(docs, "ValidatingAdmissionPolicyBinding")


def test_limits_and_egress_values_reach_the_operator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "minio"}}}]
    values = {
        "fetch": {"maxBytes": 2147483648},
        "runtime": {"ephemeralStorage": {"request": "2Gi", "limit": "3Gi"}, "tmpSizeLimit": "128Mi"},
        "optimizer": {"ephemeralStorage": {"request": "5Gi", "limit": "50Gi"}, "egress": {"store": store}},
    }
    settings = _settings_from(one(render(tmp_path, values), "Deployment"), monkeypatch)
    assert settings.fetch_max_bytes == 2147483648
    assert (settings.runtime_ephemeral_storage_request, settings.runtime_ephemeral_storage_limit) == (
        "2Gi",
        "3Gi",
    )
    assert settings.runtime_tmp_size_limit == "128Mi"
    assert settings.optimizer_ephemeral_storage_limit == "50Gi"
    assert settings.optimizer_egress_policy is True
    assert settings.optimizer_egress_store == store
    assert settings.optimizer_egress_dns[0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"images": {"runtimeAllowlist": ["mserve-runtime:[12]"]}}, "runtimeAllowlist"),
        ({"images": {"runtimeAllowlist": ["evil image:1"]}}, "runtimeAllowlist"),
        ({"fetch": {"maxBytes": 0}}, "maxBytes"),
        ({"fetch": {"maxBytes": "4Gi"}}, "maxBytes"),
        ({"runtime": {"ephemeralStorage": {"request": "1Gi", "limit": "lots"}}}, "limit"),
        ({"optimizer": {"egress": {"networkPolicy": {"enabled": "yes"}}}}, "enabled"),
        ({"optimizer": {"egress": {"source": "0.0.0.0/0"}}}, "source"),
    ],
)
def test_careless_tenancy_values_are_refused_naming_the_value(
    tmp_path: Path, values: dict, words: str
) -> None:
    result = run_helm("template", "mserve", str(CHART), values=values, tmp_path=tmp_path)
    assert result.returncode != 0
    assert words in result.stderr, result.stderr
