"""Rollback decisions: which revision, what patch, and a clear error for every wrong request."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner
from mserve_cli.kubectl_plugin import cli as plugin
from mserve_operator import revisions
from mserve_operator.revisions import Outcome, Role, record_revisions, source_of
from mserve_operator.rollback import RevisionError, previous_number, rollback_patch, table
from mserve_operator.spec import parse_spec
from mserve_operator.spec_digest import spec_digest
from test_operator_revisions import _artifact

from tests.support.cluster_access import find_binary


def _spec(quantize: str) -> dict:
    return {"model": {"uri": "s3://models/digits/model.onnx"}, "optimization": {"quantize": quantize}}


def _digest(quantize: str) -> str:
    return spec_digest(parse_spec(_spec(quantize)))


def _msvc(*served: str, spec: str | None = None) -> dict:
    """A ModelService that served each quantization in turn; its spec asks for the last (or `spec`)."""
    history: list[dict] = []
    for i, quantize in enumerate(served):
        digest = _digest(quantize)
        summary = {"specDigest": digest, "verdict": "passed", "quantize": quantize}
        wanted = revisions.Wanted(digest, source_of(_spec(quantize)), False, summary)
        history = record_revisions(history, wanted, _artifact(digest), f"2026-11-30T03:0{i}:00Z")
    return {
        "metadata": {"name": "digits", "namespace": "team-a", "resourceVersion": "42", "generation": 3},
        "spec": _spec(spec or served[-1]),
        "status": {"revisions": history},
    }


def test_the_patch_writes_the_revisions_model_and_optimization_back_if_the_object_is_unchanged():
    msvc = _msvc("none", "dynamic-int8", "fp16")
    ops = rollback_patch(msvc, 1)
    assert ops == [
        {"op": "test", "path": "/metadata/generation", "value": 3},
        {"op": "add", "path": "/spec/model", "value": {"uri": "s3://models/digits/model.onnx"}},
        {"op": "add", "path": "/spec/optimization", "value": {"quantize": "none"}},
    ]


def test_without_a_number_it_goes_to_the_revision_served_just_before():
    assert previous_number(_msvc("none", "dynamic-int8", "fp16")) == 2
    back_to_one = _msvc("none", "dynamic-int8", "fp16", "none")
    assert previous_number(back_to_one) == 3, "after a rollback to 1, the previous is the one it left"


def test_a_single_revision_has_nothing_to_roll_back_to():
    with pytest.raises(RevisionError, match=r"ModelService team-a/digits has served no earlier revision"):
        previous_number(_msvc("none"))


def test_the_revision_the_spec_already_asks_for_needs_no_patch():
    assert rollback_patch(_msvc("none", "fp16"), 2) == []


def test_an_unknown_revision_is_named_with_the_ones_there_are():
    with pytest.raises(RevisionError, match=r"team-a/digits has no revision 9 \(its revisions: 1-3\)"):
        rollback_patch(_msvc("none", "dynamic-int8", "fp16"), 9)


def test_an_evicted_revision_says_it_left_the_history():
    msvc = _msvc("none", "dynamic-int8", "fp16")
    msvc["status"]["revisions"] = msvc["status"]["revisions"][1:]
    with pytest.raises(RevisionError, match=r"revision 1 of ModelService team-a/digits has left the history"):
        rollback_patch(msvc, 1)


def test_no_history_at_all_is_said_so():
    msvc = {**_msvc("none"), "status": {}}
    with pytest.raises(RevisionError, match=r"team-a/digits has no revisions yet"):
        rollback_patch(msvc, 1)


def test_a_failed_revision_is_refused_with_its_reason():
    msvc = _msvc("none", "fp16")
    failed = msvc["status"]["revisions"][1]
    failed.update(role=Role.RETIRED, outcome=Outcome.FAILED, optimization={"message": "cosine 0.2 < 0.99"})
    with pytest.raises(RevisionError, match=r"revision 2 .* failed its optimization \(cosine 0.2 < 0.99\)"):
        rollback_patch(msvc, 2)


def test_a_revision_recorded_without_its_spec_is_refused_not_guessed():
    msvc = _msvc("none", "fp16")
    del msvc["status"]["revisions"][0]["source"]
    with pytest.raises(RevisionError, match=r"revision 1 .* was recorded without its spec"):
        rollback_patch(msvc, 1)


def test_the_table_lists_every_revision_with_role_and_outcome():
    rows = table(_msvc("none", "dynamic-int8")["status"]["revisions"])
    assert rows[0][:3] == ["REVISION", "ROLE", "OUTCOME"]
    assert rows[1][:3] == ["1", "Retired", "Superseded"]
    assert rows[2][:5] == ["2", "Serving", "-", _digest("dynamic-int8")[:12], "dynamic-int8"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["rollback", "digits", "--to", "two"], "Invalid value for '--to': 'two' is not a valid integer"),
        (["rollback", "digits", "--to", "0"], "Invalid value for '--to': 0 is not in the range x>=1"),
        (["rollback", "digits", "--to", "1.5"], "Invalid value for '--to'"),
        (["rollback"], "Missing argument 'NAME'"),
        (["revisions", "digits", "-o", "xml"], "Invalid value for '--output'"),
    ],
)
def test_careless_arguments_are_usage_errors_naming_the_option(args: list[str], words: str):
    result = CliRunner().invoke(plugin, args)
    assert result.exit_code == 2
    assert words in result.output


@pytest.fixture
def kubectl(monkeypatch) -> str:
    """The plugin reads and patches through kubectl, as kubectl plugins do."""
    binary = find_binary("kubectl")
    if not binary:
        pytest.skip("no kubectl: `hack/cluster.sh up` builds it")
    monkeypatch.setenv("MSERVE_KUBECTL", binary)
    return binary


def test_an_unreadable_kubeconfig_is_named(tmp_path, kubectl: str):
    missing = tmp_path / "nope.yaml"
    result = CliRunner().invoke(plugin, ["revisions", "digits", "--kubeconfig", str(missing)])
    assert result.exit_code == 1
    assert "cannot read the kubeconfig" in result.output
    assert str(missing) in result.output


def test_the_plugin_entry_point_has_help_under_kubectls_name():
    code = "from mserve_cli.kubectl_plugin import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "--help"], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("Usage: kubectl mserve [OPTIONS] COMMAND")
    assert "rollback" in result.stdout
    assert "revisions" in result.stdout


def test_the_namespace_defaults_to_the_contexts_and_an_unreachable_server_is_named(tmp_path, kubectl: str):
    from tests.support.ports import free_port

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}}],
                "current-context": "x",
            }
        )
    )
    result = CliRunner().invoke(plugin, ["rollback", "digits", "--to", "1", "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 1
    assert "cannot read ModelService team-a/digits:" in result.output
    assert "refused" in result.output
