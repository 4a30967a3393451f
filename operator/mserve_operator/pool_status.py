"""From a ModelPool's pods and their metrics to its status: what each pod has loaded, memory
used against the budget, each member's state, and restarts of pool pods.

Pure: pods (as the API server lists them), the metrics read from each (or why not), the
previous status and the time in; status fields, conditions and restart notices out.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from mserve_operator.conditions import Condition
from mserve_operator.pool_scrape import PoolPodMetrics

SERVER_CONTAINER = "server"
STABLE = "Stable"
POD_RESTARTED = "PodRestarted"
NO_RECENT_RESTART = "NoRecentRestart"
# A restart keeps the pool's Stable condition False this long after the container came back.
RESTART_MEMORY_S = 600.0
# Member states in status.memberStates
LOADED, LOADABLE, FAILED, UNKNOWN = "Loaded", "Loadable", "Failed", "Unknown"


@dataclass(frozen=True)
class RestartNotice:
    pod: str
    reason: str
    exit_code: int | None
    finished_at: str
    loaded: list[str]

    @property
    def message(self) -> str:
        code = "" if self.exit_code is None else f", exit code {self.exit_code}"
        had = ", ".join(self.loaded) if self.loaded else "none"
        return (
            f"pool pod {self.pod} restarted ({self.reason or 'reason unknown'}{code}); "
            f"models loaded at the last scrape: {had}"
        )


def quantity(value: int) -> str:
    """Bytes as a short binary quantity (12.3Mi), for printer columns."""
    amount = float(value)
    for unit in ("", "Ki", "Mi", "Gi", "Ti"):
        if amount < 1024 or unit == "Ti":
            return f"{amount:.0f}" if unit == "" else f"{amount:.1f}{unit}".replace(".0", "")
        amount /= 1024
    return str(value)  # unreachable


def _server_status(pod: dict) -> dict:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == SERVER_CONTAINER), {})


def _pod_ready(pod: dict) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _pod_entry(pod: dict, scraped: PoolPodMetrics | str | None, before: dict) -> dict:
    server = _server_status(pod)
    entry: dict = {
        "name": pod["metadata"]["name"],
        "ready": _pod_ready(pod),
        "restarts": int(server.get("restartCount") or 0),
        "loaded": before.get("loaded") or [],
        "memoryUsedBytes": before.get("memoryUsedBytes") or 0,
    }
    if isinstance(scraped, PoolPodMetrics):
        entry["loaded"] = scraped.loaded
        entry["memoryUsedBytes"] = scraped.memory_used_bytes
        entry["evictions"] = int(sum(scraped.evictions.values()))
    elif scraped:
        entry["scrapeError"] = scraped[:200]
    terminated = (server.get("lastState") or {}).get("terminated")
    if terminated:
        entry["lastTermination"] = {
            "reason": terminated.get("reason") or "",
            "exitCode": terminated.get("exitCode"),
            "finishedAt": terminated.get("finishedAt") or "",
        }
    return entry


def _restart(entry: dict, before: dict) -> RestartNotice | None:
    if not before or entry["restarts"] <= int(before.get("restarts") or 0):
        return None
    last = entry.get("lastTermination") or {}
    return RestartNotice(
        entry["name"], last.get("reason", ""), last.get("exitCode"), last.get("finishedAt", ""),
        list(before.get("loaded") or []),
    )  # fmt: skip


def member_state(name: str, ready_metrics: list[PoolPodMetrics], ready_pods: int) -> dict:
    """A member's state over the ready pool pods whose metrics were read. Every pod fetched the
    same digest-checked file, so a failed load on one pod is the file's: Failed, unless loaded
    somewhere (a pod that has not tried yet would fail the same way)."""
    listed = [m for m in ready_metrics if name in m.states]
    loaded = sum(1 for m in listed if m.states[name] == "READY")
    failed = sum(1 for m in listed if m.failed(name))
    loadable = len(listed) - loaded - failed
    if loaded:
        state, message = LOADED, f"loaded on {loaded} of {ready_pods} ready pool pods"
    elif failed:
        failures = int(sum(m.load_failures.get(name, 0) for m in listed))
        state = FAILED
        message = (
            f"failed to load on {failed} of {ready_pods} ready pool pods ({failures} failed loads; "
            "the reason is in POST /v2/repository/index on a pool pod and in its log)"
        )
    elif loadable:
        state, message = LOADABLE, f"loadable on {loadable} of {ready_pods} ready pool pods (not loaded now)"
    elif ready_metrics:
        state, message = UNKNOWN, "not listed by any ready pool pod yet"
    else:
        state, message = UNKNOWN, "no ready pool pod's metrics read yet"
    return {
        "name": name,
        "state": state,
        "loadedPods": loaded,
        "listedPods": len(listed),
        "readyPods": len(ready_metrics),
        "message": message,
    }


def _stable(last_restart: dict | None, now: datetime.datetime) -> Condition:
    if last_restart:
        at = last_restart.get("observedAt") or ""
        try:
            age = (now - datetime.datetime.fromisoformat(at.replace("Z", "+00:00"))).total_seconds()
        except ValueError:
            age = 0.0
        if age < RESTART_MEMORY_S:
            return Condition.of(STABLE, False, POD_RESTARTED, last_restart.get("message", ""))
    return Condition.of(STABLE, True, NO_RECENT_RESTART, "no pool pod restarted in the last 10 minutes")


def pool_observation(
    pods: list[dict],
    scraped: dict[str, PoolPodMetrics | str],
    members: list[str],
    old: dict,
    now: datetime.datetime,
) -> tuple[dict, Condition, list[RestartNotice]]:
    """Status fields, the Stable condition, and the restarts not reported before."""
    before = {p.get("name"): p for p in old.get("pods") or []}
    entries, notices, ready_metrics = [], [], []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        name = pod["metadata"]["name"]
        entry = _pod_entry(pod, scraped.get(name), before.get(name) or {})
        entries.append(entry)
        notice = _restart(entry, before.get(name) or {})
        if notice is not None:
            notices.append(notice)
        metrics = scraped.get(name)
        if entry["ready"] and isinstance(metrics, PoolPodMetrics):
            ready_metrics.append(metrics)
    last_restart = old.get("lastRestart")
    if notices:
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        last_restart = {"pod": notices[-1].pod, "message": notices[-1].message, "observedAt": stamp}
    ready_pods = sum(1 for e in entries if e["ready"])
    used = sum(e["memoryUsedBytes"] for e in entries)
    budget = next((m.memory_budget_bytes for m in scraped.values() if isinstance(m, PoolPodMetrics)), 0)
    fields = {
        "pods": entries,
        "loaded": sum(len(e["loaded"]) for e in entries),
        "memoryUsedBytes": used,
        "memory": f"{quantity(used)}/{quantity(budget * len(entries))}" if budget else quantity(used),
        "memberStates": [member_state(m, ready_metrics, ready_pods) for m in sorted(members)],
    }
    if last_restart:
        fields["lastRestart"] = last_restart
    return fields, _stable(last_restart, now), notices
