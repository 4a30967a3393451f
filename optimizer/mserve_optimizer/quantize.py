"""INT8 and FP16 variants of a model, all made by onnxruntime's own tools.

Each mode yields a few candidate variants; `search.choose_variant` validates them, times
them and keeps the fastest that passes. What differs between candidates is what the
figures in docs/optimizer.md show matters: per-channel vs per-tensor weights, which
layers stay fp32, and how static activation ranges are calibrated.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from mserve_optimizer import sensitivity
from mserve_optimizer.calibration import (
    OUTLIER_RATIO,
    OUTLIER_RATIO_WIDE,
    SampleReader,
    activation_outlier_ratios,
    weight_nodes,
)
from mserve_optimizer.options import InputSpec

# Numerically sensitive in fp16 (reductions, normalizations, exponentials): kept fp32, as
# onnxruntime's converter allows, on top of its own default block list.
FP16_KEEP_FP32 = (
    "LayerNormalization",
    "SimplifiedLayerNormalization",
    "SkipLayerNormalization",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL2",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Exp",
    "Log",
    "Softmax",
    "LogSoftmax",
    "Erf",
)
DYNAMIC_OPS_NO_CONV = ["MatMul", "Gemm", "Gather", "Attention", "LSTM", "GRU", "EmbedLayerNormalization"]


@dataclass(frozen=True)
class Variant:
    """One candidate for the requested mode: a recipe that writes a model file."""

    name: str
    note: str
    make: Callable[[Path, Path], None]  # (source model, destination)
    mode: str = "none"  # the --quantize mode whose validation thresholds apply


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantizers log advice through the root logger; the report says what matters."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        # The calibrators also print progress to stdout, which is the step log's.
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def quantize_dynamic_int8(
    src: Path,
    dest: Path,
    *,
    per_channel: bool,
    op_types: list[str] | None = None,
    nodes: list[str] | None = None,
) -> None:
    """Weights to INT8 ahead of time; activations quantized per call by onnxruntime."""
    with _quiet_root_logger():
        quantize_dynamic(
            src,
            dest,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            op_types_to_quantize=op_types,
            nodes_to_quantize=nodes,
            # Needed when the graph came out of onnxruntime's optimizer with tensors of unknown type.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def quantize_static_int8(
    src: Path,
    dest: Path,
    samples: dict[str, np.ndarray],
    specs: list[InputSpec],
    *,
    method: CalibrationMethod,
    nodes_to_quantize: list[str] | None = None,
    nodes_to_exclude: list[str] | None = None,
    op_types: list[str] | None = None,
) -> None:
    """QDQ INT8 with activation ranges calibrated on `samples` (U8 activations, S8 per-channel weights)."""
    extra: dict[str, object] = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    if method == CalibrationMethod.Percentile:
        extra["CalibPercentile"] = 99.999
    # U8S8 rather than S8S8: on x86 onnxruntime's VNNI kernels take unsigned activations
    # (docs/optimizer.md: 1.18x vs 0.42x at batch 1 for MiniLM).
    with _quiet_root_logger():
        quantize_static(
            src,
            dest,
            SampleReader(samples, specs),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            nodes_to_quantize=nodes_to_quantize,
            nodes_to_exclude=nodes_to_exclude,
            op_types_to_quantize=op_types,
            extra_options=extra,
        )


def convert_fp16(src: Path, dest: Path) -> None:
    """FP16 weights and compute, float32 inputs/outputs, sensitive ops kept in fp32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    converted = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP16_KEEP_FP32)),
        min_positive_val=1e-7,
        max_finite_val=1e4,
    )
    onnx.save(converted, str(dest))


