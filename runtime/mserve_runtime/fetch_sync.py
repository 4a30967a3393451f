"""Keep a directory in step with a list of artifacts: `mserve fetch --sync LIST --into DIR`.

A pool pod's sidecar runs this over the list the operator writes into a ConfigMap (one list per
storage access, so each sidecar holds only its own credentials). Every pass re-reads the list,
fetches an item that is missing or whose URI or digest changed (`fetch.fetch`: temporary file,
digest checked, rename), and deletes the file of an item that left the list, but only a file
this process wrote and that nobody replaced since (its state file records each file's identity).
A failing item is logged with its name and retried with a growing delay; the others go on. The
state file is written after every pass, so its existence says the first pass is done.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mserve_runtime.atomic_write import write_atomically
from mserve_runtime.fetch import fetch
from mserve_runtime.storage_errors import FetchError
from mserve_runtime.storage_roles import Role

log = logging.getLogger("mserve.fetch.sync")

FIRST_RETRY_S = 1.0
MAX_RETRY_S = 60.0


@dataclass(frozen=True)
class SyncItem:
    """One entry of the list: the member's name (for messages), its URI, the file it lands in
    (a plain name inside the directory) and its SHA-256 ('-': none)."""

    name: str
    uri: str
    file: str
    sha256: str

    @property
    def identity(self) -> tuple[str, str]:
        return self.uri, self.sha256


@dataclass
class _Retry:
    identity: tuple[str, str]
    delay_s: float
    next_at: float


@dataclass
class SyncState:
    """What this process wrote: file name -> the item's identity and the file's (size, mtime, inode)."""

    files: dict[str, dict] = field(default_factory=dict)


def parse_items(text: str) -> tuple[list[SyncItem], list[str]]:
    """The list's items and, for each entry refused, why (naming it). ValueError when the text is
    not a JSON list at all: then nothing is known, and nothing may be deleted."""
    entries = json.loads(text)
    if not isinstance(entries, list):
        raise ValueError(f"expected a JSON list of items, got {type(entries).__name__}")
    items, refused, files = [], [], set()
    for index, entry in enumerate(entries):
        where = f"item {index}"
        if not isinstance(entry, dict):
            refused.append(f"{where}: not an object")
            continue
        name = entry.get("name")
        where = f"item {index} ({name!r})" if isinstance(name, str) else where
        values = [entry.get(k) for k in ("name", "uri", "file", "sha256")]
        if not all(isinstance(v, str) and v for v in values):
            refused.append(f"{where}: name, uri, file and sha256 must be non-empty strings")
            continue
        item = SyncItem(*values)
        if "/" in item.file or item.file.startswith(".") or item.file in files:
            refused.append(f"{where}: file {item.file!r} is not a new plain name inside the directory")
            continue
        files.add(item.file)
        items.append(item)
    return items, refused


def _file_identity(path: Path) -> list[int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]


class DirectorySync:
    """One list, one directory, one role's credentials."""

    def __init__(
        self,
        items_file: Path,
        directory: Path,
        state_file: Path,
        *,
        role: Role | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.items_file = items_file
        self.directory = directory
        self.state_file = state_file
        self.role = role
        self.max_bytes = max_bytes
        self.state = self._read_state()
        self.retries: dict[str, _Retry] = {}
        self._last_list_error = ""
        self._last_refused: list[str] = []

    def _read_state(self) -> SyncState:
        try:
            content = json.loads(self.state_file.read_text())
            return SyncState(files=dict(content.get("files") or {}))
        except (OSError, ValueError, AttributeError):
            return SyncState()

    def _write_state(self) -> None:
        data = json.dumps({"files": self.state.files}, sort_keys=True).encode()
        try:
            write_atomically(str(self.state_file), [data], self.state_file)
        except OSError as exc:
            log.error(f"cannot write the state file {self.state_file}: {exc}")

    def _read_items(self) -> list[SyncItem] | None:
        try:
            items, refused = parse_items(self.items_file.read_text())
        except (OSError, ValueError) as exc:
            message = f"cannot read the list {self.items_file}: {exc}; keeping every file as it is"
            if message != self._last_list_error:
                log.error(message)
                self._last_list_error = message
            return None
        self._last_list_error = ""
        if refused != self._last_refused:
            for reason in refused:
                log.error(f"skipping {reason}")
            self._last_refused = refused
        return items

    def sync_once(self) -> None:
        """One pass: delete what left the list, fetch what is missing or changed; write the state."""
        items = self._read_items()
        if items is not None:
            wanted = {item.file: item for item in items}
            for file in [f for f in self.state.files if f not in wanted]:
                self._remove(file)
            for name in [f for f in self.retries if f not in wanted]:
                del self.retries[name]
            for item in items:
                self._ensure(item)
        self._write_state()

    def _remove(self, file: str) -> None:
        record = self.state.files.pop(file)
        path = self.directory / file
        if _file_identity(path) != record.get("stat"):
            log.info(f"{file}: left the list; the file is not the one this sync wrote, kept")
            return
        started = time.monotonic()
        try:
            path.unlink()
        except OSError as exc:
            log.error(f"{file}: left the list; cannot delete it: {exc}")
            return
        took = time.monotonic() - started
        log.info(f"{record.get('name', file)}: left the list, deleted {file} in {took:.3f}s")

    def _ensure(self, item: SyncItem) -> None:
        record = self.state.files.get(item.file)
        path = self.directory / item.file
        unchanged = record is not None and tuple(record["identity"]) == item.identity
        if unchanged and _file_identity(path) == record.get("stat"):
            return
        retry = self.retries.get(item.file)
        now = time.monotonic()
        if retry is not None and retry.identity == item.identity and now < retry.next_at:
            return
        sha256 = None if item.sha256 == "-" else item.sha256
        try:
            result = fetch(item.uri, path, sha256=sha256, role=self.role, max_bytes=self.max_bytes)
        except FetchError as exc:
            delay = FIRST_RETRY_S if retry is None or retry.identity != item.identity else retry.delay_s * 2
            delay = min(delay, MAX_RETRY_S)
            self.retries[item.file] = _Retry(item.identity, delay, time.monotonic() + delay)
            kept = "; the file it had is kept" if path.exists() else ""
            took = time.monotonic() - now
            log.error(f"{item.name}: fetch failed after {took:.2f}s: {exc}{kept}; retry in {delay:.0f}s")
            return
        self.retries.pop(item.file, None)
        self.state.files[item.file] = {
            "name": item.name,
            "identity": list(item.identity),
            "stat": _file_identity(path),
        }
        log.info(
            f"{item.name}: fetched {item.uri} -> {path} ({result.size_bytes} bytes in {result.seconds:.2f}s) "
            f"sha256 {result.sha256}"
        )

    def run(self, interval_s: float, stop: threading.Event | None = None) -> None:
        """Pass after pass until `stop` is set (a sidecar: until the pod goes)."""
        stop = stop or threading.Event()
        first = True
        while not stop.is_set():
            started = time.monotonic()
            self.sync_once()
            if first:
                took = time.monotonic() - started
                log.info(f"first pass done in {took:.2f}s: {len(self.state.files)} files")
                first = False
            stop.wait(interval_s)


def is_synced(state_file: Path) -> bool:
    """Whether the sync of this state file finished its first pass (a startup probe)."""
    return os.path.isfile(state_file)
