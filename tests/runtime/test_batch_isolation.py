"""Batch isolation: one client's bad values fail only that client, never its batch-mates.

The embedding model's Gather fails on an id outside its table, and onnxruntime names the
first bad id it meets: in a merged run every member would get that one message.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as triton

from tests.support.models import build_embedding_model
from tests.support.ports import free_port
from tests.support.serving import serving


def _ids_body(ids: list[int]) -> dict:
    return {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [1, len(ids)], "data": ids}]}


def test_a_bad_index_fails_only_its_own_request_rest_and_grpc(tmp_path: Path) -> None:
    model = build_embedding_model(tmp_path / "embedding.onnx")
    grpc_port = free_port()
    # A long delay and a batch that fills at 5 members: all five run as one merged batch.
    args = ("--max-batch-size", "5", "--max-batch-delay-ms", "5000", "--grpc-port", str(grpc_port))
    good = {0: [1, 2, 3], 2: [4, 5, 6], 4: [7, 8, 9]}
    bad = {1: [0, 1000, 1], 3: [2, 3, -2000]}
    rest: dict[int, httpx.Response] = {}
    grpc_error: list[Exception] = []

    with serving(model, "embedding", tmp_path / "mserve.log", *args) as server:

        def post(index: int, ids: list[int]) -> None:
            url = f"{server.url}/v2/models/embedding/infer"
            rest[index] = httpx.post(url, json=_ids_body(ids), timeout=30)

        def grpc_call(ids: list[int]) -> None:
            client = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
            tensor = triton.InferInput("ids", [1, len(ids)], "INT64")
            tensor.set_data_from_numpy(np.array([ids], dtype=np.int64))
            try:
                client.infer("embedding", [tensor], client_timeout=30)
            except triton.InferenceServerException as exc:
                grpc_error.append(exc)
            finally:
                client.close()

        threads = [threading.Thread(target=post, args=(i, ids)) for i, ids in {**good, 1: bad[1]}.items()]
        threads.append(threading.Thread(target=grpc_call, args=(bad[3],)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        metrics = server.metrics()

    for index, ids in good.items():
        answer = rest[index]
        assert answer.status_code == 200, answer.text
        vectors = np.array(answer.json()["outputs"][0]["data"]).reshape(1, len(ids), -1)
        np.testing.assert_array_equal(vectors[0, :, 0], ids)
    mine = rest[1]
    assert mine.status_code == 400, mine.text
    assert "idx=1000" in mine.json()["error"]
    assert "2000" not in mine.json()["error"]
    (theirs,) = grpc_error
    assert theirs.status() == "StatusCode.INVALID_ARGUMENT"
    assert "idx=-2000" in theirs.message()
    assert "idx=1000" not in theirs.message()
    # One merged run of all five rows happened (and failed) before the members ran alone.
    bucket = r'^mserve_batch_size_bucket\{le="([^"]+)",model="embedding"\} (\S+)$'
    buckets = dict(re.findall(bucket, metrics, re.M))
    assert float(buckets["8.0"]) - float(buckets["4.0"]) == 1, metrics
