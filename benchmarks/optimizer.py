"""Benchmark `mserve optimize` on this machine: `--quantize auto` against fp32 and plain tools, and each mode.

    python -m benchmarks.optimizer [--workdir DIR] [--models minilm,mlp,cnn] [--modes dynamic-int8,...]

First table (auto): per model, the fp32 original, the artifact `--quantize auto` chose, and
onnxruntime's plain `quantize_dynamic` (per-channel and per-tensor) on the same graph, timed
in one interleaved measurement at batch 1 and 32 (ratios to fp32 from the same rounds).
MiniLM: cosine of the sentence embeddings vs fp32 over the real sentences (mean / worst).
Second table (--modes, none by default): one optimizer run per explicit mode.

Each row is one optimizer run (the same code path as `mserve optimize`, validation and
latency included): size and latency as ratios to the fp32 original measured in the same
run (latency: median of alternating runs, batch 1 and batch 32, onnxruntime CPU with all
cores), and how close the answers stay (MiniLM: cosine of sentence embeddings over 52
real sentences, mean / min; digits: held-out accuracy vs the original's).
Not a timed test: a busy machine moves the absolute numbers, compare ratios within a run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ("dynamic-int8", "static-int8", "fp16")


def _example(name: str, relative: str):  # -> module
    spec = importlib.util.spec_from_file_location(name, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _models(workdir: Path, names: list[str]) -> list[dict]:
    models = []
    if "minilm" in names:
        paths = _example("minilm_export", "examples/minilm/export.py").export(workdir / "minilm", 128)
        shapes = ("input_ids=-1,128:int64", "attention_mask=-1,128:int64")
        models.append({"name": "MiniLM-L6 (seq 128)", "paths": paths, "shapes": shapes, "digits": None})
    train = _example("digits_train", "examples/digits/train.py")
    for arch, epochs in (("mlp", 30), ("cnn", 15)):
        if arch not in names:
            continue
        model, accuracy = train.train(arch, epochs)
        paths = train.save_all(model, arch, workdir / arch)
        _, x_test, _, y_test = train.load_split(arch)
        models.append(
            {
                "name": f"digits {arch.upper()}",
                "paths": paths,
                "shapes": (),
                "digits": (accuracy, x_test, y_test),
            }
        )
    return models


def _accuracy(path: Path, x, y) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float((session.run(None, {"x": x})[0].argmax(1) == y).mean())


def _run(model: dict, mode: str, out: Path, latency_batch: int = 32) -> dict:
    from mserve_optimizer.errors import ValidationFailedError
    from mserve_optimizer.options import OptimizeOptions, parse_input_shape
    from mserve_optimizer.pipeline import OptimizeRequest, optimize
    from mserve_optimizer.source import fetch_source
    from mserve_optimizer.steps import StepLog

    samples = fetch_source(str(model["paths"]["samples"]), out)
    options = OptimizeOptions(
        quantize=mode,
        inputs=tuple(parse_input_shape(s) for s in model["shapes"]),
        samples_sha256=samples.sha256,
        latency_batch=latency_batch,
    )
    request = OptimizeRequest(str(model["paths"]["onnx"]), str(out), options, samples=samples)
    started = time.perf_counter()
    try:
        outcome = optimize(request, StepLog(quiet=True))
        report, artifact = outcome.report, Path(outcome.artifact_uri)
    except ValidationFailedError as exc:
        report, artifact = exc.report, None
    row = {"model": model["name"], "mode": mode, "report": report, "seconds": time.perf_counter() - started}
    row["artifact"] = artifact
    if model["digits"] and artifact is not None:
        accuracy, x, y = model["digits"]
        row["accuracy"] = (accuracy, _accuracy(artifact, x, y))
    return row


def _format(row: dict) -> str:
    report = row["report"]
    passed = report.verdict == "passed"
    size = f"{report.artifact.size_bytes / report.source.size_bytes:.2f}" if passed else "-"
    latency = report.latency
    b1 = f"{latency.ratio_small:.2f}x" if latency else "-"
    bn = f"{latency.ratio_large:.2f}x" if latency else "-"
    cos = min(v.cosine for v in report.validation) if report.validation else float("nan")
    cos_min = min(v.cosine_min for v in report.validation) if report.validation else float("nan")
    quality = f"cos {cos:.4f} / {cos_min:.4f}"
    if "accuracy" in row:
        before, after = row["accuracy"]
        quality = f"acc {after:.4f} (fp32 {before:.4f})"
    chosen = report.chosen.split(" (")[0] if report.chosen else "-"
    verdict = "passed" if passed else "FAILED: " + report.message.split(": ", 1)[-1][:60]
    return f"| {row['model']} | {row['mode']} | {chosen} | {size} | {b1} | {bn} | {quality} | {verdict} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--models", default="minilm,mlp,cnn")
    parser.add_argument("--modes", default="", help=f"explicit modes to run too, e.g. {','.join(MODES)}")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per variant and batch size")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mserve-bench-"))
    import onnxruntime as ort

    print(
        f"# mserve optimizer benchmark: {platform.processor() or platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} CPUs, onnxruntime {ort.__version__}, python {sys.version.split()[0]}"
    )
    from benchmarks.optimizer_auto import compare_auto, print_auto_table

    models = _models(workdir, args.models.split(","))
    compared = [compare_auto(model, workdir, _run, args.budget) for model in models]
    print_auto_table(compared)
    rows = []
    for model in models:
        for mode in filter(None, args.modes.split(",")):
            row = _run(model, mode, workdir / "artifacts")
            rows.append(row)
            print(f"  {row['model']} {mode}: {row['seconds']:.1f}s", file=sys.stderr, flush=True)
    if not rows:
        return
    print()
    print("| model | mode | variant chosen | size | speed-up b1 | speed-up b32 | quality | verdict |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(_format(row))
    print()
    for row in rows:
        for candidate in row["report"].candidates:
            state = "pass" if candidate.passed else "fail"
            ms = f"{candidate.ms_small:.3f} ms" if candidate.ms_small else "-"
            print(
                f"- {row['model']} / {candidate.name}: {state}, b1 {ms}, min cos {candidate.min_cosine}; "
                f"{candidate.note}"
            )


if __name__ == "__main__":
    main()
