"""Where a ModelService's optimized artifacts live: the install's store unless the spec names one."""

from __future__ import annotations

from dataclasses import dataclass

from mserve_operator.settings import OperatorSettings
from mserve_operator.spec import ModelServiceSpec


@dataclass(frozen=True)
class ArtifactStore:
    uri: str
    endpoint: str
    secret: str

    def output_for(self, namespace: str, name: str) -> str:
        """One prefix per ModelService; the optimizer adds `<digest>/model.onnx` below it."""
        return f"{self.uri.rstrip('/')}/{namespace}/{name}"


def artifact_store(spec: ModelServiceSpec, settings: OperatorSettings) -> ArtifactStore:
    override = spec.artifact_store
    return ArtifactStore(
        uri=override.uri or settings.artifact_uri_dir,
        endpoint=override.endpoint or settings.s3_endpoint,
        secret=override.credentials_secret or settings.s3_secret,
    )
