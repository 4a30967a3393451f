"""`mserve optimize`: parse the flags, run the pipeline, map the outcome to an exit code.

Exit codes are `mserve_contract.exit_codes.OptimizerExit`: 0 passed (or cached); 1 bad input
or unreachable URI, one line on stderr; 2 the optimized model failed validation, no artifact.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click
from mserve_contract.exit_codes import OptimizerExit

from mserve_optimizer.errors import BadInputError, ValidationFailedError
from mserve_optimizer.options import OptimizeOptions, parse_input_shape, parse_tolerance


class _OptimizeCommand(click.Command):
    """Usage errors exit 1 like any other bad input (click's 2 means 'validation failed' here)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            exc.exit_code = OptimizerExit.BAD_INPUT
            _write_termination(_termination_path(args), None, f"usage: {exc.format_message()}")
            raise


def _termination_path(args: list[str]) -> str | None:
    for index, arg in enumerate(args):
        if arg.startswith("--termination-message="):
            return arg.split("=", 1)[1]
        if arg == "--termination-message" and index + 1 < len(args):
            return args[index + 1]
    return None


def _write_termination(path: str | None, report, message: str = "") -> None:  # report: OptimizationReport
    if not path:
        return
    from mserve_contract.optimization_report import TerminationSummary

    if report is not None:
        summary = report.summary(
            report.artifact.uri if report.artifact and report.verdict == "passed" else ""
        )
    else:
        summary = TerminationSummary(verdict="failed", message=message)
    try:
        Path(path).write_text(summary.to_termination_message())
    except OSError as exc:
        click.echo(
            f"warning: cannot write the termination message to {path}: {exc.strerror or exc}", err=True
        )


def _aux_input(uri: str | None, flag: str, scratch: Path):  # -> LocalSource | None
    if not uri:
        return None
    from mserve_optimizer.source import fetch_source

    try:
        return fetch_source(uri, scratch / flag.strip("-"))
    except BadInputError as exc:
        raise BadInputError(f"{flag}: {exc}") from None


@click.command(cls=_OptimizeCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source")
@click.option(
    "--output", "-o", required=True, help="Artifact store: a folder, file:// or s3://bucket/prefix."
)
@click.option("--format", "fmt", default="auto", show_default=True, help="auto|onnx|torchscript|torch-export")
@click.option(
    "--quantize",
    default="none",
    show_default=True,
    help="none|auto|dynamic-int8|static-int8|fp16; auto serves the fastest variant that passes.",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="cpu|cuda: where the artifact will be served (cuda adds FP16 to auto and times on CUDA).",
)
@click.option(
    "--prune", default=0.0, type=float, show_default=True, help="Fraction of weights to prune, 0..1."
)
@click.option(
    "--prune-structure",
    default="unstructured",
    show_default=True,
    help="unstructured (magnitude) or structured (whole neurons/channels).",
)
@click.option(
    "--graph-level", default="basic", show_default=True, help="basic|extended|all (offline graph opt)."
)
@click.option(
    "--input-shape",
    "input_shapes",
    multiple=True,
    metavar="NAME=DIMS[:DTYPE]",
    help="Input spec, -1 for the batch axis, e.g. x=-1,64:float32. Repeat per input.",
)
@click.option(
    "--tolerance",
    "tolerances",
    multiple=True,
    metavar="KEY=VALUE",
    help="Validation threshold: cosine, cosine_min, top1 (lower bounds), mean_rel, max_abs (upper).",
)
@click.option("--samples", help="An .npz of real inputs (one array per input name) to validate on.")
@click.option("--calibration", help="An .npz of representative inputs to calibrate static INT8 on.")
@click.option("--sha256", help="Pinned digest of the source; also lets a cached run skip the download.")
@click.option("--termination-message", "termination", help="Write a short JSON summary here (< 4 KiB).")
@click.option("--latency-batch", default=32, type=int, show_default=True, help="The larger latency batch.")
@click.option(
    "--threads", type=int, help="onnxruntime threads for validation and latency (default: all CPUs)."
)
@click.option("--keep-workdir", is_flag=True, help="Keep intermediate models for inspection.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the outcome.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def optimize(
    source: str,
    output: str,
    fmt: str,
    quantize: str,
    device: str,
    prune: float,
    prune_structure: str,
    graph_level: str,
    input_shapes: tuple[str, ...],
    tolerances: tuple[str, ...],
    samples: str | None,
    calibration: str | None,
    sha256: str | None,
    termination: str | None,
    latency_batch: int,
    threads: int | None,
    keep_workdir: bool,
    quiet: bool,
    debug: bool,
) -> None:
    """Convert SOURCE to ONNX, optimize it, validate it against the original, and store it by digest."""
    from mserve_optimizer.pipeline import OptimizeRequest
    from mserve_optimizer.pipeline import optimize as run_pipeline
    from mserve_optimizer.steps import StepLog

    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="mserve-inputs-") as scratch:
            samples_source = _aux_input(samples, "--samples", Path(scratch))
            calibration_source = _aux_input(calibration, "--calibration", Path(scratch))
            options = OptimizeOptions(
                format=fmt,
                quantize=quantize,
                prune=prune,
                prune_structure=prune_structure,
                graph_level=graph_level,
                inputs=tuple(parse_input_shape(text) for text in input_shapes),
                tolerances=tuple(parse_tolerance(text) for text in tolerances),
                samples_sha256=samples_source.sha256 if samples_source else None,
                calibration_sha256=calibration_source.sha256 if calibration_source else None,
                latency_batch=latency_batch,
                device=device,
            )
            request = OptimizeRequest(
                source=source,
                output=output,
                options=options,
                sha256=sha256,
                samples=samples_source,
                calibration=calibration_source,
                threads=threads,
                keep_workdir=keep_workdir,
            )
            outcome = run_pipeline(request, StepLog(quiet=quiet))
    except BadInputError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        _write_termination(termination, None, str(exc))
        sys.exit(exc.exit_code)
    except ValidationFailedError as exc:
        click.echo(f"FAILED: {exc.report.message}", err=True)
        _write_termination(termination, exc.report)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if debug:
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        message = f"internal error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)"
        click.echo(f"error: {message}", err=True)
        _write_termination(termination, None, message)
        sys.exit(OptimizerExit.BAD_INPUT)
    report = outcome.report
    _write_termination(termination, report)
    state = "cached" if outcome.cached else "passed"
    click.echo(f"{state}: {outcome.artifact_uri} ({time.perf_counter() - started:.2f}s)")
    click.echo(f"  {report.message}")
