"""kubectl (and helm) through subprocess against one kubeconfig, as a user types them."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import yaml

from tests.support.cluster_access import find_binary


class CommandError(AssertionError):
    pass


class Kubectl:
    """kubectl and helm bound to one kubeconfig."""

    def __init__(self, kubeconfig: str, binary: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        found = binary or find_binary("kubectl")
        if not found:
            raise RuntimeError("kubectl not found: `hack/cluster.sh up` builds it, or put it on PATH")
        self.binary = found

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

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        return self._run([self.binary, *args], stdin, check, timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        helm = find_binary("helm")
        if not helm:
            raise RuntimeError("helm not found: `make helm` builds it")
        return self._run([helm, *args], None, check, timeout)

    def json(self, *args: str) -> dict[str, Any]:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def get(self, *args: str) -> dict[str, Any]:
        return self.json("get", *args)

    def get_or_none(self, *args: str) -> dict[str, Any] | None:
        result = self.run("get", *args, "-o", "json", check=False, timeout=30)
        if result.returncode != 0:
            if "NotFound" in result.stderr or "not found" in result.stderr:
                return None
            raise CommandError(result.stderr)
        return json.loads(result.stdout)

    def apply(self, manifest: dict[str, Any] | str, namespace: str | None = None) -> None:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        self.run(*(["-n", namespace] if namespace else []), "apply", "-f", "-", stdin=text)

    def patch(self, namespace: str, resource: str, patch: dict[str, Any], kind: str = "merge") -> None:
        self.run("-n", namespace, "patch", resource, "--type", kind, "-p", json.dumps(patch))


def dump_namespace(
    kubectl: Kubectl, namespace: str, kinds: str = "all", yaml_kinds: str = "", log_lines: int = 50
) -> str:
    """The evidence a person would collect: objects (`yaml_kinds` in full), events, pods'
    describe output and logs."""
    sections = []
    for command in (
        *([("get", yaml_kinds, "-o", "yaml")] if yaml_kinds else []),
        ("get", kinds, "-o", "wide"),
        ("get", "events", "--sort-by=.lastTimestamp"),
        ("describe", "pods"),
    ):
        result = kubectl.run("-n", namespace, *command, check=False)
        sections.append(f"--- kubectl -n {namespace} {' '.join(command)}\n{result.stdout}{result.stderr}")
    pods = kubectl.run("-n", namespace, "get", "pods", "-o", "name", check=False, timeout=30).stdout.split()
    for pod in pods:
        logs = kubectl.run(
            "-n", namespace, "logs", pod, "--all-containers", f"--tail={log_lines}", check=False, timeout=30
        )
        sections.append(f"--- logs {pod}\n{logs.stdout}{logs.stderr}")
    return "\n".join(sections)
