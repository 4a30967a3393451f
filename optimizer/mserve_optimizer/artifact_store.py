"""Where optimized models go: `<output>/<digest>/{model.onnx,report.json}`, locally or on s3.

A directory that looks complete is complete: locally the files are written into a hidden
temporary folder that is renamed into place; on s3 the report is uploaded last, and a
reader looks for the report first. A failed optimization leaves only its report, under
`<output>/failed/<digest>/`, never at the artifact's address.

A report found in the store is trusted only if it passed, names this digest, names the
artifact at this very address, and the artifact's bytes hash to the report's sha256;
anything else (a report planted or left by someone else) is no cache hit: the work is
redone and the folder rewritten. The store is read and written with the store role's
credentials (MSERVE_STORE_*), never the source's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mserve_contract.optimization_report import OptimizationReport
from mserve_runtime.atomic_write import fsync_path

from mserve_optimizer.errors import BadInputError
from mserve_optimizer.source import sha256_file

MODEL_NAME = "model.onnx"
REPORT_NAME = "report.json"
FAILED_FOLDER = "failed"
# A report is a few KiB; a larger one is not ours, and is not read whole.
REPORT_MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class CacheLookup:
    """A trusted earlier report, or None with `note` saying why a report found was not trusted."""

    report: OptimizationReport | None
    note: str = ""


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

    def cached(self, digest: str) -> CacheLookup:
        """The report of an earlier passing run with this digest, if it and its artifact check out."""
        try:
            if not self.remote:
                folder = self.root / digest
                if not (folder / MODEL_NAME).is_file() or not (folder / REPORT_NAME).is_file():
                    return CacheLookup(None)
                report, problem = self._check_local(digest)
            else:
                from mserve_runtime.fetch import exists

                if not exists(self.uri(digest, REPORT_NAME), role="store"):
                    return CacheLookup(None)
                report, problem = self._check_remote(digest)
        except BadInputError:
            raise
        except Exception as exc:
            raise BadInputError(f"{self.output}: cannot read the artifact store: {_one_line(exc)}") from None
        if problem is not None:
            note = f"cache: not trusting {self.uri(digest, REPORT_NAME)}: {problem}; redoing the work"
            return CacheLookup(None, note)
        return CacheLookup(report)

    def _problem(self, digest: str, report: OptimizationReport) -> str | None:
        """Why `report` cannot stand for this digest's artifact, or None (bytes checked by the caller)."""
        expected_uri = self.uri(digest, MODEL_NAME)
        if report.verdict != "passed":
            return f"its verdict is {report.verdict}"
        if report.digest != digest:
            return f"it names digest {report.digest!r}, not {digest}"
        if report.artifact is None:
            return "it names no artifact"
        if report.artifact.uri != expected_uri:
            return f"its artifact {report.artifact.uri!r} is not {expected_uri}"
        return None

    def _check_local(self, digest: str) -> tuple[OptimizationReport | None, str | None]:
        folder = self.root / digest
        if (folder / REPORT_NAME).stat().st_size > REPORT_MAX_BYTES:
            return None, f"the report is over {REPORT_MAX_BYTES} bytes"
        try:
            report = OptimizationReport.model_validate_json((folder / REPORT_NAME).read_text())
        except ValueError:
            return None, "the report is unreadable"
        problem = self._problem(digest, report)
        if problem is None and report.artifact is not None:
            actual = sha256_file(folder / MODEL_NAME)
            if actual != report.artifact.sha256:
                problem = f"the artifact's sha256 is {actual}, the report says {report.artifact.sha256}"
        return report, problem

    def _check_remote(self, digest: str) -> tuple[OptimizationReport | None, str | None]:
        from mserve_runtime.fetch import FetchError, fetch

        with tempfile.TemporaryDirectory(prefix="mserve-cache-") as scratch:
            try:
                report_uri, local = self.uri(digest, REPORT_NAME), Path(scratch) / REPORT_NAME
                fetch(report_uri, local, role="store", max_bytes=REPORT_MAX_BYTES)
                report = OptimizationReport.model_validate_json(local.read_text())
            except (FetchError, ValueError) as exc:
                return None, f"the report is unreadable ({_one_line(exc)})"
            problem = self._problem(digest, report)
            if problem is not None or report.artifact is None:
                return report, problem
            try:
                # Hashing the bytes themselves: the digest in the object's metadata is as
                # writable as the report, so it proves nothing.
                fetch(
                    self.uri(digest, MODEL_NAME),
                    Path(scratch) / MODEL_NAME,
                    sha256=report.artifact.sha256,
                    role="store",
                    max_bytes=max(report.artifact.size_bytes, 1),
                )
            except FetchError as exc:
                return report, f"its artifact does not check out: {exc.cause}"
        return report, None

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
            if target.exists() and (name.startswith(FAILED_FOLDER) or not self._complete_and_trusted(name)):
                # A re-run's failure report replaces the old one; an incomplete or untrusted
                # folder (not written by this code, which renames whole folders) is replaced too.
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

    def _complete_and_trusted(self, digest: str) -> bool:
        folder = self.root / digest
        if not (folder / MODEL_NAME).is_file() or not (folder / REPORT_NAME).is_file():
            return False
        return self._check_local(digest)[1] is None

    def _upload(self, name: str, files: dict[str, Path], report: OptimizationReport) -> None:
        from mserve_runtime.fetch import FetchError, upload

        with tempfile.TemporaryDirectory(prefix="mserve-upload-") as scratch:
            folder = Path(scratch)
            for file_name, source in files.items():
                shutil.copyfile(source, folder / file_name)
            (folder / REPORT_NAME).write_text(report.model_dump_json(indent=2))
            try:
                upload(folder, self.uri(name), role="store")  # writes report.json last
            except FetchError as exc:
                raise BadInputError(str(exc)) from None


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__
