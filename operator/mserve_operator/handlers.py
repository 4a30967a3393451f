"""kopf wiring: one reconcile loop (a daemon) per ModelService, woken by its children's events.

Handlers only route: the loop calls `Reconciler.reconcile` (in a thread: the Kubernetes
client blocks) whenever the ModelService or one of its children changes, and at least
every `resync_seconds` so that drift nobody watched is repaired too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import kopf

from mserve_operator import metrics, names
from mserve_operator.builders.pod import Owner
from mserve_operator.canary import EVALUATE_EVERY_SECONDS
from mserve_operator.kube_api import KubeApi, load_client_config
from mserve_operator.reconcile import Reconciler
from mserve_operator.settings import OperatorSettings
from mserve_operator.spec import API_GROUP, API_VERSION, PLURAL
from mserve_operator.usage_meter import UsageMeter
from mserve_operator.wakeups import Wakeups

FINALIZER = "mserve.io/finalizer"
# Errors back off up to this long, so a broken API server is not hammered.
MAX_ERROR_DELAY = 60.0
# Child events arriving together (a rollout touches many pods) share one reconcile.
DEBOUNCE_SECONDS = 0.2

WAKEUPS = Wakeups()
_PHASES: dict[tuple[str, str], str] = {}


def _emit(body: dict, type_: str, reason: str, message: str) -> None:
    kopf.event(body, type=type_, reason=reason, message=message)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    operator_settings = OperatorSettings()
    # Our own names for what kopf writes on our objects; progress goes to annotations, not status.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="mserve.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="mserve.io", key="last-handled-configuration"
    )
    # Events are posted by the reconciler on transitions; kopf's per-handler chatter is not.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 16
    # A replica killed without a goodbye blocks equal-or-lower-priority replicas until its
    # peering entry expires; keep that short.
    settings.peering.lifetime = 30
    # The loop exits within a reconcile of being stopped; waiting for that spares a polling cycle.
    settings.background.instant_exit_timeout = 5.0
    # CRDs are installed before the operator; not scanning for new ones spares the
    # ClusterRole list/watch on CRDs and namespaces.
    settings.scanning.disabled = True
    memo.settings = operator_settings
    memo.reconciler = Reconciler(KubeApi(), operator_settings, _emit)
    memo.usage = UsageMeter(memo.reconciler.api, operator_settings)
    metrics.serve(operator_settings.metrics_port)


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf and the reconciler authenticate the same way: in-cluster, else $KUBECONFIG as it is now."""
    config = load_client_config()
    header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix("authorization")
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
    )


@kopf.on.cleanup()
def close(memo: kopf.Memo, **_: Any) -> None:
    reconciler = getattr(memo, "reconciler", None)
    if reconciler is not None:
        reconciler.api.close()


@kopf.on.probe(id="reconciling")
def reconciling(**_: Any) -> int:
    """Liveness details: how many ModelServices this replica reconciles."""
    return len(_PHASES)


# Polling every second: on deletion kopf removes its finalizer only once the loop has exited.
@kopf.daemon(API_GROUP, API_VERSION, PLURAL, cancellation_polling=1.0)
async def reconcile_loop(
    body: kopf.Body, name: str, namespace: str, memo: kopf.Memo, stopped: kopf.DaemonStopped, logger, **_: Any
) -> None:
    reconciler: Reconciler = memo.reconciler
    resync = memo.settings.resync_seconds
    failures = 0
    try:
        while not stopped:
            started = time.monotonic()
            try:
                # `body` is kopf's live view of the object; a copy is a consistent snapshot.
                result = await asyncio.to_thread(reconciler.reconcile, _snapshot(body))
            except Exception as exc:
                failures += 1
                metrics.RECONCILE_ERRORS.labels(type(exc).__name__).inc()
                metrics.RECONCILES.labels("error").inc()
                delay = min(MAX_ERROR_DELAY, 2.0**failures)
                logger.warning(f"reconcile failed ({exc!r}); retrying in {delay:.0f}s")
                await _pause(namespace, name, delay, stopped)
                continue
            failures = 0
            if result.job_created:
                metrics.JOBS_CREATED.inc()
            _set_phase(namespace, name, result.phase)
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
            metrics.RECONCILES.labels("changed" if result.status_changed else "unchanged").inc()
            if result.canary_active:
                # Gates are judged every few seconds; pokes (our own status writes among them,
                # as the figures move) wait for the next round rather than spin the loop.
                await stopped.wait(EVALUATE_EVERY_SECONDS)
            elif await _pause(namespace, name, resync, stopped):
                await asyncio.sleep(DEBOUNCE_SECONDS)
    finally:
        _set_phase(namespace, name, None)
        WAKEUPS.forget(namespace, name)


