"""A real Prometheus in the cluster for the e2e tier (hack/build.sh prometheus, image from
hack/docker-images.sh addon-tars), scraping every runtime pod's admin port and the operator.

Its pods carry `app.kubernetes.io/name: prometheus`, the chart's default scraper peer, so the
runtime NetworkPolicy lets them in. Kubernetes service discovery finds the pods; nothing else
of Prometheus' discovery is built in.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import yaml
from e2e_kube import Cluster, wait_until

from tests.support.cluster_access import versions

NAMESPACE = "mserve-prometheus"
NAME = "prometheus"
PORT = 9090
SCRAPE_INTERVAL_S = 5


def image() -> str:
    return f"mserve.local/prometheus:{versions()['PROMETHEUS_VERSION']}"


def _keep(component_label: str, value: str, port_name: str) -> list[dict]:
    return [
        {
            "source_labels": [
                f"__meta_kubernetes_pod_label_{component_label}",
                "__meta_kubernetes_pod_container_port_name",
            ],
            "regex": f"{value};{port_name}",
            "action": "keep",
        },
        # a model served over TLS serves its admin port over TLS too (builders/deployment.py)
        {
            "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scheme"],
            "regex": "(https?)",
            "target_label": "__scheme__",
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    ]


def config() -> dict:
    return {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
        },
        "scrape_configs": [
            {
                "job_name": "mserve-runtime",
                "kubernetes_sd_configs": [{"role": "pod"}],
                # its certificate names the Service, not the pod's address
                "tls_config": {"insecure_skip_verify": True},
                "relabel_configs": _keep("app_kubernetes_io_component", "runtime", "admin"),
            },
            {
                "job_name": "mserve-operator",
                # its usage gauges name the ModelService's namespace: keep it over the target's
                "honor_labels": True,
                "kubernetes_sd_configs": [{"role": "pod"}],
                "relabel_configs": _keep("app_kubernetes_io_name", "mserve-operator", "metrics"),
            },
        ],
    }


def manifests() -> list[dict]:
    labels = {"app.kubernetes.io/name": NAME}
    meta = {"name": NAME, "namespace": NAMESPACE, "labels": labels}
    container = {
        "name": NAME,
        "image": image(),
        "imagePullPolicy": "Never",
        "args": [
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/data",
            f"--web.listen-address=:{PORT}",
        ],
        "ports": [{"name": "web", "containerPort": PORT}],
        "readinessProbe": {"httpGet": {"path": "/-/ready", "port": PORT}, "periodSeconds": 2},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/prometheus"},
            {"name": "data", "mountPath": "/data"},  # /prometheus is the binary
        ],
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "mserve-e2e-prometheus"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "mserve-e2e-prometheus"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "mserve-e2e-prometheus",
            },
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "data": {"prometheus.yml": yaml.safe_dump(config())},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": NAME,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 65534,
                            "fsGroup": 65534,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [container],
                        "volumes": [
                            {"name": "config", "configMap": {"name": NAME}},
                            {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"selector": labels, "ports": [{"name": "web", "port": PORT, "targetPort": PORT}]},
        },
    ]


def deploy(cluster: Cluster) -> None:
    for manifest in manifests():
        cluster.apply(manifest)
    cluster.kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{NAME}", "--timeout=120s", timeout=140)


def remove(cluster: Cluster) -> None:
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--ignore-not-found", timeout=120)
    cluster.kubectl("delete", "clusterrolebinding,clusterrole", "mserve-e2e-prometheus", "--ignore-not-found")


def query(url: str, promql: str) -> list[dict]:
    """An instant query; the result vector (Prometheus' error text on failure)."""
    with urllib.request.urlopen(
        f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}", timeout=10
    ) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for_data(url: str, promql: str, timeout: float = 90) -> list[dict]:
    def answered() -> list[dict] | None:
        try:
            return query(url, promql) or None
        except OSError:  # the port-forward dropped a connection: ask again
            return None

    return wait_until(f"data for {promql}", answered, timeout=timeout, interval=2.5)
