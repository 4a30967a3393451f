"""Revisions: every distinct model (spec digest) a ModelService has served or tried, numbered.

`status.revisions` holds the last HISTORY_LIMIT, oldest first; `status.revision` is the number
of the one the Deployment serves. One spec digest is one revision for as long as it stays in
the history: going back to an earlier spec makes its revision serve again, under its number.

A revision's role is what it does now: `Serving` (the Deployment serves its artifact),
`Candidate` (the spec asks for it, it is not served yet: its Job runs) or `Retired`, with
`outcome` saying how it ended: `Superseded` (a newer revision took its place), `RolledBack`
(an older one did), `Failed` (its optimization failed, it never served) or `CanaryFailed` (a
canary gate rolled it back: it answered a share of live traffic, never all of it).

Pure: the history, what the spec asks for and what the Deployment serves in; the next history
out. Timestamps move only on a transition, so an unchanged world rewrites nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mserve_operator.artifact import Artifact

HISTORY_LIMIT = 10


class Role:
    SERVING = "Serving"
    CANDIDATE = "Candidate"
    RETIRED = "Retired"


class Outcome:
    SUPERSEDED = "Superseded"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"
    CANARY_FAILED = "CanaryFailed"


# The optimization record's fields that describe the model a revision is; the rest (Job name,
# digests) are kept elsewhere in the entry or do not outlive the Job.
_SUMMARY_FIELDS = (
    "verdict",
    "quantize",
    "sizeRatio",
    "latencyRatioB1",
    "latencyRatioBn",
    "minCosine",
    "top1Agreement",
    "message",
)


@dataclass(frozen=True)
class Wanted:
    """The revision the spec asks for, as far as the reconcile knows it now."""

    spec_digest: str
    # spec.model and spec.optimization as the user wrote them: what a rollback writes back.
    source: dict
    failed: bool = False  # its optimization failed for good
    optimization: dict = field(default_factory=dict)  # status.optimization for this spec digest
    canary_failed: bool = False  # a canary gate rolled it back (canary.py)


def source_of(spec: dict) -> dict:
    """What recreates a revision: the spec's model and optimization sections, nothing else."""
    return {"model": dict(spec.get("model") or {}), "optimization": dict(spec.get("optimization") or {})}


def summary_of(optimization: dict) -> dict:
    return {k: optimization[k] for k in _SUMMARY_FIELDS if optimization.get(k) not in (None, "")}


def artifact_record(artifact: Artifact) -> dict:
    record = artifact.to_status()
    record.pop("specDigest")  # the entry's own specDigest says it
    return record


def record_revisions(history: list[dict], wanted: Wanted, served: Artifact | None, now: str) -> list[dict]:
    """The history after this reconcile: numbers assigned, roles and outcomes moved, capped."""
    entries = sorted((dict(e) for e in history or [] if _valid(e)), key=lambda e: e["number"])
    by_digest = {e["specDigest"]: e for e in entries}

    def entry_for(digest: str, source: dict) -> dict:
        entry = by_digest.get(digest)
        if entry is None:
            number = max((e["number"] for e in entries), default=0) + 1
            entry = {"number": number, "specDigest": digest, "createdAt": now, "role": Role.CANDIDATE}
            entries.append(entry)
            by_digest[digest] = entry
        if source and not entry.get("source"):
            entry["source"] = source
        return entry

    serving = None
    if served is not None:
        # A status from before revisions were recorded serves an artifact of unknown spec.
        own = served.spec_digest == wanted.spec_digest
        serving = entry_for(served.spec_digest, wanted.source if own else {})
        serving["artifact"] = artifact_record(served)
    target = entry_for(wanted.spec_digest, wanted.source)
    summary = summary_of(wanted.optimization)
    if summary and wanted.optimization.get("specDigest") == wanted.spec_digest:
        target["optimization"] = summary
        if wanted.optimization.get("artifactDigest") and "artifact" not in target:
            target["artifact"] = {"artifactDigest": wanted.optimization["artifactDigest"]}

    for entry in entries:
        if entry is serving:
            if entry.get("role") != Role.SERVING:
                for key in ("servedUntil", "outcome"):
                    entry.pop(key, None)
                entry.update(role=Role.SERVING, servedFrom=now)
        elif entry is target:
            if wanted.failed:
                _retire(entry, Outcome.FAILED, now)
            elif wanted.canary_failed:
                _retire(entry, Outcome.CANARY_FAILED, now)
            elif entry.get("role") != Role.CANDIDATE:
                entry.pop("outcome", None)
                entry["role"] = Role.CANDIDATE
        elif entry.get("role") in (Role.SERVING, Role.CANDIDATE):
            successor = serving if entry["role"] == Role.SERVING else target
            backwards = successor is not None and successor["number"] < entry["number"]
            _retire(entry, Outcome.ROLLED_BACK if backwards else Outcome.SUPERSEDED, now)

    entries.sort(key=lambda e: e["number"])
    while len(entries) > HISTORY_LIMIT:
        oldest = next((e for e in entries if e.get("role") == Role.RETIRED), None)
        if oldest is None:
            break
        entries.remove(oldest)
    return entries


def _valid(entry: dict) -> bool:
    return isinstance(entry.get("number"), int) and bool(entry.get("specDigest"))


def _retire(entry: dict, outcome: str, now: str) -> None:
    if entry.get("role") == Role.RETIRED and entry.get("outcome") == outcome:
        return
    if entry.get("role") == Role.SERVING:
        entry["servedUntil"] = now
    entry.update(role=Role.RETIRED, outcome=outcome)


def serving_number(history: list[dict]) -> int | None:
    return next((e["number"] for e in history if e.get("role") == Role.SERVING), None)


def number_of(history: list[dict], spec_digest: str) -> int | None:
    return next((e["number"] for e in history if e.get("specDigest") == spec_digest), None)


def reusable(history: list[dict], spec_digest: str) -> tuple[Artifact, dict, int] | None:
    """A validated artifact the history already holds for this spec digest: (artifact, the
    optimization summary, its revision number). None when it must be made (again)."""
    for entry in history or []:
        if entry.get("specDigest") != spec_digest or not _valid(entry):
            continue
        summary = entry.get("optimization") or {}
        artifact = Artifact.from_status({**(entry.get("artifact") or {}), "specDigest": spec_digest})
        if artifact is None or summary.get("verdict") != "passed" or entry.get("outcome") == Outcome.FAILED:
            return None
        return artifact, summary, entry["number"]
    return None


def serving_message(before: int | None, after: int) -> str:
    """The Event's words when the Deployment switches to another revision."""
    if before is None:
        return f"serving revision {after}"
    word = "rolled back" if after < before else "rolled forward"
    return f"serving revision {after} ({word} from revision {before})"
