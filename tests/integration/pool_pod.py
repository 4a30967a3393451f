"""A pool pod played on this machine, with its real parts: the kubelet's share (the pod Running
at a loopback address; each access group's list copied from the pool's ConfigMap into a file,
as a ConfigMap volume holds it), the real sync sidecars (`mserve fetch --sync`) and the real
`mserve serve --pool` on that address, admin port 8082 (the port the operator reads)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from pathlib import Path

import httpx
from kubernetes.client.exceptions import ApiException
from operator_harness import Kube, ns_path, ready_pod_status, set_pod_status

from tests.support.polling import wait_until
from tests.support.pool_serving import start_pool
from tests.support.serving import MSERVE, Server


def pool_server_at(loopback: str, models: Path, log: Path, *args: str) -> Server:
    """A real `mserve serve --pool` on `loopback` with its metrics on port 8082, as a pool
    pod's server is (the operator reads that port); returned once the metrics answer."""
    server = start_pool(models, log, "--host", loopback, "--admin-port", "8082", *args, wait_ready=False)
    wait_until(
        "the pool server's metrics",
        lambda: httpx.get(f"http://{loopback}:8082/metrics", timeout=2).status_code == 200,
        timeout=60,
        transient=(httpx.HTTPError,),
    )
    return server


class PoolPod:
    def __init__(self, kube: Kube, namespace: str, config: str, loopback: str, root: Path) -> None:
        self.kube, self.namespace, self.config, self.loopback = kube, namespace, config, loopback
        self.models, self.lists = root / "models", root / "lists"
        self.models.mkdir()
        self.lists.mkdir()
        self.root = root
        self.sidecars: dict[str, subprocess.Popen] = {}
        self.server: Server | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def start(self) -> PoolPod:
        self._copy_lists()
        self._thread.start()
        wait_until(
            "every sync sidecar's first pass",
            lambda: all((self.models / f".sync-{gid}.json").exists() for gid in self.sidecars),
            timeout=60,
        )
        self.server = pool_server_at(self.loopback, self.models, self.root / "pool.log")
        return self

    def run_as(self, pod: dict) -> None:
        """Mark the API server's pod Running and Ready at this address."""
        set_pod_status(
            self.kube, pod, {**ready_pod_status(), "podIP": self.loopback, "podIPs": [{"ip": self.loopback}]}
        )

    def _copy_lists(self) -> None:
        config = self.kube.get(ns_path(self.namespace, "configmaps", self.config)) or {}
        for key, text in (config.get("data") or {}).items():
            path = self.lists / key
            if not path.exists() or path.read_text() != text:
                (self.lists / f".{key}.new").write_text(text)
                os.replace(self.lists / f".{key}.new", path)
            gid = key.removesuffix(".json")
            if gid not in self.sidecars:
                command = [str(MSERVE), "fetch", "--sync", str(path), "--into", str(self.models)]
                command += ["--state", str(self.models / f".sync-{gid}.json"), "--interval", "0.3"]
                with (self.root / f"sync-{gid}.log").open("wb") as log:
                    self.sidecars[gid] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def _follow(self) -> None:
        while not self._stop.wait(0.3):
            with contextlib.suppress(ApiException, OSError):  # the next round copies it
                self._copy_lists()

    def files(self) -> list[str]:
        return sorted(p.name for p in self.models.iterdir() if not p.name.startswith("."))

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.root.glob("*.log")))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for process in self.sidecars.values():
            process.terminate()
            process.wait(timeout=10)
        if self.server is not None:
            self.server.stop()
