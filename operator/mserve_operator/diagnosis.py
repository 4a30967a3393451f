"""Read the truth out of Jobs and pods: optimization results and why pods are not running.

Pure functions over the API's JSON (dicts), so every case is a unit test with a literal pod.
"""

from __future__ import annotations

from dataclasses import dataclass

from mserve_contract.exit_codes import OptimizerExit
from mserve_contract.optimization_report import TerminationSummary

from mserve_operator.builders.job import CONTAINER_NAME
from mserve_operator.conditions import Reason

MAX_MESSAGE = 1024
_IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
_CONFIG_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError"})


@dataclass(frozen=True)
class Problem:
    """Why a pod is not (yet) serving, as a condition reason and the cluster's own message."""

    reason: str
    message: str


@dataclass(frozen=True)
class JobOutcome:
    state: str  # "running" | "succeeded" | "failed"
    reason: str
    message: str
    summary: TerminationSummary | None = None


def _short(text: str) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _condition(obj: dict, type_: str) -> dict | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return condition
    return None


def _terminated(pod: dict, container: str = CONTAINER_NAME) -> dict | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            state = status.get("state") or {}
            return state.get("terminated") or (status.get("lastState") or {}).get("terminated")
    return None


def _by_age(pods: list[dict]) -> list[dict]:
    return sorted(pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))


def job_outcome(job: dict, pods: list[dict]) -> JobOutcome:
    """What an optimization Job came to, with the optimizer's own words from its termination message."""
    if _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet"):
        return _succeeded(pods)
    failed = _condition(job, "Failed") or _condition(job, "FailureTarget")
    if failed:
        return _failed(failed, pods)
    problems = pod_problems(pods)
    if problems:
        # Still running as far as the Job knows, but say why nothing happens (e.g. no node with room).
        return JobOutcome("running", problems[0].reason, f"optimizer {problems[0].message}")
    return JobOutcome("running", Reason.JOB_RUNNING, f"optimization Job {job['metadata']['name']} is running")


def _succeeded(pods: list[dict]) -> JobOutcome:
    for pod in reversed(_by_age(pods)):
        terminated = _terminated(pod)
        if terminated and terminated.get("exitCode") == 0:
            text = terminated.get("message") or ""
            try:
                summary = TerminationSummary.parse_termination_message(text)
            except ValueError as exc:
                return JobOutcome("failed", Reason.REPORT_UNREADABLE, _short(str(exc)))
            if summary.verdict != "passed":
                return JobOutcome("failed", Reason.VALIDATION_FAILED, _short(summary.message), summary)
            if not summary.artifact_uri:
                return JobOutcome(
                    "failed", Reason.REPORT_UNREADABLE, "optimizer report names no artifact", summary
                )
            return JobOutcome(
                "succeeded", Reason.SUCCEEDED, _short(summary.message or "validation passed"), summary
            )
    return JobOutcome(
        "failed", Reason.REPORT_UNREADABLE, "the Job completed but no optimizer pod with a report is left"
    )


def _failed(condition: dict, pods: list[dict]) -> JobOutcome:
    for pod in reversed(_by_age(pods)):
        terminated = _terminated(pod)
        if not terminated or terminated.get("exitCode") in (None, 0):
            continue
        code, text = terminated["exitCode"], terminated.get("message") or ""
        summary = None
        try:
            summary = TerminationSummary.parse_termination_message(text)
            text = summary.message or text
        except ValueError:
            pass
        if code == OptimizerExit.VALIDATION_FAILED:
            return JobOutcome(
                "failed", Reason.VALIDATION_FAILED, _short(text or "validation failed"), summary
            )
        if code == OptimizerExit.BAD_INPUT:
            return JobOutcome(
                "failed", Reason.FETCH_FAILED, _short(text or "bad input or fetch error"), summary
            )
        if condition.get("reason") != "DeadlineExceeded":
            detail = f"optimizer exited with code {code} ({terminated.get('reason', '')})"
            return JobOutcome(
                "failed", Reason.JOB_FAILED, _short(f"{detail}: {text}" if text else detail), summary
            )
    reason = Reason.DEADLINE_EXCEEDED if condition.get("reason") == "DeadlineExceeded" else Reason.JOB_FAILED
    message = condition.get("message") or condition.get("reason") or "the optimization Job failed"
    return JobOutcome("failed", reason, _short(message))


def pod_problems(pods: list[dict]) -> list[Problem]:
    """Problems of pods that are not being deleted, most telling first."""
    found: list[Problem] = []
    for pod in _by_age(pods):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        found.extend(_problems_of(pod))
    order = [
        Reason.IMAGE_PULL_ERROR,
        Reason.CONTAINER_CONFIG_ERROR,
        Reason.INIT_CONTAINER_FAILED,
        Reason.CRASH_LOOP_BACK_OFF,
        Reason.UNSCHEDULABLE,
    ]
    return sorted(found, key=lambda p: order.index(p.reason))


def _problems_of(pod: dict) -> list[Problem]:
    status = pod.get("status") or {}
    name = pod["metadata"]["name"]
    problems = []
    for condition in status.get("conditions") or []:
        unschedulable = (condition.get("type"), condition.get("status"), condition.get("reason")) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        )
        if unschedulable:
            problems.append(
                Problem(Reason.UNSCHEDULABLE, _short(f"pod {name}: {condition.get('message', '')}"))
            )
    for kind, statuses in (
        ("init container", status.get("initContainerStatuses")),
        ("container", status.get("containerStatuses")),
    ):
        for container in statuses or []:
            problem = _container_problem(name, kind, container)
            if problem:
                problems.append(problem)
    return problems


def _container_problem(pod: str, kind: str, container: dict) -> Problem | None:
    state = container.get("state") or {}
    waiting = state.get("waiting") or {}
    where = f"pod {pod} {kind} {container.get('name')}"
    reason = waiting.get("reason", "")
    if reason in _IMAGE_PULL_REASONS:
        return Problem(Reason.IMAGE_PULL_ERROR, _short(f"{where}: {reason}: {waiting.get('message', '')}"))
    if reason in _CONFIG_REASONS:
        return Problem(
            Reason.CONTAINER_CONFIG_ERROR, _short(f"{where}: {reason}: {waiting.get('message', '')}")
        )
    # A container running (or finished) now is judged by now, a waiting one by its last exit.
    last = (
        state.get("terminated")
        or ((container.get("lastState") or {}).get("terminated") if waiting else None)
        or {}
    )
    failed_init = kind == "init container" and last.get("exitCode") not in (None, 0)
    if failed_init:
        detail = last.get("message") or last.get("reason") or ""
        return Problem(
            Reason.INIT_CONTAINER_FAILED, _short(f"{where} exited {last.get('exitCode')}: {detail}")
        )
    if reason == "CrashLoopBackOff":
        detail = last.get("message") or last.get("reason") or waiting.get("message", "")
        return Problem(Reason.CRASH_LOOP_BACK_OFF, _short(f"{where} (exit {last.get('exitCode')}): {detail}"))
    return None
