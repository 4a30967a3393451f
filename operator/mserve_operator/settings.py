"""Operator settings: one object per install, read from `MSERVE_OPERATOR_*` environment variables.

The Helm chart renders these as the operator Deployment's environment; a ModelService can
override the artifact store and the runtime image for itself.
"""

from __future__ import annotations

import re

from kubernetes.utils import parse_quantity
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Image globs know only `*` and `?`: the chart turns the same globs into the admission
# policy's regular expressions, and those two are all both sides spell the same way.
_IMAGE_GLOB = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@*?-]*$")


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

    runtime_image_allowlist: list[str] = Field(default_factory=list)
    """Globs (`*`, `?`) of the images a ModelService may name in `spec.serving.image` (JSON
    list); empty allows only this install's own runtime images. A ModelService naming another
    image is marked Failed (the chart's ValidatingAdmissionPolicy refuses it before that)."""

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

    optimizer_ephemeral_storage_request: str = "1Gi"
    """Ephemeral-storage request of the optimization Job's container."""

    optimizer_ephemeral_storage_limit: str = "20Gi"
    """Ephemeral-storage limit of the optimization Job's container; its /tmp (source model,
    exported and optimized ONNX files) is an emptyDir of this size."""

    runtime_ephemeral_storage_request: str = "1Gi"
    """Default ephemeral-storage request of a runtime pod when the ModelService sets none."""

    runtime_ephemeral_storage_limit: str = "6Gi"
    """Default ephemeral-storage limit of a runtime pod; it must hold the model volume
    (`fetch_max_bytes`) and /tmp (`runtime_tmp_size_limit`)."""

    runtime_tmp_size_limit: str = "256Mi"
    """sizeLimit of the runtime pod's /tmp emptyDir."""

    fetch_max_bytes: int = Field(4 * 1024**3, ge=1)
    """Largest model a fetch may download (`mserve fetch --max-bytes`, and the optimizer's
    `MSERVE_FETCH_MAX_BYTES`); the runtime's model emptyDir has this sizeLimit."""

    optimizer_egress_policy: bool = True
    """Give each ModelService's optimizer pods a NetworkPolicy that allows egress only to DNS,
    the artifact store and the source (enforced where the cluster runs a NetworkPolicy agent)."""

    optimizer_egress_dns: list[dict[str, object]] = Field(
        default_factory=lambda: [
            {"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
        ]
    )
    """NetworkPolicy peers (JSON list) that serve DNS; port 53 UDP and TCP is allowed to them."""

    optimizer_egress_store: list[dict[str, object]] = Field(default_factory=list)
    """NetworkPolicy peers (JSON list) of the artifact store, reached on its endpoint's port;
    empty allows that port to any address (for a store outside the cluster)."""

    optimizer_egress_source: list[dict[str, object]] = Field(
        default_factory=lambda: [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}}
        ]
    )
    """NetworkPolicy peers (JSON list) a model source may be fetched from, on the source URI's
    port; the default is any public address (not the cluster's private networks)."""

    network_policy: bool = True
    """Give each ModelService's runtime pods a NetworkPolicy: the serving ports only from
    `spec.access.allowedNamespaces` (and its pod selector), the admin port only from
    `network_policy_scraper` (enforced where the cluster runs a NetworkPolicy agent)."""

    network_policy_scraper: list[dict[str, object]] = Field(default_factory=list)
    """NetworkPolicy peers (JSON list) of the metrics scraper, allowed to the runtime's admin
    port (metrics, OpenAPI, docs); empty lets no pod reach that port."""

    runtime_docs_ui: bool = True
    """Serve the interactive API docs UI on the runtime's admin port (the OpenAPI document stays)."""

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

    usage_interval_seconds: float = Field(30.0, ge=0)
    """How often the operator reads each runtime pod's metrics for `status.usage`; 0 turns
    usage metering off (the runtime NetworkPolicy must let the operator's pods reach the admin port)."""

    usage_window_seconds: float = Field(300.0, gt=0)
    """The window `status.usage` summarises (requests/s, error rate, p99, cost)."""

    usage_scrape_timeout_seconds: float = Field(2.0, gt=0)
    """Timeout of one metrics read from a runtime pod."""

    price_cpu_hour: float | None = Field(None, ge=0, allow_inf_nan=False)
    """Price of one requested CPU core for an hour (any currency); unset = not priced."""

    price_memory_gib_hour: float | None = Field(None, ge=0, allow_inf_nan=False)
    """Price of one requested GiB of memory for an hour; unset = not priced."""

    price_gpu_hour: float | None = Field(None, ge=0, allow_inf_nan=False)
    """Price of one requested GPU for an hour; unset = not priced."""

    metrics_port: int = Field(9090, ge=0, le=65535)
    """Port of the Prometheus `/metrics` endpoint; 0 disables it."""

    liveness_port: int = Field(8080, ge=0, le=65535)
    """Port of kopf's liveness endpoint (`/healthz`); 0 disables it."""

    json_logs: bool = False
    """Tell runtime pods to log one JSON object per line."""

    @field_validator("runtime_image_allowlist")
    @classmethod
    def _image_globs(cls, globs: list[str]) -> list[str]:
        for glob in globs:
            if not _IMAGE_GLOB.match(glob):
                raise ValueError(
                    f"runtime_image_allowlist: {glob!r} is not an image glob (letters, digits, "
                    "'._:/@-' and the wildcards '*' and '?')"
                )
        return globs

    @field_validator(
        "optimizer_ephemeral_storage_request",
        "optimizer_ephemeral_storage_limit",
        "runtime_ephemeral_storage_request",
        "runtime_ephemeral_storage_limit",
        "runtime_tmp_size_limit",
    )
    @classmethod
    def _quantity(cls, value: str, info) -> str:
        try:
            parse_quantity(value)
        except ValueError as exc:
            message = f"{info.field_name}: {value!r} is not a Kubernetes quantity such as 512Mi or 4Gi"
            raise ValueError(message) from exc
        return value

    @model_validator(mode="after")
    def _room_for_the_model(self) -> OperatorSettings:
        needed = self.fetch_max_bytes + parse_quantity(self.runtime_tmp_size_limit)
        if parse_quantity(self.runtime_ephemeral_storage_limit) < needed:
            raise ValueError(
                f"runtime_ephemeral_storage_limit ({self.runtime_ephemeral_storage_limit}) must hold "
                f"fetch_max_bytes ({self.fetch_max_bytes}) plus runtime_tmp_size_limit "
                f"({self.runtime_tmp_size_limit}), or a model of the allowed size gets the pod evicted"
            )
        return self

    @property
    def allowed_runtime_images(self) -> list[str]:
        """The allowlist, or this install's own runtime images when it is empty."""
        own = [f"{self.runtime_image}:{self.image_tag}", f"{self.runtime_gpu_image}:{self.image_tag}"]
        return list(self.runtime_image_allowlist) or own

    @property
    def artifact_uri_dir(self) -> str:
        return self.artifact_uri if self.artifact_uri.endswith("/") else self.artifact_uri + "/"
