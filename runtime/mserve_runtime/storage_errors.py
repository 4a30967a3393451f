"""The one error type of the model storage code (fetch, upload, exists)."""

from __future__ import annotations


class FetchError(Exception):
    """A model could not be read from or written to its URI.

    The message is one line naming the URI and the cause, fit to print as is.
    """

    def __init__(self, uri: str, cause: str) -> None:
        super().__init__(f"{uri}: {cause}")
        self.uri = uri
        self.cause = cause
