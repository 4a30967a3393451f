"""A canary's children (Deployment, Service, NetworkPolicy, rollout file, the stable's mount) and
the gate figures read from runtime metrics pages."""

from __future__ import annotations

import json

from mserve_operator import names
from mserve_operator.builders import build_deployment, build_service
from mserve_operator.builders.canary import (
    ROLLOUT_FILE,
    build_canary_deployment,
    build_canary_ingress_policy,
    build_canary_service,
    build_rollout_config,
    mount_rollout_file,
    read_rollout_config,
    rollout_file,
)
from mserve_operator.builders.ports import HTTP_PORT
from mserve_operator.canary_gates import GateWindows, parse_rollout_counts
from mserve_operator.spec import parse_spec
from operator_fixtures import ARTIFACT, OWNER, settings
from test_operator_canary import NEW

SPEC = parse_spec(
    {
        "model": {"uri": "s3://models/digits/model.onnx"},
        "optimization": {"tolerance": {"cosine": 0.995, "maxAbsError": 0.05}},
        "serving": {"replicas": 2},
        "access": {"authentication": "apiKey", "apiKeySecrets": ["keys"]},
        "rollout": {"strategy": "Canary", "mirrorPercent": 25},
    }
)


def _env(deployment: dict) -> dict:
    server = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in server["env"]}


