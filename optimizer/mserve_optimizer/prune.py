"""Pruning of weight initializers: unstructured (magnitude) or structured (whole neurons/channels).

Structured pruning removes an output neuron of a MatMul/Gemm (a column of its weight) or an
output channel of a Conv, together with everything that only that neuron fed: its bias, its
BatchNormalization entries, and the matching input rows/channels of the next layer. Only
chains the rewrite can prove safe are touched; the rest of the graph is left as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from mserve_contract.optimization_report import PruningFigures
from onnx import numpy_helper

WEIGHT_OPS = {"MatMul": 1, "Gemm": 1, "Conv": 1}
# Ops that keep a channel a channel: element-wise on their first input, same shape out.
_CHANNEL_PRESERVING = {
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Gelu",
    "Elu",
    "Selu",
    "Softplus",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "Dropout",
    "Clip",
    "MaxPool",
    "AveragePool",
    "Erf",
}


@dataclass
class _Graph:
    model: onnx.ModelProto
    inits: dict[str, onnx.TensorProto] = field(init=False)
    consumers: dict[str, list[onnx.NodeProto]] = field(init=False)
    outputs: set[str] = field(init=False)

    def __post_init__(self) -> None:
        graph = self.model.graph
        self.inits = {init.name: init for init in graph.initializer}
        self.consumers = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {value.name for value in graph.output}

    def array(self, name: str) -> np.ndarray | None:
        init = self.inits.get(name)
        return None if init is None else numpy_helper.to_array(init)

    def replace(self, name: str, array: np.ndarray) -> None:
        self.inits[name].CopyFrom(
            numpy_helper.from_array(array.astype(numpy_helper.to_array(self.inits[name]).dtype), name)
        )

    def uses(self, name: str) -> int:
        return len(self.consumers.get(name, []))


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return attribute.i
    return default


def prunable_weights(model: onnx.ModelProto) -> list[str]:
    """Float weight initializers (2+ dims) that MatMul, Gemm or Conv multiply by."""
    graph = _Graph(model)
    names = []
    for node in model.graph.node:
        index = WEIGHT_OPS.get(node.op_type)
        if index is None or len(node.input) <= index:
            continue
        name = node.input[index]
        init = graph.inits.get(name)
        if (
            init is not None
            and init.data_type == onnx.TensorProto.FLOAT
            and len(init.dims) >= 2
            and name not in names
        ):
            names.append(name)
    return names


def sparsity(model: onnx.ModelProto) -> float:
    graph = _Graph(model)
    total = zeros = 0
    for name in prunable_weights(model):
        array = graph.array(name)
        total += array.size
        zeros += int((array == 0).sum())
    return zeros / total if total else 0.0


def prune_unstructured(model: onnx.ModelProto, fraction: float) -> onnx.ModelProto:
    """Zero the `fraction` smallest-magnitude values of each weight (per tensor, so no layer dies)."""
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    graph = _Graph(pruned)
    for name in prunable_weights(pruned):
        array = graph.array(name).copy()
        count = int(fraction * array.size)
        if count == 0:
            continue
        flat = array.reshape(-1)
        flat[np.argpartition(np.abs(flat), count - 1)[:count]] = 0
        graph.replace(name, array)
    return pruned


@dataclass
class _Chain:
    producer: onnx.NodeProto
    weight: str
    out_axis: int  # the axis of `weight` that indexes output neurons/channels
    channels: int
    slices: list[tuple[str, int]]  # (initializer, axis) cut along the same channels
    consumer_weight: str = ""
    consumer_axis: int = 0
    block: int = 1  # consumer rows per channel (> 1 after a Flatten)
    reshape: tuple[str, int] | None = None  # (shape initializer, index) to rewrite after a Reshape


def _producer(node: onnx.NodeProto, graph: _Graph) -> _Chain | None:
    if node.op_type not in WEIGHT_OPS or len(node.input) < 2:
        return None
    weight = graph.array(node.input[1])
    if weight is None or weight.ndim < 2 or graph.uses(node.input[1]) != 1 or weight.dtype != np.float32:
        return None
    if node.op_type == "MatMul":
        if weight.ndim != 2:
            return None
        return _Chain(node, node.input[1], 1, weight.shape[1], [])
    if node.op_type == "Gemm":
        out_axis = 0 if _attr(node, "transB", 0) else 1
        chain = _Chain(node, node.input[1], out_axis, weight.shape[out_axis], [])
        if len(node.input) > 2 and node.input[2]:
            bias = graph.array(node.input[2])
            if bias is None or bias.shape != (chain.channels,) or graph.uses(node.input[2]) != 1:
                return None
            chain.slices.append((node.input[2], 0))
        return chain
    if _attr(node, "group", 1) != 1:
        return None
    chain = _Chain(node, node.input[1], 0, weight.shape[0], [])
    if len(node.input) > 2 and node.input[2]:
        if graph.array(node.input[2]) is None or graph.uses(node.input[2]) != 1:
            return None
        chain.slices.append((node.input[2], 0))
    return chain


def _per_channel_initializer(graph: _Graph, name: str, channels: int, conv: bool) -> int | None:
    """The axis along which initializer `name` holds one value per channel, if it does."""
    array = graph.array(name)
    if array is None or graph.uses(name) != 1:
        return None
    if array.shape == (channels,):
        return 0
    if conv and array.shape == (channels, 1, 1):
        return 0
    if not conv and array.shape == (1, channels):
        return 1
    return None


def _follow(chain: _Chain, graph: _Graph) -> bool:
    """Walk from the producer to the next weight layer; True if the whole chain can be cut."""
    conv = chain.producer.op_type == "Conv"
    tensor = chain.producer.output[0]
    while True:
        users = graph.consumers.get(tensor, [])
        if len(users) != 1 or tensor in graph.outputs:
            return False
        node = users[0]
        if node.op_type in ("Add", "Mul") and len(node.input) == 2:
            other = node.input[1] if node.input[0] == tensor else node.input[0]
            axis = _per_channel_initializer(graph, other, chain.channels, conv)
            if axis is None:
                return False
            chain.slices.append((other, axis))
        elif node.op_type == "BatchNormalization" and conv:
            for name in node.input[1:5]:
                if _per_channel_initializer(graph, name, chain.channels, True) != 0:
                    return False
                chain.slices.append((name, 0))
        elif node.op_type in _CHANNEL_PRESERVING and node.input[0] == tensor:
            if any(graph.array(name) is None for name in node.input[1:] if name):
                return False
        elif node.op_type in ("Flatten", "Reshape") and conv and chain.block == 1:
            if not _flatten_to_rows(chain, graph, node):
                return False
        elif node.op_type in ("MatMul", "Gemm", "Conv") and node.input[0] == tensor:
            return _consumer(chain, graph, node)
        else:
            return False
        tensor = node.output[0]


def _flatten_to_rows(chain: _Chain, graph: _Graph, node: onnx.NodeProto) -> bool:
    if node.op_type == "Flatten":
        chain.block = -1  # resolved from the consumer's weight
        return _attr(node, "axis", 1) == 1
    shape = graph.array(node.input[1]) if len(node.input) > 1 else None
    if shape is None or shape.shape != (2,) or graph.uses(node.input[1]) != 1:
        return False
    chain.block = -1
    if shape[1] == -1:
        # [0, -1] copies the batch axis and lets -1 absorb the change; [-1, -1] is not valid.
        return bool(shape[0] == 0)
    if shape[0] not in (0, -1):
        return False
    chain.reshape = (node.input[1], 1)
    return True


def _consumer(chain: _Chain, graph: _Graph, node: onnx.NodeProto) -> bool:
    weight = graph.array(node.input[1]) if len(node.input) > 1 else None
    if weight is None or graph.uses(node.input[1]) != 1 or weight.dtype != np.float32:
        return False
    if node.op_type == "Conv":
        if chain.block != 1 or _attr(node, "group", 1) != 1:
            return False
        axis = 1
    elif node.op_type == "Gemm":
        if _attr(node, "transA", 0):
            return False
        axis = 1 if _attr(node, "transB", 0) else 0
    else:
        if weight.ndim != 2:
            return False
        axis = 0
    rows = weight.shape[axis]
    if chain.block == -1:
        if rows % chain.channels:
            return False
        chain.block = rows // chain.channels
    elif rows != chain.channels:
        return False
    chain.consumer_weight, chain.consumer_axis = node.input[1], axis
    return True


def _cut(chain: _Chain, graph: _Graph, fraction: float) -> int:
    weight = graph.array(chain.weight)
    consumer = graph.array(chain.consumer_weight)
    # A neuron matters by what it reads and what it feeds on: score both sides' weight norms.
    incoming = np.linalg.norm(np.moveaxis(weight, chain.out_axis, 0).reshape(chain.channels, -1), axis=1)
    outgoing = np.linalg.norm(
        np.moveaxis(consumer, chain.consumer_axis, 0).reshape(chain.channels, -1), axis=1
    )
    norms = incoming * outgoing
    remove = min(round(fraction * chain.channels), chain.channels - 1)
    if remove <= 0:
        return 0
    keep = np.sort(np.argsort(norms)[remove:])
    graph.replace(chain.weight, np.take(weight, keep, axis=chain.out_axis))
    for name, axis in chain.slices:
        graph.replace(name, np.take(graph.array(name), keep, axis=axis))
    rows = (keep[:, None] * chain.block + np.arange(chain.block)[None, :]).reshape(-1)
    graph.replace(chain.consumer_weight, np.take(consumer, rows, axis=chain.consumer_axis))
    if chain.reshape is not None:
        shape = graph.array(chain.reshape[0]).copy()
        if shape[1] != -1:
            shape[1] = len(rows)
        graph.replace(chain.reshape[0], shape)
    return remove


def prune_structured(model: onnx.ModelProto, fraction: float) -> tuple[onnx.ModelProto, int, int]:
    """Remove `fraction` of the neurons/channels of every safely cuttable layer (smallest L2 norm).

    Returns the model and (channels removed, channels in cuttable layers).
    """
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    graph = _Graph(pruned)
    removed = total = 0
    for node in list(pruned.graph.node):
        chain = _producer(node, graph)
        if chain is None or not _follow(chain, graph):
            continue
        total += chain.channels
        removed += _cut(chain, graph, fraction)
    # Intermediate shapes changed: drop the stale ones and infer them again.
    del pruned.graph.value_info[:]
    pruned = onnx.shape_inference.infer_shapes(pruned)
    return pruned, removed, total


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of all initializers: what pruning can change (the file also holds shapes and names)."""
    return sum(init.ByteSize() for init in model.graph.initializer)


def prune(model: onnx.ModelProto, fraction: float, structure: str) -> tuple[onnx.ModelProto, PruningFigures]:
    before = weight_bytes(model)
    if structure == "structured":
        pruned, removed, total = prune_structured(model, fraction)
    else:
        pruned, removed, total = prune_unstructured(model, fraction), 0, 0
    figures = PruningFigures(
        requested=fraction,
        unstructured_sparsity=round(sparsity(pruned), 6),
        structured_removed=removed,
        structured_total=total,
        size_before_bytes=before,
        size_after_bytes=weight_bytes(pruned),
    )
    return pruned, figures
