"""Helpers of the cluster tests: kubectl via subprocess, polling, failure dumps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HACK = REPO / "hack"
TEST_IMAGE = "mserve.local/cluster-test:1"


def versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (HACK / "versions.env").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def cache_dir() -> Path:
    return Path(os.environ.get("MSERVE_CACHE", Path.home() / ".cache" / "mserve"))


def find_kubectl() -> str | None:
    if os.environ.get("KUBECTL"):
        return os.environ["KUBECTL"]
    cached = cache_dir() / "bin" / f"kubectl-{versions().get('K8S_VERSION', '')}"
    if cached.is_file():
        return str(cached)
    return shutil.which("kubectl")


def find_kubeconfig() -> str | None:
    for candidate in (
        os.environ.get("MSERVE_KUBECONFIG"),
        os.environ.get("KUBECONFIG"),
        str(cache_dir() / "cluster" / "admin.kubeconfig"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


class Kubectl:
    """Plain `kubectl` through subprocess, bound to one kubeconfig."""

    def __init__(self, binary: str, kubeconfig: str):
        self.binary = binary
        self.kubeconfig = kubeconfig

    def run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.binary, "--kubeconfig", self.kubeconfig, *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def json(self, *args: str) -> dict:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        ns = ["-n", namespace] if namespace else []
        self.run(*ns, "apply", "-f", "-", input=manifest)


def wait_until(what: str, condition: Callable[[], object], timeout: float = 120, interval: float = 1.0):
    """Poll `condition` until it returns a truthy value; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except (AssertionError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last error: {last_error}")
        time.sleep(interval)


def dump_namespace(kubectl: Kubectl, namespace: str) -> str:
    """describe/events/logs of a namespace, for failure reports."""
    parts = []
    for args in (
        ("get", "all", "-o", "wide"),
        ("describe", "pods"),
        ("get", "events", "--sort-by=.lastTimestamp"),
    ):
        proc = kubectl.run("-n", namespace, *args, check=False)
        parts.append(f"$ kubectl -n {namespace} {' '.join(args)}\n{proc.stdout}{proc.stderr}")
    pods = kubectl.run("-n", namespace, "get", "pods", "-o", "name", check=False).stdout.split()
    for pod in pods:
        proc = kubectl.run("-n", namespace, "logs", pod, "--all-containers", "--tail=50", check=False)
        parts.append(f"$ kubectl -n {namespace} logs {pod}\n{proc.stdout}{proc.stderr}")
    return "\n".join(parts)
