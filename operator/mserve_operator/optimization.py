"""Decide the optimization step from the spec, the recorded status and the Job (if any).

Results are recorded in `status.optimization`; once a spec digest has a verdict, no Job runs
for it again, even after the finished Job was deleted by its TTL or the operator restarted.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from mserve_operator import conditions, names, revisions
from mserve_operator.artifact import Artifact
from mserve_operator.conditions import Reason
from mserve_operator.diagnosis import job_outcome
from mserve_operator.spec import ModelServiceSpec


@dataclass(frozen=True)
class OptimizationState:
    spec_digest: str
    job_name: str
    ok: bool
    reason: str
    message: str
    artifact: Artifact | None = None  # set when this spec's artifact is ready to serve
    record: dict = field(default_factory=dict)  # what goes into status.optimization
    needs_job: bool = False

    @property
    def terminal_failure(self) -> bool:
        return self.reason in conditions.TERMINAL_OPTIMIZATION_FAILURES


def _summary_record(summary) -> dict:
    figures = {
        "artifactDigest": summary.artifact_digest,
        "verdict": summary.verdict,
        "message": summary.message,
        "quantize": summary.quantize,
        "sizeRatio": summary.size_ratio,
        "latencyRatioB1": summary.latency_ratio_b1,
        "latencyRatioBn": summary.latency_ratio_bn,
        "minCosine": summary.min_cosine,
        "top1Agreement": summary.top1_agreement,
        "chosen": summary.chosen,
        "hardware": summary.hardware,
        "fasterMode": summary.faster_mode,
    }
    return {k: v for k, v in figures.items() if v not in (None, "")}


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def untrusted_artifact(uri: str, sha256: str, prefix: str) -> str:
    """Why an artifact the optimizer reported may not be served ('' when it may).

    Only this ModelService's own prefix is trusted: anything else (another tenant's
    artifact, a path that climbs out with '..') could have been planted by whoever else
    holds keys to the store. The sha256 is required so that the runtime re-verifies it.
    """
    own = prefix.rstrip("/") + "/"
    scheme, sep, path = uri.partition("://")
    normal = f"{scheme}{sep}{posixpath.normpath(path)}" if sep and path else ""
    if normal != uri or not uri.startswith(own) or len(uri) == len(own):
        return (
            f"the optimizer reported artifact {uri!r}, outside this ModelService's prefix {own}: "
            "refusing to serve it"
        )
    if not _SHA256.match(sha256):
        return (
            f"the optimizer reported artifact {uri!r} without a valid sha256 ({sha256!r}): "
            "refusing to serve it"
        )
    return ""


def decide_optimization(
    spec: ModelServiceSpec,
    name: str,
    spec_digest: str,
    status: dict,
    job: dict | None,
    job_pods: list[dict],
    artifact_prefix: str,
) -> OptimizationState:
    """`artifact_prefix` is `<store>/<namespace>/<name>`: the only place an artifact is trusted from."""
    if spec.skips_optimization:
        artifact = Artifact(uri=spec.model.uri, sha256=spec.model.sha256.lower(), spec_digest=spec_digest)
        message = "ONNX source with quantize none and no pruning: served as it is"
        record = {"specDigest": spec_digest}
        return OptimizationState(spec_digest, "", True, Reason.SKIPPED, message, artifact, record)

    job_name = names.job_name(name, spec_digest)
    recorded = _recorded(spec_digest, status)
    if recorded is not None:
        return recorded
    base = {"specDigest": spec_digest, "jobName": job_name}
    reused = _reused(spec_digest, status, artifact_prefix, base)
    if reused is not None:
        return reused
    if job is None:
        return OptimizationState(
            spec_digest,
            job_name,
            False,
            Reason.JOB_RUNNING,
            f"creating optimization Job {job_name}",
            None,
            base,
            True,
        )
    outcome = job_outcome(job, job_pods)
    record = {**base, **(_summary_record(outcome.summary) if outcome.summary else {})}
    artifact = None
    if outcome.state == "succeeded":
        summary = outcome.summary
        refusal = untrusted_artifact(summary.artifact_uri, summary.artifact_sha256, artifact_prefix)
        if refusal:
            record.update(verdict="failed", message=refusal)
            reason = Reason.UNTRUSTED_ARTIFACT
            return OptimizationState(spec_digest, job_name, False, reason, refusal, None, record)
        artifact = Artifact(
            uri=summary.artifact_uri,
            sha256=summary.artifact_sha256,
            spec_digest=spec_digest,
            artifact_digest=summary.artifact_digest,
            session_options=summary.session_options,
        )
        if summary.faster_mode:
            message = slower_message(summary, spec.serving.batching.max_batch_size)
            return OptimizationState(
                spec_digest, job_name, True, Reason.SLOWER_THAN_ORIGINAL, message, artifact, record
            )
    elif outcome.state == "failed":
        record.setdefault("verdict", "failed")
        record.setdefault("message", outcome.message)
    ok = artifact is not None
    return OptimizationState(spec_digest, job_name, ok, outcome.reason, outcome.message, artifact, record)


def slower_message(summary, batch: int) -> str:  # summary: TerminationSummary
    """The Optimized condition's (and the Warning Event's) words for a requested mode that is slower."""

    def ratio(value: float | None) -> str:
        return f"{value:.2f}x" if value is not None else "?"

    where = f" on {summary.hardware}" if summary.hardware else ""
    return (
        f"quantize {summary.quantize} is slower than the fp32 original{where}: "
        f"{ratio(summary.latency_ratio_b1)} its speed at batch 1, {ratio(summary.latency_ratio_bn)} at "
        f"batch {batch}; served as the spec asks, but quantize {summary.faster_mode} would have been "
        "faster (quantize auto chooses the fastest variant that passes)"
    )


def _recorded(spec_digest: str, status: dict) -> OptimizationState | None:
    """The verdict status already holds for this spec digest, if any."""
    record = dict(status.get("optimization") or {})
    # A status written before the two digests had names calls the spec digest `digest`.
    legacy = record.pop("digest", None)
    record["specDigest"] = record.get("specDigest") or legacy
    if record["specDigest"] != spec_digest or record.get("verdict") not in ("passed", "failed"):
        return None
    optimized = conditions.find(status.get("conditions"), conditions.OPTIMIZED) or {}
    job_name = record.get("jobName", "")
    if record["verdict"] == "passed":
        # The served artifact, or a canary's (served beside it, on trial, while the Job may be gone).
        served = next(
            (
                a
                for a in (
                    Artifact.from_status(status.get("artifact") or {}),
                    Artifact.from_status((status.get("canary") or {}).get("artifact") or {}),
                )
                if a is not None and a.spec_digest == spec_digest
            ),
            None,
        )
        if served is None:
            return None
        if served.artifact_digest:
            record.setdefault("artifactDigest", served.artifact_digest)
        message = optimized.get("message", "")
        reason = Reason.SLOWER_THAN_ORIGINAL if record.get("fasterMode") else Reason.SUCCEEDED
        return OptimizationState(spec_digest, job_name, True, reason, message, served, record)
    reason = optimized.get("reason", Reason.VALIDATION_FAILED)
    if reason not in conditions.TERMINAL_OPTIMIZATION_FAILURES:
        return None
    return OptimizationState(spec_digest, job_name, False, reason, optimized.get("message", ""), None, record)


def _reused(spec_digest: str, status: dict, prefix: str, base: dict) -> OptimizationState | None:
    """An earlier revision's validated artifact for this very spec digest: served again, no Job.

    The Job that made it may be long gone (its TTL); the revision history keeps what it reported.
    An artifact outside this ModelService's prefix (the store moved) is made again instead.
    """
    found = revisions.reusable(status.get("revisions") or [], spec_digest)
    if found is None:
        return None
    artifact, summary, number = found
    if untrusted_artifact(artifact.uri, artifact.sha256, prefix):
        return None
    record = {**base, "artifactDigest": artifact.artifact_digest, **summary}
    record = {k: v for k, v in record.items() if v not in (None, "")}
    message = f"reusing revision {number}'s validated artifact {artifact.label}: no Job"
    return OptimizationState(spec_digest, base["jobName"], True, Reason.SUCCEEDED, message, artifact, record)
