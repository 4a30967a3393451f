"""The optimization, step by step: fetch, load, export, check, graph opt, prune, quantize, validate,
latency, session, write. Each step is timed and printed; the result is an `OptimizationReport`."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from mserve_contract.optimization_report import FileFacts, LatencyFigures, OptimizationReport

from mserve_optimizer import __version__
from mserve_optimizer.artifact_store import ArtifactStore
from mserve_optimizer.digest import artifact_digest
from mserve_optimizer.errors import ValidationFailedError
from mserve_optimizer.options import EXPLICIT_MODES, OptimizeOptions
from mserve_optimizer.source import LocalSource, fetch_source, sha256_file
from mserve_optimizer.steps import StepLog

if TYPE_CHECKING:
    from mserve_optimizer import stages


# A requested mode this much slower than the original (at batch 1 or the serving batch) is
# reported as slower; the same margin `auto` asks of a variant before it leaves fp32.
SLOWER_MARGIN = 0.05


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
    from mserve_optimizer import hardware, samples, search, stages

    options = request.options
    digest = artifact_digest(source.sha256, options)
    warnings: list[str] = []
    original = workdir / "original.onnx"
    loaded = stages.load(source.path, options, log)
    model = stages.export(loaded, options, original, log)
    checked = stages.check(model, original, options, request.samples, warnings, log)
    optimized = stages.graph_opt(original, len(checked.model.graph.node), options, workdir, warnings, log)
    optimized, pruning = stages.prune_weights(optimized, options, workdir, warnings, log)
    given = (request.samples, request.calibration)
    built = stages.quantize_candidates(optimized, checked, options, given, workdir, warnings, log)
    result = stages.validate_candidates(built, original, loaded, checked, options, log)
    report = OptimizationReport(
        digest=digest,
        optimizer_version=__version__,
        source=FileFacts(uri=source.uri, sha256=source.sha256, size_bytes=source.size_bytes),
        source_format=loaded.fmt,
        options=options.normalized(),
        samples=samples.sample_count(checked.data),
        samples_origin=checked.origin,
        pruning=pruning,
        candidates=search.candidate_results(result.judged, result.chosen),
        warnings=warnings,
        versions=versions(),
        verdict="failed",
        hardware=hardware.detect(options.device, request.threads),
    )
    if result.chosen is None:
        _fail(report, result, options, store, log)
    chosen = result.chosen
    artifact_path = chosen.built.path
    report.validation, report.chosen = chosen.validation, f"{chosen.built.variant.name} ({result.why})"
    report.latency = stages.latency(original, artifact_path, checked, options, request.threads, log)
    slower = slower_than_original(options.quantize, report.latency)
    if slower:
        report.faster_mode = "none"
        # The report holds its own copy of the warnings by now.
        report.warnings.append(f"{slower}; quantize none (the fp32 original) would have been faster")
        log.note("WARNING: " + report.warnings[-1])
    report.session_options, report.session_trials = stages.session_settings(
        artifact_path, checked, request.threads, log
    )
    report.artifact = FileFacts(
        uri=store.uri(digest, "model.onnx"),
        sha256=sha256_file(artifact_path),
        size_bytes=artifact_path.stat().st_size,
    )
    report.verdict = "passed"
    ratio = report.artifact.size_bytes / source.size_bytes
    latency = report.latency
    report.message = (
        f"{report.chosen}; size {ratio:.2f}x, speed-up {latency.ratio_small:.2f}x at batch 1, "
        f"{latency.ratio_large:.2f}x at batch {latency.batch_large}, "
        f"cosine {min(v.cosine for v in report.validation):.5f} "
        f"(worst sample {min(v.cosine_min for v in report.validation):.5f})"
    )
    if slower:
        report.message = f"SLOWER than the fp32 original: {report.message}"
    artifact_uri = stages.write(report, log, lambda: store.publish(digest, artifact_path, report))
    return Outcome(report, artifact_uri, cached=False, warnings=warnings)


def slower_than_original(mode: str, latency: LatencyFigures) -> str:
    """Why an explicitly requested mode is slower than the original here ('' when it is not).

    `auto` never serves a slower variant, and `none` is the original; for the other modes the
    spec is followed, but the owner is told. Within `SLOWER_MARGIN` is noise, not slower.
    """
    if mode not in EXPLICIT_MODES:
        return ""
    if min(latency.ratio_small, latency.ratio_large) >= 1 - SLOWER_MARGIN:
        return ""
    return (
        f"{mode} is slower than the fp32 original here: {latency.ratio_small:.2f}x at batch "
        f"{latency.batch_small}, {latency.ratio_large:.2f}x at batch {latency.batch_large}"
    )


def _fail(
    report: OptimizationReport,
    result: stages.Validated,
    options: OptimizeOptions,
    store: ArtifactStore,
    log: StepLog,
) -> NoReturn:
    """No candidate passed: keep the report of the nearest miss (no artifact) and raise."""
    from mserve_optimizer import search, stages, validate

    nearest = search.closest_failure(result.judged)
    report.validation = nearest.validation if nearest else []
    report.chosen = nearest.built.variant.name if nearest else ""
    errors = "; ".join(j.built.error for j in result.judged if j.built.error)
    detail = validate.failure_message(report.validation) or errors
    report.message = f"validation failed ({options.quantize}, prune {options.prune:g}): {detail}"
    stages.write(
        report, log, lambda: f"failure report at {store.publish_failure(report.digest, report)}; no artifact"
    )
    raise ValidationFailedError(report)
