"""A ModelPool's status from its pods and their metrics (pool_scrape, pool_status), a member's
readiness from it and the hand-over between a member's own pods and the pool (pool_member),
and the pool pods' NetworkPolicy. The metrics pages are written by the runtime's own
PoolMetrics, so the parser reads what a pool server really serves."""

from __future__ import annotations

import datetime

import pytest
from mserve_operator.builders.pool import PoolMember, build_pool_ingress_policy, pool_owner, pool_selector
from mserve_operator.conditions import Reason
from mserve_operator.pool_member import (
    keeps_pool_service,
    member_readiness,
    on_every_pool_pod,
    rolled_out,
    selects_pool,
)
from mserve_operator.pool_scrape import PoolPodMetrics, parse_pool_metrics
from mserve_operator.pool_status import RESTART_MEMORY_S, member_state, pool_observation, quantity
from mserve_runtime.model_residency import ModelState
from mserve_runtime.pool_metrics import PoolMetrics
from prometheus_client import CollectorRegistry, generate_latest

from tests.unit.operator_fixtures import settings

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
POOL = pool_owner({"metadata": {"name": "shared", "namespace": "team", "uid": "u-1"}})


def _page(states: dict[str, ModelState], failures: dict[str, int] | None = None, used: int = 0) -> str:
    registry = CollectorRegistry()
    metrics = PoolMetrics(registry, 64 << 20, lambda: used)
    for model, state in states.items():
        metrics.set_state(model, state, 1000)
    for model, count in (failures or {}).items():
        metrics.load_failures.labels(model).inc(count)
    metrics.evictions.labels("b").inc(3)
    return generate_latest(registry).decode()


def _pod(name: str, *, ready: bool = True, restarts: int = 0, terminated: dict | None = None) -> dict:
    server: dict = {"name": "server", "restartCount": restarts}
    if terminated:
        server["lastState"] = {"terminated": terminated}
    return {
        "metadata": {"name": name},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [server],
        },
    }


def test_the_runtimes_metrics_page_parses_into_states_memory_and_failures() -> None:
    page = _page(
        {"a": ModelState.READY, "b": ModelState.EVICTED, "bad": ModelState.UNAVAILABLE},
        failures={"bad": 1},
        used=5 << 20,
    )
    metrics = parse_pool_metrics(page)
    assert metrics.states == {"a": "READY", "b": "EVICTED", "bad": "UNAVAILABLE"}
    assert metrics.loaded == ["a"]
    assert metrics.failed("bad")
    assert not metrics.failed("b")
    assert metrics.evictions == {"b": 3.0}
    assert (metrics.memory_used_bytes, metrics.memory_budget_bytes) == (5 << 20, 64 << 20)


def test_a_page_that_is_not_metrics_is_a_value_error_and_an_empty_one_is_empty() -> None:
    assert parse_pool_metrics("") == PoolPodMetrics()
    with pytest.raises(ValueError, match="invalid metric name"):
        parse_pool_metrics("<html>not metrics</html>")


def test_status_sums_loaded_models_and_memory_over_pods_and_states_each_member() -> None:
    scraped = {
        "p-0": parse_pool_metrics(_page({"a": ModelState.READY, "b": ModelState.EVICTED}, used=3 << 20)),
        "p-1": parse_pool_metrics(
            _page({"a": ModelState.READY, "bad": ModelState.UNAVAILABLE}, {"bad": 2}, used=1 << 20)
        ),
    }
    fields, stable, restarts = pool_observation(
        [_pod("p-1"), _pod("p-0")], scraped, ["a", "b", "bad", "new"], {}, NOW
    )
    assert [p["name"] for p in fields["pods"]] == ["p-0", "p-1"]
    assert fields["pods"][0]["loaded"] == ["a"]
    assert fields["pods"][0]["evictions"] == 3
    assert fields["loaded"] == 2
    assert fields["memoryUsedBytes"] == 4 << 20
    assert fields["memory"] == "4Mi/128Mi"
    states = {m["name"]: m for m in fields["memberStates"]}
    assert states["a"]["state"] == "Loaded"
    assert states["a"]["message"] == "loaded on 2 of 2 ready pool pods"
    assert states["b"]["state"] == "Loadable"
    assert states["bad"]["state"] == "Failed"
    assert "2 failed loads" in states["bad"]["message"]
    assert states["new"]["state"] == "Unknown"
    assert stable.status == "True"
    assert restarts == []


