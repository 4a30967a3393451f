"""Builders: a spec in, the exact manifest out; every decision visible without a cluster."""

from __future__ import annotations

import pytest
from mserve_operator import names
from mserve_operator.builders import build_deployment, build_hpa, build_job, build_pdb, build_service
from mserve_operator.builders.job import optimizer_args
from mserve_operator.settings import OperatorSettings
from mserve_operator.spec import ModelServiceSpec, parse_spec
from mserve_operator.spec_digest import spec_digest
from operator_fixtures import ARTIFACT, OWNER, all_containers, cpu_spec, gpu_spec, settings

RESTRICTED = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _pod(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def _owned(manifest: dict) -> None:
    (ref,) = manifest["metadata"]["ownerReferences"]
    assert ref == {
        "apiVersion": "mserve.io/v1alpha1",
        "kind": "ModelService",
        "name": OWNER.name,
        "uid": OWNER.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert manifest["metadata"]["namespace"] == OWNER.namespace
    assert manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mserve-operator"
    assert manifest["metadata"]["labels"][names.MODELSERVICE_LABEL] == OWNER.name


def gpu_spec_with(
    resources: dict | None = None, threads: int = 0, batch: int = 32, quantize: str = "fp16"
) -> ModelServiceSpec:
    body = gpu_spec().model_dump(by_alias=True, exclude_none=True)
    body["optimization"]["quantize"] = quantize
    body["serving"].update(threads=threads, batching={"maxBatchSize": batch})
    if resources:
        body["serving"]["resources"] = resources
    return parse_spec(body)


def _deployment(spec=None, **overrides) -> dict:
    return build_deployment(
        spec or cpu_spec(), OWNER, ARTIFACT, settings(**overrides), store_secret="store-creds"
    )


# --- Job ---------------------------------------------------------------------------------


def test_job_is_named_by_digest_and_runs_the_optimizer_with_the_contract_args():
    spec = cpu_spec()
    digest = spec_digest(spec)
    job = build_job(spec, OWNER, digest, settings(artifact_uri="s3://store/prefix", image_tag="1.2.3"))
    assert job["metadata"]["name"] == f"digits-opt-{digest[:10]}"
    assert job["metadata"]["labels"][names.SPEC_DIGEST_LABEL] == digest
    (container,) = _pod(job)["containers"]
    assert container["image"] == "mserve-optimizer:1.2.3"
    assert container["command"] == ["mserve"]
    assert container["args"] == [
        "optimize", "s3://models/digits/model.pt2",
        "--output", "s3://store/prefix/models/digits",
        "--format", "torch-export", "--quantize", "dynamic-int8", "--prune", "0",
        "--input-shape", "x=-1,64:float32",
        "--tolerance", "cosine=0.99",
        "--latency-batch", "32",
        "--termination-message", "/dev/termination-log",
    ]  # fmt: skip
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    _owned(job)


def test_job_is_bounded_cleaned_up_and_fails_fast_on_permanent_exit_codes():
    job = build_job(
        cpu_spec(), OWNER, "a" * 16, settings(job_backoff_limit=1, job_active_deadline_seconds=900)
    )
    spec = job["spec"]
    assert spec["backoffLimit"] == 1
    assert spec["activeDeadlineSeconds"] == 900
    assert spec["ttlSecondsAfterFinished"] > 0
    assert _pod(job)["restartPolicy"] == "Never"
    fail_job = spec["podFailurePolicy"]["rules"][0]
    assert fail_job["action"] == "FailJob"
    assert fail_job["onExitCodes"] == {"containerName": "optimize", "operator": "In", "values": [1, 2]}


def test_job_gets_source_and_store_credentials_each_under_its_role_prefix():
    job = build_job(
        cpu_spec(), OWNER, "a" * 16, settings(s3_secret="store-creds", s3_endpoint="http://minio:9000")
    )
    (container,) = _pod(job)["containers"]
    assert container["envFrom"] == [
        {"prefix": "MSERVE_SOURCE_", "secretRef": {"name": "s3-creds"}},
        {"prefix": "MSERVE_STORE_", "secretRef": {"name": "store-creds"}},
    ]
    env = _env(container)
    assert env["MSERVE_SOURCE_AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert env["MSERVE_STORE_AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert not any(name.startswith("AWS_") for name in env)
    assert env["HOME"] == "/tmp"


def test_job_mounts_pvc_source_read_only_and_pvc_store_writable():
    spec = parse_spec(
        {"model": {"uri": "pvc://models/bert/model.onnx"}, "optimization": {"quantize": "dynamic-int8"}}
    )
    job = build_job(spec, OWNER, "a" * 16, settings(artifact_uri="pvc://artifacts/optimized"))
    pod = _pod(job)
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"models", "artifacts"}
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/mnt/pvc/models"]["readOnly"] is True
    assert mounts["/mnt/pvc/artifacts"]["readOnly"] is False
    assert _env(pod["containers"][0])["MSERVE_PVC_ROOT"] == "/mnt/pvc"


def test_optimizer_args_carry_pin_prune_and_every_tolerance():
    spec = parse_spec(
        {
            "model": {"uri": "https://example.com/m.onnx", "sha256": "AB" * 32},
            "optimization": {
                "quantize": "static-int8",
                "prune": 0.5,
                "tolerance": {"cosine": 0.98, "top1Agreement": 0.9, "maxAbsError": 0.1, "meanRelError": 0.05},
            },
        }
    )
    args = optimizer_args(spec, "s3://store/x")
    assert args[args.index("--prune") + 1] == "0.5"
    assert args[args.index("--sha256") + 1] == "ab" * 32
    tolerances = [args[i + 1] for i, a in enumerate(args) if a == "--tolerance"]
    assert tolerances == ["cosine=0.98", "max_abs=0.1", "mean_rel=0.05", "top1=0.9"]


def test_long_names_still_give_valid_job_names():
    name = names.job_name("m" * 63, "0123456789abcdef")
    assert len(name) <= 63
    assert name.endswith("-opt-0123456789")


# --- Deployment --------------------------------------------------------------------------


def test_every_container_including_init_runs_restricted_with_writable_tmp():
    for deployment in (_deployment(), _deployment(gpu_spec())):
        pod = _pod(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in pod["volumes"]
        for container in all_containers(pod):
            assert container["securityContext"] == RESTRICTED, container["name"]
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], container["name"]
    job_pod = _pod(build_job(cpu_spec(), OWNER, "a" * 16, settings()))
    for container in all_containers(job_pod):
        assert container["securityContext"] == RESTRICTED


def test_init_container_fetches_the_artifact_with_its_digest_into_the_shared_volume():
    pod = _pod(_deployment())
    (fetch,) = pod["initContainers"]
    assert fetch["image"] == "mserve-runtime:latest"
    assert fetch["args"] == [
        "fetch", ARTIFACT.uri, "/models/model.onnx", "--role", "store",
        "--max-bytes", str(4 * 1024**3), "--sha256", ARTIFACT.sha256,
    ]  # fmt: skip
    assert fetch["envFrom"] == [{"prefix": "MSERVE_STORE_", "secretRef": {"name": "store-creds"}}]
    assert {"name": "model", "mountPath": "/models"} in fetch["volumeMounts"]
    server = pod["containers"][0]
    assert {"name": "model", "mountPath": "/models", "readOnly": True} in server["volumeMounts"]


def test_cpu_server_command_env_probes_and_resources():
    deployment = _deployment(cpu_spec(replicas=2, batching={"maxBatchSize": 16, "maxDelayMs": 5}))
    server = _pod(deployment)["containers"][0]
    assert server["command"] == ["mserve"]
    assert server["args"] == ["serve", "/models/model.onnx", "--name", "digits"]
    env = _env(server)
    assert env["MSERVE_MODEL_NAME"] == "digits"
    assert env["MSERVE_HTTP_PORT"] == "8080"
    assert env["MSERVE_GRPC_PORT"] == "8081"
    assert env["MSERVE_MAX_BATCH_SIZE"] == "16"
    assert env["MSERVE_MAX_BATCH_DELAY_MS"] == "5"
    assert env["MSERVE_THREADS"] == "0"
    assert env["MSERVE_DEVICE"] == "cpu"
    assert server["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert server["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert {p["name"]: p["containerPort"] for p in server["ports"]} == {
        "http": 8080,
        "grpc": 8081,
        "admin": 8082,
    }
    assert server["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"},
        "limits": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "6Gi"},
    }
    assert "nvidia.com/gpu" not in str(deployment)
    assert deployment["spec"]["replicas"] == 2


def test_spec_resources_win_and_untouched_resources_get_defaults():
    spec = cpu_spec(replicas=1, resources={"requests": {"cpu": "4"}, "limits": {"memory": "8Gi"}})
    server = _pod(_deployment(spec))["containers"][0]
    assert server["resources"] == {
        "requests": {"cpu": "4", "ephemeral-storage": "1Gi"},
        "limits": {"memory": "8Gi", "ephemeral-storage": "6Gi"},
    }


def test_gpu_pod_asks_for_the_gpu_runs_the_gpu_image_on_cuda_and_tolerates_the_taint():
    deployment = _deployment(gpu_spec(), image_tag="2.0")
    pod = _pod(deployment)
    server = pod["containers"][0]
    assert server["image"] == "mserve-runtime-gpu:2.0"
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in pod["initContainers"][0]["resources"]["limits"]
    assert _env(server)["MSERVE_DEVICE"] == "cuda"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]


