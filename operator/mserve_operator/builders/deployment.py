"""The runtime Deployment: an init container fetches the artifact, `mserve serve` serves it."""

from __future__ import annotations

from mserve_operator import names
from mserve_operator.artifact import Artifact
from mserve_operator.builders.access import AccessPod, access_pod
from mserve_operator.builders.pod import (
    SOURCE_ROLE,
    STORE_ROLE,
    Owner,
    StorageAccess,
    container_security_context,
    metadata,
    pod_security_context,
    tmp_volume,
)
from mserve_operator.builders.ports import ADMIN_PORT, GRPC_PORT, HTTP_PORT
from mserve_operator.settings import OperatorSettings
from mserve_operator.spec import Gpu, ModelServiceSpec, Resources

MODEL_DIR = "/models"
MODEL_PATH = f"{MODEL_DIR}/model.onnx"


def fetch_image(settings: OperatorSettings) -> str:
    """The fetch init container's image: always the install's CPU runtime image, never one a
    user names (the container holds the store's credentials); a fetch needs no GPU."""
    return f"{settings.runtime_image}:{settings.image_tag}"


def runtime_image(spec: ModelServiceSpec, settings: OperatorSettings) -> str:
    """The server's image: the ModelService's own (checked against the allowlist) or the install's."""
    if spec.serving.image:
        return spec.serving.image
    image = settings.runtime_gpu_image if spec.serving.uses_gpu else settings.runtime_image
    return f"{image}:{settings.image_tag}"


def runtime_resources(spec: ModelServiceSpec, settings: OperatorSettings) -> dict:
    """The spec's requests/limits; a resource it names on neither side gets the install's defaults.

    Defaulting only untouched resources keeps a user's `requests.cpu: 4` from meeting a
    default `limits.cpu: 1` below it.
    """
    return resources_with_defaults(spec.serving.resources, settings)


def resources_with_defaults(resources: Resources, settings: OperatorSettings) -> dict:
    """`resources` as a container's, the install's defaults for a resource named on neither side."""
    requests = {k: str(v) for k, v in resources.requests.items()}
    limits = {k: str(v) for k, v in resources.limits.items()}
    defaults = {
        "cpu": (settings.runtime_cpu_request, settings.runtime_cpu_limit),
        "memory": (settings.runtime_memory_request, settings.runtime_memory_limit),
        "ephemeral-storage": (
            settings.runtime_ephemeral_storage_request,
            settings.runtime_ephemeral_storage_limit,
        ),
    }
    for resource, (request, limit) in defaults.items():
        if resource not in requests and resource not in limits:
            requests[resource], limits[resource] = request, limit
    return {"requests": requests, "limits": limits}


# Between the end of the server's drain and the kubelet's SIGKILL: the process exits, logs flush.
EXIT_MARGIN_SECONDS = 2


def shutdown_budget(settings: OperatorSettings) -> tuple[int, int]:
    """(the server's drain timeout, the pod's terminationGracePeriodSeconds).

    The kubelet counts the grace period from the start of preStop, so it must hold preStop,
    the whole drain (HTTP and gRPC drain together) and the exit margin. The drain gets what
    the configured grace period leaves, at least 1 s; the grace period grows when preStop
    leaves too little.
    """
    configured, prestop = settings.termination_grace_period_seconds, settings.prestop_sleep_seconds
    drain = max(1, configured - prestop - EXIT_MARGIN_SECONDS)
    return drain, max(configured, prestop + drain + EXIT_MARGIN_SECONDS)


