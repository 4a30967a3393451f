"""spec.access and spec.serving.tls: parsing (hostile values named), the runtime pod's env and
mounts, the ingress NetworkPolicy, the token-review identity, and the spec digest unmoved."""

from __future__ import annotations

import pytest
from mserve_operator import names
from mserve_operator.builders import (
    build_deployment,
    build_ingress_policy,
    build_service,
    build_service_account,
    build_token_review_binding,
    service_url,
)
from mserve_operator.spec import parse_spec
from mserve_operator.spec_digest import spec_digest
from operator_fixtures import ARTIFACT, OWNER, settings
from pydantic import ValidationError

MODEL = {"uri": "s3://models/m.onnx"}


def _spec(access: dict | None = None, **serving):
    return parse_spec({"model": MODEL, "access": access or {}, "serving": serving})


def _server(spec, **overrides) -> dict:
    deployment = build_deployment(spec, OWNER, ARTIFACT, settings(**overrides))
    return deployment["spec"]["template"]


def _env(template: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in template["spec"]["containers"][0]["env"]}


# ---------------------------------------------------------------- parsing: hostile values, named
@pytest.mark.parametrize(
    ("access", "named"),
    [
        ({"authentication": "apiKey"}, "apiKeySecrets must name at least one Secret"),
        ({"authentication": "kubernetes"}, "allowedServiceAccounts must name at least one ServiceAccount"),
        ({"authentication": "basic"}, "authentication"),
        (
            {"authentication": "kubernetes", "allowedServiceAccounts": ["client"]},
            "'client' must be <namespace>/<serviceaccount>",
        ),
        (
            {"authentication": "kubernetes", "allowedServiceAccounts": ["team-a/*/x"]},
            "'team-a/*/x' must be <namespace>/<serviceaccount>",
        ),
        ({"apiKeySecrets": ["keys"]}, "apiKeySecrets is set but authentication is not apiKey"),
        (
            {"authentication": "apiKey", "apiKeySecrets": ["k"], "allowedServiceAccounts": ["a/b"]},
            "allowedServiceAccounts is set but authentication is not kubernetes",
        ),
        ({"rateLimit": {"requestsPerSecond": -1}}, "requestsPerSecond"),
        ({"rateLimit": {"requestsPerSecond": 5, "burst": 0}}, "burst"),
        ({"allowedPodSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}, "operator"),
    ],
)
def test_hostile_access_is_refused_naming_the_field(access: dict, named: str):
    with pytest.raises(ValidationError) as refused:
        _spec(access)
    assert named in str(refused.value)
    assert "access" in str(refused.value)


def test_access_defaults_to_open_to_the_own_namespace_without_a_limit():
    access = _spec().access
    assert access.authentication == "none"
    assert access.namespaces("models") == ("models",)
    assert access.rate_limit.requests_per_second == 0


def test_access_and_tls_edits_leave_the_spec_digest_alone():
    """No optimization Job runs again for an access-only change: only the Deployment rolls."""
    plain = _spec()
    guarded = _spec(
        {
            "authentication": "apiKey",
            "apiKeySecrets": ["keys"],
            "allowedNamespaces": ["clients"],
            "rateLimit": {"requestsPerSecond": 10},
        },
        tls={"secretName": "cert"},
    )
    assert spec_digest(plain) == spec_digest(guarded)


# ---------------------------------------------------------------- the runtime pod
def test_open_model_still_gets_the_admin_port_and_scrape_annotations_on_it():
    template = _server(_spec())
    env = _env(template)
    assert env["MSERVE_AUTH"] == "none"
    assert env["MSERVE_ADMIN_PORT"] == "8082"
    assert env["MSERVE_DOCS_UI"] == "true"
    assert "MSERVE_RATE_LIMIT_RPS" not in env
    ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    assert ports == {"http": 8080, "grpc": 8081, "admin": 8082}
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "8082"
    assert template["spec"]["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in template["spec"]


def test_service_exposes_serving_ports_only():
    ports = {p["name"]: p["port"] for p in build_service(OWNER)["spec"]["ports"]}
    assert ports == {"http": 8080, "grpc": 8081}


def test_api_key_secrets_are_mounted_whole_one_folder_each_so_rotations_arrive():
    template = _server(_spec({"authentication": "apiKey", "apiKeySecrets": ["team-a.keys", "ops"]}))
    env = _env(template)
    assert env["MSERVE_AUTH"] == "apiKey"
    assert env["MSERVE_API_KEYS_DIR"] == "/var/run/mserve/api-keys"
    mounts = {m["name"]: m for m in template["spec"]["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    for index, secret in enumerate(["team-a.keys", "ops"]):
        mount = mounts[f"api-keys-{index}"]
        assert mount == {
            "name": f"api-keys-{index}",
            "mountPath": f"/var/run/mserve/api-keys/{secret}",
            "readOnly": True,
        }
        assert "subPath" not in mount
        assert volumes[f"api-keys-{index}"]["secret"]["secretName"] == secret
    # the fetch init container never sees the keys
    fetch = template["spec"]["initContainers"][0]
    assert not any(m["name"].startswith("api-keys") for m in fetch["volumeMounts"])


def test_kubernetes_authentication_runs_as_its_own_service_account_with_a_token():
    spec = _spec({"authentication": "kubernetes", "allowedServiceAccounts": ["clients/*", "ops/robot"]})
    template = _server(spec)
    env = _env(template)
    assert env["MSERVE_AUTH"] == "kubernetes"
    assert env["MSERVE_ALLOWED_SERVICE_ACCOUNTS"] == "clients/*,ops/robot"
    assert env["MSERVE_TOKEN_AUDIENCE"] == "mserve"
    assert template["spec"]["serviceAccountName"] == "digits-mserve"
    assert template["spec"]["automountServiceAccountToken"] is True

    account = build_service_account(spec, OWNER)
    assert account["metadata"]["name"] == "digits-mserve"
    assert account["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    binding = build_token_review_binding(spec, OWNER)
    assert binding["roleRef"]["name"] == "system:auth-delegator"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "digits-mserve", "namespace": "models"}]
    assert "namespace" not in binding["metadata"]
    assert binding["metadata"]["labels"][names.MODELSERVICE_NAMESPACE_LABEL] == "models"


def test_no_identity_without_kubernetes_authentication():
    spec = _spec({"authentication": "apiKey", "apiKeySecrets": ["k"]})
    assert build_service_account(spec, OWNER) is None
    assert build_token_review_binding(spec, OWNER) is None


def test_rate_limit_env_with_a_default_burst_of_one_second():
    env = _env(_server(_spec({"rateLimit": {"requestsPerSecond": 2.5}})))
    assert env["MSERVE_RATE_LIMIT_RPS"] == "2.5"
    assert env["MSERVE_RATE_LIMIT_BURST"] == "3"
    env = _env(_server(_spec({"rateLimit": {"requestsPerSecond": 100, "burst": 7}})))
    assert env["MSERVE_RATE_LIMIT_BURST"] == "7"


def test_docs_ui_follows_the_install():
    assert _env(_server(_spec(), runtime_docs_ui=False))["MSERVE_DOCS_UI"] == "false"


def test_tls_mounts_the_secret_probes_https_and_the_url_says_https():
    template = _server(_spec(tls={"secretName": "digits-cert"}))
    env = _env(template)
    assert env["MSERVE_TLS_CERT_FILE"] == "/var/run/mserve/tls/tls.crt"
    assert env["MSERVE_TLS_KEY_FILE"] == "/var/run/mserve/tls/tls.key"
    server = template["spec"]["containers"][0]
    assert {"name": "tls", "mountPath": "/var/run/mserve/tls", "readOnly": True} in server["volumeMounts"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert server[probe]["httpGet"]["scheme"] == "HTTPS"
    assert template["metadata"]["annotations"]["prometheus.io/scheme"] == "https"
    assert service_url(OWNER, "cluster.local", tls=True) == "https://digits.models.svc.cluster.local:8080"


# ---------------------------------------------------------------- the ingress NetworkPolicy
def _rules(policy: dict) -> list[dict]:
    return policy["spec"]["ingress"]


def test_ingress_policy_defaults_to_the_own_namespace_on_serving_ports():
    policy = build_ingress_policy(_spec(), OWNER, settings())
    assert policy["metadata"]["name"] == "digits-ingress"
    assert policy["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    assert policy["spec"]["podSelector"] == {"matchLabels": names.selector_labels("digits", "runtime")}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (serving,) = _rules(policy)  # no scraper configured: nobody reaches the admin port
    assert serving["from"] == [
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["models"]}
                ]
            }
        }
    ]
    assert serving["ports"] == [{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": 8081}]


def test_ingress_policy_names_allowed_namespaces_pod_selector_and_the_scraper():
    selector = {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]}
    scraper = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    spec = _spec({"allowedNamespaces": ["web", "batch"], "allowedPodSelector": selector})
    serving, admin = _rules(build_ingress_policy(spec, OWNER, settings(network_policy_scraper=scraper)))
    (peer,) = serving["from"]
    assert peer["namespaceSelector"]["matchExpressions"][0]["values"] == ["batch", "web"]
    assert peer["podSelector"] == selector
    assert admin == {"from": scraper, "ports": [{"protocol": "TCP", "port": 8082}]}


def test_ingress_policy_off_when_the_install_says_so():
    assert build_ingress_policy(_spec(), OWNER, settings(network_policy=False)) is None
