"""Where the tests find a cluster and its tools: the kubeconfig, kubectl and helm.

In order: an environment variable, the cache `hack/cluster.sh up` and `hack/build.sh` fill
(`${MSERVE_CACHE:-~/.cache/mserve}`), then PATH.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
HACK = REPO / "hack"


def versions() -> dict[str, str]:
    """hack/versions.env as a dict."""
    pairs = (line.split("#", 1)[0].strip() for line in (HACK / "versions.env").read_text().splitlines())
    return {key.strip(): value.strip() for key, _, value in (p.partition("=") for p in pairs if "=" in p)}


def cache_dir() -> Path:
    return Path(os.environ.get("MSERVE_CACHE", Path.home() / ".cache" / "mserve"))


def find_kubeconfig() -> str | None:
    for candidate in (
        os.environ.get("MSERVE_KUBECONFIG"),
        os.environ.get("KUBECONFIG"),
        str(cache_dir() / "cluster" / "admin.kubeconfig"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def no_cluster(reason: str) -> NoReturn:
    """Skip for lack of a cluster, unless the run demands one (`make test` sets
    MSERVE_REQUIRE_CLUSTER=1): there a missing cluster is a failure, never a green tier."""
    if os.environ.get("MSERVE_REQUIRE_CLUSTER") == "1":
        pytest.fail(f"{reason} (MSERVE_REQUIRE_CLUSTER=1: this tier must run, not skip)")
    pytest.skip(reason)


def find_binary(name: str) -> str | None:
    """`name` (kubectl, helm) from $NAME, the build cache, or PATH; None when there is none."""
    version = versions().get("K8S_VERSION" if name == "kubectl" else f"{name.upper()}_VERSION", "")
    for candidate in (os.environ.get(name.upper(), ""), str(cache_dir() / "bin" / f"{name}-{version}")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(name)
