"""Canary rollouts: spec.rollout parsing (hostile values refused naming the field), the pure
decision (canary.py) step by step, and the gates' verdicts on figures."""

from __future__ import annotations

import datetime

import pytest
from mserve_operator import canary
from mserve_operator.artifact import Artifact
from mserve_operator.canary_gates import GateFigures
from mserve_operator.spec import CanaryGates, Rollout, parse_spec
from operator_fixtures import ARTIFACT
from pydantic import ValidationError

T0 = datetime.datetime(2026, 11, 30, 7, 0, 0, tzinfo=datetime.UTC)
MODEL = {"uri": "s3://models/digits/model.onnx"}
NEW = Artifact(uri="s3://mserve-artifacts/models/digits/" + "b2" * 32 + "/model.onnx", sha256="cd" * 32,
               spec_digest="e" * 16, artifact_digest="b2" * 32)  # fmt: skip
ROLLOUT = Rollout.model_validate(
    {
        "strategy": "Canary",
        "steps": [{"weight": 10, "pause": "10s"}, {"weight": 50, "pause": "10s"}],
        "gates": {"minComparisons": 50},
    }
)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def situation(seconds: float = 0, **kwargs) -> canary.Situation:
    values = {
        "rollout": ROLLOUT,
        "generation": 3,
        "stable_digest": ARTIFACT.spec_digest,
        "stable_revision": 1,
        "wanted_digest": NEW.spec_digest,
        "wanted_revision": 2,
        "candidate": NEW,
        "now": at(seconds),
        **kwargs,
    }
    return canary.Situation(**values)


GOOD = GateFigures(
    canary_requests=200,
    canary_errors=0,
    canary_p99=0.004,
    stable_requests=800,
    stable_p99=0.003,
    agreements=120,
    comparisons=120,
)


# -- spec.rollout --------------------------------------------------------------------------------


def test_rollout_defaults_to_rolling_with_two_canary_steps_ready() -> None:
    rollout = parse_spec({"model": MODEL}).rollout
    assert rollout.strategy == "Rolling"
    assert not rollout.canary
    assert [(s.weight, s.pause_seconds) for s in rollout.steps] == [(10, 30), (50, 30)]
    assert rollout.mirror_percent == 20
    assert rollout.gates.min_agreement == 0.95


