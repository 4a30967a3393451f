"""The revision bookkeeping: numbers, roles, outcomes, the cap of ten and artifact reuse."""

from __future__ import annotations

import pytest
from mserve_operator.artifact import Artifact
from mserve_operator.conditions import Reason
from mserve_operator.optimization import decide_optimization
from mserve_operator.revisions import (
    HISTORY_LIMIT,
    Outcome,
    Role,
    Wanted,
    record_revisions,
    reusable,
    serving_message,
    serving_number,
    source_of,
)
from mserve_operator.spec import parse_spec
from mserve_operator.spec_digest import spec_digest
from operator_fixtures import OWNER

PREFIX = "s3://mserve-artifacts/models/digits"


def _spec(quantize: str) -> dict:
    return {
        "model": {"uri": "s3://models/digits/model.pt2", "format": "torch-export", "inputs": []},
        "optimization": {"quantize": quantize},
    }


def _artifact(digest: str) -> Artifact:
    folder = digest * 4
    return Artifact(
        uri=f"{PREFIX}/{folder}/model.onnx", sha256="ab" * 32, spec_digest=digest, artifact_digest=folder
    )


def _passed(digest: str) -> dict:
    return {"specDigest": digest, "verdict": "passed", "quantize": "dynamic-int8", "minCosine": 0.999}


def _wanted(digest: str, failed: bool = False) -> Wanted:
    return Wanted(digest, source_of(_spec(digest)), failed, {} if failed else _passed(digest))


def _serve(history: list[dict], digest: str, now: str) -> list[dict]:
    """The spec asks for `digest`; its artifact is ready and the Deployment serves it."""
    return record_revisions(history, _wanted(digest), _artifact(digest), now)


def _by_number(history: list[dict]) -> dict[int, dict]:
    return {e["number"]: e for e in history}


DIGESTS = [f"{i:016x}" for i in range(1, 20)]
A, B, C = DIGESTS[:3]


def test_first_spec_is_revision_one_a_candidate_until_served():
    optimizing = record_revisions([], Wanted(A, source_of(_spec("int8"))), None, "t0")
    assert optimizing == [
        {
            "number": 1,
            "specDigest": A,
            "createdAt": "t0",
            "role": Role.CANDIDATE,
            "source": source_of(_spec("int8")),
        }
    ]
    served = _serve(optimizing, A, "t1")
    (entry,) = served
    assert entry["role"] == Role.SERVING
    assert entry["servedFrom"] == "t1"
    assert entry["createdAt"] == "t0"
    assert entry["artifact"]["uri"] == _artifact(A).uri
    assert "specDigest" not in entry["artifact"]
    assert entry["optimization"]["verdict"] == "passed"
    assert serving_number(served) == 1


def test_an_unchanged_world_changes_nothing_not_even_a_timestamp():
    history = _serve(_serve([], A, "t0"), B, "t1")
    assert _serve(history, B, "t9") == history


def test_a_new_spec_supersedes_the_served_one_and_numbers_count_up():
    history = _serve(_serve([], A, "t0"), B, "t1")
    one, two = history
    assert (one["number"], one["role"], one["outcome"], one["servedUntil"]) == (
        1,
        Role.RETIRED,
        "Superseded",
        "t1",
    )
    assert (two["number"], two["role"], two["servedFrom"]) == (2, Role.SERVING, "t1")


def test_the_old_revision_keeps_serving_while_the_new_one_optimizes():
    history = _serve([], A, "t0")
    history = record_revisions(history, Wanted(B, source_of(_spec("b"))), _artifact(A), "t1")
    one, two = history
    assert one["role"] == Role.SERVING
    assert "servedUntil" not in one
    assert two["role"] == Role.CANDIDATE
    assert serving_number(history) == 1


def test_going_back_to_an_earlier_spec_serves_its_revision_under_its_number():
    history = _serve(_serve(_serve([], A, "t0"), B, "t1"), C, "t2")
    back = _by_number(_serve(history, A, "t3"))
    assert len(back) == 3, "an earlier spec is not a new revision"
    assert (back[1]["role"], back[1]["servedFrom"]) == (Role.SERVING, "t3")
    assert "outcome" not in back[1]
    assert "servedUntil" not in back[1]
    assert (back[3]["outcome"], back[3]["servedUntil"]) == (Outcome.ROLLED_BACK, "t3")
    assert back[2]["outcome"] == Outcome.SUPERSEDED, "an already retired revision keeps how it ended"


def test_a_failed_optimization_retires_its_revision_as_failed_and_the_old_one_serves_on():
    history = _serve([], A, "t0")
    history = record_revisions(history, _wanted(B, failed=True), _artifact(A), "t1")
    one, two = history
    assert one["role"] == Role.SERVING
    assert (two["role"], two["outcome"]) == (Role.RETIRED, Outcome.FAILED)
    assert "servedUntil" not in two
    assert "servedFrom" not in two