def test_a_pod_whose_metrics_cannot_be_read_keeps_what_it_had_and_says_why() -> None:
    old = {"pods": [{"name": "p-0", "restarts": 0, "loaded": ["a"], "memoryUsedBytes": 7}]}
    fields, _, _ = pool_observation([_pod("p-0")], {"p-0": "metrics not read: refused"}, ["a"], old, NOW)
    assert fields["pods"][0]["loaded"] == ["a"]
    assert fields["pods"][0]["scrapeError"] == "metrics not read: refused"
    assert fields["memberStates"][0]["state"] == "Unknown"


def test_a_restarted_pod_is_reported_once_with_its_reason_and_the_models_it_had() -> None:
    old = {"pods": [{"name": "p-0", "restarts": 0, "loaded": ["a", "b"], "memoryUsedBytes": 7}]}
    terminated = {"reason": "OOMKilled", "exitCode": 137, "finishedAt": "2026-01-02T03:04:00Z"}
    pod = _pod("p-0", restarts=1, terminated=terminated)
    fields, stable, restarts = pool_observation([pod], {}, ["a", "b"], old, NOW)
    assert len(restarts) == 1
    assert restarts[0].message == (
        "pool pod p-0 restarted (OOMKilled, exit code 137); models loaded at the last scrape: a, b"
    )
    assert (stable.status, stable.reason) == ("False", "PodRestarted")
    assert fields["pods"][0]["lastTermination"]["reason"] == "OOMKilled"

    # the next reconcile: no second notice, the condition stays False for a while, then True
    again, stable, restarts = pool_observation([pod], {}, ["a", "b"], {**old, **fields}, NOW)
    assert restarts == []
    assert stable.status == "False"
    later = NOW + datetime.timedelta(seconds=RESTART_MEMORY_S + 1)
    _, stable, _ = pool_observation([pod], {}, ["a", "b"], {**old, **again}, later)
    assert stable.status == "True"


def test_a_new_pod_is_no_restart() -> None:
    _, stable, restarts = pool_observation([_pod("p-9", restarts=2)], {}, [], {}, NOW)
    assert restarts == []
    assert stable.status == "True"


def test_quantities_read_like_kubectls() -> None:
    assert [quantity(v) for v in (0, 512, 1024, 1536, 10 << 20, 3 << 30)] == [
        "0", "512", "1Ki", "1.5Ki", "10Mi", "3Gi",
    ]  # fmt: skip


def test_member_readiness_follows_the_pools_member_state() -> None:
    pool = {
        "status": {
            "memberStates": [
                {"name": "a", "state": "Loaded", "message": "loaded on 1 of 2 ready pool pods"},
                {"name": "b", "state": "Loadable", "message": "loadable"},
                {"name": "c", "state": "Failed", "message": "failed to load"},
                {"name": "d", "state": "Unknown", "message": "no metrics"},
            ]
        }
    }
    a = member_readiness(pool, "a")
    assert (a.status, a.reason, a.message) == (
        "True",
        Reason.LOADED_IN_POOL,
        "loaded on 1 of 2 ready pool pods",
    )
    assert member_readiness(pool, "b").reason == Reason.LOADABLE_IN_POOL
    assert (member_readiness(pool, "c").status, member_readiness(pool, "c").reason) == (
        "False",
        Reason.MODEL_LOAD_FAILED,
    )
    assert member_readiness(pool, "d") is None
    assert member_readiness(pool, "zz") is None
    assert member_readiness(None, "a") is None


def _deployment(replicas: int, ready: int, updated: int, total: int, observed: int = 2) -> dict:
    return {
        "metadata": {"generation": 2},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "replicas": total,
        },
    }


def test_rolled_out_means_every_pod_of_the_current_template_ready_and_no_old_one() -> None:
    assert rolled_out(_deployment(2, 2, 2, 2))
    assert not rolled_out(_deployment(2, 2, 1, 2)), "one pod of the old template"
    assert not rolled_out(_deployment(2, 3, 2, 3)), "a surge pod still there"
    assert not rolled_out(_deployment(2, 1, 2, 2)), "one not ready"
    assert not rolled_out(_deployment(2, 2, 2, 2, observed=1)), "the controller has not seen the change"
    assert not rolled_out(None)


def test_a_leaving_member_keeps_the_pool_service_until_its_own_pods_are_ready() -> None:
    pool_service = {"spec": {"selector": pool_selector("shared")}}
    own_service = {
        "spec": {"selector": {"mserve.io/modelservice": "m", "app.kubernetes.io/component": "runtime"}}
    }
    assert selects_pool(pool_service) == "shared"
    assert selects_pool(own_service) == ""
    assert selects_pool({"spec": {"selector": {"mserve.io/pool": "shared"}}}) == "", "not the pool's own"
    assert keeps_pool_service(pool_service, _deployment(1, 0, 1, 1))
    assert not keeps_pool_service(pool_service, _deployment(1, 1, 1, 1))
    assert not keeps_pool_service(own_service, _deployment(1, 0, 1, 1))
    assert not keeps_pool_service(None, None)


