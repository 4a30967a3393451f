"""The content-addressed cache: a re-run is found, not redone; any change gives a new digest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from optimizer_harness import DigitsModel, optimize_in_process, optimize_subprocess


def test_second_run_is_cached_and_fast(digits_mlp: DigitsModel, out_dir: Path) -> None:
    source = digits_mlp.source("onnx")
    first = optimize_in_process(source, "--output", out_dir, "--quantize", "dynamic-int8")
    assert first.exit_code == 0
    assert first.stdout.splitlines()[-2].startswith("passed:")
    second = optimize_in_process(source, "--output", out_dir, "--quantize", "dynamic-int8")
    assert second.exit_code == 0
    assert second.stdout.splitlines()[-2].startswith("cached:")
    assert second.artifact_dir() == first.artifact_dir()
    assert "quantize" not in second.stdout  # no step after the cache check ran
    assert second.seconds < 0.5, second.seconds
    # With the digest pinned, the Job does not even read the source.
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    pinned = optimize_subprocess(
        "/nonexistent/model.onnx", "--output", out_dir, "--quantize", "dynamic-int8", "--sha256", digest
    )
    assert pinned.exit_code == 0, pinned.stderr
    assert pinned.stdout.splitlines()[-2].startswith("cached:")
    assert pinned.seconds < 3.0, pinned.seconds  # process start included


def test_changed_options_or_bytes_give_a_new_digest(
    digits_mlp: DigitsModel, out_dir: Path, tmp_path: Path
) -> None:
    source = digits_mlp.source("onnx")
    base = optimize_in_process(source, "--output", out_dir)
    other_mode = optimize_in_process(source, "--output", out_dir, "--quantize", "fp16")
    other_tolerance = optimize_in_process(source, "--output", out_dir, "--tolerance", "cosine=0.999")
    changed = tmp_path / "model.onnx"
    model = onnx.load(str(source))
    model.doc_string = "same weights, different bytes"
    onnx.save(model, str(changed))
    other_bytes = optimize_in_process(changed, "--output", out_dir)
    runs = [base, other_mode, other_tolerance, other_bytes]
    assert all(run.exit_code == 0 for run in runs), [run.stderr for run in runs]
    assert all(run.stdout.splitlines()[-2].startswith("passed:") for run in runs)
    assert len({run.artifact_dir().name for run in runs}) == 4


def test_crashed_write_leaves_nothing_that_looks_complete(digits_mlp: DigitsModel, out_dir: Path) -> None:
    run = optimize_in_process(digits_mlp.source("onnx"), "--output", out_dir)
    assert run.exit_code == 0
    digest_dir = run.artifact_dir()
    # A half-written artifact (model without report) is no cache hit: the run redoes the work.
    (digest_dir / "report.json").unlink()
    again = optimize_in_process(digits_mlp.source("onnx"), "--output", out_dir)
    assert again.stdout.splitlines()[-2].startswith("passed:")
    assert again.artifact_dir() == digest_dir
    assert sorted(p.name for p in digest_dir.iterdir()) == ["model.onnx", "report.json"]
    assert not [p for p in out_dir.iterdir() if p.name.endswith(".partial")]


def _tamper_model(folder: Path) -> None:
    (folder / "model.onnx").write_bytes(b"a model someone else put here")


def _tamper_uri(folder: Path) -> None:
    report = json.loads((folder / "report.json").read_text())
    report["artifact"]["uri"] = "s3://artifacts/other-tenant/abc/model.onnx"
    (folder / "report.json").write_text(json.dumps(report))


def _tamper_digest(folder: Path) -> None:
    report = json.loads((folder / "report.json").read_text())
    report["digest"] = "0" * 64
    (folder / "report.json").write_text(json.dumps(report))


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        (_tamper_model, "the artifact's sha256 is "),
        (_tamper_uri, "its artifact 's3://artifacts/other-tenant/abc/model.onnx' is not "),
        (_tamper_digest, f"it names digest '{'0' * 64}', not "),
    ],
)
def test_a_planted_report_is_no_cache_hit(
    digits_mlp: DigitsModel, out_dir: Path, tamper: Callable[[Path], None], why: str
) -> None:
    first = optimize_in_process(digits_mlp.source("onnx"), "--output", out_dir)
    assert first.exit_code == 0
    folder = first.artifact_dir()
    tamper(folder)

    again = optimize_in_process(digits_mlp.source("onnx"), "--output", out_dir)

    assert again.exit_code == 0, again.stderr
    assert f"cache: not trusting {folder}/report.json: {why}" in again.stdout
    assert again.stdout.splitlines()[-2].startswith("passed:")
    report = again.report()
    assert report["digest"] == folder.name
    assert report["artifact"]["uri"] == str(folder / "model.onnx")
    assert hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest() == report["artifact"]["sha256"]
    third = optimize_in_process(digits_mlp.source("onnx"), "--output", out_dir)
    assert third.stdout.splitlines()[-2].startswith("cached:")
