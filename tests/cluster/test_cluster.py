"""The cluster works as the project needs it: node, DNS, Services, metrics, scaling,
CRD CEL validation and Pod Security admission. Runs on any cluster named by a kubeconfig
(hack/cluster.sh up here, kind on a laptop)."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
from cluster_helpers import deployment_manifest, run_pod, wait_until

from tests.support.cluster_access import HACK
from tests.support.kubectl import Kubectl, dump_namespace

pytestmark = pytest.mark.cluster


def test_node_ready(kubectl: Kubectl, ready_node: str):
    node = kubectl.json("get", "node", ready_node)
    conditions = {c["type"]: c for c in node["status"]["conditions"]}
    assert conditions["Ready"]["status"] == "True", json.dumps(conditions, indent=1)
    assert node["status"]["nodeInfo"]["kubeletVersion"].startswith("v1."), node["status"]["nodeInfo"]


def test_system_addons_available(kubectl: Kubectl, ready_node: str):
    for deploy in ("coredns", "metrics-server"):
        proc = kubectl.run(
            "-n",
            "kube-system",
            "rollout",
            "status",
            f"deploy/{deploy}",
            "--timeout=120s",
            check=False,
            timeout=150,
        )
        assert proc.returncode == 0, proc.stderr + dump_namespace(kubectl, "kube-system")


def test_coredns_resolves_kubernetes_default(kubectl: Kubectl, namespace: str, test_image: str):
    logs = run_pod(kubectl, namespace, "resolve", test_image, ["resolve", "kubernetes.default"])
    svc_ip = kubectl.json("-n", "default", "get", "service", "kubernetes")["spec"]["clusterIP"]
    assert svc_ip in logs.split(), f"kubernetes.default resolved to {logs!r}, expected {svc_ip}"


def test_service_reached_by_dns_from_pod_and_by_cluster_ip_from_host(
    kubectl: Kubectl, namespace: str, test_image: str
):
    kubectl.apply(deployment_manifest("web", test_image, 1), namespace)
    kubectl.apply(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
            }
        ),
        namespace,
    )
    kubectl.run("-n", namespace, "rollout", "status", "deploy/web", "--timeout=120s", timeout=150)

    # the host, by ClusterIP (kube-proxy's nat OUTPUT rules). kube-proxy programs a new
    # Service's rules asynchronously after its endpoints are ready, so this also waits for them.
    cluster_ip = kubectl.json("-n", namespace, "get", "service", "web")["spec"]["clusterIP"]

    def host_get():
        try:
            with urllib.request.urlopen(f"http://{cluster_ip}/", timeout=3) as resp:
                return resp.read().decode()
        except OSError as exc:  # refused until kube-proxy has the rules
            raise AssertionError(str(exc)) from exc

    body = wait_until(f"host GET http://{cluster_ip}/", host_get, timeout=60)
    assert body.startswith("hello from web-"), body

    # another pod, by the Service's DNS name (short and fully qualified)
    for i, url in enumerate(("http://web/", f"http://web.{namespace}.svc.cluster.local/")):
        logs = run_pod(kubectl, namespace, f"client-{i}", test_image, ["get", url])
        assert logs.startswith("200 hello from web-"), logs


def test_kubectl_top_nodes(kubectl: Kubectl, ready_node: str):
    def top():
        proc = kubectl.run("top", "nodes", "--no-headers", check=False)
        return proc.stdout if proc.returncode == 0 and ready_node in proc.stdout else None

    out = wait_until("kubectl top nodes", top, timeout=180, interval=3)
    fields = out.split()
    assert fields[0] == ready_node, out
    assert fields[1].endswith("m"), out


def test_deployment_scales_1_3_1(kubectl: Kubectl, namespace: str, test_image: str):
    kubectl.apply(deployment_manifest("scale", test_image, 1), namespace)

    def converged(n: int):
        def check():
            d = kubectl.json("-n", namespace, "get", "deploy", "scale")
            pods = kubectl.json("-n", namespace, "get", "pods", "-l", "app=scale")["items"]
            alive = [p for p in pods if p["metadata"].get("deletionTimestamp") is None]
            status = d["status"]
            return status.get("readyReplicas", 0) == n and status.get("replicas") == n and len(alive) == n

        return check

    for replicas in (1, 3, 1):
        kubectl.run("-n", namespace, "scale", "deploy/scale", f"--replicas={replicas}")
        wait_until(f"deployment at {replicas} ready replicas", converged(replicas), timeout=120)


CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.clustertest.mserve.io
spec:
  group: clustertest.mserve.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              minReplicas: {type: integer}
              maxReplicas: {type: integer}
            x-kubernetes-validations:
            - rule: "self.minReplicas <= self.maxReplicas"
              message: "minReplicas must not exceed maxReplicas"
"""


def test_crd_cel_rule_refuses_bad_object(kubectl: Kubectl, namespace: str):
    kubectl.apply(CRD)
    try:
        wait_until(
            "CRD Established",
            lambda: (
                kubectl.run(
                    "wait",
                    "--for=condition=Established",
                    "crd/widgets.clustertest.mserve.io",
                    "--timeout=5s",
                    check=False,
                ).returncode
                == 0
            ),
            timeout=60,
        )

        def widget(name: str, lo: int, hi: int) -> str:
            return json.dumps(
                {
                    "apiVersion": "clustertest.mserve.io/v1",
                    "kind": "Widget",
                    "metadata": {"name": name},
                    "spec": {"minReplicas": lo, "maxReplicas": hi},
                }
            )

        # discovery of the new type can lag the Established condition by a moment
        wait_until(
            "a good Widget accepted",
            lambda: (
                kubectl.run(
                    "-n", namespace, "apply", "-f", "-", stdin=widget("good", 1, 3), check=False
                ).returncode
                == 0
            ),
            timeout=60,
        )
        bad = kubectl.run("-n", namespace, "apply", "-f", "-", stdin=widget("bad", 5, 2), check=False)
        assert bad.returncode != 0, bad.stdout
        assert "minReplicas must not exceed maxReplicas" in bad.stderr, bad.stderr
    finally:
        kubectl.run("delete", "crd", "widgets.clustertest.mserve.io", "--wait=false", check=False)


def test_restricted_pod_security_refuses_privileged_pod(kubectl: Kubectl, namespace: str):
    kubectl.run("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    pod = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "privileged"},
            "spec": {
                "containers": [
                    {"name": "c", "image": "mserve.local/pause:any", "securityContext": {"privileged": True}}
                ]
            },
        }
    )
    proc = kubectl.run("-n", namespace, "apply", "-f", "-", stdin=pod, check=False)
    assert proc.returncode != 0, proc.stdout
    assert "violates PodSecurity" in proc.stderr, proc.stderr
    assert "restricted" in proc.stderr, proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("MSERVE_CLUSTER_RESTART_TEST") != "1",
    reason="restarts the shared cluster; set MSERVE_CLUSTER_RESTART_TEST=1 to run it",
)
def test_down_then_up_is_clean(kubectl: Kubectl, ready_node: str):
    """`down` leaves no process, mount or device behind: shown by a second `up` succeeding."""
    cluster = str(HACK / "cluster.sh")
    subprocess.run([cluster, "down"], check=True, timeout=300)
    leftovers = [
        line
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if " /var/lib/mserve/" in line or " /run/mserve/" in line
    ]
    assert not leftovers, "\n".join(leftovers)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert " cni0:" not in links, links
    assert " mserve0:" not in links, links
    subprocess.run([cluster, "up"], check=True, timeout=900)
    test_node_ready(kubectl, ready_node)
