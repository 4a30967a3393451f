"""The ModelService API at admission: the real API server refuses bad specs with messages that help."""

from __future__ import annotations

import json
import subprocess

import pytest
from kubernetes.client.exceptions import ApiException
from operator_harness import Kube, modelservice, msvc_path

from tests.support.cluster_access import find_binary

ONNX = {"uri": "s3://models/m.onnx"}
TORCH_INPUTS = [{"name": "x", "shape": [-1, 64]}]

# Spec sections replacing the default's, and the message the API server must give.
INVALID = [
    pytest.param(
        {"model": {"uri": "ftp://host/m.onnx"}},
        "spec.model.uri must start with s3://, http://, https://, pvc:// or file://",
        id="uri-scheme",
    ),
    pytest.param(
        {"model": {"uri": "s3://models"}},
        "an s3:// URI must be s3://<bucket>/<key>",
        id="s3-without-key",
    ),
    pytest.param(
        {"model": {"uri": "pvc://claim"}},
        "a pvc:// URI must be pvc://<claim>/<path>",
        id="pvc-without-path",
    ),
    pytest.param(
        {"model": {**ONNX, "format": "tensorflow"}},
        'spec.model.format: Unsupported value: "tensorflow"',
        id="format-enum",
    ),
    pytest.param(
        {"model": {**ONNX, "sha256": "abc"}},
        "spec.model.sha256 must be empty or 64 hexadecimal characters",
        id="sha256-not-hex",
    ),
    pytest.param(
        {"model": {"uri": "s3://models/m.pt2", "format": "torch-export"}},
        "spec.model.inputs is required when spec.model.format is torchscript or torch-export",
        id="torch-without-inputs",
    ),
    pytest.param(
        {"model": {"uri": "https://example.com/m.pt"}},
        "spec.model.inputs is required for a PyTorch model",
        id="auto-pt-without-inputs",
    ),
    pytest.param(
        {"model": {**ONNX, "inputs": [{"name": "x", "shape": [-1, 0]}]}},
        "every dimension must be a positive size or -1",
        id="shape-zero",
    ),
    pytest.param(
        {"model": {**ONNX, "inputs": [{"name": "x", "shape": [8, -1]}]}},
        "only the first (batch) dimension may be -1",
        id="shape-inner-dynamic",
    ),
    pytest.param(
        {"model": ONNX, "optimization": {"quantize": "int4"}},
        'spec.optimization.quantize: Unsupported value: "int4"',
        id="quantize-enum",
    ),
    pytest.param(
        {"model": ONNX, "optimization": {"prune": 0.99}},
        "spec.optimization.prune in body should be less than or equal to 0.95",
        id="prune-range",
    ),
    pytest.param(
        {"model": ONNX, "optimization": {"tolerance": {"cosine": 1.5}}},
        "spec.optimization.tolerance.cosine in body should be less than or equal to 1",
        id="cosine-range",
    ),
    pytest.param(
        {"model": ONNX, "serving": {"replicas": 2, "autoscaling": {"maxReplicas": 4}}},
        "spec.serving: set either replicas or autoscaling, not both",
        id="replicas-and-autoscaling",
    ),
    pytest.param(
        {"model": ONNX, "serving": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}},
        "minReplicas must be less than or equal to maxReplicas",
        id="min-above-max",
    ),
    pytest.param(
        {"model": ONNX, "serving": {"replicas": 500}},
        "spec.serving.replicas in body should be less than or equal to 100",
        id="replicas-range",
    ),
    pytest.param(
        {"model": ONNX, "serving": {"autoscaling": {"maxReplicas": 2, "targetCPUUtilizationPercentage": 0}}},
        "targetCPUUtilizationPercentage in body should be greater than or equal to 1",
        id="cpu-target-range",
    ),
    pytest.param(
        {"model": ONNX, "serving": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "500m"}}}},
        "spec.serving.resources: each request must be less than or equal to its limit",
        id="request-above-limit",
    ),
    pytest.param(
        {"model": ONNX, "serving": {"resources": {"limits": {"nvidia.com/gpu": 1}}}},
        "only cpu, memory and ephemeral-storage are allowed; ask for GPUs with spec.serving.gpu",
        id="gpu-in-resources",
    ),
    pytest.param(
        {"model": ONNX, "serving": {"resources": {"limits": {"memory": "1Gb"}}}},
        "spec.serving.resources.limits.memory",
        id="bad-quantity",
    ),
    pytest.param(
        {"model": ONNX, "serving": {"gpu": {"count": -1}}},
        "spec.serving.gpu.count in body should be greater than or equal to 0",
        id="gpu-count-negative",
    ),
    pytest.param(
        {"model": ONNX, "serving": {"gpu": {"count": 1, "resourceName": "gpu"}}},
        "spec.serving.gpu.resourceName must be an extended resource name",
        id="gpu-resource-name",
    ),
    pytest.param(
        {
            "model": ONNX,
            "serving": {"gpu": {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}},
        },
        "value must be empty when operator is Exists",
        id="toleration-exists-with-value",
    ),
    pytest.param(
        {"model": ONNX, "serving": {"batching": {"maxBatchSize": 0}}},
        "spec.serving.batching.maxBatchSize in body should be greater than or equal to 1",
        id="batch-size-range",
    ),
    pytest.param(
        {"model": ONNX, "artifactStore": {"uri": "http://store/x"}},
        "spec.artifactStore.uri must be s3://<bucket>[/prefix] or pvc://<claim>[/path]",
        id="artifact-store-scheme",
    ),
    pytest.param(
        {"model": {**ONNX, "credentialsSecret": "Not_A_Name"}},
        "spec.model.credentialsSecret must be a Secret name",
        id="secret-name",
    ),
    *(
        pytest.param(
            {"model": ONNX, "rollout": {"strategy": "Canary", **rollout}}, message, id=f"rollout-{name}"
        )
        for name, rollout, message in (
            (
                "weight-0",
                {"steps": [{"weight": 0}]},
                "spec.rollout.steps[0].weight in body should be greater",
            ),
            (
                "weight-150",
                {"steps": [{"weight": 150}]},
                "spec.rollout.steps[0].weight in body should be less",
            ),
            (
                "pause-negative",
                {"steps": [{"weight": 10, "pause": "-1s"}]},
                "spec.rollout.steps[].pause must",
            ),
            (
                "pause-forever",
                {"steps": [{"weight": 10, "pause": "forever"}]},
                "spec.rollout.steps[].pause must",
            ),
            ("pause-too-long", {"steps": [{"weight": 10, "pause": "25h"}]}, "must be at most 24h"),
            ("fifty-steps", {"steps": [{"weight": 10}] * 50}, "spec.rollout.steps: Too many: 50"),
            ("no-steps", {"steps": []}, "spec.rollout.steps in body should have at least 1 items"),
            ("mirror", {"mirrorPercent": 101}, "spec.rollout.mirrorPercent in body should be less"),
            ("agreement", {"gates": {"minAgreement": 1.5}}, "spec.rollout.gates.minAgreement in body should"),
        )
    ),
    pytest.param(
        {"model": ONNX, "serving": {"pool": "shared"}, "rollout": {"strategy": "Canary"}},
        "spec.rollout.strategy: Canary cannot be used with spec.serving.pool",
        id="canary-in-a-pool",
    ),
    pytest.param(
        {"model": ONNX, "serving": {"tls": {"secretName": "cert"}}, "rollout": {"strategy": "Canary"}},
        "spec.rollout.strategy: Canary cannot be used with spec.serving.tls",
        id="canary-with-tls",
    ),
]


