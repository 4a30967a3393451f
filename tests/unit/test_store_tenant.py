"""hack/store-tenant.py refuses careless input before it touches the store or the cluster, and the
policy it writes grants a namespace its own prefix only (the store enforcing it: tests/e2e/test_10)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "hack" / "store-tenant.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("store_tenant", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": "/nonexistent", "MSERVE_STORE_ENDPOINT": ""}
    return subprocess.run(
        [sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["../team-a", "--endpoint", "http://127.0.0.1:9"], "namespace '../team-a'"),
        (["Team_A", "--endpoint", "http://127.0.0.1:9"], "namespace 'Team_A'"),
        (
            ["team-a", "--endpoint", "http://127.0.0.1:9", "--read", "http://x/models/"],
            "--read 'http://x/models/'",
        ),
        (
            ["team-a", "--endpoint", "http://127.0.0.1:9", "--read", "s3://models/*/"],
            "--read 's3://models/*/'",
        ),
        (["team-a", "--endpoint", "http://127.0.0.1:9", "--read", "s3://models/a/../b/"], "'..'"),
        (["team-a", "--endpoint", "http://127.0.0.1:9", "--store", "s3://A_B/"], "--store 's3://A_B/'"),
        (["team-a", "--endpoint", "http://127.0.0.1:9", "--secret", "Bad/Name"], "--secret 'Bad/Name'"),
        (["team-a", "--endpoint", "http://127.0.0.1:9", "--read-only"], "--read-only with no --read"),
        (["team-a"], "--endpoint"),
        (["team-a", "--endpoint", "ftp://127.0.0.1:9"], "--endpoint 'ftp://127.0.0.1:9'"),
    ],
)
def test_careless_input_is_refused_naming_it(args: list[str], named: str) -> None:
    result = run(*args)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_policy_grants_the_namespace_prefix_and_listing_below_it_only() -> None:
    tool = load_tool()
    own = tool.S3Location("mserve-artifacts", "team-a/")
    policy = tool.tenant_policy([own], [tool.parse_prefix("s3://models/team-a", "--read")])
    statements = policy["Statement"]
    objects = {
        r: s["Action"] for s in statements for r in s["Resource"] if "/" in r.removeprefix("arn:aws:s3:::")
    }
    assert objects == {
        "arn:aws:s3:::mserve-artifacts/team-a/*": tool.WRITE_ACTIONS,
        "arn:aws:s3:::models/team-a/*": ["s3:GetObject"],
    }
    listings = [s for s in statements if s["Action"] == ["s3:ListBucket"]]
    assert [s["Condition"]["StringLike"]["s3:prefix"] for s in listings] == [["team-a/*"], ["team-a/*"]]
    assert all(s["Effect"] == "Allow" for s in statements)


def test_a_whole_bucket_read_lists_it_without_a_condition() -> None:
    tool = load_tool()
    policy = tool.tenant_policy([], [tool.parse_prefix("s3://models/", "--read")])
    listing = next(s for s in policy["Statement"] if s["Action"] == ["s3:ListBucket"])
    assert "Condition" not in listing
    assert listing["Resource"] == ["arn:aws:s3:::models"]


def test_one_identity_per_namespace_and_secret_never_collides() -> None:
    tool = load_tool()
    # '.' is not allowed in a namespace name, so the split is unambiguous
    assert tool.identity("a-b", "c") != tool.identity("a", "b-c")
    assert tool.identity("team-a", "mserve-store") == "team-a.mserve-store"
