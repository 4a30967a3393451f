"""The rollout file (`MSERVE_ROLLOUT_FILE`): which canary this stable pod splits traffic to.

The operator writes it into a ConfigMap mounted into the stable pods (docs/runtime.md,
"Canary traffic split and shadow comparison"); `RolloutFile.check` re-reads it (the server
calls it every second), applies a changed content when it is valid, and keeps the last good
config, counted and logged once, when it is not. A missing or empty file means no canary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

log = logging.getLogger("mserve.rollout")

MAX_FILE_BYTES = 64 << 10
CHECK_EVERY_S = 1.0


class RolloutConfigError(ValueError):
    """The rollout file's content cannot be used; the message says why."""


class _Tolerance(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    cosine: float | None = Field(None, ge=-1, le=1, allow_inf_nan=False)
    max_abs_error: float | None = Field(None, alias="maxAbsError", ge=0, allow_inf_nan=False)


class _Canary(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    url: str = Field(max_length=2048)
    revision: int = Field(0, ge=0, le=2**63 - 1)
    weight: float = Field(0.0, ge=0, le=100, allow_inf_nan=False)
    mirror_percent: float = Field(0.0, alias="mirrorPercent", ge=0, le=100, allow_inf_nan=False)
    tolerance: _Tolerance = Field(default_factory=_Tolerance)

    @field_validator("url")
    @classmethod
    def _origin_only(cls, value: str) -> str:
        return canary_origin(value)

    @field_validator("tolerance", mode="before")
    @classmethod
    def _null_tolerance(cls, value: object) -> object:
        return {} if value is None else value


class _File(BaseModel):
    model_config = ConfigDict(extra="ignore")

    generation: int = Field(0, ge=0, le=2**63 - 1)
    canary: _Canary | None = None


def canary_origin(url: str) -> str:
    """`http(s)://host[:port]` (a trailing `/` dropped); ValueError for anything else: another
    scheme, a path, a query, credentials, a bad port."""
    shown = url if len(url) <= 80 else url[:80] + "..."
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"url {shown!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url {shown!r} must be http(s)://host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"url {shown!r} must be http(s)://host[:port] with no path, query or credentials")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError(f"url {shown!r} holds whitespace or control characters")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


@dataclass(frozen=True, slots=True)
class CanaryConfig:
    """Where the canary is and what share of traffic it gets."""

    url: str
    revision: int
    weight: float
    mirror_percent: float
    cosine: float | None
    max_abs_error: float | None


@dataclass(frozen=True, slots=True)
class RolloutConfig:
    generation: int = 0
    canary: CanaryConfig | None = None


NO_ROLLOUT = RolloutConfig()


def parse_rollout(content: bytes) -> RolloutConfig:
    """The file's content as a config (empty: no rollout); RolloutConfigError naming the problem."""
    if len(content) > MAX_FILE_BYTES:
        raise RolloutConfigError(f"the file has more than {MAX_FILE_BYTES} bytes")
    if not content.strip():
        return NO_ROLLOUT
    try:
        parsed = _File.model_validate_json(content)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'document'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()[:5]
        )
        raise RolloutConfigError(problems) from None
    c = parsed.canary
    if c is None:
        return RolloutConfig(parsed.generation)
    canary = CanaryConfig(
        c.url, c.revision, c.weight, c.mirror_percent, c.tolerance.cosine, c.tolerance.max_abs_error
    )
    return RolloutConfig(parsed.generation, canary)


class RolloutFile:
    """The rollout file at `path`, read once at construction and again by each `check` (any
    thread); `config` is the one in force (an attribute read on the request path)."""

    def __init__(
        self,
        path: str,
        on_apply: Callable[[RolloutConfig], None] = lambda _: None,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.path = path
        self.on_apply = on_apply
        self.on_error = on_error
        self.config = NO_ROLLOUT
        self._content: bytes | None = None
        self.check()

    def _read(self) -> bytes:
        try:
            with open(self.path, "rb") as f:
                return f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return b""

    def check(self) -> None:
        """Re-read the file; apply its content if it changed and is valid."""
        try:
            content = self._read()
        except OSError as exc:
            content = f"unreadable: {exc}".encode()  # compared like content: logged once
            error: str | None = f"cannot read it: {exc.strerror or exc}"
        else:
            error = None
        if content == self._content:
            return
        self._content = content
        if error is None:
            try:
                config = parse_rollout(content)
            except RolloutConfigError as exc:
                error = str(exc)
        if error is not None:
            self.on_error()
            kept = self.config.generation
            log.error("rollout file %s rejected, keeping generation %d: %s", self.path, kept, error)
            return
        self.config = config
        self.on_apply(config)
        log.info("rollout file %s applied: %s", self.path, describe(config))


def describe(config: RolloutConfig) -> str:
    c = config.canary
    if c is None:
        return f"generation {config.generation}, no canary"
    return (
        f"generation {config.generation}, canary revision {c.revision} at {c.url}: "
        f"weight {c.weight:g}%, mirror {c.mirror_percent:g}%"
    )
