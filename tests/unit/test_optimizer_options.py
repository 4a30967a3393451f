"""Parsing `mserve optimize` flags, and the digest that names an artifact."""

from __future__ import annotations

import pytest
from mserve_optimizer.digest import artifact_digest
from mserve_optimizer.errors import BadInputError
from mserve_optimizer.options import InputSpec, OptimizeOptions, parse_input_shape, parse_tolerance

SHA = "a" * 64


def test_input_shape_with_and_without_dtype() -> None:
    assert parse_input_shape("x=-1,64") == InputSpec("x", (-1, 64), "float32")
    assert parse_input_shape("input_ids=-1,128:int64") == InputSpec("input_ids", (-1, 128), "int64")
    assert parse_input_shape("img=1,3,224,224:float16").dims == (1, 3, 224, 224)
    assert parse_input_shape("ids=-1,-1:int64").dims == (-1, -1)  # a dynamic sequence axis too


@pytest.mark.parametrize("text", ["x", "=1,2", "x=", "x=a,b", "x=-2,3", "x=0,3", "x=-1,4:complex", "x=-2"])
def test_bad_input_shapes(text: str) -> None:
    with pytest.raises(BadInputError, match="--input-shape"):
        parse_input_shape(text)


def test_tolerances() -> None:
    assert parse_tolerance("cosine=0.995") == ("cosine", 0.995)
    assert parse_tolerance("mean-rel=0.1") == ("mean_rel", 0.1)
    for text in ("speed=2", "cosine", "cosine=high", "top1=-1"):
        with pytest.raises(BadInputError, match="--tolerance"):
            parse_tolerance(text)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"quantize": "int4"},
        {"format": "keras"},
        {"graph_level": "max"},
        {"prune": 1.0},
        {"prune": -0.1},
        {"prune_structure": "blocks"},
        {"latency_batch": 0},
        {"inputs": (InputSpec("x", (-1,)), InputSpec("x", (-1,)))},
    ],
)
def test_options_refuse_what_cannot_work(kwargs: dict) -> None:
    with pytest.raises(BadInputError):
        OptimizeOptions(**kwargs)


def test_digest_ignores_flag_order_but_not_content() -> None:
    a, b = parse_input_shape("a=-1,4"), parse_input_shape("b=-1,8:int64")
    first = OptimizeOptions(inputs=(a, b), tolerances=(("cosine", 0.99), ("top1", 0.9)))
    second = OptimizeOptions(inputs=(b, a), tolerances=(("top1", 0.9), ("cosine", 0.99)))
    assert artifact_digest(SHA, first) == artifact_digest(SHA, second)
    assert artifact_digest(SHA, first) == artifact_digest(SHA.upper(), first)
    variants = {
        artifact_digest(SHA, first),
        artifact_digest("b" * 64, first),
        artifact_digest(SHA, OptimizeOptions(inputs=(a, b), quantize="fp16")),
        artifact_digest(SHA, first, optimizer_version="9.9.9"),
        artifact_digest(SHA, OptimizeOptions(inputs=(a, b), tolerances=(("cosine", 0.98),))),
    }
    assert len(variants) == 5
    assert len(artifact_digest(SHA, first)) == 64