@kopf.daemon(API_GROUP, API_VERSION, PLURAL, id="usage", cancellation_polling=1.0)
async def usage_loop(
    name: str, namespace: str, memo: kopf.Memo, stopped: kopf.DaemonStopped, logger, **_: Any
) -> None:
    """status.usage every `usage_interval_seconds` (usage_meter.py); off when that is 0."""
    interval = memo.settings.usage_interval_seconds
    if not interval:
        return
    meter: UsageMeter = memo.usage
    try:
        while not stopped:
            try:
                await asyncio.to_thread(meter.observe, namespace, name)
            except Exception as exc:  # a failed round is retried on the next one
                logger.warning(f"usage metering failed ({exc!r})")
            await stopped.wait(interval)
    finally:
        meter.forget(namespace, name)


async def _pause(namespace: str, name: str, seconds: float, stopped: kopf.DaemonStopped) -> bool:
    """Sleep until poked (True), `seconds` passed or the daemon is stopped (False)."""

    async def until_stopped() -> None:
        await stopped.wait()

    poked = asyncio.create_task(WAKEUPS.wait(namespace, name, seconds))
    stop = asyncio.create_task(until_stopped())
    done, pending = await asyncio.wait({poked, stop}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return poked in done and poked.result()


def _snapshot(body: kopf.Body) -> dict:
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": dict(body.metadata),
        "spec": dict(body.spec),
        "status": dict(body.status),
    }


def _set_phase(namespace: str, name: str, phase: str | None) -> None:
    if phase is None:
        _PHASES.pop((namespace, name), None)
    else:
        _PHASES[(namespace, name)] = phase
    counts: dict[str, int] = {}
    for value in _PHASES.values():
        counts[value] = counts.get(value, 0) + 1
    for value in ("Pending", "Optimizing", "Deploying", "Ready", "Degraded", "Failed"):
        metrics.MODELSERVICES.labels(value).set(counts.get(value, 0))


@kopf.on.delete(API_GROUP, API_VERSION, PLURAL)
async def forget_cluster_objects(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Cluster-scoped children have no ownerReference to the ModelService: delete them here."""
    await asyncio.to_thread(memo.reconciler.forget, Owner.from_body(body))


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
def modelservice_changed(name: str, namespace: str, **_: Any) -> None:
    WAKEUPS.poke(namespace, name)


def _owner_of(labels: dict) -> str | None:
    return labels.get(names.MODELSERVICE_LABEL)


_CHILD_FILTER = {"app.kubernetes.io/managed-by": names.MANAGED_BY}


@kopf.on.event("batch", "v1", "jobs", labels=_CHILD_FILTER)
@kopf.on.event("apps", "v1", "deployments", labels=_CHILD_FILTER)
@kopf.on.event("", "v1", "services", labels=_CHILD_FILTER)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=_CHILD_FILTER)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=_CHILD_FILTER)
@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=_CHILD_FILTER)
@kopf.on.event("", "v1", "pods", labels=_CHILD_FILTER)
def child_changed(labels: dict, namespace: str, **_: Any) -> None:
    """Any change to a child (including deletion or a hand edit) wakes its owner's loop."""
    owner = _owner_of(labels)
    if owner:
        WAKEUPS.poke(namespace, owner)
