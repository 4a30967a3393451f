"""kopf wiring of ModelPools: one reconcile loop per pool, woken when a ModelService that
names it changes or its Deployment does; a pool Deployment's change also wakes its members
(their readiness is the pool's)."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from mserve_operator import handlers
from mserve_operator.builders.pool import POOL_LABEL
from mserve_operator.kube_api import KubeApi
from mserve_operator.pool_reconcile import SETTLE_INTERVAL_S, PoolReconciler
from mserve_operator.pool_spec import POOL_PLURAL
from mserve_operator.settings import OperatorSettings
from mserve_operator.spec import API_GROUP, API_VERSION, PLURAL

# Members per pool as last reconciled, to wake them when the pool's pods change.
_MEMBERS: dict[tuple[str, str], list[str]] = {}


def _key(name: str) -> str:
    return f"modelpool/{name}"  # no ModelService name holds a '/'


def _interval(settings: OperatorSettings) -> float:
    """The pool's pods' metrics (loaded models, memory, member states) are read this often."""
    usage = settings.usage_interval_seconds
    return min(settings.resync_seconds, usage) if usage > 0 else settings.resync_seconds


@kopf.daemon(API_GROUP, API_VERSION, POOL_PLURAL, cancellation_polling=1.0)
async def pool_loop(
    body: kopf.Body, name: str, namespace: str, memo: kopf.Memo, stopped: kopf.DaemonStopped, logger, **_: Any
) -> None:
    if not hasattr(memo, "pool_reconciler"):
        memo.pool_reconciler = PoolReconciler(KubeApi(), memo.settings, handlers._emit)
    reconciler: PoolReconciler = memo.pool_reconciler
    failures = 0
    try:
        while not stopped:
            try:
                _, members = await asyncio.to_thread(reconciler.reconcile, handlers._snapshot(body))
            except Exception as exc:
                failures += 1
                delay = min(handlers.MAX_ERROR_DELAY, 2.0**failures)
                logger.warning(f"pool reconcile failed ({exc!r}); retrying in {delay:.0f}s")
                await handlers._pause(namespace, _key(name), delay, stopped)
                continue
            failures = 0
            previous = _MEMBERS.get((namespace, name), [])
            _MEMBERS[(namespace, name)] = members
            for member in set(previous) | set(members):
                handlers.WAKEUPS.poke(namespace, member)
            pause = SETTLE_INTERVAL_S if reconciler.settling(namespace, name) else _interval(memo.settings)
            if await handlers._pause(namespace, _key(name), pause, stopped):
                await asyncio.sleep(handlers.DEBOUNCE_SECONDS)
    finally:
        _MEMBERS.pop((namespace, name), None)
        handlers.WAKEUPS.forget(namespace, _key(name))


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
def member_changed(body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    """A ModelService joining, leaving or getting a new artifact changes its pool's members."""
    pool = ((body.get("spec") or {}).get("serving") or {}).get("pool")
    if pool:
        handlers.WAKEUPS.poke(namespace, _key(pool))
    for (ns, pool_name), members in _MEMBERS.items():
        if ns == namespace and name in members and pool_name != pool:
            handlers.WAKEUPS.poke(namespace, _key(pool_name))  # it left this pool


@kopf.on.event("apps", "v1", "deployments", labels={POOL_LABEL: kopf.PRESENT})
def pool_deployment_changed(labels: dict, namespace: str, **_: Any) -> None:
    pool = labels.get(POOL_LABEL)
    if pool:
        handlers.WAKEUPS.poke(namespace, _key(pool))
        for member in _MEMBERS.get((namespace, pool), []):
            handlers.WAKEUPS.poke(namespace, member)