def _create(kube: Kube, namespace: str, manifest: dict) -> dict:
    return kube.create(msvc_path(namespace), manifest)


@pytest.mark.parametrize(("spec", "message"), INVALID)
def test_invalid_spec_is_refused_with_a_message_naming_the_field(
    installed: Kube, namespace: str, spec, message
):
    with pytest.raises(ApiException) as refused:
        _create(installed, namespace, modelservice("bad", **spec))
    assert refused.value.status == 422
    refusal = json.loads(refused.value.body)["message"]
    assert message in refusal, refusal


def test_name_that_cannot_name_a_service_is_refused(installed: Kube, namespace: str):
    with pytest.raises(ApiException) as refused:
        _create(installed, namespace, modelservice("9lives", model=ONNX))
    assert "metadata.name must be a DNS label" in json.loads(refused.value.body)["message"]


def test_valid_spec_is_stored_with_documented_defaults(installed: Kube, namespace: str):
    created = _create(
        installed,
        namespace,
        modelservice(
            "ok", model={"uri": "s3://models/m.pt2", "inputs": TORCH_INPUTS}, optimization={}, serving={}
        ),
    )
    spec = created["spec"]
    assert spec["model"]["format"] == "auto"
    assert spec["model"]["inputs"][0]["datatype"] == "FP32"
    assert spec["optimization"] == {"quantize": "auto", "prune": 0}
    assert spec["serving"]["threads"] == 0


def test_every_printer_column_and_explain(installed: Kube):
    crd = installed.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/modelservices.mserve.io")
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["names"]["shortNames"] == ["msvc"]
    assert [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")] == [
        "Phase", "Ready", "URL", "Quantize", "Revision", "Canary", "Age",
    ]  # fmt: skip
    kubectl = find_binary("kubectl")
    if not kubectl:
        pytest.skip("no kubectl for `kubectl explain`")
    explained = subprocess.run(
        [kubectl, "--kubeconfig", installed.kubeconfig, "explain", "modelservice.spec.serving.autoscaling"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert "minReplicas" in explained
    assert "Fewest runtime pods" in explained
