"""A canary rollout's next move: from `status.canary`, what the cluster shows and the gates' figures
to the next `status.canary`, the weight the stable pods split with, and what runs.

The flow (spec.rollout.strategy Canary, a revision already serving, a new one validated):
  Progressing: the canary's pods start (weight 0); step 1's weight is written; once every stable
    pod applied it (or APPLY_BOUND_SECONDS passed) its pause starts; the gates are judged on the
    step's traffic at every reconcile (fail fast: a gate with enough samples fails at once) and
    at the end of the pause (every gate needs enough samples), then the next step.
  Promoting: after the last step the stable Deployment takes the new artifact (a rolling update
    while the split goes on); once rolled out the weight goes to 0, then the canary goes.
  Succeeded, RolledBack (a gate failed: weight 0 and the canary gone at once; the same spec digest
    is not tried again until the spec changes), Aborted (the spec moved on, e.g. a rollback).

Pure: the same inputs give the same plan; every case is a unit test.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from mserve_operator.artifact import Artifact
from mserve_operator.canary_gates import GateFigures
from mserve_operator.spec import CanaryGates, Rollout

PROGRESSING, PROMOTING, SUCCEEDED, ROLLED_BACK, ABORTED = (
    "Progressing",
    "Promoting",
    "Succeeded",
    "RolledBack",
    "Aborted",
)
ACTIVE = (PROGRESSING, PROMOTING)
# The kubelet refreshes a ConfigMap volume on its periodic pod sync (a minute and more); the
# operator nudges it (canary_apply.py), and gives up waiting for pods' reports after this long.
APPLY_BOUND_SECONDS = 90.0
# A canary whose pods are not ready by then is rolled back (an image or artifact that cannot start).
READY_BOUND_SECONDS = 600.0
# How often the reconcile loop wakes during a canary: gates are judged this often.
EVALUATE_EVERY_SECONDS = 3.0


@dataclass(frozen=True)
class Situation:
    rollout: Rollout
    generation: int  # metadata.generation: a rolled back digest is tried again once it moves
    stable_digest: str
    stable_revision: int | None
    wanted_digest: str
    wanted_revision: int | None
    candidate: Artifact | None  # the wanted spec's validated artifact, when it is not the stable's
    now: datetime.datetime
    canary_ready: bool = False  # every canary replica is available
    applied: bool = False  # every stable pod reports the rollout file's generation status.canary names
    figures: GateFigures | None = None  # the current step's traffic; None: no window yet
    stable_rolled_out: bool = False  # the stable Deployment serves its artifact on every replica


@dataclass(frozen=True)
class Plan:
    status: dict | None  # the next status.canary (None: there is none)
    weight: int = 0  # what the rollout file says; 0: no canary in it (no split, no mirror)
    canary_running: bool = False  # the canary Deployment and Service exist
    promote: bool = False  # the stable Deployment serves the canary's artifact
    active: bool = False  # a canary is under way: wake often
    event: tuple[str, str, str] | None = None  # (type, reason, message) beyond condition changes


@dataclass(frozen=True)
class Verdict:
    failed: str = ""  # the failed gate and its figures, e.g. "agreement 0.41 < 0.95 over 212 comparisons"
    missing: str = ""  # gates without enough samples yet, e.g. "comparisons 12/50"


def _time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def _stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _since(text: str | None, now: datetime.datetime) -> float:
    moment = _time(text)
    return (now - moment).total_seconds() if moment else 0.0


def judge(figures: GateFigures, gates: CanaryGates, *, mirrored: bool, stable_serves: bool = True) -> Verdict:
    """Each gate with enough samples either passes or fails; the others are missing. Every failed
    gate is named, agreement first (the one only live comparison can show).

    At weight 100 the stable serves nothing itself (`stable_serves` False): nothing to mirror and
    no stable p99 to compare with, so only the error rate is judged there.
    """
    need, missing, failed = gates.min_comparisons, [], []
    if mirrored and stable_serves:
        if figures.comparisons >= need:
            agreement = figures.agreement or 0.0
            if agreement < gates.min_agreement:
                over = f"over {figures.comparisons:.0f} comparisons"
                failed.append(f"agreement {agreement:.2f} < {gates.min_agreement:g} {over}")
        else:
            missing.append(f"comparisons {figures.comparisons:.0f}/{need}")
    if figures.canary_requests >= need:
        rate = figures.error_rate or 0.0
        if rate > gates.max_error_rate:
            failed.append(
                f"error rate {rate:.3g} > {gates.max_error_rate:g} over "
                f"{figures.canary_requests:.0f} canary requests ({figures.canary_errors:.0f} failed)"
            )
    else:
        missing.insert(0, f"canary requests {figures.canary_requests:.0f}/{need}")
    if figures.canary_requests >= need and figures.stable_requests >= need:
        canary, stable = figures.canary_p99, figures.stable_p99
        if canary is not None and stable is not None:
            limit = max(stable * gates.max_latency_ratio, stable + gates.latency_slack_ms / 1000)
            if canary > limit:
                failed.append(
                    f"p99 latency {canary * 1000:.3g} ms > {limit * 1000:.3g} ms "
                    f"(stable {stable * 1000:.3g} ms x {gates.max_latency_ratio:g}, "
                    f"at least +{gates.latency_slack_ms:g} ms)"
                )
    elif figures.stable_requests < need and stable_serves:
        missing.insert(1 if missing and missing[0].startswith("canary") else 0,
                       f"stable requests {figures.stable_requests:.0f}/{need}")  # fmt: skip
    if failed:
        return Verdict(failed="; ".join(failed))
    return Verdict(missing=", ".join(missing))


def summary(status: dict) -> str:
    """The printer column: `r3 10% Progressing`."""
    return f"r{status.get('revision', '?')} {status.get('weight', 0)}% {status.get('phase', '')}"


def _plan(status: dict, **kwargs) -> Plan:
    status = {**status, "summary": summary(status)}
    return Plan(status, **kwargs)


def decide(previous: dict | None, situation: Situation) -> Plan:
    prev = dict(previous or {})
    phase = prev.get("phase")
    if phase == PROMOTING and prev.get("specDigest") == situation.stable_digest:
        return _finish_promotion(prev, situation)
    trial = situation.rollout.canary and situation.candidate is not None
    if phase in ACTIVE and (not trial or prev.get("specDigest") != situation.wanted_digest):
        now_serving = situation.stable_revision
        message = (
            f"canary of revision {prev.get('revision')} aborted: the spec now asks for "
            + (f"revision {situation.wanted_revision}" if situation.wanted_revision else "another model")
            + (f"; revision {now_serving} keeps serving" if now_serving else "")
        )
        return _plan({**prev, "phase": ABORTED, "weight": 0, "message": message})
    if not trial:
        return Plan(prev or None)
    held = (
        prev.get("specDigest") == situation.wanted_digest
        and phase == ROLLED_BACK
        and prev.get("observedGeneration") == situation.generation
    )
    if held:
        return Plan(prev)
    if phase not in ACTIVE:
        prev = {
            "revision": situation.wanted_revision,
            "stableRevision": situation.stable_revision,
            "specDigest": situation.wanted_digest,
            "artifact": situation.candidate.to_status(),
            "phase": PROGRESSING,
            "step": 1,
            "weight": 0,
            "startedAt": _stamp(situation.now),
            "message": "starting the canary's pods",
        }
    return _progress(prev, situation)


def _rolled_back(status: dict, situation: Situation, why: str) -> Plan:
    stable = status.get("stableRevision")
    message = f"revision {status.get('revision')} rolled back to revision {stable}: {why}"
    status = {
        **status,
        "phase": ROLLED_BACK,
        "weight": 0,
        "message": message,
        "observedGeneration": situation.generation,
        "endedAt": _stamp(situation.now),
    }
    return _plan(status)


def _progress(status: dict, situation: Situation) -> Plan:
    steps, now = situation.rollout.steps, situation.now
    index = min(max(int(status.get("step") or 1), 1), len(steps)) - 1
    step = steps[index]
    running = {"canary_running": True, "active": True}
    where = f"step {index + 1}/{len(steps)}, weight {step.weight}%"
    if not status.get("weight"):
        if not situation.canary_ready:
            if _since(status.get("startedAt"), now) > READY_BOUND_SECONDS:
                why = f"its pods were not ready within {READY_BOUND_SECONDS:.0f}s"
                return _rolled_back(status, situation, why)
            return _plan({**status, "message": "waiting for the canary's pods to be ready"}, **running)
        status = {**status, "weight": step.weight, "weightWrittenAt": _stamp(now), "stepStartedAt": None}
        message = f"{where}: canary ready, weight written"
        return _plan({**status, "message": message}, weight=step.weight, **running)
    if not status.get("stepStartedAt"):
        waited = _since(status.get("weightWrittenAt"), now)
        if not (situation.applied or waited > APPLY_BOUND_SECONDS):
            message = f"{where}: waiting for the stable pods to apply the weight"
            return _plan({**status, "message": message}, weight=status["weight"], **running)
        status = {**status, "stepStartedAt": _stamp(now), "appliedAfterSeconds": round(waited, 1)}
        message = f"{where}: pause {step.pause} started"
        return _plan({**status, "message": message, "gates": None}, weight=status["weight"], **running)
    if situation.figures is None:
        # No snapshot of this step's start in this process (an operator restart): start the pause anew.
        status = {**status, "stepStartedAt": _stamp(now)}
        message = f"{where}: pause {step.pause} started again (no measurements of the earlier part)"
        return _plan({**status, "message": message}, weight=status["weight"], **running)
    figures = situation.figures
    status = {**status, "gates": figures.to_status()}
    verdict = judge(
        figures,
        situation.rollout.gates,
        mirrored=situation.rollout.mirror_percent > 0,
        stable_serves=step.weight < 100,
    )
    if verdict.failed:
        return _rolled_back(status, situation, verdict.failed)
    elapsed = _since(status.get("stepStartedAt"), now)
    if elapsed < step.pause_seconds:
        message = f"{where}: {elapsed:.0f}s of {step.pause}, gates passing so far"
        return _plan({**status, "message": message}, weight=status["weight"], **running)
    if verdict.missing:
        message = f"{where}: pause over, waiting for samples ({verdict.missing})"
        return _plan({**status, "message": message}, weight=status["weight"], **running)
    passed = _passed(figures)
    if index + 1 < len(steps):
        following = steps[index + 1]
        status = {
            **status,
            "step": index + 2,
            "weight": following.weight,
            "weightWrittenAt": _stamp(now),
            "stepStartedAt": None,
            "message": f"step {index + 2}/{len(steps)}, weight {following.weight}%: starting",
        }
        event = ("Normal", "CanaryStepPassed", f"revision {status['revision']}: {where} passed ({passed})")
        return _plan(status, weight=following.weight, event=event, **running)
    status = {
        **status,
        "phase": PROMOTING,
        "message": f"all {len(steps)} steps passed ({passed}): the stable Deployment takes revision "
        f"{status.get('revision')}",
    }
    return _plan(status, weight=status["weight"], promote=True, **running)


def _passed(figures: GateFigures) -> str:
    parts = [f"error rate {figures.error_rate or 0:.3g} over {figures.canary_requests:.0f} requests"]
    if figures.canary_p99 is not None and figures.stable_p99 is not None:
        parts.append(f"p99 {figures.canary_p99 * 1000:.3g} ms vs {figures.stable_p99 * 1000:.3g} ms")
    if figures.agreement is not None:
        parts.append(f"agreement {figures.agreement:.3f} over {figures.comparisons:.0f} comparisons")
    return ", ".join(parts)


def _finish_promotion(status: dict, situation: Situation) -> Plan:
    running = {"canary_running": True, "active": True, "promote": True}
    if status.get("weight"):
        if not situation.stable_rolled_out:
            message = f"promoting: the stable Deployment rolls out revision {status.get('revision')}"
            return _plan({**status, "message": message}, weight=status["weight"], **running)
        status = {**status, "weight": 0, "weightWrittenAt": _stamp(situation.now)}
        message = "promoting: the stable pods stop forwarding to the canary"
        return _plan({**status, "message": message}, **running)
    if not (situation.applied or _since(status.get("weightWrittenAt"), situation.now) > APPLY_BOUND_SECONDS):
        return Plan({**status, "summary": summary(status)}, **running)
    status = {
        **status,
        "phase": SUCCEEDED,
        "message": f"revision {status.get('revision')} promoted: it serves all traffic",
        "endedAt": _stamp(situation.now),
    }
    return _plan(status, promote=True)


def step_key(status: dict | None) -> tuple | None:
    """What identifies a step's measurement window; None when no window runs."""
    status = status or {}
    if status.get("phase") != PROGRESSING or not status.get("stepStartedAt"):
        return None
    return (status.get("specDigest"), status.get("step"), status.get("stepStartedAt"))


def rolled_out(deployment: dict | None, desired: int) -> bool:
    """Every replica of the Deployment runs its current template and is available."""
    if deployment is None:
        return False
    meta, state = deployment.get("metadata") or {}, deployment.get("status") or {}
    current = int(state.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
    updated, total = int(state.get("updatedReplicas") or 0), int(state.get("replicas") or 0)
    available = int(state.get("availableReplicas") or 0)
    return current and updated >= desired and total == updated and available >= desired
