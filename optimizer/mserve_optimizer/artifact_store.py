"""Where optimized models go: `<output>/<digest>/{model.onnx,report.json}`, locally or on s3.

A directory that looks complete is complete: locally the files are written into a hidden
temporary folder that is renamed into place; on s3 the report is uploaded last, and a
reader looks for the report first. A failed optimization leaves only its report, under
`<output>/failed/<digest>/`, never at the artifact's address.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from mserve_contract.optimization_report import OptimizationReport
from mserve_runtime.atomic_write import fsync_path

from mserve_optimizer.errors import BadInputError

MODEL_NAME = "model.onnx"
REPORT_NAME = "report.json"
FAILED_FOLDER = "failed"


class ArtifactStore:
    """An output location named by `--output`: a local folder, file:// or s3://."""

    def __init__(self, output: str) -> None:
        self.output = output.rstrip("/")
        self.remote = "://" in output and not output.startswith("file://")
        if not self.remote:
            self.root = Path(output.removeprefix("file://"))

    def uri(self, digest: str, name: str = "") -> str:
        base = f"{self.output}/{digest}"
        return f"{base}/{name}" if name else base

    def cached(self, digest: str) -> OptimizationReport | None:
        """The report of an earlier passing run with this digest, if its artifact is complete."""
        try:
            if not self.remote:
                folder = self.root / digest
                if not (folder / MODEL_NAME).is_file() or not (folder / REPORT_NAME).is_file():
                    return None
                return OptimizationReport.model_validate_json((folder / REPORT_NAME).read_text())
            from mserve_runtime.fetch import exists, fetch

            report_uri = self.uri(digest, REPORT_NAME)
            if not exists(report_uri):
                return None
            with tempfile.TemporaryDirectory(prefix="mserve-cache-") as scratch:
                local = fetch(report_uri, Path(scratch) / REPORT_NAME).path
                return OptimizationReport.model_validate_json(local.read_text())
        except BadInputError:
            raise
        except ValueError:
            return None  # an unreadable report is no cache hit; the run redoes the work
        except Exception as exc:
            raise BadInputError(f"{self.output}: cannot read the artifact store: {_one_line(exc)}") from None

    def publish(self, digest: str, model: Path, report: OptimizationReport) -> str:
        """Write the artifact and its report; returns the model's URI."""
        self._write_folder(digest, {MODEL_NAME: model}, report)
        return self.uri(digest, MODEL_NAME)

    def publish_failure(self, digest: str, report: OptimizationReport) -> str:
        """Keep a failed run's report where it cannot be mistaken for an artifact; returns its URI."""
        self._write_folder(f"{FAILED_FOLDER}/{digest}", {}, report)
        return f"{self.output}/{FAILED_FOLDER}/{digest}/{REPORT_NAME}"

    def _write_folder(self, name: str, files: dict[str, Path], report: OptimizationReport) -> None:
        try:
            if self.remote:
                self._upload(name, files, report)
            else:
                self._write_local(name, files, report)
        except BadInputError:
            raise
        except Exception as exc:
            raise BadInputError(f"{self.uri(name)}: cannot write the artifact: {_one_line(exc)}") from None

    def _write_local(self, name: str, files: dict[str, Path], report: OptimizationReport) -> None:
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
        try:
            for file_name, source in files.items():
                shutil.copyfile(source, staging / file_name)
                fsync_path(staging / file_name)
            (staging / REPORT_NAME).write_text(report.model_dump_json(indent=2))
            fsync_path(staging / REPORT_NAME)
            staging.chmod(0o755)  # mkdtemp makes it private; the artifact is for readers
            if target.exists() and (name.startswith(FAILED_FOLDER) or not (target / REPORT_NAME).is_file()):
                # A re-run's failure report replaces the old one; an incomplete folder (not
                # written by this code, which renames whole folders) is replaced too.
                shutil.rmtree(target)
            if target.exists():
                # Another run with the same digest finished first: same inputs, same artifact.
                shutil.rmtree(staging)
                return
            os.rename(staging, target)
            fsync_path(target.parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _upload(self, name: str, files: dict[str, Path], report: OptimizationReport) -> None:
        from mserve_runtime.fetch import FetchError, upload

        with tempfile.TemporaryDirectory(prefix="mserve-upload-") as scratch:
            folder = Path(scratch)
            for file_name, source in files.items():
                shutil.copyfile(source, folder / file_name)
            (folder / REPORT_NAME).write_text(report.model_dump_json(indent=2))
            try:
                upload(folder, self.uri(name))  # writes report.json last
            except FetchError as exc:
                raise BadInputError(str(exc)) from None


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__