def test_a_candidate_replaced_before_it_served_ends_by_direction():
    history = _serve([], A, "t0")
    history = record_revisions(history, Wanted(B, {}), _artifact(A), "t1")  # 2 optimizing
    history = record_revisions(history, Wanted(C, {}), _artifact(A), "t2")  # 3 replaces it
    assert _by_number(history)[2]["outcome"] == Outcome.SUPERSEDED
    history = record_revisions(history, Wanted(A, {}), _artifact(A), "t3")  # back to 1
    assert _by_number(history)[3]["outcome"] == Outcome.ROLLED_BACK
    assert "servedUntil" not in _by_number(history)[3]


def test_history_keeps_the_last_ten_and_numbers_never_repeat():
    history: list[dict] = []
    for i, digest in enumerate(DIGESTS[:12]):
        history = _serve(history, digest, f"t{i}")
    assert [e["number"] for e in history] == list(range(3, 13))
    assert len(history) == HISTORY_LIMIT
    # The evicted revision 1's spec comes back as a new number: its record is gone.
    history = _serve(history, DIGESTS[0], "t99")
    assert history[-1]["number"] == 13
    assert history[-1]["specDigest"] == DIGESTS[0]


def test_the_serving_revision_is_never_evicted_even_when_oldest():
    history: list[dict] = []
    for i, digest in enumerate(DIGESTS[:10]):
        history = _serve(history, digest, f"t{i}")
    history = _serve(history, DIGESTS[0], "t10")  # roll back to 1
    history = record_revisions(history, Wanted(DIGESTS[10], {}), _artifact(DIGESTS[0]), "t11")
    numbers = [e["number"] for e in history]
    assert 1 in numbers
    assert 11 in numbers
    assert 2 not in numbers
    assert len(numbers) == HISTORY_LIMIT


def test_a_status_served_before_revisions_existed_becomes_revision_one_without_a_source():
    history = record_revisions([], Wanted(B, source_of(_spec("b"))), _artifact(A), "t0")
    one, two = history
    assert (one["number"], one["specDigest"], one["role"]) == (1, A, Role.SERVING)
    assert "source" not in one, "its spec was never seen: a rollback to it is refused, not guessed"
    assert (two["number"], two["role"]) == (2, Role.CANDIDATE)


@pytest.mark.parametrize("garbage", [{"number": "3", "specDigest": A}, {"number": 2}, {}])
def test_entries_someone_mangled_are_dropped_not_trusted(garbage: dict):
    history = record_revisions([garbage], _wanted(B), _artifact(B), "t0")
    assert [(e["number"], e["specDigest"]) for e in history] == [(1, B)]


def test_reusable_gives_a_passed_revisions_artifact_only():
    history = _serve(_serve([], A, "t0"), B, "t1")
    history = record_revisions(history, _wanted(C, failed=True), _artifact(B), "t2")
    artifact, summary, number = reusable(history, A)
    assert (artifact, number, summary["verdict"]) == (_artifact(A), 1, "passed")
    assert reusable(history, C) is None, "a failed revision has nothing to reuse"
    assert reusable(history, "f" * 16) is None


def test_an_earlier_specs_artifact_is_reused_without_a_job():
    """The Job that made revision 1 is gone (TTL); going back to its spec needs no new Job."""
    spec = parse_spec({**_spec("dynamic-int8"), "model": {"uri": "s3://models/digits/model.onnx"}})
    digest = spec_digest(spec)
    history = _serve([], digest, "t0")
    status = {"revisions": history, "optimization": {"specDigest": B, "verdict": "passed"}}
    state = decide_optimization(spec, OWNER.name, digest, status, None, [], PREFIX)
    assert state.ok
    assert not state.needs_job
    assert state.reason == Reason.SUCCEEDED
    assert state.artifact == _artifact(digest)
    assert "reusing revision 1" in state.message
    assert state.record["verdict"] == "passed"
    assert state.record["artifactDigest"] == digest * 4


def test_an_artifact_outside_this_modelservices_prefix_is_made_again():
    spec = parse_spec({**_spec("dynamic-int8"), "model": {"uri": "s3://models/digits/model.onnx"}})
    digest = spec_digest(spec)
    status = {"revisions": _serve([], digest, "t0")}
    state = decide_optimization(spec, OWNER.name, digest, status, None, [], "s3://elsewhere/models/digits")
    assert state.needs_job
    assert state.artifact is None


def test_the_event_says_which_way_the_revision_moved():
    assert serving_message(None, 1) == "serving revision 1"
    assert serving_message(3, 1) == "serving revision 1 (rolled back from revision 3)"
    assert serving_message(1, 2) == "serving revision 2 (rolled forward from revision 1)"


def test_every_answer_names_the_serving_revision_as_its_model_version():
    from mserve_operator.builders import build_deployment
    from operator_fixtures import ARTIFACT, cpu_spec, settings

    deployment = build_deployment(cpu_spec(), OWNER, ARTIFACT, settings(), revision=7)
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MSERVE_MODEL_VERSION", "value": "7"} in env
    same = build_deployment(cpu_spec(), OWNER, ARTIFACT, settings(), revision=7)
    assert same["spec"]["template"] == deployment["spec"]["template"], (
        "one revision, one pod template: the Deployment reuses its ReplicaSet on a rollback"
    )
