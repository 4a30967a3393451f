"""Operator settings: one object per install, read from `MSERVE_OPERATOR_*` environment variables.

The Helm chart renders these as the operator Deployment's environment; a ModelService can
override the artifact store and the runtime image for itself.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    """How the operator builds optimization Jobs and runtime Deployments for every ModelService."""

    model_config = SettingsConfigDict(env_prefix="MSERVE_OPERATOR_", extra="ignore", frozen=True)

    artifact_uri: str = "s3://mserve-artifacts/"
    """Artifact store for optimized models (`s3://bucket/prefix/` or `pvc://claim/path/`); a
    ModelService's `spec.artifactStore.uri` overrides it. Artifacts land under
    `<store>/<namespace>/<name>/<digest>/model.onnx`."""

    s3_endpoint: str = ""
    """S3 endpoint URL for an S3-compatible store (MinIO, Ceph); empty means AWS S3."""

    s3_region: str = "us-east-1"
    """AWS region passed to the optimizer and runtime pods as `AWS_REGION`."""

    s3_secret: str = ""
    """Name of a Secret (in each ModelService's namespace) with `AWS_ACCESS_KEY_ID` and
    `AWS_SECRET_ACCESS_KEY` for the artifact store; empty means the pods get no credentials
    (IRSA, instance roles or a public bucket)."""

    runtime_image: str = "mserve-runtime"
    """Image of the inference server (`mserve serve`) and its init container (`mserve fetch`)."""

    runtime_gpu_image: str = "mserve-runtime-gpu"
    """Image used instead of `runtime_image` when a ModelService asks for GPUs (onnxruntime-gpu)."""

    optimizer_image: str = "mserve-optimizer"
    """Image of the optimization Job (`mserve optimize`)."""

    image_tag: str = "latest"
    """Tag of all three images; the chart sets it to the release's version."""

    image_pull_policy: str = "IfNotPresent"
    """Pull policy of every container the operator creates."""

    runtime_cpu_request: str = "500m"
    """Default CPU request of a runtime container when the ModelService sets none."""

    runtime_memory_request: str = "512Mi"
    """Default memory request of a runtime container when the ModelService sets none."""

    runtime_cpu_limit: str = "1"
    """Default CPU limit of a runtime container (it also sizes onnxruntime's thread pool)."""

    runtime_memory_limit: str = "1Gi"
    """Default memory limit of a runtime container."""

    optimizer_cpu_request: str = "1"
    """CPU request of the optimization Job's container."""

    optimizer_memory_request: str = "2Gi"
    """Memory request of the optimization Job's container."""

    optimizer_cpu_limit: str = "2"
    """CPU limit of the optimization Job's container."""

    optimizer_memory_limit: str = "4Gi"
    """Memory limit of the optimization Job's container."""

    optimizer_node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels optimization pods must match (JSON object), e.g. a batch node pool."""

    runtime_node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels every runtime pod must match (JSON object); a GPU spec's nodeSelector adds to it."""

    gpu_resource_name: str = "nvidia.com/gpu"
    """Extended resource a GPU ModelService asks for when its `spec.serving.gpu.resourceName`
    is unset (the device plugin's name, e.g. `nvidia.com/gpu` or `amd.com/gpu`)."""

    gpu_node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels every GPU runtime pod must match (JSON object); a ModelService's
    `spec.serving.gpu.nodeSelector` adds to it and wins on the same key."""

    gpu_tolerations: list[dict[str, object]] = Field(default_factory=list)
    """Tolerations given to every GPU runtime pod (JSON list), before the ModelService's own."""

    scheduler_name: str = ""
    """Scheduler of every pod the operator creates (e.g. a GPU bin-packing or batch scheduler);
    empty means the cluster's default scheduler."""

    job_backoff_limit: int = Field(2, ge=0, le=10)
    """Retries of an optimization pod that died of something other than bad input or a failed
    validation (those fail the Job at once through its podFailurePolicy)."""

    job_active_deadline_seconds: int = Field(3600, ge=60)
    """Longest an optimization Job may run, all retries included."""

    job_ttl_seconds_after_finished: int = Field(86400, ge=0)
    """How long a finished Job (and its pod's logs) is kept before Kubernetes deletes it; the
    result is already in the ModelService's status by then."""

    termination_grace_period_seconds: int = Field(30, ge=1)
    """Time a runtime pod gets to drain in-flight requests after SIGTERM."""

    prestop_sleep_seconds: int = Field(5, ge=0)
    """preStop pause so that Endpoints drop the pod before the server starts draining."""

    pvc_root: str = "/mnt/pvc"
    """Where `pvc://claim/path` claims are mounted in optimizer and runtime pods."""

    cluster_domain: str = "cluster.local"
    """DNS domain of the cluster, for the in-cluster URL in `status.url`."""

    resync_seconds: float = Field(60.0, gt=0)
    """Each ModelService is reconciled at least this often, to repair drift that no watch saw."""

    peering_name: str = "mserve"
    """Name of the (Cluster)KopfPeering object through which operator replicas find each other."""

    peering_priority: int | None = None
    """Peering priority of this replica: of several replicas only the highest-priority one acts.
    Unset picks a random priority so that replicas of one Deployment never tie (kopf freezes
    all replicas that share the top priority)."""

    metrics_port: int = Field(9090, ge=0, le=65535)
    """Port of the Prometheus `/metrics` endpoint; 0 disables it."""

    liveness_port: int = Field(8080, ge=0, le=65535)
    """Port of kopf's liveness endpoint (`/healthz`); 0 disables it."""

    json_logs: bool = False
    """Tell runtime pods to log one JSON object per line."""

    @property
    def artifact_uri_dir(self) -> str:
        return self.artifact_uri if self.artifact_uri.endswith("/") else self.artifact_uri + "/"
