"""The runtime's `mserve` subcommands: each parses its options and delegates.

`serve` is added here next to `fetch` (see mserve_cli.main.SUBCOMMANDS).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


@click.command()
@click.argument("uri", required=False)
@click.argument("dest", required=False, type=click.Path(path_type=Path))
@click.option("--sha256", metavar="HEX", help="Expected SHA-256 of the file (or of a directory's listing).")
@click.option(
    "--item",
    "items",
    nargs=3,
    multiple=True,
    metavar="URI DEST SHA256",
    help="Fetch this too ('-' for no digest); repeatable: one process fetches many (a pool's members).",
)
@click.option(
    "--role",
    metavar="source|store",
    help="Use only this role's credentials (MSERVE_SOURCE_* or MSERVE_STORE_*), never AWS_*.",
)
@click.option(
    "--max-bytes",
    metavar="N",
    envvar="MSERVE_FETCH_MAX_BYTES",
    help="Fail (and keep nothing) past N bytes in all. [env MSERVE_FETCH_MAX_BYTES; no cap]",
)
@click.option(
    "--sync",
    "sync_list",
    metavar="LIST",
    type=click.Path(path_type=Path),
    help="Keep --into in step with LIST (JSON: [{name, uri, file, sha256}]), re-read every --interval.",
)
@click.option("--into", type=click.Path(path_type=Path), help="With --sync: the directory the files land in.")
@click.option(
    "--state",
    type=click.Path(path_type=Path),
    help="With --sync: the files it wrote (written after each pass); alone: exit 0 once it exists.",
)
@click.option("--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="Print only the final line.")
@click.option("--debug", is_flag=True, help="Show the traceback on failure.")
def fetch(
    uri: str | None,
    dest: Path | None,
    sha256: str | None,
    items: tuple[tuple[str, str, str], ...],
    role: str | None,
    max_bytes: str | None,
    sync_list: Path | None,
    into: Path | None,
    state: Path | None,
    interval: float,
    quiet: bool,
    debug: bool,
) -> None:
    """Download URI (s3://, http(s)://, pvc://, file://, path) to DEST atomically.

    \b
    Without --role, S3 endpoint and credentials come from AWS_ENDPOINT_URL(_S3),
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION. With --role source (or
    store), only MSERVE_SOURCE_* (or MSERVE_STORE_*) variables are read: AWS_* keys and
    AWS_ENDPOINT_URL, and for http(s) `token` (bearer) or `username` and `password`.
    A URI ending in '/' (or a local directory) fetches every file under it into DEST.
    With --item, every item is fetched in turn (same role and limit); the first failure stops.
    With --sync LIST --into DIR --state FILE, it runs until stopped: a pool pod's sidecar
    (mserve_runtime.fetch_sync). With only --state FILE: exit 0 once that sync's first pass is
    done, 1 before (its startup probe).
    """
    from mserve_runtime.fetch import FetchError
    from mserve_runtime.fetch import fetch as fetch_uri
    from mserve_runtime.fetch_limits import parse_max_bytes
    from mserve_runtime.storage_roles import parse_role

    try:
        parsed_role = parse_role(role)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--role") from None
    try:
        limit = parse_max_bytes(max_bytes, "--max-bytes (or MSERVE_FETCH_MAX_BYTES)")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if sync_list is not None or into is not None or state is not None:
        _sync(sync_list, into, state, interval, parsed_role, limit, uri is not None or bool(items))
        return
    started = time.monotonic()
    last_report = [started]

    def progress(size: int) -> None:
        now = time.monotonic()
        if not quiet and now - last_report[0] >= 2.0:
            last_report[0] = now
            click.echo(f"  {_mib(size)} after {now - started:.0f}s", err=True)

    if (uri is None) != (dest is None):
        raise click.UsageError("give URI and DEST together (or only --item)")
    todo = [(uri, Path(dest), sha256)] if uri is not None and dest is not None else []
    todo += [(u, Path(d), None if h == "-" else h) for u, d, h in items]
    if not todo:
        raise click.UsageError("nothing to fetch: give URI DEST or --item URI DEST SHA256")
    for each_uri, each_dest, each_sha in todo:
        try:
            result = fetch_uri(
                each_uri, each_dest, sha256=each_sha, progress=progress, role=parsed_role, max_bytes=limit
            )
        except FetchError as exc:
            if debug:
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        rate = result.size_bytes / max(result.seconds, 1e-6)
        files = f", {result.files} files" if result.files != 1 else ""
        click.echo(
            f"fetched {each_uri} -> {result.path} ({_mib(result.size_bytes)}{files} "
            f"in {result.seconds:.2f}s, {_mib(int(rate))}/s) sha256 {result.sha256}"
        )


def _sync(
    sync_list: Path | None,
    into: Path | None,
    state: Path | None,
    interval: float,
    role: Any,
    limit: int | None,
    items_given: bool,
) -> None:
    from mserve_runtime.fetch_sync import DirectorySync, is_synced
    from mserve_runtime.logs import configure_logging

    if items_given:
        raise click.UsageError(
            "--sync, --into and --state take no URI DEST or --item (the items are in LIST)"
        )
    if state is None:
        raise click.UsageError("--sync needs --state FILE (and --into DIR)")
    if sync_list is None and into is None:
        sys.exit(0 if is_synced(state) else 1)
    if sync_list is None or into is None:
        raise click.UsageError("give --sync LIST and --into DIR together")
    if not into.is_dir():
        raise click.BadParameter(f"{str(into)!r} is not a directory", param_hint="--into")
    configure_logging(json_logs=os.environ.get("MSERVE_JSON_LOGS", "").lower() == "true")
    DirectorySync(sync_list, into, state, role=role, max_bytes=limit).run(interval)


def settings_error(exc: Any, prefix: str = "MSERVE_") -> str:
    """A pydantic ValidationError of RuntimeSettings (or, with its `prefix`, PoolSettings) as
    one line per setting, each named by its field and its variable."""
    lines = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:
            lines.append(message)
            continue
        field = ".".join(str(part) for part in error["loc"])
        received = repr(error.get("input"))
        received = received if len(received) <= 80 else received[:80] + "..."
        variable = f"{prefix}{str(error['loc'][0]).upper()}"
        lines.append(f"{field} ({variable}): {message}; received {received}")
    return "\n".join(lines)


@click.command()
@click.argument("model_path", type=click.Path(exists=True, dir_okay=False), required=False)
@click.option("--name", help="Model name in the URLs (/v2/models/NAME). [env MSERVE_MODEL_NAME]")
@click.option("--port", type=int, help="REST port. [env MSERVE_HTTP_PORT; 8080]")
@click.option("--grpc-port", type=int, help="gRPC port, 0 disables. [env MSERVE_GRPC_PORT; 8081]")
@click.option("--host", help="Bind address. [env MSERVE_HOST; 0.0.0.0]")
@click.option("--max-batch-size", type=int, help="Rows per batched run, 1 = off. [MSERVE_MAX_BATCH_SIZE]")
@click.option("--max-batch-delay-ms", type=float, help="Longest batching wait. [MSERVE_MAX_BATCH_DELAY_MS]")
@click.option("--threads", type=int, help="Intra-op threads, 0 = cgroup CPU limit. [MSERVE_THREADS]")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Execution provider. [MSERVE_DEVICE; cpu]")
@click.option(
    "--max-request-bytes",
    type=int,
    help="Larger bodies get 413; unset: from the memory limit. [MSERVE_MAX_REQUEST_BYTES]",
)
@click.option("--max-in-flight", type=int, help="More requests get 503; 0 = derived. [MSERVE_MAX_IN_FLIGHT]")
@click.option(
    "--max-queue-delay-ms",
    type=float,
    help="Past a batch per worker, 503 while runs wait longer; 0 = off. [MSERVE_MAX_QUEUE_DELAY_MS; 100]",
)
@click.option(
    "--latency-tolerance",
    type=float,
    help="Adaptive in-flight limit: runs within this x the fastest; 0 = off. [MSERVE_LATENCY_TOLERANCE]",
)
@click.option("--latency-slack-ms", type=float, help="Allowance on top of it. [MSERVE_LATENCY_SLACK_MS; 5]")
@click.option("--request-timeout-s", type=float, help="Deadline, 504 past it. [MSERVE_REQUEST_TIMEOUT_S]")
@click.option("--admin-port", type=int, help="Metrics, OpenAPI, docs; 0 = free. [MSERVE_ADMIN_PORT; 8082]")
@click.option("--docs-ui/--no-docs-ui", default=None, help="Serve /docs on the admin port. [MSERVE_DOCS_UI]")
@click.option("--auth", help="none, apiKey or kubernetes. [MSERVE_AUTH; none]")
@click.option("--api-keys-dir", help="A subdirectory per key Secret. [MSERVE_API_KEYS_DIR]")
@click.option(
    "--allowed-service-accounts", help="ns/name or ns/*, comma-separated. [MSERVE_ALLOWED_SERVICE_ACCOUNTS]"
)
@click.option("--token-audience", help="Audience of callers' tokens. [MSERVE_TOKEN_AUDIENCE; mserve]")
@click.option("--kube-api-url", help="API server for TokenReviews; unset: in-cluster. [MSERVE_KUBE_API_URL]")
@click.option("--kube-token-file", help="Credential for TokenReviews. [MSERVE_KUBE_TOKEN_FILE]")
@click.option("--kube-ca-file", help="CA of the API server. [MSERVE_KUBE_CA_FILE]")
@click.option("--rate-limit-rps", type=float, help="Per caller, 0 = off. [MSERVE_RATE_LIMIT_RPS]")
@click.option("--rate-limit-burst", type=int, help="Per caller, 0 = the rate. [MSERVE_RATE_LIMIT_BURST]")
@click.option("--tls-cert-file", help="PEM chain: serve TLS. [MSERVE_TLS_CERT_FILE]")
@click.option("--tls-key-file", help="PEM key. [MSERVE_TLS_KEY_FILE]")
@click.option("--rollout-file", help="Canary rollout (JSON), re-read each second. [MSERVE_ROLLOUT_FILE]")
@click.option(
    "--shadow-max-in-flight", type=int, help="Mirrored requests at once. [MSERVE_SHADOW_MAX_IN_FLIGHT; 4]"
)
@click.option("--json-logs/--text-logs", default=None, help="Log format. [MSERVE_JSON_LOGS]")
@click.option("--access-log/--no-access-log", default=None, help="A line per request. [MSERVE_ACCESS_LOG]")
@click.option("--log-level", help="debug, info, warning, error. [MSERVE_LOG_LEVEL]")
@click.option(
    "--pool",
    "pool_dir",
    type=click.Path(file_okay=False),
    help="Serve every model in this directory (pool mode), not MODEL_PATH. [MSERVE_POOL_DIR]",
)
@click.option(
    "--pool-memory-bytes", type=int, help="Memory budget of loaded models. [MSERVE_POOL_MEMORY_BYTES]"
)
@click.option("--pool-preload", help="Models to load at start, comma-separated or '*'. [MSERVE_POOL_PRELOAD]")
def serve(
    model_path: str | None,
    pool_dir: str | None,
    pool_memory_bytes: int | None,
    pool_preload: str | None,
    **options: object,
) -> None:
    """Serve the ONNX model at MODEL_PATH over the V2 inference protocol (REST + gRPC);
    with --pool DIR, serve every model in DIR, loaded on demand within a memory budget.

    Every option can also come from its MSERVE_* environment variable; a flag wins.
    """
    from pydantic import ValidationError

    from mserve_runtime.pool_settings import PoolSettings
    from mserve_runtime.server import run
    from mserve_runtime.settings import RuntimeSettings

    renames = {"name": "model_name", "port": "http_port"}
    overrides = {renames.get(k, k): v for k, v in options.items() if v is not None}
    if model_path is not None:
        overrides["model_path"] = model_path
    pool_overrides = {"dir": pool_dir, "memory_bytes": pool_memory_bytes, "preload": pool_preload}
    try:
        settings = RuntimeSettings(**overrides)
    except ValidationError as exc:
        raise click.UsageError(settings_error(exc)) from None
    try:
        pool = PoolSettings(**{k: v for k, v in pool_overrides.items() if v is not None})
    except ValidationError as exc:
        raise click.UsageError(settings_error(exc, "MSERVE_POOL_")) from None
    if pool.dir:
        if model_path is not None:
            raise click.UsageError("give MODEL_PATH or --pool DIR, not both")
        # The process-wide series (requests shed) carry this name; each model its own.
        sys.exit(run(settings.model_copy(update={"model_name": "_pool"}), pool))
    if not settings.model_path:
        raise click.UsageError("give MODEL_PATH (or set MSERVE_MODEL_PATH), or --pool DIR")
    sys.exit(run(settings))
