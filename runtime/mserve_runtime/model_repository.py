"""The model repository of a pool: which models exist, found by listing one directory.

Layout: `<dir>/<name>.onnx` or `<dir>/<name>/model.onnx`. A name is what the URL carries
(`/v2/models/<name>`), so only names that are safe in a URL, a file name and a metric label
are served; other entries are skipped with a warning. Requests never build a path: a
name is looked up in the last listing, so `..`, `/` or `%00` in a URL can only miss.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("mserve.repository")

NAME_PATTERN = re.compile(r"[a-z0-9]([a-z0-9_.-]{0,61}[a-z0-9])?", re.IGNORECASE)
MODEL_FILE = "model.onnx"


def valid_model_name(name: str) -> bool:
    """1-63 letters, digits, `_`, `.`, `-`, starting and ending with a letter or digit, no `..`."""
    return NAME_PATTERN.fullmatch(name) is not None and ".." not in name


@dataclass(frozen=True, slots=True)
class RepositoryEntry:
    """One model file as listed: where it is, its size and when it changed."""

    name: str
    path: Path
    size_bytes: int
    mtime_ns: int


class RepositoryError(Exception):
    """The repository directory cannot be listed (missing, not a directory, unreadable)."""


def _entry(name: str, path: Path) -> RepositoryEntry | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    return RepositoryEntry(name, path, stat.st_size, stat.st_mtime_ns)


def list_repository(directory: Path) -> dict[str, RepositoryEntry]:
    """The models under `directory` by name; RepositoryError if it cannot be listed."""
    try:
        children = sorted(directory.iterdir())
    except OSError as exc:
        raise RepositoryError(f"cannot list the model repository {str(directory)!r}: {exc}") from exc
    found: dict[str, RepositoryEntry] = {}
    for child in children:
        if child.name.startswith("."):
            continue  # hidden files, and the `..data` links of a mounted ConfigMap
        if child.suffix == ".onnx":
            name, path = child.stem, child
        elif child.is_dir():
            name, path = child.name, child / MODEL_FILE
        else:
            continue
        if not valid_model_name(name):
            log.warning("skipping %r: not a valid model name (%s)", child.name, NAME_PATTERN.pattern)
            continue
        if name in found:
            log.warning("skipping %s: model %r is already served from %s", child, name, found[name].path)
            continue
        entry = _entry(name, path)
        if entry is not None:
            found[name] = entry
    return found
