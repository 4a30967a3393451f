"""Fetch a model from s3://, http(s)://, pvc://, file:// or a local path; upload artifacts.

`fetch` is atomic: bytes land in a temporary file next to the destination, the SHA-256 is
computed while streaming, and the file is synced and renamed into place only once it is
whole and its digest matches. A directory source is staged the same way and moved in only
after every file is verified. The operator runs `mserve fetch` as a pod's init step, and
the optimizer reuses `fetch`/`upload`/`exists` for its artifacts.

`role` picks whose credentials an access uses (`storage_roles`: the source's or the
artifact store's, never both); `max_bytes` caps the bytes of one fetch (`fetch_limits`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from mserve_runtime import storage_http, storage_s3
from mserve_runtime.atomic_write import (
    ProgressCallback,
    fsync_path,
    normalize_sha256,
    read_chunks,
    sha256_file,
    tree_sha256,
    write_atomically,
)
from mserve_runtime.fetch_limits import ByteBudget
from mserve_runtime.storage_errors import FetchError
from mserve_runtime.storage_roles import Role

__all__ = ["SCHEMES", "FetchError", "FetchResult", "exists", "fetch", "resolve_local_path", "upload"]

SCHEMES = ("s3://", "http://", "https://", "pvc://", "file://")
DEFAULT_PVC_ROOT = "/mnt/pvc"
# Written after everything else by `upload`, so that a reader that waits for one of them
# never sees half an artifact.
MARKER_NAMES = ("report.json", "_SUCCESS")


@dataclass(frozen=True)
class FetchResult:
    """Where a fetched model landed and what it was.

    For a directory, `sha256` is the digest of its sorted `sha256sum` listing (see
    `atomic_write.tree_sha256`) and `size_bytes` the sum over its files.
    """

    path: Path
    sha256: str
    size_bytes: int
    seconds: float
    files: int = 1


@dataclass(frozen=True)
class _Source:
    name: str
    # Relative POSIX paths for a directory source; None for a single file.
    files: list[str] | None
    chunks: Callable[[str], Iterable[bytes]]
    stored_sha256: str | None = None
    # The size the storage declares before any byte is read, where it does.
    size_bytes: int | None = None


def _scheme(uri: str) -> str:
    if "://" not in uri:
        return "file://"
    scheme = uri.split("://", 1)[0].lower() + "://"
    if scheme not in SCHEMES:
        allowed = ", ".join(SCHEMES)
        raise FetchError(uri, f'unsupported scheme "{scheme}" (supported: {allowed}, or a local path)')
    return scheme


def resolve_local_path(uri: str) -> Path:
    """The filesystem path of a file://, pvc:// or plain-path URI."""
    scheme = _scheme(uri)
    if scheme == "pvc://":
        rest = PurePosixPath(uri[len("pvc://") :])
        if not rest.parts or ".." in rest.parts or rest.is_absolute():
            raise FetchError(uri, "expected pvc://CLAIM/PATH without '..'")
        return Path(os.environ.get("MSERVE_PVC_ROOT") or DEFAULT_PVC_ROOT, *rest.parts)
    if scheme == "file://":
        path = unquote(uri[len("file://") :]) if "://" in uri else uri
        return Path(path.removeprefix("localhost/"))
    raise FetchError(uri, f"not a local URI (scheme {scheme})")


def _safe_relative(uri: str, rel: str) -> str:
    parts = PurePosixPath(rel).parts
    if not parts or rel.startswith("/") or any(part in (".", "..") for part in parts):
        raise FetchError(uri, f"refusing to write unsafe relative path {rel!r}")
    return rel


def _local_chunks(uri: str, path: Path) -> Iterator[bytes]:
    try:
        yield from read_chunks(path)
    except OSError as exc:
        raise FetchError(uri, f"cannot read {path}: {exc.strerror or exc}") from exc


def _list_local_files(root: Path) -> list[str]:
    files = []
    for folder, _dirs, names in os.walk(root):
        for name in names:
            full = Path(folder, name)
            if full.is_file():
                files.append(full.relative_to(root).as_posix())
    return sorted(files)


def _resolve(uri: str, role: Role | None, budget: ByteBudget) -> _Source:
    scheme = _scheme(uri)
    if scheme == "s3://":
        s3 = storage_s3.resolve(uri, role)

        def s3_chunks(rel: str) -> Iterable[bytes]:
            key = s3.prefix + rel if s3.files is not None else s3.location.key
            return storage_s3.object_chunks(uri, s3.location, key, role)

        name = PurePosixPath(s3.location.key).name or s3.location.bucket
        files = [_safe_relative(uri, rel) for rel in s3.files] if s3.files is not None else None
        return _Source(name, files, s3_chunks, s3.stored_sha256, s3.size_bytes)
    if scheme in ("http://", "https://"):
        name = PurePosixPath(uri.split("?", 1)[0].split("#", 1)[0]).name or "model"
        return _Source(name, None, lambda _rel: storage_http.body_chunks(uri, role=role, budget=budget))
    path = resolve_local_path(uri)
    if path.is_file():
        return _Source(path.name, None, lambda _rel: _local_chunks(uri, path), size_bytes=path.stat().st_size)
    if path.is_dir():
        files = _list_local_files(path)
        if not files:
            raise FetchError(uri, f"directory {path} holds no files")
        return _Source(path.name, files, lambda rel: _local_chunks(uri, path / rel))
    raise FetchError(uri, f"no such file or directory: {path}")


