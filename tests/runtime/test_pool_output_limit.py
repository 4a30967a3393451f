"""A pool refuses, before running it, a request whose outputs would be larger than one request
may carry in (`MSERVE_MAX_ELEMENTS`): an embedding turns a small `[1, n]` of ids into
`[1, n, width]` floats. Real pool server, real onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from mserve_runtime.output_bound import OutputBound

from tests.support.models import build_embedding_model, build_tiny_mlp
from tests.support.pool_serving import serving_pool

WIDTH = 1024
MAX_ELEMENTS = 1_000_000


def _ids(tokens: int) -> dict:
    return {"inputs": [{"name": "ids", "shape": [1, tokens], "datatype": "INT64", "data": [1] * tokens}]}


def test_outputs_follow_the_inputs_named_dimensions(tmp_path: Path) -> None:
    session = ort.InferenceSession(str(build_embedding_model(tmp_path / "e.onnx", width=WIDTH)))
    bound = OutputBound.of(session)
    assert bound.elements({"ids": [3, 7]}) == {"vectors": 3 * 7 * WIDTH}
    actual = session.run(None, {"ids": np.ones((3, 7), np.int64)})[0]
    assert actual.size == 3 * 7 * WIDTH, "the estimate is what onnxruntime returns"
    assert bound.elements({"wrong": [3, 7]}) == {}, "an output no input sizes is left out"


def test_a_request_whose_outputs_exceed_the_limit_is_refused_and_others_serve(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    build_embedding_model(repo / "embed.onnx", width=WIDTH)
    build_tiny_mlp(repo / "other.onnx")
    args = ("--pool-preload", "embed,other")
    env = {"MSERVE_MAX_ELEMENTS": str(MAX_ELEMENTS)}
    with serving_pool(repo, tmp_path / "mserve.log", *args, env=env) as server, server.client() as client:
        fits = client.post("/v2/models/embed/infer", json=_ids(MAX_ELEMENTS // WIDTH))
        assert fits.status_code == 200, fits.text
        # 2000 ids are 0.2% of the input limit; their vectors are twice the limit.
        refused = client.post("/v2/models/embed/infer", json=_ids(2000))
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert "model 'embed'" in error
        assert "'vectors'" in error
        assert str(2000 * WIDTH) in error
        assert "MSERVE_MAX_ELEMENTS" in error
        body = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}
        assert client.post("/v2/models/other/infer", json=body).status_code == 200
        assert server.alive()
