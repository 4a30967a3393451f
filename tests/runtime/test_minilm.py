"""The realistic case: all-MiniLM-L6-v2 exported to ONNX, served, queried with its own tokenizer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient

from tests.support.models import export_minilm, minilm_inputs
from tests.support.serving import Server, serving

pytestmark = pytest.mark.slow

SENTENCES = [
    "A model server answers inference requests.",
    "Kubernetes rolls out the new version without dropping requests.",
    "The cat sat on the mat.",
]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    return export_minilm(tmp_path_factory.mktemp("minilm") / "minilm.onnx")


@pytest.fixture(scope="module")
def minilm_server(minilm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("minilm-server") / "mserve.log"
    with serving(minilm, "minilm", log, "--max-batch-size", "8", "--max-batch-delay-ms", "5") as server:
        yield server


def _embed(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_minilm_embeddings_match_onnxruntime(minilm: Path, minilm_server: Server, binary: bool) -> None:
    feed = minilm_inputs(SENTENCES, seq=32)
    client = httpclient.InferenceServerClient(minilm_server.host)
    inputs = []
    for name, array in feed.items():
        tensor = httpclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    outputs = [httpclient.InferRequestedOutput("last_hidden_state", binary_data=binary)]
    hidden = client.infer("minilm", inputs, outputs=outputs).as_numpy("last_hidden_state")
    expected = ort.InferenceSession(str(minilm), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert hidden.shape == (3, 32, 384)
    np.testing.assert_allclose(hidden, expected, rtol=1e-4, atol=1e-4)
    emb = _embed(hidden, feed["attention_mask"])
    similarity = emb @ emb.T
    # The two serving sentences are closer to each other than either is to the cat.
    assert similarity[0, 1] > similarity[0, 2]


def test_minilm_mismatched_sequence_lengths_are_a_400(minilm_server: Server) -> None:
    client = httpclient.InferenceServerClient(minilm_server.host)
    inputs = []
    for name, seq in (("input_ids", 8), ("attention_mask", 9), ("token_type_ids", 8)):
        tensor = httpclient.InferInput(name, [1, seq], "INT64")
        tensor.set_data_from_numpy(np.ones((1, seq), np.int64))
        inputs.append(tensor)
    with pytest.raises(httpclient.InferenceServerException, match="could not run on these inputs"):
        client.infer("minilm", inputs)
    assert minilm_server.alive()
