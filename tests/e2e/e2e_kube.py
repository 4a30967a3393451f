"""What the e2e tests do to a cluster, phrased as a user's commands: kubectl, helm, curl.

Every wait polls with a deadline (never a bare sleep), and every failure can dump the
evidence: the ModelService, events, pods' describe output and logs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mserve"
T = TypeVar("T")


def _versions() -> dict[str, str]:
    pairs = (line.split("#")[0].strip() for line in (ROOT / "hack" / "versions.env").read_text().splitlines())
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


def cache_dir() -> Path:
    return Path(os.environ.get("MSERVE_CACHE", Path.home() / ".cache" / "mserve"))


def find_binary(name: str) -> str:
    """`name` from $NAME, the build cache (hack/build.sh), or PATH."""
    version = _versions().get(f"{'K8S' if name == 'kubectl' else name.upper()}_VERSION", "")
    for candidate in (os.environ.get(name.upper(), ""), str(cache_dir() / "bin" / f"{name}-{version}")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: `make helm` / `hack/cluster.sh up` build it")
    return found


class CommandError(AssertionError):
    pass


class Cluster:
    """kubectl and helm against one kubeconfig."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.kubectl_binary = find_binary("kubectl")
        self.helm_binary = find_binary("helm")

    def _run(
        self, command: list[str], stdin: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess:
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        result = subprocess.run(
            command, input=stdin, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
        if check and result.returncode != 0:
            raise CommandError(
                f"{' '.join(command)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60) -> str:
        return self._run([self.kubectl_binary, *args], stdin, check, timeout).stdout

    def try_kubectl(
        self, *args: str, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        """kubectl whose failure is the expected outcome (e.g. an admission refusal)."""
        return self._run([self.kubectl_binary, *args], stdin, False, timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return self._run([self.helm_binary, *args], None, check, timeout)

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def get_or_none(self, *args: str) -> dict[str, Any] | None:
        result = self._run([self.kubectl_binary, "get", *args, "-o", "json"], None, False, 30)
        if result.returncode != 0:
            if "NotFound" in result.stderr or "not found" in result.stderr:
                return None
            raise CommandError(result.stderr)
        return json.loads(result.stdout)

    def apply(self, manifest: dict[str, Any] | str, namespace: str | None = None) -> None:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        self.kubectl("apply", *(["-n", namespace] if namespace else []), "-f", "-", stdin=text)

    def patch(self, namespace: str, resource: str, patch: dict[str, Any], kind: str = "merge") -> None:
        self.kubectl("-n", namespace, "patch", resource, "--type", kind, "-p", json.dumps(patch))


def wait_until(what: str, condition: Callable[[], T], timeout: float = 300, interval: float = 2.0) -> T:
    """Poll `condition` until it returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = condition()
        except (CommandError, subprocess.TimeoutExpired) as error:
            last = error
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; last: {str(last)[:2000]}"
            )
        time.sleep(interval)


def dump_namespace(cluster: Cluster, namespace: str) -> str:
    """The evidence a person would collect: ModelServices, events, pods' describe and logs."""
    sections = []
    commands = [
        ("get", "msvc", "-o", "yaml"),
        ("get", "all,hpa,pdb,jobs", "-o", "wide"),
        ("get", "events", "--sort-by=.lastTimestamp"),
        ("describe", "pods"),
    ]
    for command in commands:
        result = cluster._run([cluster.kubectl_binary, "-n", namespace, *command], None, False, 60)
        sections.append(f"--- kubectl -n {namespace} {' '.join(command)}\n{result.stdout}{result.stderr}")
    pods = cluster._run(
        [cluster.kubectl_binary, "-n", namespace, "get", "pods", "-o", "name"], None, False, 30
    )
    for pod in pods.stdout.split():
        logs = cluster._run(
            [cluster.kubectl_binary, "-n", namespace, "logs", pod, "--all-containers", "--tail=80"],
            None,
            False,
            30,
        )
        sections.append(f"--- logs {pod}\n{logs.stdout}{logs.stderr}")
    return "\n".join(sections)
