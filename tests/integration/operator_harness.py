"""What the operator's integration tests stand on: a real API server, the operator as a process.

Nothing here fakes the API server. Where a test needs a Job or pod to finish and the
cluster has no node to run it, it writes the pod's status through the API, as a kubelet
would; the real Job and ReplicaSet controllers (kube-controller-manager) do the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes
import yaml
from kubernetes.client.exceptions import ApiException

from tests.support.polling import wait_until
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
GROUP_PATH = "/apis/mserve.io/v1alpha1"
# The operator under test runs as its own ServiceAccount, bound to a copy of crds/rbac.yaml's
# ClusterRole under another name: nothing here collides with (or is left behind for) a Helm
# release, which owns `mserve-system/mserve-operator` and the ClusterRole `mserve-operator`.
OPERATOR_SA = ("mserve-integration", "mserve-operator")
OPERATOR_CLUSTER_ROLE = "mserve-operator-integration"
# No scheduler has this name: optimizer and runtime pods stay unscheduled (and untouched by
# any scheduler) even on a full cluster, so only the statuses the tests write decide how
# they "ran". No node carries the label either, in case a test binds nothing by mistake.
NO_SCHEDULER = "mserve-integration-no-scheduler"
NO_NODE = {"mserve.io/integration-test": "no-such-node"}


class Kube:
    """Plain REST on JSON dicts with one kubeconfig: what a test does with kubectl, without forks."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=self.configuration)
        self.configuration.connection_pool_maxsize = 16
        self.client = kubernetes.client.ApiClient(self.configuration)

    def call(
        self, method: str, path: str, body: Any = None, *, query: list | None = None, content_type: str = ""
    ) -> dict:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        elif body is not None:
            headers["Content-Type"] = "application/json"
        method, url, headers, body, _ = self.client.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.client.call_api(method, url, header_params=headers, body=body, _request_timeout=30)
        response.read()
        if not 200 <= response.status < 300:
            raise ApiException.from_response(http_resp=response, body=response.data.decode(), data=None)
        return json.loads(response.data) if response.data else {}

    def get(self, path: str) -> dict | None:
        try:
            return self.call("GET", path)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, path: str, **selectors: str) -> list[dict]:
        query = [(("labelSelector" if k == "labels" else "fieldSelector"), v) for k, v in selectors.items()]
        return self.call("GET", path, query=query).get("items") or []

    def create(self, path: str, body: dict) -> dict:
        return self.call("POST", path, body)

    def merge_patch(self, path: str, patch: dict) -> dict:
        return self.call("PATCH", path, patch, content_type="application/merge-patch+json")

    def apply(self, path: str, body: dict, manager: str = "integration-test") -> dict:
        query = [("fieldManager", manager), ("force", "true")]
        return self.call("PATCH", path, body, query=query, content_type="application/apply-patch+yaml")

    def delete(self, path: str) -> None:
        try:
            self.call("DELETE", path, {"propagationPolicy": "Background"})
        except ApiException as exc:
            if exc.status != 404:
                raise


def ns_path(namespace: str, plural: str, name: str = "", api: str = "/api/v1") -> str:
    path = f"{api}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


def msvc_path(namespace: str, name: str = "") -> str:
    return ns_path(namespace, "modelservices", name, GROUP_PATH)


def jobs_path(namespace: str, name: str = "") -> str:
    return ns_path(namespace, "jobs", name, "/apis/batch/v1")


def deployments_path(namespace: str, name: str = "") -> str:
    return ns_path(namespace, "deployments", name, "/apis/apps/v1")


def hpa_path(namespace: str, name: str = "") -> str:
    return ns_path(namespace, "horizontalpodautoscalers", name, "/apis/autoscaling/v2")


def pdb_path(namespace: str, name: str = "") -> str:
    return ns_path(namespace, "poddisruptionbudgets", name, "/apis/policy/v1")


def modelservice(name: str, **spec: Any) -> dict:
    """A ModelService manifest; keyword arguments replace whole sections of the default spec."""
    body = {
        "model": {
            "uri": "s3://models/digits/model.pt2",
            "format": "torch-export",
            "inputs": [{"name": "x", "shape": [-1, 64], "datatype": "FP32"}],
        },
        "optimization": {"quantize": "dynamic-int8", "tolerance": {"cosine": 0.99}},
        "serving": {"replicas": 1},
    }
    body.update(spec)
    return {
        "apiVersion": "mserve.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": body,
    }


def pool_member(name: str, pool: str, serving: dict | None = None, uri: str = "") -> dict:
    """A ModelService whose ONNX source is served as it is (no Job: the source is the artifact),
    in `pool` unless `serving` says otherwise."""
    return {
        "apiVersion": "mserve.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": uri or f"https://models.example/{name}.onnx"},
            "optimization": {"quantize": "none"},
            "serving": serving if serving is not None else {"pool": pool},
        },
    }