def _member(name: str, callers: dict) -> PoolMember:
    from mserve_operator.artifact import Artifact

    return PoolMember(name, Artifact(uri=f"s3://a/{name}.onnx"), callers=callers)


def test_the_pool_policy_allows_every_members_callers_and_the_scraper_on_the_admin_port() -> None:
    own = {
        "namespaceSelector": {
            "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team"]}]
        }
    }
    other = {
        "namespaceSelector": {
            "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["web"]}]
        }
    }
    scraper = [{"podSelector": {"matchLabels": {"app": "prometheus"}}}]
    policy = build_pool_ingress_policy(
        POOL,
        [_member("b", other), _member("a", own), _member("c", own)],
        settings(network_policy_scraper=scraper),
    )
    assert policy["metadata"]["name"] == "shared.pool-ingress"
    assert policy["metadata"]["ownerReferences"][0]["kind"] == "ModelPool"
    assert policy["spec"]["podSelector"] == {"matchLabels": pool_selector("shared")}
    serving, admin = policy["spec"]["ingress"]
    assert serving["from"] == [own, other]
    assert [p["port"] for p in serving["ports"]] == [8080, 8081]
    assert admin == {"from": scraper, "ports": [{"protocol": "TCP", "port": 8082}]}


def test_a_pool_without_members_admits_its_own_namespace_and_none_without_policies() -> None:
    policy = build_pool_ingress_policy(POOL, [], settings())
    assert policy["spec"]["ingress"] == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "team"}}}],
            "ports": [{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": 8081}],
        }
    ]
    assert build_pool_ingress_policy(POOL, [], settings(network_policy=False)) is None


def test_a_failed_load_on_one_pod_fails_the_member_unless_it_is_loaded_elsewhere() -> None:
    tried = parse_pool_metrics(_page({"bad": ModelState.UNAVAILABLE}, {"bad": 1}))
    untried = parse_pool_metrics(_page({"bad": ModelState.UNAVAILABLE}))
    state = member_state("bad", [tried, untried], 2)
    assert state["state"] == "Failed"
    assert state["message"].startswith("failed to load on 1 of 2 ready pool pods (1 failed loads;")
    loaded = parse_pool_metrics(_page({"bad": ModelState.READY}))
    assert member_state("bad", [tried, loaded], 2)["state"] == "Loaded"


def test_a_member_moves_in_once_every_ready_pool_pod_lists_it() -> None:
    """The hand-over rule: the pool's pods are not replaced for a new member, so its Service may
    select them only once each ready one has the file (listed Loaded or Loadable)."""
    has = parse_pool_metrics(_page({"new": ModelState.UNAVAILABLE, "a": ModelState.READY}))
    lacks = parse_pool_metrics(_page({"a": ModelState.READY}))
    fields, _, _ = pool_observation(
        [_pod("p-0"), _pod("p-1"), _pod("p-2", ready=False)],
        {"p-0": has, "p-1": lacks, "p-2": lacks},
        ["a", "new"],
        {},
        NOW,
    )
    states = {m["name"]: m for m in fields["memberStates"]}
    assert (states["new"]["listedPods"], states["new"]["readyPods"]) == (1, 2), (
        "p-2 is not ready: not counted"
    )
    pool = {"status": fields}
    assert not on_every_pool_pod(pool, "new"), "p-1 has not fetched it yet"
    assert on_every_pool_pod(pool, "a")

    fields, _, _ = pool_observation([_pod("p-0"), _pod("p-1")], {"p-0": has, "p-1": has}, ["new"], {}, NOW)
    assert on_every_pool_pod({"status": fields}, "new")
    # a pod whose metrics cannot be read may lack it: wait
    fields, _, _ = pool_observation(
        [_pod("p-0"), _pod("p-1")], {"p-0": has, "p-1": "refused"}, ["new"], {}, NOW
    )
    assert not on_every_pool_pod({"status": fields}, "new")
    # listed everywhere but its load failed: the member's own pods keep serving it
    failed = parse_pool_metrics(_page({"new": ModelState.UNAVAILABLE}, {"new": 1}))
    fields, _, _ = pool_observation([_pod("p-0")], {"p-0": failed}, ["new"], {}, NOW)
    assert not on_every_pool_pod({"status": fields}, "new")
    assert not on_every_pool_pod({"status": {"memberStates": []}}, "new")
    assert not on_every_pool_pod(None, "new")
    fields, _, _ = pool_observation([], {}, ["new"], {}, NOW)
    assert not on_every_pool_pod({"status": fields}, "new"), "no ready pool pod at all"
