"""The optimization Job: `mserve optimize` in the optimizer image, named by the spec digest."""

from __future__ import annotations

from kubernetes.utils.quantity import parse_quantity
from mserve_contract.exit_codes import PERMANENT_EXITS

from mserve_operator import names
from mserve_operator.builders.deployment import gpu_resource_name, runtime_resources, serving_scheduling
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
from mserve_operator.builders.store import artifact_store
from mserve_operator.settings import OperatorSettings
from mserve_operator.spec import ModelServiceSpec

CONTAINER_NAME = "optimize"
TERMINATION_LOG = "/dev/termination-log"
# V2 protocol datatypes (the CRD's vocabulary) as `mserve optimize --input-shape` spells them.
OPTIMIZER_DTYPES = {
    "FP32": "float32",
    "FP16": "float16",
    "FP64": "float64",
    "INT64": "int64",
    "INT32": "int32",
    "INT8": "int8",
    "UINT8": "uint8",
    "BOOL": "bool",
}
# spec.optimization.tolerance fields as `mserve optimize --tolerance` keys.
TOLERANCE_KEYS = {
    "cosine": "cosine",
    "top1_agreement": "top1",
    "max_abs_error": "max_abs",
    "mean_rel_error": "mean_rel",
}


def optimizer_args(spec: ModelServiceSpec, output: str) -> list[str]:
    model, opt = spec.model, spec.optimization
    args = ["optimize", model.uri, "--output", output, "--format", model.format, "--quantize", opt.quantize]
    args += ["--prune", f"{opt.prune:g}"]
    for tensor in model.inputs:
        dims = ",".join(str(d) for d in tensor.shape)
        args += ["--input-shape", f"{tensor.name}={dims}:{OPTIMIZER_DTYPES[tensor.datatype]}"]
    for field, value in sorted(opt.tolerance.model_dump().items()):
        if value is not None:
            args += ["--tolerance", f"{TOLERANCE_KEYS[field]}={value:g}"]
    if model.sha256:
        args += ["--sha256", model.sha256.lower()]
    # Timed at the batch the server will form, on the device and thread count it will use.
    args += ["--latency-batch", str(spec.serving.batching.max_batch_size)]
    if spec.serving.uses_gpu:
        args += ["--device", "cuda"]
    if spec.serving.threads:
        args += ["--threads", str(spec.serving.threads)]
    return [*args, "--termination-message", TERMINATION_LOG]


def _scheduling(spec: ModelServiceSpec, settings: OperatorSettings) -> dict:
    """Where the serving pods run: the latencies the optimizer measures are that hardware's."""
    serving = serving_scheduling(spec, settings)
    node_selector = {**settings.optimizer_node_selector, **serving.get("nodeSelector", {})}
    scheduling: dict = {"nodeSelector": node_selector} if node_selector else {}
    if serving.get("tolerations"):
        scheduling["tolerations"] = serving["tolerations"]
    if settings.scheduler_name:
        scheduling["schedulerName"] = settings.scheduler_name
    return scheduling


def _resources(spec: ModelServiceSpec, settings: OperatorSettings) -> dict:
    """The optimizer's own memory and storage; the serving pods' CPU limit and GPUs.

    With the server's CPU limit, onnxruntime in the Job gets the thread count the server
    will get (both read the cgroup limit), so the batch-1 latencies compare what will serve.
    """
    requests = {
        "cpu": settings.optimizer_cpu_request,
        "memory": settings.optimizer_memory_request,
        "ephemeral-storage": settings.optimizer_ephemeral_storage_request,
    }
    limits = {
        "cpu": settings.optimizer_cpu_limit,
        "memory": settings.optimizer_memory_limit,
        "ephemeral-storage": settings.optimizer_ephemeral_storage_limit,
    }
    serving_cpu = runtime_resources(spec, settings)["limits"].get("cpu")
    if serving_cpu:
        limits["cpu"] = serving_cpu
        if parse_quantity(requests["cpu"]) > parse_quantity(serving_cpu):
            requests["cpu"] = serving_cpu
    if spec.serving.uses_gpu:
        limits[gpu_resource_name(spec, settings)] = str(spec.serving.gpu.count)
    return {"requests": requests, "limits": limits}


def build_job(spec: ModelServiceSpec, owner: Owner, spec_digest: str, settings: OperatorSettings) -> dict:
    store = artifact_store(spec, settings)
    access = StorageAccess()
    # The optimizer reads its source with the source role and writes with the store role.
    access.add_uri(
        spec.model.uri,
        settings,
        role=SOURCE_ROLE,
        secret=spec.model.credentials_secret,
        endpoint=settings.s3_endpoint,
    )
    # The store's keys reach the optimizer under their own prefix: writes never use the source's.
    access.add_uri(
        store.uri, settings, role=STORE_ROLE, secret=store.secret, endpoint=store.endpoint, writable=True
    )
    tmp, tmp_mount = tmp_volume(settings.optimizer_ephemeral_storage_limit)
    pod_labels = {**names.labels(owner.name, names.COMPONENT_OPTIMIZER), names.SPEC_DIGEST_LABEL: spec_digest}
    container = {
        "name": CONTAINER_NAME,
        "image": f"{settings.optimizer_image}:{settings.image_tag}",
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["mserve"],
        "args": optimizer_args(spec, store.output_for(owner.namespace, owner.name)),
        # HOME on the writable emptyDir: torch and onnx write caches under it.
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "MSERVE_FETCH_MAX_BYTES", "value": str(settings.fetch_max_bytes)},
            *access.env,
        ],
        "resources": _resources(spec, settings),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(),
        "volumeMounts": [tmp_mount, *access.mounts],
    }
    if access.env_from:
        container["envFrom"] = access.env_from
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(owner, names.job_name(owner.name, spec_digest), pod_labels),
        "spec": {
            "backoffLimit": settings.job_backoff_limit,
            "activeDeadlineSeconds": settings.job_active_deadline_seconds,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds_after_finished,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER_NAME,
                            "operator": "In",
                            "values": [int(code) for code in PERMANENT_EXITS],
                        },
                    },
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security_context(),
                    "containers": [container],
                    "volumes": [tmp, *access.volumes],
                    **_scheduling(spec, settings),
                },
            },
        },
    }