def _runtime_env(
    spec: ModelServiceSpec,
    owner: Owner,
    artifact: Artifact,
    settings: OperatorSettings,
    access: AccessPod,
    revision: int | None,
) -> list[dict]:
    serving = spec.serving
    values = {
        "MSERVE_MODEL_NAME": owner.name,
        # The V2 `model_version` of every answer: which revision served it.
        **({"MSERVE_MODEL_VERSION": revision} if revision is not None else {}),
        "MSERVE_HTTP_PORT": HTTP_PORT,
        "MSERVE_GRPC_PORT": GRPC_PORT,
        "MSERVE_ADMIN_PORT": ADMIN_PORT,
        "MSERVE_MAX_BATCH_SIZE": serving.batching.max_batch_size,
        "MSERVE_MAX_BATCH_DELAY_MS": f"{serving.batching.max_delay_ms:g}",
        "MSERVE_THREADS": serving.threads,
        "MSERVE_DEVICE": "cuda" if serving.uses_gpu else "cpu",
        "MSERVE_JSON_LOGS": str(settings.json_logs).lower(),
        "MSERVE_DRAIN_TIMEOUT_S": shutdown_budget(settings)[0],
    }
    if artifact.session_options is not None:
        values["MSERVE_SESSION_OPTIONS"] = artifact.session_options.model_dump_json()
    values.update(access.env)
    return [{"name": k, "value": str(v)} for k, v in values.items()]


