"""The content address of an optimized model."""

from __future__ import annotations

import hashlib
import json

from mserve_optimizer import __version__
from mserve_optimizer.options import OptimizeOptions


def artifact_digest(
    source_sha256: str, options: OptimizeOptions, optimizer_version: str = __version__
) -> str:
    """sha256 over the source bytes' digest, the normalized options and the optimizer version.

    Same source, same request, same optimizer: same digest, so a re-run finds the artifact
    instead of redoing the work; anything else that changes gives a new name.
    """
    payload = {
        "source_sha256": source_sha256.lower(),
        "options": options.normalized(),
        "optimizer_version": optimizer_version,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
