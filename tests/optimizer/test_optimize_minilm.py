"""all-MiniLM-L6-v2 (offline package) through dynamic INT8: embeddings of real sentences stay put."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from optimizer_harness import load_example, optimize_in_process

SEQ_LEN = 64
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    example = load_example("minilm_export_example", "examples/minilm/export.py")
    return example.export(tmp_path_factory.mktemp("minilm"), SEQ_LEN)


def test_dynamic_int8_keeps_sentence_embeddings(minilm: dict[str, Path], tmp_path: Path) -> None:
    example = load_example("minilm_export_example", "examples/minilm/export.py")
    shapes = [f"input_ids=-1,{SEQ_LEN}:int64", f"attention_mask=-1,{SEQ_LEN}:int64"]
    run = optimize_in_process(
        minilm["onnx"],
        "--output",
        tmp_path,
        "--quantize",
        "dynamic-int8",
        "--samples",
        minilm["samples"],
        "--input-shape",
        shapes[0],
        "--input-shape",
        shapes[1],
        "--latency-batch",
        "8",
    )
    assert run.exit_code == 0, run.stdout + run.stderr
    report = run.report()
    (validation,) = report["validation"]
    assert validation["cosine"] >= 0.99
    assert report["chosen"].startswith("dynamic-int8 per-channel")
    # INT8 weights (0.25 of fp32; 0.33 if the search kept outlier layers fp32).
    assert report["artifact"]["size_bytes"] / report["source"]["size_bytes"] < 0.4

    # Independently: the fp32 torch model's embeddings vs the artifact's, sentence by sentence.
    import torch

    tokenizer, model = example.load_minilm()
    feeds = example.tokenize(tokenizer, example.SENTENCES, SEQ_LEN)
    with torch.no_grad():
        expected = model(*(torch.from_numpy(feeds[name]) for name in ("input_ids", "attention_mask"))).numpy()
    session = ort.InferenceSession(str(run.artifact_dir() / "model.onnx"), providers=["CPUExecutionProvider"])
    actual = np.concatenate(
        [
            session.run(None, {name: feeds[name][i : i + 8] for name in feeds})[0]
            for i in range(0, len(expected), 8)
        ]
    )
    cosines = (expected * actual).sum(1) / (np.linalg.norm(expected, axis=1) * np.linalg.norm(actual, axis=1))
    assert len(cosines) == len(example.SENTENCES) >= 50
    assert cosines.mean() >= 0.99, cosines