def test_canary_deployment_is_the_stable_pod_with_the_canary_labels_and_revision() -> None:
    canary = build_canary_deployment(SPEC, OWNER, NEW, settings(), revision=7)
    assert canary["metadata"]["name"] == "digits-canary"
    selector = names.selector_labels("digits", names.COMPONENT_CANARY)
    assert canary["spec"]["selector"]["matchLabels"] == selector
    labels = canary["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "canary"
    # The stable Service selects the runtime component only: it never picks a canary pod.
    stable_selector = build_service(OWNER)["spec"]["selector"]
    assert any(labels.get(k) != v for k, v in stable_selector.items())
    env = _env(canary)
    assert env["MSERVE_MODEL_VERSION"] == "7"
    assert env["MSERVE_AUTH"] == "apiKey"
    assert "MSERVE_ROLLOUT_FILE" not in env  # a canary never forwards
    assert canary["spec"]["replicas"] == 2
    fetch = canary["spec"]["template"]["spec"]["initContainers"][0]
    assert NEW.uri in fetch["args"]
    assert NEW.sha256 in fetch["args"]


def test_canary_service_selects_canary_pods_on_the_stable_ports() -> None:
    service = build_canary_service(OWNER)
    assert service["metadata"]["name"] == "digits-canary"
    assert service["spec"]["selector"] == names.selector_labels("digits", names.COMPONENT_CANARY)
    assert service["spec"]["ports"] == build_service(OWNER)["spec"]["ports"]


def test_canary_policy_admits_the_stable_pods_and_the_stable_callers() -> None:
    policy = build_canary_ingress_policy(SPEC, OWNER, settings())
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "canary"
    stable_peer = {"podSelector": {"matchLabels": names.selector_labels("digits", names.COMPONENT_RUNTIME)}}
    assert {"from": [stable_peer], "ports": [{"protocol": "TCP", "port": HTTP_PORT}]} in policy["spec"][
        "ingress"
    ]
    assert build_canary_ingress_policy(SPEC, OWNER, settings(network_policy=False)) is None


def test_rollout_file_carries_the_contracts_fields() -> None:
    content = rollout_file(4, SPEC, OWNER, "cluster.local", revision=7, weight=10, mirror=True)
    assert content == {
        "generation": 4,
        "canary": {
            "url": f"http://digits-canary.models.svc.cluster.local:{HTTP_PORT}",
            "revision": 7,
            "weight": 10,
            "mirrorPercent": 25,
            "tolerance": {"cosine": 0.995, "maxAbsError": 0.05},
        },
    }
    off = rollout_file(5, SPEC, OWNER, "cluster.local", revision=None, weight=0, mirror=True)
    assert off == {"generation": 5, "canary": None}
    config = build_rollout_config(OWNER, content)
    assert config["metadata"]["name"] == "digits-rollout"
    assert json.loads(config["data"]["rollout.json"]) == content
    assert read_rollout_config(config) == content
    assert read_rollout_config({"data": {"rollout.json": "{not json"}}) == {}
    assert read_rollout_config(None) == {}


def test_stable_mounts_the_rollout_file_optionally() -> None:
    stable = mount_rollout_file(build_deployment(SPEC, OWNER, ARTIFACT, settings()), OWNER)
    pod = stable["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "rollout")
    assert volume["configMap"] == {"name": "digits-rollout", "optional": True}
    assert _env(stable)["MSERVE_ROLLOUT_FILE"] == ROLLOUT_FILE


STABLE_PAGE = """
# TYPE mserve_requests_total counter
mserve_requests_total{model="digits",protocol="rest",status="200"} 900
mserve_requests_total{model="digits",protocol="rest",status="400"} 5
# TYPE mserve_request_duration_seconds histogram
mserve_request_duration_seconds_bucket{model="digits",le="0.001"} 100
mserve_request_duration_seconds_bucket{model="digits",le="0.005"} 900
mserve_request_duration_seconds_bucket{model="digits",le="+Inf"} 905
mserve_request_duration_seconds_count{model="digits"} 905
mserve_request_duration_seconds_sum{model="digits"} 2.0
# TYPE mserve_canary_forwarded_total counter
mserve_canary_forwarded_total{outcome="answered"} 95
mserve_canary_forwarded_total{outcome="failed"} 2
# TYPE mserve_shadow_comparisons_total counter
mserve_shadow_comparisons_total{result="agree"} 150
mserve_shadow_comparisons_total{result="disagree"} 30
mserve_shadow_comparisons_total{result="error"} 1
# TYPE mserve_rollout_generation gauge
mserve_rollout_generation 6
"""
CANARY_PAGE = """
# TYPE mserve_requests_total counter
mserve_requests_total{model="digits",protocol="rest",status="200"} 270
mserve_requests_total{model="digits",protocol="rest",status="503"} 3
"""


def test_metrics_pages_give_the_gates_counters() -> None:
    stable = parse_rollout_counts(STABLE_PAGE)
    assert (stable.requests, stable.server_errors, stable.failed_forwards) == (905, 0, 2)
    assert (stable.agree, stable.disagree, stable.shadow_errors, stable.generation) == (150, 30, 1, 6)
    assert stable.latency_buckets[0.005] == 900
    canary = parse_rollout_counts(CANARY_PAGE)
    assert (canary.requests, canary.server_errors) == (273, 3)


def test_a_step_is_judged_on_what_happened_since_its_start() -> None:
    windows = GateWindows()
    start_stable, start_canary = parse_rollout_counts(STABLE_PAGE), parse_rollout_counts(CANARY_PAGE)
    key = ("e" * 16, 1, "2026-11-30T07:00:00Z")
    assert windows.observe("models", "digits", key, {"c": start_canary}, {"s": start_stable}) is None
    later = parse_rollout_counts(STABLE_PAGE.replace(" 150\n", " 250\n").replace(" 30\n", " 40\n"))
    # A canary pod that restarted since counts from zero; a new one counts all it has.
    restarted = parse_rollout_counts(CANARY_PAGE.replace("270", "20").replace("} 3", "} 1"))
    figures = windows.observe("models", "digits", key, {"c": restarted, "new": start_canary}, {"s": later})
    assert figures.comparisons == 110
    assert figures.agreements == 100
    assert figures.canary_requests == 21 + 273
    assert figures.canary_errors == 1 + 3
    # A new step key starts a new window.
    assert windows.observe("models", "digits", (*key[:2], "later"), {}, {"s": later}) is None
