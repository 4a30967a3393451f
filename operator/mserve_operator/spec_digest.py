"""The spec digest: the same source and optimization options always give the same 16 hex digits.

It names the optimization Job (`status.*.specDigest`), so an unchanged spec never runs a second
Job, and anything that changes the optimizer's output (source, pin, format, inputs, options)
changes it. Defaults are filled in before hashing, so `prune: 0` and an omitted `prune` are
the same. Not to be confused with the artifact digest: the optimizer's 64 hex digits that name
the artifact's folder (`status.artifact.artifactDigest`), known only once the Job has run.
"""

from __future__ import annotations

import hashlib
import json

from mserve_operator.spec import ModelServiceSpec

SPEC_DIGEST_LENGTH = 16


def optimization_inputs(spec: ModelServiceSpec) -> dict:
    """The normalized fields that decide the optimizer's output, and nothing else."""
    model, opt = spec.model, spec.optimization
    found = {
        "uri": model.uri,
        "sha256": model.sha256.lower(),
        "format": model.format,
        "inputs": [{"name": i.name, "shape": list(i.shape), "datatype": i.datatype} for i in model.inputs],
        "quantize": opt.quantize,
        "prune": round(float(opt.prune), 6),
        "tolerance": {
            k: round(float(v), 9) for k, v in sorted(opt.tolerance.model_dump().items()) if v is not None
        },
    }
    if opt.quantize == "auto":
        # auto's choice depends on the batch it is timed at and on the device it is served on
        # (new keys only for the new mode: explicit modes keep the digests they had).
        found["servingBatch"] = spec.serving.batching.max_batch_size
        found["device"] = "cuda" if spec.serving.uses_gpu else "cpu"
    return found


def spec_digest(spec: ModelServiceSpec) -> str:
    canonical = json.dumps(optimization_inputs(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:SPEC_DIGEST_LENGTH]
