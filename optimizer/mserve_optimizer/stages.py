"""The steps of an optimization the cache did not answer, one function each, in the order they run.

Each step runs inside `log.step(name)`, which times and prints it. Steps that find something
the user should know append it to `warnings`. Imported only after a cache miss: these are
the heavy imports (onnx, onnxruntime, the quantizers) a cached run never pays for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from mserve_contract.optimization_report import (
    LatencyFigures,
    OptimizationReport,
    PruningFigures,
    SessionOptions,
    SessionTrial,
)

from mserve_optimizer import (
    auto_select,
    graph,
    prune,
    quantize,
    quantized_graph,
    samples,
    search,
    session_search,
    validate,
)
from mserve_optimizer.errors import BadInputError
from mserve_optimizer.latency import compare_latency
from mserve_optimizer.options import InputSpec, OptimizeOptions
from mserve_optimizer.ort_session import open_session, run_all
from mserve_optimizer.source import LocalSource, detect_format, load_onnx
from mserve_optimizer.steps import StepLog


@dataclass
class Loaded:
    """The source as loaded: an ONNX model, or a torch model still to export."""

    fmt: str
    model: onnx.ModelProto | None = None
    torch_model: object | None = None  # mserve_optimizer.export's loaded torch model


@dataclass
class Checked:
    """The checked ONNX model, its inputs, and the samples to validate on."""

    model: onnx.ModelProto
    specs: list[InputSpec]
    data: dict[str, np.ndarray]
    origin: str
    quantized: str = ""  # the quantized ops found in the source ('' for a float graph)


@dataclass
class Validated:
    judged: list[search.Judged]
    chosen: search.Judged | None
    why: str


def load(path: Path, options: OptimizeOptions, log: StepLog) -> Loaded:
    with log.step("load") as step:
        fmt = detect_format(path, options.format)
        if fmt == "onnx":
            loaded = Loaded(fmt, model=load_onnx(path))
        else:
            from mserve_optimizer.export import load_torch

            loaded = Loaded(fmt, torch_model=load_torch(path, fmt))
        step.detail = fmt
    return loaded


def export(loaded: Loaded, options: OptimizeOptions, original: Path, log: StepLog) -> onnx.ModelProto:
    """Write the source as ONNX to `original`; the model written."""
    with log.step("export") as step:
        if loaded.torch_model is None:
            step.detail = "skipped: the source is ONNX"
            onnx.save(loaded.model, str(original))
            return loaded.model
        from mserve_optimizer.export import export_onnx

        export_onnx(loaded.torch_model, list(options.inputs), original)
        step.detail = f"torch {loaded.fmt} -> ONNX, batch axis dynamic"
        return onnx.load(str(original))


def check(
    model: onnx.ModelProto,
    original: Path,
    options: OptimizeOptions,
    given_samples: LocalSource | None,
    warnings: list[str],
    log: StepLog,
) -> Checked:
    with log.step("check") as step:
        model = graph.check_and_infer(model)
        specs = samples.onnx_input_specs(model, list(options.inputs))
        onnx.save(model, str(original))
        if given_samples is not None:
            data = samples.load_samples(given_samples.path, specs)
            origin = f"{given_samples.uri} ({samples.sample_count(data)} samples)"
        else:
            data = samples.generate_samples(specs, samples.GENERATED_COUNT)
            origin = f"generated: {samples.GENERATED_COUNT} samples, seed {samples.GENERATED_SEED}"
            warnings.append(
                "validated on generated inputs; pass --samples with real inputs for a meaningful check"
            )
            log.note("WARNING: " + warnings[-1])
        step.detail = f"{len(model.graph.node)} nodes; inputs {', '.join(s.text() for s in specs)}"
        quantized = quantized_graph.describe(quantized_graph.quantized_nodes(model))
        if quantized:
            refuse_requantization(options.quantize, quantized)
            step.detail += f"; already quantized ({quantized}): served as it is"
    return Checked(model, specs, data, origin, quantized)


def refuse_requantization(mode: str, quantized: str) -> None:
    """An explicit quantization mode cannot apply to a quantized source; `auto` and `none` serve it as is."""
    if mode not in ("auto", "none"):
        raise BadInputError(
            f"the source is already quantized ({quantized}): --quantize {mode} cannot quantize it again; "
            "use quantize auto or none to serve it as it is"
        )


def graph_opt(
    original: Path,
    nodes_before: int,
    options: OptimizeOptions,
    workdir: Path,
    warnings: list[str],
    log: StepLog,
) -> Path:
    with log.step("graph-opt") as step:
        optimized = workdir / "graph.onnx"
        # basic here; a higher level runs on each candidate after quantization (see search).
        graph.optimize_graph(original, optimized, "basic")
        after = len(onnx.load(str(optimized)).graph.node)
        step.detail = f"level basic: {nodes_before} -> {after} nodes"
        if options.graph_level != "basic":
            step.detail += f"; level {options.graph_level} after quantization"
            if options.graph_level == "all":
                warnings.append(
                    "--graph-level all saves layout optimizations specific to this CPU; "
                    "onnxruntime applies them at load anyway"
                )
    return optimized


def prune_weights(
    optimized: Path, options: OptimizeOptions, workdir: Path, warnings: list[str], log: StepLog
) -> tuple[Path, PruningFigures | None]:
    """The model to quantize (pruned when asked) and what pruning removed."""
    with log.step("prune") as step:
        if options.prune <= 0:
            step.detail = "skipped"
            return optimized, None
        pruned_model, pruning = prune.prune(onnx.load(str(optimized)), options.prune, options.prune_structure)
        pruned = workdir / "pruned.onnx"
        onnx.save(pruned_model, str(pruned))
        step.detail = (
            f"{options.prune_structure} {options.prune:.0%}: "
            f"sparsity {pruning.unstructured_sparsity:.1%}, "
            f"{pruning.structured_removed}/{pruning.structured_total} neurons removed, "
            f"{pruning.size_before_bytes / 1e6:.2f} -> {pruning.size_after_bytes / 1e6:.2f} MB"
        )
        if options.prune_structure == "structured" and pruning.structured_total == 0:
            warnings.append("structured pruning found no layer it could cut safely; nothing was removed")
    return pruned, pruning


def quantize_candidates(
    optimized: Path,
    checked: Checked,
    options: OptimizeOptions,
    given: tuple[LocalSource | None, LocalSource | None],
    workdir: Path,
    warnings: list[str],
    log: StepLog,
) -> list[search.Built]:
    """Every candidate of the requested mode, built; `given` is (--samples, --calibration)."""
    given_samples, given_calibration = given
    with log.step("quantize") as step:
        calibration = _calibration(options.quantize, checked, given_samples, given_calibration, warnings, log)
        if checked.quantized:
            variants, sensitive = quantize.as_given_variants(checked.quantized), []
        else:
            variants, sensitive = quantize.variants_for(
                options.quantize,
                optimized,
                checked.data,
                calibration,
                checked.specs,
                workdir,
                gpu=options.device == "cuda",
            )
        if sensitive:
            log.note(f"{len(sensitive)} layers with activation outliers: {', '.join(sensitive[:8])}")
        built = search.build_variants(variants, optimized, workdir, log, graph_level=options.graph_level)
        step.detail = (
            f"{options.quantize}: {sum(b.path is not None for b in built)} of {len(built)} candidates built"
        )
    return built


def _calibration(
    mode: str,
    checked: Checked,
    given_samples: LocalSource | None,
    given_calibration: LocalSource | None,
    warnings: list[str],
    log: StepLog,
) -> dict[str, np.ndarray] | None:
    """What static INT8 calibrates on; None under `auto` when only generated inputs exist
    (a range calibrated on noise is no candidate worth timing)."""
    if given_calibration is not None:
        return samples.load_samples(given_calibration.path, checked.specs, "--calibration")
    if given_samples is not None:
        return checked.data
    if mode == "static-int8":
        warnings.append(
            "static-int8 calibrated on GENERATED inputs: activation ranges may not match real data; "
            "pass --calibration with representative inputs"
        )
        log.note("WARNING: " + warnings[-1])
        return checked.data
    return None


def validate_candidates(
    built: list[search.Built],
    original: Path,
    loaded: Loaded,
    checked: Checked,
    options: OptimizeOptions,
    log: StepLog,
) -> Validated:
    def thresholds(variant: quantize.Variant) -> dict[str, float]:
        mode = variant.mode if options.quantize == "auto" else options.quantize
        return validate.thresholds_for(
            mode, options.prune, options.tolerance_overrides, auto=options.quantize == "auto"
        )

    auto = options.quantize == "auto"
    with log.step("validate") as step:
        if loaded.torch_model is not None:
            outputs = _torch_outputs(loaded.torch_model, checked.data, checked.specs)
        else:
            outputs = run_all(open_session(original), checked.data, checked.specs)
        names = [o.name for o in open_session(original).get_outputs()]
        reference = dict(zip(names, outputs, strict=True))
        judged = search.judge(
            built,
            reference,
            checked.data,
            checked.specs,
            thresholds,
            log,
            large_batch=options.latency_batch if auto else None,
            device=options.device,
        )
        if auto:
            chosen, why = auto_select.choose_auto(judged, options.latency_batch)
        else:
            chosen, why = search.choose(judged)
        step.detail = f"{chosen.built.variant.name}: {why}" if chosen else why
    return Validated(judged, chosen, why)


def latency(
    original: Path,
    artifact: Path,
    checked: Checked,
    options: OptimizeOptions,
    threads: int | None,
    log: StepLog,
) -> LatencyFigures:
    with log.step("latency") as step:
        figures = compare_latency(
            original,
            artifact,
            checked.specs,
            checked.data,
            batch_large=options.latency_batch,
            threads=threads,
            device=options.device,
        )
        step.detail = (
            f"batch {figures.batch_small}: {figures.ratio_small:.2f}x, "
            f"batch {figures.batch_large}: {figures.ratio_large:.2f}x vs the fp32 original"
        )
    return figures


def session_settings(
    artifact: Path, checked: Checked, threads: int | None, log: StepLog
) -> tuple[SessionOptions, list[SessionTrial]]:
    """The onnxruntime settings the runtime should serve this artifact with, and what was timed."""
    with log.step("session") as step:
        feed = samples.batch_of(checked.data, 1, checked.specs)
        chosen, trials, why = session_search.measure(artifact, feed, threads)
        for trial in trials:
            log.note(f"{trial.name}: {trial.runs_per_s:.1f} runs/s, {trial.concurrent_runs} at once")
        step.detail = why
    return chosen, trials


def write(report: OptimizationReport, log: StepLog, publish: Callable[[], str]) -> str:
    """The last step: the report records every step before this one, then `publish` stores it."""
    with log.step("write") as step:
        report.steps = list(log.timings)
        step.detail = publish()
    return step.detail


def _torch_outputs(torch_model, data: dict[str, np.ndarray], specs: list[InputSpec]) -> list[np.ndarray]:
    from mserve_optimizer.samples import iter_batches

    chunks = [torch_model.run(feeds, specs) for feeds in iter_batches(data, 32, specs)]
    return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]
