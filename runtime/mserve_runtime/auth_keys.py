"""API keys from mounted Secrets: only their SHA-256 digests are held, compared in constant time.

Layout (`MSERVE_API_KEYS_DIR`): one subdirectory per Secret (its name), one file per key in it;
key name = `<secret>/<file>`. The kubelet updates a Secret volume by writing a new hidden
directory and swapping the `..data` link, so names starting with "." are skipped and the
whole tree is simply re-read on each poll: a rotated key works, the old one stops, with no
restart.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from pathlib import Path

log = logging.getLogger("mserve.auth")

KeyTable = tuple[tuple[str, bytes], ...]


def digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def read_keys(directory: Path) -> tuple[KeyTable, list[str]]:
    """(name, digest) of every key under `directory`, sorted, and the problems met (never values)."""
    problems: list[str] = []
    try:
        secrets = sorted(
            (e for e in os.scandir(directory) if not e.name.startswith(".")), key=lambda e: e.name
        )
    except FileNotFoundError:
        return (), [f"MSERVE_API_KEYS_DIR {str(directory)!r} does not exist"]
    except OSError as exc:
        return (), [f"MSERVE_API_KEYS_DIR {str(directory)!r} cannot be read: {exc.strerror}"]
    keys: list[tuple[str, bytes]] = []
    for secret in secrets:
        if not secret.is_dir():
            continue
        try:
            files = sorted(
                (e for e in os.scandir(secret.path) if not e.name.startswith(".") and e.is_file()),
                key=lambda e: e.name,
            )
        except OSError as exc:
            problems.append(f"key directory {secret.name!r} cannot be read: {exc.strerror}")
            continue
        for file in files:
            name = f"{secret.name}/{file.name}"
            try:
                value = Path(file.path).read_bytes().strip()
            except OSError as exc:
                problems.append(f"key {name!r} cannot be read: {exc.strerror}")
                continue
            if not value:
                problems.append(f"key {name!r} is empty and is ignored")
                continue
            keys.append((name, digest(value)))
    return tuple(sorted(keys)), problems


class ApiKeys:
    """The keys a server accepts; `reload()` (on a side thread) re-reads them from disk."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.table: KeyTable = ()
        self._problems: list[str] = []
        self.reload()

    def reload(self) -> bool:
        """Re-read the directory; True when the set of keys changed. Logs names, never values."""
        table, problems = read_keys(self.directory)
        if problems != self._problems:
            for problem in problems:
                log.warning("API keys: %s", problem)
        self._problems = problems
        if table == self.table:
            return False
        before = {name for name, _ in self.table}
        after = {name for name, _ in table}
        # One assignment: requests on the event loop see the old table or the new one, whole.
        self.table = table
        log.info(
            "API keys: %d loaded (%s)%s",
            len(table),
            ", ".join(sorted(after)) or "none: every request gets 401",
            f"; changed: {', '.join(sorted(after ^ before))}" if before and after ^ before else "",
        )
        return True

    def match(self, credential: bytes) -> str | None:
        """The name of the key equal to `credential`, or None. Every key is compared, in
        constant time, whether or not one matched."""
        candidate = hashlib.sha256(credential).digest()
        found = None
        for name, value in self.table:
            if hmac.compare_digest(candidate, value) and found is None:
                found = name
        return found
