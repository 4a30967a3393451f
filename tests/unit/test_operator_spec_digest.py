"""The spec digest: same inputs, same Job; any change that matters, a new one."""

from __future__ import annotations

import copy

import pytest
from mserve_operator.spec import parse_spec
from mserve_operator.spec_digest import spec_digest

BASE = {
    "model": {
        "uri": "s3://models/m.pt2",
        "format": "torch-export",
        "inputs": [{"name": "x", "shape": [-1, 4]}],
    },
    "optimization": {"quantize": "dynamic-int8"},
    "serving": {"replicas": 1},
}


def _digest(spec: dict) -> str:
    return spec_digest(parse_spec(spec))


def _changed(path: tuple, value) -> dict:
    spec = copy.deepcopy(BASE)
    target = spec
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    return spec


def test_defaults_written_out_or_left_out_give_the_same_digest():
    explicit = _changed(("optimization",), {"quantize": "dynamic-int8", "prune": 0, "tolerance": {}})
    explicit["model"]["inputs"][0]["datatype"] = "FP32"
    assert _digest(explicit) == _digest(BASE)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("serving", "replicas"), 5),
        (("serving", "autoscaling"), {"minReplicas": 1, "maxReplicas": 3}),
        (("serving", "batching"), {"maxBatchSize": 8}),
        (("model", "credentialsSecret"), "other"),
    ],
)
def test_serving_changes_do_not_rerun_the_optimization(path, value):
    spec = _changed(path, value)
    if path == ("serving", "autoscaling"):
        spec["serving"].pop("replicas")
    assert _digest(spec) == _digest(BASE)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("model", "uri"), "s3://models/other.pt2"),
        (("model", "sha256"), "a" * 64),
        (("model", "inputs"), [{"name": "x", "shape": [-1, 8]}]),
        (("optimization", "quantize"), "static-int8"),
        (("optimization", "prune"), 0.3),
        (("optimization", "tolerance"), {"cosine": 0.999}),
    ],
)
def test_source_and_optimization_changes_give_a_new_digest(path, value):
    assert _digest(_changed(path, value)) != _digest(BASE)


def test_digest_is_short_hex_and_stable():
    digest = _digest(BASE)
    assert len(digest) == 16
    int(digest, 16)
    assert digest == _digest(copy.deepcopy(BASE))
