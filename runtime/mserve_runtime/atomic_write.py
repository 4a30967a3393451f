"""Write a stream to a file so that a partial or unverified file never appears at its name."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path

from mserve_runtime.storage_errors import FetchError

CHUNK_BYTES = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")

ProgressCallback = Callable[[int], None]


def normalize_sha256(uri: str, digest: str | None) -> str | None:
    """Lower-case a hex SHA-256, accepting a `sha256:` prefix; reject anything else."""
    if digest is None:
        return None
    value = digest.strip().lower().removeprefix("sha256:")
    if not _HEX64.fullmatch(value):
        raise FetchError(uri, f"expected sha256 {digest!r} is not 64 hex digits")
    return value


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries: without the folder's, a rename can be lost on
    power failure even though the data was synced."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(
    uri: str,
    chunks: Iterable[bytes],
    dest: Path,
    *,
    expected_sha256: str | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[str, int]:
    """Stream `chunks` into `dest` via a temporary file in the same directory.

    The digest is computed while writing; the file is synced and renamed into place only
    when the digest matches `expected_sha256` (if given). Returns (sha256 hex, size).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                if progress is not None:
                    progress(size)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if expected_sha256 is not None and actual != expected_sha256:
            raise FetchError(uri, f"sha256 mismatch: expected {expected_sha256}, got {actual}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
        fsync_path(dest.parent)
        return actual, size
    except BaseException:
        with suppress(FileNotFoundError):
            tmp.unlink()
        raise


def read_chunks(path: Path) -> Iterable[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            yield chunk


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    for chunk in read_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(file_digests: dict[str, str]) -> str:
    """The digest of a directory: SHA-256 of its `sha256sum`-style listing, sorted by path.

    `cd DIR && find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs sha256sum | sha256sum` gives
    the same value, so a digest can be computed by hand for `--sha256`.
    """
    listing = "".join(f"{digest}  {rel}\n" for rel, digest in sorted(file_digests.items()))
    return hashlib.sha256(listing.encode()).hexdigest()
