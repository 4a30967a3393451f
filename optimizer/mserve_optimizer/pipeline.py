"""The optimization, step by step: fetch, load, export, check, graph opt, prune, quantize, validate,
latency, write. Each step is timed and printed; the result is an `OptimizationReport`."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from mserve_contract.optimization_report import FileFacts, OptimizationReport

from mserve_optimizer import __version__
from mserve_optimizer.artifact_store import ArtifactStore
from mserve_optimizer.digest import artifact_digest
from mserve_optimizer.errors import ValidationFailedError
from mserve_optimizer.options import OptimizeOptions
from mserve_optimizer.source import LocalSource, detect_format, fetch_source, load_onnx, sha256_file
from mserve_optimizer.steps import StepLog


@dataclass
class OptimizeRequest:
    """One `mserve optimize` invocation, parsed."""

    source: str
    output: str
    options: OptimizeOptions
    sha256: str | None = None
    samples: LocalSource | None = None
    calibration: LocalSource | None = None
    threads: int | None = None
    keep_workdir: bool = False


@dataclass
class Outcome:
    report: OptimizationReport
    artifact_uri: str
    cached: bool
    warnings: list[str] = field(default_factory=list)


def versions() -> dict[str, str]:
    """Library versions, read from package metadata so that torch is never imported for it."""
    found = {"mserve-optimizer": __version__}
    for name in ("onnx", "onnxruntime", "torch", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def check_cache(
    request: OptimizeRequest, store: ArtifactStore, source_sha256: str, log: StepLog
) -> Outcome | None:
    digest = artifact_digest(source_sha256, request.options)
    lookup = store.cached(digest)
    if lookup.note:
        log.note(lookup.note)
    report = lookup.report
    if report is None:
        return None
    log.note(f"cached: {store.uri(digest)} (digest {digest[:12]}, nothing to do)")
    return Outcome(report, store.uri(digest, "model.onnx"), cached=True)


def optimize(request: OptimizeRequest, log: StepLog) -> Outcome:
    """Run every step; raises BadInputError (exit 1) or ValidationFailedError (exit 2)."""
    store = ArtifactStore(request.output)
    if request.sha256:
        # A pinned source digest names the artifact before anything is downloaded.
        with log.step("cache") as step:
            hit = check_cache(request, store, request.sha256.lower().removeprefix("sha256:"), log)
            step.detail = "hit" if hit else "miss"
        if hit:
            return hit
    workdir = Path(tempfile.mkdtemp(prefix="mserve-optimize-"))
    try:
        with log.step("fetch") as step:
            source = fetch_source(request.source, workdir, sha256=request.sha256)
            step.detail = f"{source.size_bytes / 1e6:.2f} MB sha256 {source.sha256[:12]}"
        if not request.sha256:
            hit = check_cache(request, store, source.sha256, log)
            if hit:
                return hit
        return _run(request, store, source, workdir, log)
    finally:
        if request.keep_workdir:
            log.note(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(
    request: OptimizeRequest, store: ArtifactStore, source: LocalSource, workdir: Path, log: StepLog
) -> Outcome:
    # Heavy imports only now: a cached run never pays for them.
    import onnx

    from mserve_optimizer import graph, prune, quantize, samples, search, validate
    from mserve_optimizer.latency import compare_latency
    from mserve_optimizer.ort_session import open_session, run_all

    options = request.options
    digest = artifact_digest(source.sha256, options)
    warnings: list[str] = []
    torch_model = None
    with log.step("load") as step:
        fmt = detect_format(source.path, options.format)
        if fmt == "onnx":
            model = load_onnx(source.path)
        else:
            from mserve_optimizer.export import load_torch

            torch_model = load_torch(source.path, fmt)
        step.detail = fmt
    original = workdir / "original.onnx"
    with log.step("export") as step:
        if torch_model is None:
            step.detail = "skipped: the source is ONNX"
            onnx.save(model, str(original))
        else:
            from mserve_optimizer.export import export_onnx

            export_onnx(torch_model, list(options.inputs), original)
            step.detail = f"torch {fmt} -> ONNX, batch axis dynamic"
            model = onnx.load(str(original))
    with log.step("check") as step:
        model = graph.check_and_infer(model)
        specs = samples.onnx_input_specs(model, list(options.inputs))
        onnx.save(model, str(original))
        if request.samples is not None:
            data = samples.load_samples(request.samples.path, specs)
            origin = f"{request.samples.uri} ({samples.sample_count(data)} samples)"
        else:
            data = samples.generate_samples(specs, samples.GENERATED_COUNT)
            origin = f"generated: {samples.GENERATED_COUNT} samples, seed {samples.GENERATED_SEED}"
            warnings.append(
                "validated on generated inputs; pass --samples with real inputs for a meaningful check"
            )
            log.note("WARNING: " + warnings[-1])
        step.detail = f"{len(model.graph.node)} nodes; inputs {', '.join(s.text() for s in specs)}"
    with log.step("graph-opt") as step:
        optimized = workdir / "graph.onnx"
        # basic here; a higher level runs on each candidate after quantization (see search).
        graph.optimize_graph(original, optimized, "basic")
        before, after = len(model.graph.node), len(onnx.load(str(optimized)).graph.node)
        step.detail = f"level basic: {before} -> {after} nodes"
        if options.graph_level != "basic":
            step.detail += f"; level {options.graph_level} after quantization"
            if options.graph_level == "all":
                warnings.append(
                    "--graph-level all saves layout optimizations specific to this CPU; "
                    "onnxruntime applies them at load anyway"
                )
    pruning = None
    with log.step("prune") as step:
        if options.prune > 0:
            pruned_model, pruning = prune.prune(
                onnx.load(str(optimized)), options.prune, options.prune_structure
            )
            optimized = workdir / "pruned.onnx"
            onnx.save(pruned_model, str(optimized))
            step.detail = (
                f"{options.prune_structure} {options.prune:.0%}: "
                f"sparsity {pruning.unstructured_sparsity:.1%}, "
                f"{pruning.structured_removed}/{pruning.structured_total} neurons removed, "
                f"{pruning.size_before_bytes / 1e6:.2f} -> {pruning.size_after_bytes / 1e6:.2f} MB"
            )
            if options.prune_structure == "structured" and pruning.structured_total == 0:
                warnings.append("structured pruning found no layer it could cut safely; nothing was removed")
        else:
            step.detail = "skipped"
    with log.step("quantize") as step:
        if options.quantize == "dynamic-int8":
            variants = quantize.dynamic_variants(optimized, data, specs, workdir)
        elif options.quantize == "static-int8":
            calibration = data
            if request.calibration is not None:
                calibration = samples.load_samples(request.calibration.path, specs, "--calibration")
            elif request.samples is None:
                warnings.append(
                    "static-int8 calibrated on GENERATED inputs: activation ranges may not match real data; "
                    "pass --calibration with representative inputs"
                )
                log.note("WARNING: " + warnings[-1])
            variants, sensitive = quantize.static_variants(optimized, calibration, specs, workdir)
            if sensitive:
                log.note(f"{len(sensitive)} layers with activation outliers: {', '.join(sensitive[:8])}")
        elif options.quantize == "fp16":
            variants = quantize.fp16_variants()
        else:
            variants = [quantize.Variant("fp32", "graph-optimized fp32", lambda s, d: shutil.copyfile(s, d))]
        built = search.build_variants(variants, optimized, workdir, log, graph_level=options.graph_level)
        step.detail = (
            f"{options.quantize}: {sum(b.path is not None for b in built)} of {len(built)} candidates built"
        )
    thresholds = validate.thresholds_for(options.quantize, options.prune, options.tolerance_overrides)
    with log.step("validate") as step:
        if torch_model is not None:
            outputs = _torch_outputs(torch_model, data, specs)
        else:
            outputs = run_all(open_session(original), data, specs)
        names = [o.name for o in open_session(original).get_outputs()]
        reference = dict(zip(names, outputs, strict=True))
        judged = search.judge(built, reference, data, specs, thresholds, log)
        chosen, why = search.choose(judged)
        step.detail = f"{chosen.built.variant.name}: {why}" if chosen else why
    report = OptimizationReport(
        digest=digest,
        optimizer_version=__version__,
        source=FileFacts(uri=source.uri, sha256=source.sha256, size_bytes=source.size_bytes),
        source_format=fmt,
        options=options.normalized(),
        samples=samples.sample_count(data),
        samples_origin=origin,
        pruning=pruning,
        candidates=search.candidate_results(judged, chosen),
        warnings=warnings,
        versions=versions(),
        verdict="failed",
    )
    if chosen is None:
        nearest = search.closest_failure(judged)
        report.validation = nearest.validation if nearest else []
        report.chosen = nearest.built.variant.name if nearest else ""
        detail = validate.failure_message(report.validation) or "; ".join(b.error for b in built if b.error)
        report.message = f"validation failed ({options.quantize}, prune {options.prune:g}): {detail}"
        report.steps = list(log.timings)
        with log.step("write") as step:
            step.detail = f"failure report at {store.publish_failure(digest, report)}; no artifact"
        report.steps = list(log.timings)
        raise ValidationFailedError(report)
    artifact_path = chosen.built.path
    report.validation, report.chosen = chosen.validation, f"{chosen.built.variant.name} ({why})"
    with log.step("latency") as step:
        report.latency = compare_latency(
            original, artifact_path, specs, data, batch_large=options.latency_batch, threads=request.threads
        )
        step.detail = (
            f"batch {report.latency.batch_small}: {report.latency.ratio_small:.2f}x, "
            f"batch {report.latency.batch_large}: {report.latency.ratio_large:.2f}x vs the fp32 original"
        )
    report.artifact = FileFacts(
        uri=store.uri(digest, "model.onnx"),
        sha256=sha256_file(artifact_path),
        size_bytes=artifact_path.stat().st_size,
    )
    report.verdict = "passed"
    ratio = report.artifact.size_bytes / source.size_bytes
    report.message = (
        f"{report.chosen}; size {ratio:.2f}x, speed-up {report.latency.ratio_small:.2f}x at batch 1, "
        f"cosine {min(v.cosine for v in report.validation):.5f} "
        f"(worst sample {min(v.cosine_min for v in report.validation):.5f})"
    )
    with log.step("write") as step:
        report.steps = list(log.timings)
        artifact_uri = store.publish(digest, artifact_path, report)
        step.detail = artifact_uri
    return Outcome(report, artifact_uri, cached=False, warnings=warnings)


def _torch_outputs(torch_model, data, specs):  # -> list[np.ndarray]
    import numpy as np

    from mserve_optimizer.samples import iter_batches

    chunks = [torch_model.run(feeds, specs) for feeds in iter_batches(data, 32, specs)]
    return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]
