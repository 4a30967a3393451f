"""The size cap on one fetch: checked against the size a server declares, and while streaming.

A download that fills the node's disk hurts every pod on it, so the operator caps each
fetch (`--max-bytes`, or `MSERVE_FETCH_MAX_BYTES`). The cap covers the whole fetch: every
file of a directory together.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from mserve_runtime.storage_errors import FetchError

MAX_BYTES_ENV = "MSERVE_FETCH_MAX_BYTES"
_WHERE = f"--max-bytes / {MAX_BYTES_ENV}"


def parse_max_bytes(value: str | int | None, name: str) -> int | None:
    """A positive whole number of bytes, or None for no cap; raises ValueError naming `name`."""
    if value is None or value == "":
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"{name} must be a whole number of bytes, got {value!r}") from None
    if number <= 0:
        raise ValueError(f"{name} must be a positive number of bytes, got {number}")
    return number


def max_bytes_from_env() -> int | None:
    """The cap from MSERVE_FETCH_MAX_BYTES (None when unset); raises ValueError naming it."""
    return parse_max_bytes(os.environ.get(MAX_BYTES_ENV), MAX_BYTES_ENV)


class ByteBudget:
    """Counts the bytes of one fetch against its cap (None: no cap)."""

    def __init__(self, uri: str, limit: int | None) -> None:
        self.uri = uri
        self.limit = limit
        self.used = 0

    def check_declared(self, size: int, what: str = "the source") -> None:
        """Refuse up front when a server already says the bytes will not fit."""
        if self.limit is not None and self.used + size > self.limit:
            raise FetchError(
                self.uri, f"{what} is {size} bytes, more than the size cap of {self.limit} bytes ({_WHERE})"
            )

    def take(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Pass `chunks` through, stopping once they go past the cap."""
        iterator = iter(chunks)
        try:
            for chunk in iterator:
                self.used += len(chunk)
                if self.limit is not None and self.used > self.limit:
                    raise FetchError(
                        self.uri, f"stopped after more than the size cap of {self.limit} bytes ({_WHERE})"
                    )
                yield chunk
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # hang up on the server now, not when the generator is collected