def fetch(
    uri: str,
    dest: Path,
    *,
    sha256: str | None = None,
    progress: ProgressCallback | None = None,
    role: Role | None = None,
    max_bytes: int | None = None,
) -> FetchResult:
    """Download `uri` to `dest` atomically, verifying `sha256` if given.

    A single file lands at `dest`, or at `dest/<name>` when `dest` is an existing
    directory. A directory source (`s3://bucket/prefix/`, a local directory) fills `dest`.
    Without `sha256`, an s3 object uploaded by `upload` is checked against the digest
    stored in its metadata. `progress(bytes_so_far)` is called as data arrives. `role`
    picks the credentials; more than `max_bytes` in all fails, and nothing lands.
    """
    started = time.monotonic()
    expected = normalize_sha256(uri, sha256)
    dest = Path(dest)
    budget = ByteBudget(uri, max_bytes)
    source = _resolve(uri, role, budget)
    if source.size_bytes is not None:
        budget.check_declared(source.size_bytes)
    try:
        return _fetch_source(uri, source, dest, expected, progress, started, budget)
    except OSError as exc:
        raise FetchError(uri, f"cannot write {exc.filename or dest}: {exc.strerror or exc}") from exc


def _fetch_source(
    uri: str,
    source: _Source,
    dest: Path,
    expected: str | None,
    progress: ProgressCallback | None,
    started: float,
    budget: ByteBudget,
) -> FetchResult:
    if source.files is None:
        target = dest / source.name if dest.is_dir() else dest
        digest, size = write_atomically(
            uri,
            budget.take(source.chunks("")),
            target,
            expected_sha256=expected or source.stored_sha256,
            progress=progress,
        )
        return FetchResult(target, digest, size, time.monotonic() - started)
    digest, size = _fetch_tree(uri, source, dest, expected, progress, budget)
    return FetchResult(dest, digest, size, time.monotonic() - started, len(source.files))


def _fetch_tree(
    uri: str,
    source: _Source,
    dest: Path,
    expected: str | None,
    progress: ProgressCallback | None,
    budget: ByteBudget,
) -> tuple[str, int]:
    assert source.files is not None
    if dest.exists() and not dest.is_dir():
        raise FetchError(uri, f"source is a directory but {dest} is a file")
    into_existing = dest.is_dir()
    # An existing dest may be a mount point (an emptyDir), which cannot be renamed onto:
    # stage inside it then. Otherwise stage next to it and rename the whole folder.
    parent = dest if into_existing else dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{dest.name}.", suffix=".partial"))
    try:
        digests: dict[str, str] = {}
        total = 0
        for rel in source.files:
            done = total

            def report(size: int, done: int = done) -> None:
                if progress is not None:
                    progress(done + size)

            chunks = budget.take(source.chunks(rel))
            digests[rel], size = write_atomically(uri, chunks, staging / rel, progress=report)
            total += size
        actual = tree_sha256(digests)
        if expected is not None and actual != expected:
            raise FetchError(
                uri, f"sha256 mismatch: expected {expected}, got {actual} (digest of the directory listing)"
            )
        if into_existing:
            for entry in sorted(staging.iterdir()):
                target = dest / entry.name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                os.replace(entry, target)
            staging.rmdir()
        else:
            os.rename(staging, dest)
        fsync_path(parent)
        return actual, total
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _upload_order(src: Path, marker_names: Sequence[str]) -> list[str]:
    files = _list_local_files(src)
    return sorted(files, key=lambda rel: (PurePosixPath(rel).name in marker_names, rel))


def upload(
    src: Path, uri: str, *, marker_names: Sequence[str] = MARKER_NAMES, role: Role | None = None
) -> None:
    """Write a file or a directory to an s3://, file://, pvc:// URI or a local path.

    A directory's files named in `marker_names` (the report) are written last, so a reader
    that finds the report finds the whole artifact. Each file is written atomically; s3
    objects carry their SHA-256 in metadata, which `fetch` verifies.
    """
    src = Path(src)
    scheme = _scheme(uri)
    if scheme in ("http://", "https://"):
        raise FetchError(uri, "upload supports s3://, file://, pvc:// and local paths, not http(s)://")
    if not src.exists():
        raise FetchError(uri, f"nothing to upload: {src} does not exist")
    if scheme == "s3://":
        location = storage_s3.parse_s3_uri(uri)
        if src.is_file():
            key = location.key + src.name if location.key.endswith("/") or not location.key else location.key
            storage_s3.upload_file(uri, src, key, sha256_file(src), role)
            return
        prefix = location.key.rstrip("/") + "/" if location.key.strip("/") else ""
        for rel in _upload_order(src, marker_names):
            storage_s3.upload_file(uri, src / rel, prefix + rel, sha256_file(src / rel), role)
        return
    target = resolve_local_path(uri)
    try:
        if src.is_file():
            dest = target / src.name if target.is_dir() else target
            write_atomically(uri, read_chunks(src), dest)
            return
        for rel in _upload_order(src, marker_names):
            write_atomically(uri, read_chunks(src / rel), target / rel)
    except OSError as exc:
        raise FetchError(uri, f"cannot write {target}: {exc.strerror or exc}") from exc


def exists(uri: str, *, role: Role | None = None) -> bool:
    """Whether `uri` names an object, a non-empty prefix, a file or a directory."""
    scheme = _scheme(uri)
    if scheme == "s3://":
        return storage_s3.exists(uri, role)
    if scheme in ("http://", "https://"):
        return storage_http.exists(uri, role=role)
    return resolve_local_path(uri).exists()
