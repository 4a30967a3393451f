"""Specs and owners shared by the operator's unit tests."""

from __future__ import annotations

from mserve_operator.artifact import Artifact
from mserve_operator.builders.pod import Owner
from mserve_operator.settings import OperatorSettings
from mserve_operator.spec import ModelServiceSpec, parse_spec

OWNER = Owner(name="digits", namespace="models", uid="0f3c1f2e-0000-4000-8000-000000000001")
ARTIFACT_DIGEST = "a1" * 32
ARTIFACT = Artifact(
    uri=f"s3://mserve-artifacts/models/digits/{ARTIFACT_DIGEST}/model.onnx",
    sha256="ab" * 32,
    spec_digest="d" * 16,
    artifact_digest=ARTIFACT_DIGEST,
)


def settings(**overrides) -> OperatorSettings:
    return OperatorSettings(_env_file=None, **overrides)


def cpu_spec(**serving) -> ModelServiceSpec:
    return parse_spec(
        {
            "model": {
                "uri": "s3://models/digits/model.pt2",
                "format": "torch-export",
                "credentialsSecret": "s3-creds",
                "inputs": [{"name": "x", "shape": [-1, 64], "datatype": "FP32"}],
            },
            "optimization": {"quantize": "dynamic-int8", "prune": 0.0, "tolerance": {"cosine": 0.99}},
            "serving": serving or {"replicas": 2},
        }
    )


def gpu_spec() -> ModelServiceSpec:
    return parse_spec(
        {
            "model": {"uri": "s3://models/bert/model.onnx"},
            "optimization": {"quantize": "fp16"},
            "serving": {
                "replicas": 1,
                "gpu": {
                    "count": 1,
                    "nodeSelector": {"nvidia.com/gpu.product": "H100"},
                    "tolerations": [
                        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
                    ],
                },
            },
        }
    )


def all_containers(pod_spec: dict) -> list[dict]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]