@pytest.mark.parametrize(
    ("rollout", "named"),
    [
        ({"strategy": "Canary", "steps": [{"weight": 0}]}, "weight"),
        ({"strategy": "Canary", "steps": [{"weight": 150}]}, "weight"),
        ({"strategy": "Canary", "steps": [{"weight": 10, "pause": "-1s"}]}, "pause"),
        ({"strategy": "Canary", "steps": [{"weight": 10, "pause": "forever"}]}, "pause"),
        ({"strategy": "Canary", "steps": [{"weight": 10, "pause": "99999h"}]}, "pause"),
        ({"strategy": "Canary", "steps": [{"weight": 10}] * 50}, "steps"),
        ({"strategy": "Canary", "steps": []}, "steps"),
        ({"strategy": "Blue"}, "strategy"),
        ({"strategy": "Canary", "mirrorPercent": 101}, "mirrorPercent"),
        ({"strategy": "Canary", "gates": {"maxErrorRate": -0.1}}, "maxErrorRate"),
        ({"strategy": "Canary", "gates": {"maxLatencyRatio": 0.5}}, "maxLatencyRatio"),
        ({"strategy": "Canary", "gates": {"minAgreement": 2}}, "minAgreement"),
        ({"strategy": "Canary", "gates": {"minComparisons": 0}}, "minComparisons"),
    ],
)
def test_hostile_rollout_is_refused_naming_the_field(rollout: dict, named: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_spec({"model": MODEL, "rollout": rollout})
    locations = [".".join(str(p) for p in e["loc"]) for e in refused.value.errors()]
    assert any(named in where for where in locations), locations


@pytest.mark.parametrize(
    ("serving", "named"),
    [({"pool": "shared"}, "spec.serving.pool"), ({"tls": {"secretName": "cert"}}, "spec.serving.tls")],
)
def test_canary_with_a_pool_or_tls_is_refused_naming_the_field(serving: dict, named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        parse_spec({"model": MODEL, "serving": serving, "rollout": {"strategy": "Canary"}})


def test_rollout_settings_leave_the_spec_digest_alone() -> None:
    from mserve_operator.spec_digest import spec_digest

    rolling = parse_spec({"model": MODEL})
    canary_spec = parse_spec({"model": MODEL, "rollout": {"strategy": "Canary", "mirrorPercent": 5}})
    assert spec_digest(rolling) == spec_digest(canary_spec)


# -- gates ---------------------------------------------------------------------------------------


def test_agreement_below_the_gate_fails_with_its_figures() -> None:
    figures = GateFigures(canary_requests=300, stable_requests=900, agreements=87, comparisons=212)
    verdict = canary.judge(figures, CanaryGates(), mirrored=True)
    assert verdict.failed == "agreement 0.41 < 0.95 over 212 comparisons"


def test_error_rate_counts_failed_forwards_and_fails_over_the_gate() -> None:
    figures = GateFigures(canary_requests=100, canary_errors=3, stable_requests=100)
    verdict = canary.judge(figures, CanaryGates(), mirrored=False)
    assert verdict.failed.startswith("error rate 0.03 > 0.01 over 100 canary requests")


def test_latency_within_the_slack_passes_whatever_the_ratio() -> None:
    tiny = GateFigures(canary_requests=100, canary_p99=0.005, stable_requests=100, stable_p99=0.001)
    assert not canary.judge(tiny, CanaryGates(), mirrored=False).failed
    slow = GateFigures(canary_requests=100, canary_p99=0.2, stable_requests=100, stable_p99=0.1)
    assert "p99 latency 200 ms > 150 ms" in canary.judge(slow, CanaryGates(), mirrored=False).failed


def test_every_failed_gate_is_named_agreement_first() -> None:
    # The e2e run's permuted model: its canary also shed some mirrored requests (503).
    figures = GateFigures(canary_requests=261, canary_errors=32, stable_requests=1030, comparisons=148)
    verdict = canary.judge(figures, CanaryGates(), mirrored=True)
    assert verdict.failed == (
        "agreement 0.00 < 0.95 over 148 comparisons; "
        "error rate 0.123 > 0.01 over 261 canary requests (32 failed)"
    )


def test_at_weight_100_only_the_error_rate_is_judged() -> None:
    all_canary = GateFigures(canary_requests=100, canary_p99=0.3, stable_requests=0)
    verdict = canary.judge(all_canary, CanaryGates(), mirrored=True, stable_serves=False)
    assert verdict == canary.Verdict()


def test_too_few_samples_judge_nothing_and_say_what_is_missing() -> None:
    few = GateFigures(canary_requests=10, stable_requests=40, agreements=0, comparisons=3)
    verdict = canary.judge(few, CanaryGates(), mirrored=True)
    assert not verdict.failed
    assert verdict.missing == "canary requests 10/50, stable requests 40/50, comparisons 3/50"


# -- the decision, step by step -------------------------------------------------------------------


def test_a_canary_starts_at_weight_zero_until_its_pods_are_ready() -> None:
    plan = canary.decide(None, situation())
    assert plan.canary_running
    assert plan.weight == 0
    assert not plan.promote
    assert plan.status["phase"] == canary.PROGRESSING
    assert plan.status["revision"] == 2
    assert plan.status["artifact"]["sha256"] == NEW.sha256
    assert plan.status["summary"] == "r2 0% Progressing"

    ready = canary.decide(plan.status, situation(5, canary_ready=True))
    assert ready.weight == 10
    assert ready.status["weightWrittenAt"] == "2026-11-30T07:00:05Z"
    assert not ready.status.get("stepStartedAt")


def _at_step_one(seconds: float = 5) -> dict:
    started = canary.decide(None, situation()).status
    written = canary.decide(started, situation(seconds, canary_ready=True)).status
    applied = canary.decide(written, situation(seconds + 2, canary_ready=True, applied=True))
    assert applied.status["stepStartedAt"] == canary._stamp(at(seconds + 2))
    return applied.status


def test_the_pause_counts_from_when_every_stable_pod_applied_the_weight() -> None:
    written = canary.decide(canary.decide(None, situation()).status, situation(5, canary_ready=True)).status
    waiting = canary.decide(written, situation(30, canary_ready=True, applied=False))
    assert not waiting.status.get("stepStartedAt")
    assert "apply the weight" in waiting.status["message"]
    bound = canary.APPLY_BOUND_SECONDS + 6
    late = canary.decide(written, situation(bound, canary_ready=True, applied=False))
    assert late.status["stepStartedAt"] == canary._stamp(at(bound))


def test_gates_passing_at_the_end_of_each_pause_walk_the_steps_then_promote() -> None:
    step1 = _at_step_one()
    mid = canary.decide(step1, situation(12, canary_ready=True, applied=True, figures=GOOD))
    assert mid.status["step"] == 1
    assert mid.weight == 10
    assert "gates passing" in mid.status["message"]
    assert mid.status["gates"]["agreement"] == 1.0

    step2 = canary.decide(step1, situation(17.5, canary_ready=True, applied=True, figures=GOOD))
    assert step2.status["step"] == 2
    assert step2.weight == 50
    assert not step2.status["stepStartedAt"]
    assert step2.event[1] == "CanaryStepPassed"

    applied = canary.decide(step2.status, situation(19, canary_ready=True, applied=True))
    done = canary.decide(applied.status, situation(30, canary_ready=True, applied=True, figures=GOOD))
    assert done.promote
    assert done.status["phase"] == canary.PROMOTING
    assert done.weight == 50


def test_a_pause_over_without_enough_samples_waits_instead_of_promoting() -> None:
    few = GateFigures(canary_requests=10, stable_requests=10, comparisons=2, agreements=2)
    plan = canary.decide(_at_step_one(), situation(60, canary_ready=True, applied=True, figures=few))
    assert plan.status["step"] == 1
    assert "waiting for samples" in plan.status["message"]


def test_a_failed_gate_rolls_back_at_once_and_the_digest_is_held() -> None:
    bad = GateFigures(canary_requests=300, stable_requests=900, agreements=87, comparisons=212)
    plan = canary.decide(_at_step_one(), situation(9, canary_ready=True, applied=True, figures=bad))
    assert plan.status["phase"] == canary.ROLLED_BACK
    assert plan.weight == 0
    assert not plan.canary_running
    assert plan.status["message"] == (
        "revision 2 rolled back to revision 1: agreement 0.41 < 0.95 over 212 comparisons"
    )
    held = canary.decide(plan.status, situation(20, canary_ready=True))
    assert held.status == plan.status
    assert not held.canary_running
    assert not held.promote
    retried = canary.decide(plan.status, situation(30, generation=4))
    assert retried.status["phase"] == canary.PROGRESSING
    assert retried.canary_running


def test_a_spec_going_back_to_the_stable_aborts_the_canary() -> None:
    rollback = situation(9, wanted_digest=ARTIFACT.spec_digest, wanted_revision=1, candidate=None)
    plan = canary.decide(_at_step_one(), rollback)
    assert plan.status["phase"] == canary.ABORTED
    assert plan.weight == 0
    assert not plan.canary_running
    assert "revision 1" in plan.status["message"]


def test_strategy_rolling_mid_canary_aborts_it() -> None:
    rolling = Rollout()
    plan = canary.decide(_at_step_one(), situation(9, rollout=rolling))
    assert plan.status["phase"] == canary.ABORTED
    assert not plan.canary_running


def test_an_operator_restart_mid_step_starts_the_pause_again() -> None:
    plan = canary.decide(_at_step_one(), situation(9, canary_ready=True, applied=True, figures=None))
    assert plan.status["stepStartedAt"] == canary._stamp(at(9))
    assert "again" in plan.status["message"]


def test_pods_never_ready_roll_back_after_the_bound() -> None:
    started = canary.decide(None, situation()).status
    plan = canary.decide(started, situation(canary.READY_BOUND_SECONDS + 1))
    assert plan.status["phase"] == canary.ROLLED_BACK
    assert "not ready" in plan.status["message"]


def test_promotion_keeps_the_split_until_the_stable_rolled_out_then_removes_the_canary() -> None:
    promoting = {**_at_step_one(), "phase": canary.PROMOTING, "weight": 50}
    # The stable Deployment now serves the canary's artifact: its digest is the stable one.
    now_stable = {"stable_digest": NEW.spec_digest, "stable_revision": 2, "candidate": None}
    rolling = canary.decide(promoting, situation(40, **now_stable, stable_rolled_out=False))
    assert rolling.weight == 50
    assert rolling.canary_running
    assert rolling.promote
    off = canary.decide(promoting, situation(50, **now_stable, stable_rolled_out=True))
    assert off.weight == 0
    assert off.canary_running
    done = canary.decide(off.status, situation(53, **now_stable, stable_rolled_out=True, applied=True))
    assert done.status["phase"] == canary.SUCCEEDED
    assert not done.canary_running
    assert done.status["summary"] == "r2 0% Succeeded"


def test_step_key_names_a_running_step_only() -> None:
    assert canary.step_key(_at_step_one())[1] == 1
    assert canary.step_key({"phase": canary.ROLLED_BACK, "stepStartedAt": "x"}) is None