def _has_op(path: Path, op_type: str) -> bool:
    return any(node.op_type == op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def dynamic_variants(
    model_path: Path, samples: dict[str, np.ndarray], specs: list[InputSpec], workdir: Path
) -> list[Variant]:
    variants = [
        Variant(
            "dynamic-int8 per-channel",
            "INT8 weights, one scale per output channel",
            lambda s, d: quantize_dynamic_int8(s, d, per_channel=True),
        ),
        Variant(
            "dynamic-int8 per-tensor",
            "INT8 weights, one scale per tensor",
            lambda s, d: quantize_dynamic_int8(s, d, per_channel=False),
        ),
    ]
    if _has_op(model_path, "Conv"):
        # ConvInteger has no fast CPU kernel; the convolutions may be better left fp32.
        variants.append(
            Variant(
                "dynamic-int8 per-channel, Conv fp32",
                "MatMul/Gemm/Gather INT8, convolutions fp32",
                lambda s, d: quantize_dynamic_int8(s, d, per_channel=True, op_types=DYNAMIC_OPS_NO_CONV),
            )
        )
    model = onnx.load(str(model_path), load_external_data=False)
    matmuls = weight_nodes(model, ("MatMul", "Gemm"))
    sensitive = outlier_nodes(model_path, matmuls, samples, specs, workdir)
    if sensitive and len(sensitive) < len(matmuls):
        # Dynamic quantization takes each activation's range per call, so a layer whose
        # input has outliers loses most of its resolution; the fallback keeps those fp32.
        keep = [n.name for n in model.graph.node if n.name and n.name not in sensitive]
        variants.append(
            Variant(
                "dynamic-int8 per-channel, outlier layers fp32",
                f"{len(sensitive)} layers with activation outliers kept fp32",
                lambda s, d: quantize_dynamic_int8(s, d, per_channel=True, nodes=keep),
            )
        )
    variants += sensitivity_variants(model_path, samples, specs, workdir, len(matmuls))
    return variants


# How many of the most sensitive layers the candidates keep fp32: the fewest that pass win
# on speed and size, so a few small steps are tried rather than one large cut.
SENSITIVE_KEPT = (1, 2, 4)


def sensitivity_variants(
    model_path: Path, samples: dict[str, np.ndarray], specs: list[InputSpec], workdir: Path, layers: int
) -> list[Variant]:
    errors = sensitivity.layer_errors(model_path, samples, specs, workdir)
    variants = []
    for count in (c for c in SENSITIVE_KEPT if c < layers):
        kept = sensitivity.most_sensitive(errors, count)
        model = onnx.load(str(model_path), load_external_data=False)
        quantized = [n.name for n in model.graph.node if n.name and n.name not in kept]
        worst = ", ".join(f"{name} {errors[name]:.3f}" for name in kept[:4])
        variants.append(
            Variant(
                f"dynamic-int8 per-channel, {count} most sensitive fp32",
                f"simulated INT8 error per layer; kept fp32: {worst}",
                lambda s, d, nodes=quantized: quantize_dynamic_int8(s, d, per_channel=True, nodes=nodes),
            )
        )
    return variants


def outlier_nodes(
    model_path: Path, nodes: list[str], samples: dict[str, np.ndarray], specs: list[InputSpec], workdir: Path
) -> list[str]:
    ratios = activation_outlier_ratios(model_path, nodes, samples, specs, workdir)
    return sorted(name for name, ratio in ratios.items() if ratio > OUTLIER_RATIO)


def static_variants(
    model_path: Path, samples: dict[str, np.ndarray], specs: list[InputSpec], workdir: Path
) -> tuple[list[Variant], list[str]]:
    """Static QDQ candidates, and the nodes found sensitive to activation outliers."""
    weighted = weight_nodes(onnx.load(str(model_path), load_external_data=False))
    ratios = activation_outlier_ratios(model_path, weighted, samples, specs, workdir)
    variants = [
        Variant(
            "static-int8 all ops, MinMax",
            "every quantizable op, ranges from min/max",
            lambda s, d: quantize_static_int8(s, d, samples, specs, method=CalibrationMethod.MinMax),
        ),
        Variant(
            "static-int8 all ops, Percentile 99.999",
            "every quantizable op, outliers clipped",
            lambda s, d: quantize_static_int8(s, d, samples, specs, method=CalibrationMethod.Percentile),
        ),
    ]
    # Two cut-offs: the strict one keeps the fewest layers fp32 (faster, smaller); the wide
    # one is the fallback when validation (or a stricter --tolerance) refuses the first.
    seen: set[tuple[str, ...]] = set()
    for label, cutoff in (("outlier layers", OUTLIER_RATIO), ("outlier-prone layers", OUTLIER_RATIO_WIDE)):
        sensitive = tuple(sorted(name for name, ratio in ratios.items() if ratio > cutoff))
        kept = [name for name in weighted if name not in sensitive]
        if not kept or sensitive in seen:
            continue
        seen.add(sensitive)
        note = f"weight layers only; {len(sensitive)} with input max/p99.99 > {cutoff:g} kept fp32"
        if sensitive:
            note += f" ({', '.join(sensitive[:6])}{', ...' if len(sensitive) > 6 else ''})"
        variants.append(
            Variant(
                f"static-int8 weight layers, {label} fp32",
                note,
                lambda s, d, kept=kept: quantize_static_int8(
                    s, d, samples, specs, method=CalibrationMethod.MinMax, nodes_to_quantize=kept
                ),
            )
        )
    strict = sorted(name for name, ratio in ratios.items() if ratio > OUTLIER_RATIO)
    return variants, strict


def fp16_variants() -> list[Variant]:
    return [Variant("fp16", "fp16 weights and compute, float32 IO, sensitive ops fp32", convert_fp16)]


def fp32_variants() -> list[Variant]:
    return [Variant("fp32", "graph-optimized fp32", lambda s, d: shutil.copyfile(s, d))]


def as_given_variants(quantized: str) -> list[Variant]:
    """A source that is already quantized: graph-optimized, never quantized a second time."""
    note = f"already quantized ({quantized}): served as it is, graph-optimized"
    return [Variant("as given", note, lambda s, d: shutil.copyfile(s, d))]


def variants_for(
    mode: str,
    model_path: Path,
    samples: dict[str, np.ndarray],
    calibration: dict[str, np.ndarray] | None,
    specs: list[InputSpec],
    workdir: Path,
    *,
    gpu: bool = False,
) -> tuple[list[Variant], list[str]]:
    """The candidates for a `--quantize` mode, each tagged with the mode whose thresholds apply,
    and the layers found with activation outliers (static INT8 only).

    `auto` tries them all: the fp32 graph first (the baseline it must beat), dynamic INT8,
    static INT8 when `calibration` holds real inputs (None: only generated ones), and FP16
    when the target is a GPU (on a CPU onnxruntime runs most fp16 ops by casting back).
    """
    if mode == "auto":
        found = _tagged("none", fp32_variants()) + _tagged(
            "dynamic-int8", dynamic_variants(model_path, samples, specs, workdir)
        )
        sensitive: list[str] = []
        if calibration is not None:
            static, sensitive = static_variants(model_path, calibration, specs, workdir)
            found += _tagged("static-int8", static)
        if gpu:
            found += _tagged("fp16", fp16_variants())
        return found, sensitive
    if mode == "dynamic-int8":
        return _tagged(mode, dynamic_variants(model_path, samples, specs, workdir)), []
    if mode == "static-int8":
        static, sensitive = static_variants(model_path, calibration or samples, specs, workdir)
        return _tagged(mode, static), sensitive
    if mode == "fp16":
        return _tagged(mode, fp16_variants()), []
    return fp32_variants(), []


def _tagged(mode: str, variants: list[Variant]) -> list[Variant]:
    return [replace(variant, mode=mode) for variant in variants]
