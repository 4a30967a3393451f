"""Content digest of an optimization: the same source and options always give the same digest.

The digest names the optimization Job, so an unchanged spec never runs a second Job, and
anything that changes the optimizer's output (source, pin, format, inputs, options) changes it.
Defaults are filled in before hashing, so `prune: 0` and an omitted `prune` are the same.
"""

from __future__ import annotations

import hashlib
import json

from mserve_operator.spec import ModelServiceSpec

DIGEST_LENGTH = 16


def optimization_inputs(spec: ModelServiceSpec) -> dict:
    """The normalized fields that decide the optimizer's output, and nothing else."""
    model, opt = spec.model, spec.optimization
    return {
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


def optimization_digest(spec: ModelServiceSpec) -> str:
    canonical = json.dumps(optimization_inputs(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:DIGEST_LENGTH]
