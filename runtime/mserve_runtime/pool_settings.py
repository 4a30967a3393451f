"""Settings of pool mode (`mserve serve --pool DIR`): many models in one process.

Kept beside `RuntimeSettings` (which still governs every model's batching, threads, limits
and deadlines) so that a single-model server reads nothing of these.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PoolSettings(BaseSettings):
    """How a pool server finds, loads and evicts its models (`MSERVE_POOL_*` variables)."""

    model_config = SettingsConfigDict(env_prefix="MSERVE_POOL_", extra="ignore")

    dir: str = ""
    """The model repository: `<dir>/<name>.onnx` or `<dir>/<name>/model.onnx` per model."""

    memory_bytes: int = Field(0, ge=0)
    """Memory the loaded models may hold together; past it the least recently used model is
    unloaded before another loads. 0: half of the pod's memory limit (or of the machine's RAM)."""

    preload: str = ""
    """Comma-separated model names to load at start-up, before the server turns ready; `*`
    loads every model the budget fits (in name order). Others load on their first request."""

    load_wait_s: float = Field(30.0, gt=0, le=3600)
    """How long a request waits for its model to load before it gets 503 naming the model."""

    model_max_in_flight: int = Field(0, ge=0, le=1_000_000)
    """Most inference requests one model may hold at once (being read, waiting for its load,
    queued or run); one more gets 503 with Retry-After (gRPC UNAVAILABLE) naming the model, so
    that a flooded model leaves the rest of `MSERVE_MAX_IN_FLIGHT` to the others. 0: half of
    `MSERVE_MAX_IN_FLIGHT` (at least 1); above it is refused at start-up."""

    isolation: Literal["none", "process"] = "none"
    """`process`: each loaded model runs in a worker process of its own, so that its crash or
    the OOM killer ends that model's worker, not the server (the model loads again on its next
    request); costs a process per model and a hop per run (docs/pools.md). `none`: every model
    in the server's process."""

    rescan_interval_s: float = Field(1.0, ge=0)
    """A request for a name not in the index re-reads the directory at most this often."""

    def preload_names(self) -> list[str] | None:
        """The names to load at start-up; None means every model."""
        names = [n.strip() for n in self.preload.split(",") if n.strip()]
        return None if names == ["*"] else names