POOL_TOLERATION = {"key": "pool", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}


def test_gpu_defaults_of_the_install_apply_and_the_modelservice_wins_on_conflicts():
    deployment = _deployment(
        gpu_spec(),
        gpu_resource_name="amd.com/gpu",
        gpu_node_selector={"pool": "gpu", "nvidia.com/gpu.product": "A100"},
        gpu_tolerations=[POOL_TOLERATION],
    )
    pod = _pod(deployment)
    assert pod["containers"][0]["resources"]["limits"]["amd.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"pool": "gpu", "nvidia.com/gpu.product": "H100"}
    assert pod["tolerations"][0] == POOL_TOLERATION
    assert {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_gpu_defaults_of_the_install_do_not_touch_cpu_pods():
    pod = _pod(_deployment(gpu_node_selector={"pool": "gpu"}, gpu_tolerations=[{"key": "pool"}]))
    assert "nodeSelector" not in pod
    assert "tolerations" not in pod


def test_gpu_settings_come_from_the_charts_environment_variables(monkeypatch):
    monkeypatch.setenv("MSERVE_OPERATOR_GPU_RESOURCE_NAME", "amd.com/gpu")
    monkeypatch.setenv("MSERVE_OPERATOR_GPU_NODE_SELECTOR", '{"pool": "gpu"}')
    monkeypatch.setenv("MSERVE_OPERATOR_GPU_TOLERATIONS", '[{"key": "pool", "operator": "Exists"}]')
    loaded = OperatorSettings()
    assert loaded.gpu_resource_name == "amd.com/gpu"
    assert loaded.gpu_node_selector == {"pool": "gpu"}
    assert loaded.gpu_tolerations == [{"key": "pool", "operator": "Exists"}]


def test_rolling_update_never_drops_below_desired_and_drains_before_exit():
    deployment = _deployment(prestop_sleep_seconds=5, termination_grace_period_seconds=40)
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod = _pod(deployment)
    assert pod["terminationGracePeriodSeconds"] == 40
    assert pod["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}


@pytest.mark.parametrize(("grace", "prestop"), [(30, 5), (40, 5), (8, 5), (5, 5), (3, 10), (1, 0), (600, 0)])
def test_the_grace_period_covers_prestop_plus_the_whole_drain(grace: int, prestop: int):
    pod = _pod(_deployment(termination_grace_period_seconds=grace, prestop_sleep_seconds=prestop))
    (server,) = pod["containers"]
    env = {e["name"]: e["value"] for e in server["env"]}
    drain = int(env["MSERVE_DRAIN_TIMEOUT_S"])
    assert drain >= 1
    assert server["lifecycle"]["preStop"]["sleep"]["seconds"] == prestop
    # The kubelet's countdown starts with preStop; SIGKILL must come after the drain and the exit.
    assert pod["terminationGracePeriodSeconds"] >= prestop + drain + 2
    if grace >= prestop + 3:
        # Enough configured: the grace period is the configured one, and the drain uses all of it.
        assert pod["terminationGracePeriodSeconds"] == grace
        assert drain == grace - prestop - 2


def test_deployment_labels_selector_owner_and_artifact_annotation():
    deployment = _deployment()
    _owned(deployment)
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {names.MODELSERVICE_LABEL: "digits", "app.kubernetes.io/component": "runtime"}
    template = deployment["spec"]["template"]["metadata"]
    assert selector.items() <= template["labels"].items()
    assert template["annotations"][names.ARTIFACT_ANNOTATION] == ARTIFACT.sha256


def test_autoscaled_deployment_leaves_replicas_to_the_hpa():
    deployment = _deployment(cpu_spec(autoscaling={"minReplicas": 2, "maxReplicas": 5}))
    assert "replicas" not in deployment["spec"]


def test_source_served_without_job_uses_the_source_credentials():
    spec = parse_spec(
        {
            "model": {"uri": "s3://models/m.onnx", "credentialsSecret": "src"},
            "optimization": {"quantize": "none"},
        }
    )
    assert spec.skips_optimization
    source = ARTIFACT.__class__(uri=spec.model.uri)
    pod = _pod(build_deployment(spec, OWNER, source, settings(), store_secret="store"))
    fetch = pod["initContainers"][0]
    assert fetch["envFrom"] == [{"prefix": "MSERVE_SOURCE_", "secretRef": {"name": "src"}}]
    assert fetch["args"][3:5] == ["--role", "source"]
    assert "--sha256" not in fetch["args"]


# --- Service, HPA, PDB -------------------------------------------------------------------


def test_service_exposes_http_and_grpc_on_the_runtime_pods():
    service = build_service(OWNER)
    _owned(service)
    assert service["spec"]["selector"] == {
        names.MODELSERVICE_LABEL: "digits",
        "app.kubernetes.io/component": "runtime",
    }
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports == {"http": (8080, "http"), "grpc": (8081, "grpc")}


def test_hpa_scales_the_deployment_on_cpu_between_min_and_max():
    hpa = build_hpa(
        cpu_spec(autoscaling={"minReplicas": 2, "maxReplicas": 7, "targetCPUUtilizationPercentage": 60}),
        OWNER,
    )
    _owned(hpa)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "digits"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 7)
    assert hpa["spec"]["metrics"][0]["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 60},
    }
    assert build_hpa(cpu_spec(replicas=3), OWNER) is None


@pytest.mark.parametrize(
    ("serving", "expected"),
    [
        ({"replicas": 1}, False),
        ({"replicas": 3}, True),
        ({"autoscaling": {"minReplicas": 2, "maxReplicas": 4}}, True),
    ],
)
def test_pdb_only_with_more_than_one_replica(serving, expected):
    pdb = build_pdb(cpu_spec(**serving), OWNER)
    assert (pdb is not None) is expected
    if pdb:
        _owned(pdb)
        assert pdb["spec"]["maxUnavailable"] == 1


def test_the_job_runs_where_and_as_the_serving_pods_run():
    spec = gpu_spec_with(resources={"limits": {"cpu": "500m", "memory": "1Gi"}}, threads=1, batch=16)
    served = _pod(build_deployment(spec, OWNER, ARTIFACT, settings()))
    job_pod = _pod(build_job(spec, OWNER, spec_digest(spec), settings()))
    assert job_pod["nodeSelector"] == served["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert job_pod["tolerations"] == served["tolerations"]
    (container,) = job_pod["containers"]
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert limits["nvidia.com/gpu"] == "1"
    assert limits["cpu"] == "500m"  # the server's CPU limit: onnxruntime gets the server's threads
    assert requests["cpu"] == "500m"  # never above the limit
    assert limits["memory"] == settings().optimizer_memory_limit  # the optimizer's own memory
    args = container["args"]
    assert args[args.index("--latency-batch") + 1] == "16"
    assert args[args.index("--device") + 1] == "cuda"
    assert args[args.index("--threads") + 1] == "1"


def test_auto_digest_follows_the_serving_batch_and_device_explicit_modes_do_not():
    assert spec_digest(gpu_spec_with(batch=16, quantize="auto")) != spec_digest(
        gpu_spec_with(batch=32, quantize="auto")
    )
    assert spec_digest(gpu_spec_with(batch=16)) == spec_digest(gpu_spec_with(batch=32))


def test_install_wide_node_selectors_and_scheduler_reach_every_pod():
    options = {"runtime_node_selector": {"pool": "serving"}, "optimizer_node_selector": {"pool": "batch"}}
    custom = settings(scheduler_name="gpu-packer", **options)
    gpu_pod = _pod(build_deployment(gpu_spec(), OWNER, ARTIFACT, custom))
    assert gpu_pod["nodeSelector"] == {"pool": "serving", "nvidia.com/gpu.product": "H100"}
    assert gpu_pod["schedulerName"] == "gpu-packer"
    job_pod = _pod(build_job(cpu_spec(), OWNER, "a" * 16, custom))
    # The Job measures latencies for the serving pods: their node selector wins over the batch pool's.
    assert job_pod["nodeSelector"] == {"pool": "serving"}
    assert job_pod["schedulerName"] == "gpu-packer"
    assert "schedulerName" not in _pod(_deployment())
