"""Rollback as `kubectl rollout undo` does it: the old revision's spec is written back into the spec.

The spec stays the truth (a GitOps tool sees the change as drift, `kubectl get -o yaml` shows
what is served); the operator then serves the revision again, reusing its artifact.
Pure: a ModelService in, the JSON patch (or a RevisionError naming what is wrong) out.
"""

from __future__ import annotations

from pydantic import ValidationError

from mserve_operator.revisions import Outcome, Role
from mserve_operator.spec import parse_spec
from mserve_operator.spec_digest import spec_digest


class RevisionError(Exception):
    """A rollback that cannot be done, with a message that names the ModelService and revision."""


def _name(msvc: dict) -> str:
    meta = msvc["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


def history_of(msvc: dict) -> list[dict]:
    return sorted((msvc.get("status") or {}).get("revisions") or [], key=lambda e: e.get("number", 0))


def previous_number(msvc: dict) -> int:
    """`rollback` without `--to`: the revision served last before the serving one."""
    served_before = [
        e
        for e in history_of(msvc)
        if e.get("servedUntil") and e.get("role") != Role.SERVING and e.get("source")
    ]
    if not served_before:
        raise RevisionError(
            f"ModelService {_name(msvc)} has served no earlier revision: nothing to roll back to"
        )
    return max(served_before, key=lambda e: (e["servedUntil"], e["number"]))["number"]


def find_revision(msvc: dict, number: int) -> dict:
    history = history_of(msvc)
    if not history:
        raise RevisionError(f"ModelService {_name(msvc)} has no revisions yet (status.revisions is empty)")
    known = (
        f"{history[0]['number']}-{history[-1]['number']}" if len(history) > 1 else str(history[0]["number"])
    )
    entry = next((e for e in history if e.get("number") == number), None)
    if entry is not None:
        return entry
    if number < history[0]["number"]:
        raise RevisionError(
            f"revision {number} of ModelService {_name(msvc)} has left the history, which keeps the "
            f"last {len(history)} ({known}); re-apply its spec to make it again"
        )
    raise RevisionError(f"ModelService {_name(msvc)} has no revision {number} (its revisions: {known})")


def rollback_patch(msvc: dict, number: int) -> list[dict]:
    """A JSON patch that writes revision `number`'s model and optimization back into the spec;
    empty when the spec already asks for it. It applies only to the object as read."""
    entry = find_revision(msvc, number)
    if entry.get("outcome") == Outcome.FAILED:
        why = (entry.get("optimization") or {}).get("message", "")
        raise RevisionError(
            f"revision {number} of ModelService {_name(msvc)} failed its optimization"
            + (f" ({why})" if why else "")
            + ": it never served and cannot be rolled back to"
        )
    source = entry.get("source") or {}
    if not source.get("model"):
        raise RevisionError(
            f"revision {number} of ModelService {_name(msvc)} was recorded without its spec "
            "(served before the operator recorded revisions): re-apply its spec instead"
        )
    if _current_digest(msvc) == entry.get("specDigest"):
        return []
    return [
        # The generation, not the resourceVersion: status writes (every few seconds during a
        # canary) must not fail a rollback; a concurrent spec change must.
        {"op": "test", "path": "/metadata/generation", "value": msvc["metadata"]["generation"]},
        {"op": "add", "path": "/spec/model", "value": source["model"]},
        {"op": "add", "path": "/spec/optimization", "value": source.get("optimization") or {}},
    ]


def _current_digest(msvc: dict) -> str:
    try:
        return spec_digest(parse_spec(msvc.get("spec") or {}))
    except ValidationError:
        return ""  # a spec the operator cannot read: the revision's spec replaces its sections


def table(history: list[dict]) -> list[list[str]]:
    """Rows for `mserve revisions`: one per revision, oldest first, with a header."""
    rows = [
        ["REVISION", "ROLE", "OUTCOME", "ARTIFACT", "QUANTIZE", "SOURCE", "CREATED", "SERVED FROM", "UNTIL"]
    ]
    for e in history:
        artifact = e.get("artifact") or {}
        digest = artifact.get("artifactDigest", "")[:12] or ("(source)" if artifact.get("uri") else "-")
        source = e.get("source") or {}
        quantize = (e.get("optimization") or {}).get("quantize") or (source.get("optimization") or {}).get(
            "quantize", "-"
        )
        rows.append(
            [
                str(e.get("number")),
                e.get("role", "-"),
                e.get("outcome", "-"),
                digest,
                quantize,
                (source.get("model") or {}).get("uri", "-"),
                e.get("createdAt", "-"),
                e.get("servedFrom", "-"),
                e.get("servedUntil", "-"),
            ]
        )
    return rows
