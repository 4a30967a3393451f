"""What the e2e tests do to a cluster, phrased as a user's commands: kubectl, helm, curl.

Every wait polls with a deadline (never a bare sleep), and every failure can dump the
evidence: the ModelService, events, pods' describe output and logs.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from typing import TypeVar

import pytest

from tests.support import kubectl, polling
from tests.support.cluster_access import REPO

ROOT = REPO
CHART = ROOT / "charts" / "mserve"
SYSTEM_NS = "mserve-system"
RELEASE = "mserve"

T = TypeVar("T")


class Cluster(kubectl.Kubectl):
    """kubectl and helm as the e2e steps phrase them: a command's output, or its result where
    failing is the expected outcome."""

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60) -> str:
        return self.run(*args, stdin=stdin, check=check, timeout=timeout).stdout

    def try_kubectl(
        self, *args: str, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        """kubectl whose failure is the expected outcome (e.g. an admission refusal)."""
        return self.run(*args, stdin=stdin, check=False, timeout=timeout)


def wait_until(what: str, condition: Callable[[], T], timeout: float = 300, interval: float = 2.0) -> T:
    """tests.support.polling.wait_until at the e2e pace: rollouts, Jobs and autoscaling take minutes,
    and a kubectl that fails or hangs once is "not yet". (A functools.partial binding `timeout` by
    keyword would refuse a timeout passed by position.)"""
    transient = (kubectl.CommandError, subprocess.TimeoutExpired)
    return polling.wait_until(what, condition, timeout, interval, transient)


def dump_namespace(cluster: Cluster, namespace: str) -> str:
    return kubectl.dump_namespace(
        cluster, namespace, kinds="all,hpa,pdb,jobs", yaml_kinds="msvc", log_lines=80
    )


def show_evidence(request: pytest.FixtureRequest, text: str) -> None:
    """Print past pytest's capture (a module fixture's teardown output would be lost) and keep a copy."""
    folder = ROOT / "out" / "e2e-evidence"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{uuid.uuid4().hex[:8]}.txt").write_text(text)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n===== evidence ({folder}) =====\n{text}")