class OperatorProcess:
    """`mserve operator run` as a child process, with its own identity (kubeconfig) and log."""

    def __init__(
        self,
        kubeconfig: str,
        namespace: str,
        log_path: Path,
        *,
        priority: int = 100,
        env: dict | None = None,
        more_namespaces: tuple[str, ...] = (),
    ) -> None:
        self.extra_env = env or {}
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.more_namespaces = more_namespaces
        self.log_path = log_path
        self.priority = priority
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> OperatorProcess:
        env = {
            **os.environ,
            "KUBECONFIG": self.kubeconfig,
            "MSERVE_OPERATOR_METRICS_PORT": str(self.metrics_port),
            "MSERVE_OPERATOR_LIVENESS_PORT": str(self.liveness_port),
            "MSERVE_OPERATOR_RESYNC_SECONDS": "30",
            "MSERVE_OPERATOR_IMAGE_TAG": "it",
            "MSERVE_OPERATOR_S3_SECRET": "store-creds",
            "MSERVE_OPERATOR_ARTIFACT_URI": "s3://mserve-artifacts/",
            "MSERVE_OPERATOR_OPTIMIZER_NODE_SELECTOR": json.dumps(NO_NODE),
            "MSERVE_OPERATOR_RUNTIME_NODE_SELECTOR": json.dumps(NO_NODE),
            "MSERVE_OPERATOR_SCHEDULER_NAME": NO_SCHEDULER,
        }
        env.update(self.extra_env)
        env.pop("MSERVE_KUBECONFIG", None)
        command = [sys.executable, "-c", "from mserve_cli.main import cli; cli()", "operator", "run"]
        command += ["--namespace", self.namespace, "--priority", str(self.priority), "--verbose"]
        for namespace in self.more_namespaces:
            command += ["--namespace", namespace]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_until("the operator's liveness endpoint", self.healthy, timeout=60)
        return self

    def healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(
                f"operator exited ({self.proc and self.proc.returncode}):\n{self.log()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as rsp:
                return rsp.status == 200
        except OSError:
            return False

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as rsp:
            text = rsp.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                values[key] = float(value)
        return values

    def reconciles(self) -> float:
        return sum(v for k, v in self.metrics().items() if k.startswith("mserve_operator_reconciles_total"))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):  # peak resident set size
                return int(line.split()[1]) / 1024
        return 0.0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: no clean-up, no goodbye to the peering, like a node dying."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def service_account_kubeconfig(kube: Kube, path: Path) -> Path:
    """A kubeconfig that authenticates as the operator's ServiceAccount with a bound token."""
    namespace, name = OPERATOR_SA
    token = kube.create(
        ns_path(namespace, "serviceaccounts", name) + "/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 7200},
        },
    )["status"]["token"]
    cluster: dict[str, Any] = {"server": kube.configuration.host}
    if kube.configuration.ssl_ca_cert:
        cluster["certificate-authority"] = kube.configuration.ssl_ca_cert
    else:
        cluster["insecure-skip-tls-verify"] = True
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "it", "cluster": cluster}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "it", "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


# --- writing statuses the way a kubelet would --------------------------------------------


def spec_digest_of(job: dict) -> str:
    """The operator's 16-hex spec digest that names the optimization Job."""
    return job["metadata"]["labels"]["mserve.io/optimization-digest"]


def artifact_digest_for(spec_digest: str) -> str:
    """A 64-hex artifact digest as the optimizer writes one: never the spec digest, so a mix-up shows."""
    return hashlib.sha256(spec_digest.encode()).hexdigest()


def job_pods(kube: Kube, namespace: str, job_name: str) -> list[dict]:
    return kube.list(ns_path(namespace, "pods"), labels=f"batch.kubernetes.io/job-name={job_name}")


def finish_job_pod(kube: Kube, namespace: str, job_name: str, exit_code: int, message: str) -> None:
    """Let the optimizer pod of `job_name` end with `exit_code` and `message` as its termination message."""
    pods = wait_until(
        f"a pod of Job {job_name} (the Job controller makes it)", lambda: job_pods(kube, namespace, job_name)
    )
    pod = pods[0]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    terminated = {
        "exitCode": exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
        "message": message,
        "startedAt": now,
        "finishedAt": now,
    }
    status = {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}],
        "containerStatuses": [
            {
                "name": "optimize",
                "image": "mserve-optimizer:it",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"terminated": terminated},
            }
        ],
    }
    kube.merge_patch(ns_path(namespace, "pods", pod["metadata"]["name"]) + "/status", {"status": status})


def runtime_pods(kube: Kube, namespace: str, name: str) -> list[dict]:
    selector = f"mserve.io/modelservice={name},app.kubernetes.io/component=runtime"
    return [
        p
        for p in kube.list(ns_path(namespace, "pods"), labels=selector)
        if not p["metadata"].get("deletionTimestamp")
    ]


def set_pod_status(kube: Kube, pod: dict, status: dict) -> None:
    meta = pod["metadata"]
    kube.merge_patch(ns_path(meta["namespace"], "pods", meta["name"]) + "/status", {"status": status})


def ready_pod_status() -> dict:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "phase": "Running",
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
        ],
        "containerStatuses": [
            {
                "name": "server",
                "image": "mserve-runtime:it",
                "imageID": "",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
        ],
    }


def dump(kube: Kube, namespace: str, operator: OperatorProcess | None) -> str:
    """Everything a reader needs to see why a test failed."""
    parts = []
    for title, path in (
        ("ModelServices", msvc_path(namespace)),
        ("Jobs", jobs_path(namespace)),
        ("Deployments", deployments_path(namespace)),
        ("Pods", ns_path(namespace, "pods")),
    ):
        try:
            items = kube.list(path)
        except ApiException as exc:
            items = [f"list failed: {exc.status}"]
        parts.append(f"--- {title}:\n{yaml.safe_dump(items, default_flow_style=False)[:6000]}")
    try:
        events = kube.list(ns_path(namespace, "events"))
        lines = [
            f"{e.get('type')} {e.get('reason')} {e['involvedObject'].get('name')}: {e.get('message')}"
            for e in events
        ]
        parts.append("--- Events:\n" + "\n".join(lines[-60:]))
    except ApiException:
        pass
    if operator is not None:
        parts.append("--- operator log (tail):\n" + operator.log()[-8000:])
    return "\n".join(parts)
