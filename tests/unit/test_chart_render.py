"""`helm template` of charts/mserve with the value sets a platform team uses."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.support.chart_helm import CHART, by_kind, container_env, one, render, run_helm

NAMESPACED = {
    "operator": {"replicas": 2, "watchNamespaces": ["team-a", "team-b"]},
    "networkPolicy": {"enabled": True},
    "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
}


def app_version() -> str:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


def test_defaults_install_the_operator_cluster_wide(tmp_path: Path) -> None:
    docs = render(tmp_path)
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds == [
        "ClusterKopfPeering",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "NetworkPolicy",
        "Pod",
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    deployment = one(docs, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"mserve-operator:{app_version()}"
    assert container["args"] == ["operator", "run", "--all-namespaces"]
    assert (
        deployment["spec"]["template"]["spec"]["serviceAccountName"]
        == one(docs, "ServiceAccount")["metadata"]["name"]
    )


def test_operator_settings_come_from_values(tmp_path: Path) -> None:
    values = {
        "images": {"tag": "1.2.3", "runtime": "registry.example/mserve-runtime"},
        "artifactStore": {
            "uri": "s3://models-out/prod/",
            "s3": {"endpoint": "http://minio.storage:9000", "credentialsSecret": "s3-creds"},
        },
        "runtime": {
            "resources": {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "4", "memory": "2Gi"}}
        },
        "gpu": {"nodeSelector": {"nvidia.com/gpu.present": "true"}},
    }
    env = container_env(one(render(tmp_path, values), "Deployment"))
    assert env["MSERVE_OPERATOR_IMAGE_TAG"] == "1.2.3"
    assert env["MSERVE_OPERATOR_RUNTIME_IMAGE"] == "registry.example/mserve-runtime"
    assert env["MSERVE_OPERATOR_ARTIFACT_URI"] == "s3://models-out/prod/"
    assert env["MSERVE_OPERATOR_S3_ENDPOINT"] == "http://minio.storage:9000"
    assert env["MSERVE_OPERATOR_S3_SECRET"] == "s3-creds"
    assert env["MSERVE_OPERATOR_RUNTIME_CPU_LIMIT"] == "4"
    assert json.loads(env["MSERVE_OPERATOR_GPU_NODE_SELECTOR"]) == {"nvidia.com/gpu.present": "true"}


def test_peering_object_is_the_one_the_operator_uses(tmp_path: Path) -> None:
    docs = render(tmp_path)
    env = container_env(one(docs, "Deployment"))
    assert one(docs, "ClusterKopfPeering")["metadata"]["name"] == env["MSERVE_OPERATOR_PEERING_NAME"]


def test_env_names_match_the_operator_settings(tmp_path: Path) -> None:
    from mserve_operator.settings import OperatorSettings

    env = container_env(one(render(tmp_path), "Deployment"))
    fields = {f"MSERVE_OPERATOR_{name.upper()}" for name in OperatorSettings.model_fields}
    unknown = sorted(
        name for name in env if name not in fields and not name.startswith("MSERVE_OPERATOR_GPU_")
    )
    assert not unknown, f"the chart sets settings the operator does not have: {unknown}"


def test_watched_namespaces_get_role_bindings_and_policies(tmp_path: Path) -> None:
    docs = render(tmp_path, NAMESPACED)
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["operator", "run", "--namespace=team-a", "--namespace=team-b"]
    bindings = by_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    # runtime pods' policies are the operator's, one per ModelService: none from the chart
    policies = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in by_kind(docs, "NetworkPolicy")}
    assert {ns for ns, _ in policies} == {"mserve-system"}
    assert len(by_kind(docs, "ClusterRole")) == 2
    assert sorted(p["metadata"]["namespace"] for p in by_kind(docs, "KopfPeering")) == ["team-a", "team-b"]
    assert not by_kind(docs, "ClusterKopfPeering")


def test_monitoring_objects_only_when_enabled(tmp_path: Path) -> None:
    assert not by_kind(render(tmp_path), "ServiceMonitor")
    docs = render(tmp_path, NAMESPACED)
    assert one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "metrics"
    assert one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["honorLabels"] is True
    assert one(docs, "PodMonitor")["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    assert one(docs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"] == "admin"
    alerts = [r["alert"] for r in one(docs, "PrometheusRule")["spec"]["groups"][0]["rules"]]
    assert "MserveOperatorDown" in alerts


def test_existing_service_account_and_no_rbac(tmp_path: Path) -> None:
    docs = render(
        tmp_path, {"serviceAccount": {"create": False, "name": "platform-sa"}, "rbac": {"create": False}}
    )
    assert not by_kind(docs, "ServiceAccount")
    assert not by_kind(docs, "ClusterRole")
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "platform-sa"


def test_pull_secrets_reach_operator_and_test_pods(tmp_path: Path) -> None:
    docs = render(tmp_path, {"images": {"pullSecrets": ["regcred"]}})
    deployment_spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert deployment_spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert one(docs, "Pod")["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_every_pod_meets_the_restricted_pod_security_standard(tmp_path: Path) -> None:
    docs = render(tmp_path, NAMESPACED)
    pod_specs = [one(docs, "Deployment")["spec"]["template"]["spec"], one(docs, "Pod")["spec"]]
    for spec in pod_specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert "resources" in container


def test_test_pod_is_a_helm_test_hook(tmp_path: Path) -> None:
    pod = one(render(tmp_path), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "/healthz" in pod["spec"]["containers"][0]["command"][-1]


def test_crds_are_rendered_from_the_crds_folder(tmp_path: Path) -> None:
    docs = render(tmp_path, None, "--include-crds")
    names = {crd["metadata"]["name"] for crd in by_kind(docs, "CustomResourceDefinition")}
    assert "modelservices.mserve.io" in names


def test_network_policies_on_by_default_with_the_scraper_peers(tmp_path: Path) -> None:
    docs = render(tmp_path)
    env = container_env(one(docs, "Deployment"))
    assert env["MSERVE_OPERATOR_NETWORK_POLICY"] == "true"
    scraper = json.loads(env["MSERVE_OPERATOR_NETWORK_POLICY_SCRAPER"])
    prometheus = {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    # the operator's own pods read the runtime's metrics for status.usage
    operator = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mserve-system"}},
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/instance": "mserve",
                "app.kubernetes.io/name": "mserve-operator",
            }
        },
    }
    assert scraper == [prometheus, operator]
    assert env["MSERVE_OPERATOR_RUNTIME_DOCS_UI"] == "true"
    (policy,) = by_kind(docs, "NetworkPolicy")
    metrics_rule = next(r for r in policy["spec"]["ingress"] if r["ports"] == [{"port": "metrics"}])
    assert metrics_rule["from"] == [prometheus]


def test_usage_metering_values_reach_the_operator(tmp_path: Path) -> None:
    priced = render(tmp_path, {"usage": {"windowSeconds": 120, "prices": {"cpuHour": 0.04, "gpuHour": 0}}})
    env = container_env(one(priced, "Deployment"))
    assert env["MSERVE_OPERATOR_USAGE_INTERVAL_SECONDS"] == "30"
    assert env["MSERVE_OPERATOR_USAGE_WINDOW_SECONDS"] == "120"
    assert (env["MSERVE_OPERATOR_PRICE_CPU_HOUR"], env["MSERVE_OPERATOR_PRICE_GPU_HOUR"]) == ("0.04", "0")
    assert "MSERVE_OPERATOR_PRICE_MEMORY_GIB_HOUR" not in env  # null: unpriced
    off = container_env(one(render(tmp_path, {"usage": {"intervalSeconds": 0}}), "Deployment"))
    assert len(json.loads(off["MSERVE_OPERATOR_NETWORK_POLICY_SCRAPER"])) == 1  # no operator peer


def test_a_negative_price_or_window_is_refused_naming_it(tmp_path: Path) -> None:
    for values, where in (
        ({"usage": {"prices": {"memoryGiBHour": -1}}}, "/usage/prices/memoryGiBHour"),
        ({"usage": {"windowSeconds": 0}}, "/usage/windowSeconds"),
    ):
        result = run_helm("template", "mserve", str(CHART), values=values, tmp_path=tmp_path)
        assert result.returncode != 0
        assert where in result.stderr


def test_the_dashboard_configmap_carries_the_chart_dashboard(tmp_path: Path) -> None:
    assert not by_kind(render(tmp_path), "ConfigMap")
    (configmap,) = by_kind(render(tmp_path, {"dashboard": {"enabled": True}}), "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["mserve.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "mserve.json").read_text())
    assert all(target["expr"] for panel in dashboard["panels"] for target in panel["targets"])


def test_network_policies_off_and_no_scraper(tmp_path: Path) -> None:
    off = render(tmp_path, {"networkPolicy": {"enabled": False}})
    assert container_env(one(off, "Deployment"))["MSERVE_OPERATOR_NETWORK_POLICY"] == "false"
    assert not by_kind(off, "NetworkPolicy")
    closed = render(tmp_path, {"networkPolicy": {"scraper": []}})
    (policy,) = by_kind(closed, "NetworkPolicy")
    assert [r["ports"] for r in policy["spec"]["ingress"]] == [[{"port": "health"}]]


def test_watching_namespaces_still_binds_the_token_review_role_cluster_wide(tmp_path: Path) -> None:
    """ClusterRoleBindings are cluster-scoped: a RoleBinding could never grant them."""
    docs = render(tmp_path, NAMESPACED)
    cluster_role = next(
        r for r in by_kind(docs, "ClusterRole") if not r["metadata"]["name"].endswith("-namespaced")
    )
    resources = {res for rule in cluster_role["rules"] for res in rule["resources"]}
    assert {"clusterrolebindings", "clusterroles"} <= resources
    bind = next(rule for rule in cluster_role["rules"] if "bind" in rule["verbs"])
    assert bind["resourceNames"] == ["system:auth-delegator"]