def _probe(path: str, period: int, failures: int, *, tls: bool) -> dict:
    return {
        "httpGet": {"path": path, "port": "http", **({"scheme": "HTTPS"} if tls else {})},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def server_container(
    image: str, args: list[str], env: list[dict], resources: dict, settings: OperatorSettings, *, tls: bool
) -> dict:
    """The runtime's `server` container as a dedicated Deployment and a pool share it: ports,
    probes, drain and security context (volume mounts are the caller's)."""
    return {
        "name": "server",
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["mserve"],
        "args": args,
        "env": env,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP"},
        ],
        "resources": resources,
        # Start-up ends when the model is loaded and warm (5 min at most), not when the port
        # opens: the kubelet probes readiness at once when start-up succeeds, so a new pod
        # (a rollout, a rollback) takes traffic within a second of being ready instead of
        # waiting out a readiness period. Liveness waits for start-up.
        "startupProbe": _probe("/v2/health/ready", period=1, failures=300, tls=tls),
        "livenessProbe": _probe("/v2/health/live", period=10, failures=3, tls=tls),
        "readinessProbe": _probe("/v2/health/ready", period=5, failures=2, tls=tls),
        # Endpoints drop the pod during this pause, before the server starts draining.
        "lifecycle": {"preStop": {"sleep": {"seconds": settings.prestop_sleep_seconds}}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(),
    }


def gpu_resource_name(spec: ModelServiceSpec, settings: OperatorSettings) -> str:
    """The GPU resource a runtime pod asks for: the ModelService's, else the install's default."""
    return spec.serving.gpu.resource_name or settings.gpu_resource_name


def serving_scheduling(spec: ModelServiceSpec, settings: OperatorSettings) -> dict:
    """The serving pods' nodeSelector and tolerations (the optimization Job runs there too)."""
    return gpu_scheduling(spec.serving.gpu, settings)


def gpu_scheduling(gpu: Gpu, settings: OperatorSettings) -> dict:
    """Node selector, scheduler and tolerations of a pod with `gpu` (none: the install's selector)."""
    gpu_selector = {**settings.gpu_node_selector, **gpu.node_selector} if gpu.count else {}
    node_selector = {**settings.runtime_node_selector, **gpu_selector}
    scheduling: dict = {"nodeSelector": node_selector} if node_selector else {}
    if settings.scheduler_name:
        scheduling["schedulerName"] = settings.scheduler_name
    if gpu.count == 0:
        return scheduling
    tolerations = [dict(t) for t in settings.gpu_tolerations]
    for own in (t.model_dump(by_alias=True, exclude_defaults=True) for t in gpu.tolerations):
        if own not in tolerations:
            tolerations.append(own)
    # GPU nodes are commonly tainted with their resource name; tolerate that taint by default.
    default = {
        "key": gpu.resource_name or settings.gpu_resource_name,
        "operator": "Exists",
        "effect": "NoSchedule",
    }
    if default not in tolerations:
        tolerations.append(default)
    return {**scheduling, "tolerations": tolerations}


def _access_for(
    spec: ModelServiceSpec,
    artifact: Artifact,
    settings: OperatorSettings,
    store_secret: str,
    store_endpoint: str,
) -> StorageAccess:
    access = StorageAccess()
    role = artifact_role(spec, artifact)
    if role == SOURCE_ROLE:
        access.add_uri(
            artifact.uri,
            settings,
            role=role,
            secret=spec.model.credentials_secret,
            endpoint=settings.s3_endpoint,
        )
    else:
        access.add_uri(artifact.uri, settings, role=role, secret=store_secret, endpoint=store_endpoint)
    return access


def artifact_role(spec: ModelServiceSpec, artifact: Artifact) -> str:
    """Served from the source (no Job ran) with the source's credentials, else from the store.

    An artifact without the optimizer's digest is a source served as it is, also when the spec
    already names another source (a canary's stable revision keeps serving the previous one).
    """
    return SOURCE_ROLE if artifact.uri == spec.model.uri or not artifact.artifact_digest else STORE_ROLE


def build_deployment(
    spec: ModelServiceSpec,
    owner: Owner,
    artifact: Artifact,
    settings: OperatorSettings,
    *,
    store_secret: str = "",
    store_endpoint: str = "",
    revision: int | None = None,
) -> dict:
    labels = names.labels(owner.name, names.COMPONENT_RUNTIME)
    resources = runtime_resources(spec, settings)
    access = _access_for(spec, artifact, settings, store_secret, store_endpoint)
    tmp, tmp_mount = tmp_volume(settings.runtime_tmp_size_limit)
    model_volume = {"name": "model", "emptyDir": {"sizeLimit": str(settings.fetch_max_bytes)}}
    serving_access = access_pod(spec, owner, docs_ui=settings.runtime_docs_ui)
    tls = serving_access.tls

    fetch_args = ["fetch", artifact.uri, MODEL_PATH, "--role", artifact_role(spec, artifact)]
    fetch_args += ["--max-bytes", str(settings.fetch_max_bytes)]
    if artifact.sha256:
        fetch_args += ["--sha256", artifact.sha256]
    fetch = {
        "name": "fetch-model",
        "image": fetch_image(settings),
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["mserve"],
        "args": fetch_args,
        "env": list(access.env),
        # Same resources as the server: it never raises the pod's effective request.
        "resources": {side: dict(values) for side, values in resources.items()},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "model", "mountPath": MODEL_DIR}, tmp_mount, *access.mounts],
    }
    if access.env_from:
        fetch["envFrom"] = access.env_from

    server_resources = {side: dict(values) for side, values in resources.items()}
    if spec.serving.uses_gpu:
        server_resources["limits"][gpu_resource_name(spec, settings)] = str(spec.serving.gpu.count)
    server = {
        **server_container(
            runtime_image(spec, settings),
            ["serve", MODEL_PATH, "--name", owner.name],
            _runtime_env(spec, owner, artifact, settings, serving_access, revision),
            server_resources,
            settings,
            tls=tls,
        ),
        "volumeMounts": [
            {"name": "model", "mountPath": MODEL_DIR, "readOnly": True},
            tmp_mount,
            *serving_access.mounts,
        ],
    }

    pod_annotations = {
        names.ARTIFACT_ANNOTATION: artifact.sha256 or artifact.uri,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(ADMIN_PORT),
        "prometheus.io/path": "/metrics",
    }
    # The admin port speaks TLS too when the serving ports do.
    if tls:
        pod_annotations["prometheus.io/scheme"] = "https"
    selector = names.selector_labels(owner.name, names.COMPONENT_RUNTIME)
    pod_spec = {
        # Only a server that validates callers' tokens needs a token of its own.
        **({"serviceAccountName": serving_access.service_account} if serving_access.service_account else {}),
        "automountServiceAccountToken": bool(serving_access.service_account),
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": shutdown_budget(settings)[1],
        "securityContext": pod_security_context(),
        "initContainers": [fetch],
        "containers": [server],
        "volumes": [model_volume, tmp, *access.volumes, *serving_access.volumes],
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector},
            }
        ],
        **serving_scheduling(spec, settings),
    }
    deployment_spec: dict = {
        "selector": {"matchLabels": selector},
        "revisionHistoryLimit": 5,
        "progressDeadlineSeconds": 600,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {"metadata": {"labels": labels, "annotations": pod_annotations}, "spec": pod_spec},
    }
    # With autoscaling the HPA owns `replicas`; setting it here would fight the HPA.
    if spec.serving.autoscaling is None:
        deployment_spec["replicas"] = spec.serving.min_replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner, owner.name, labels),
        "spec": deployment_spec,
    }
