"""The model file a ModelService serves, and how it is written to and read from `status.artifact`.

Two digests, never one for the other: `spec_digest` (16 hex) names the optimization Job that
made the artifact; `artifact_digest` (64 hex) is the optimizer's, the folder the artifact lives
in. An ONNX source served as it is has no artifact digest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mserve_contract.optimization_report import SessionOptions

_ARTIFACT_FOLDER = re.compile(r"/([0-9a-f]{64})/[^/]+$")


@dataclass(frozen=True)
class Artifact:
    """The optimizer's output, or the source itself when no Job ran."""

    uri: str
    sha256: str = ""
    spec_digest: str = ""
    artifact_digest: str = ""
    # The onnxruntime settings the optimizer measured fastest for this file, if it ran.
    session_options: SessionOptions | None = None

    @property
    def label(self) -> str:
        """How condition messages name it: a short artifact digest, else the URI."""
        return self.artifact_digest[:12] or self.uri

    def to_status(self) -> dict:
        status = {"specDigest": self.spec_digest, "uri": self.uri, "sha256": self.sha256}
        if self.artifact_digest:
            status["artifactDigest"] = self.artifact_digest
        if self.session_options is not None:
            status["sessionOptions"] = self.session_options.model_dump(by_alias=True)
        return status

    @classmethod
    def from_status(cls, served: dict) -> Artifact | None:
        """What `status.artifact` holds; also a status written before the two digests had names."""
        if not served.get("uri"):
            return None
        uri = served["uri"]
        artifact_digest = served.get("artifactDigest", "")
        if "digest" in served and not artifact_digest:
            # The old `digest` was the spec digest; the artifact's own is its folder's name.
            folder = _ARTIFACT_FOLDER.search(uri)
            artifact_digest = folder.group(1) if folder else ""
        options = served.get("sessionOptions")
        return cls(
            uri=uri,
            sha256=served.get("sha256", ""),
            spec_digest=served.get("specDigest") or served.get("digest", ""),
            artifact_digest=artifact_digest,
            session_options=SessionOptions.model_validate(options) if options else None,
        )
