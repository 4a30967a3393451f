"""The runtime's `mserve` subcommands: each parses its options and delegates.

`serve` is added here next to `fetch` (see mserve_cli.main.SUBCOMMANDS).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


@click.command()
@click.argument("uri")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--sha256", metavar="HEX", help="Expected SHA-256 of the file (or of a directory's listing).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the final line.")
@click.option("--debug", is_flag=True, help="Show the traceback on failure.")
def fetch(uri: str, dest: Path, sha256: str | None, quiet: bool, debug: bool) -> None:
    """Download URI (s3://, http(s)://, pvc://, file://, path) to DEST atomically.

    \b
    S3 endpoint and credentials come from AWS_ENDPOINT_URL(_S3), AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY and AWS_REGION. A URI ending in '/' (or a local directory)
    fetches every file under it into the directory DEST.
    """
    from mserve_runtime.fetch import FetchError
    from mserve_runtime.fetch import fetch as fetch_uri

    started = time.monotonic()
    last_report = [started]

    def progress(size: int) -> None:
        now = time.monotonic()
        if not quiet and now - last_report[0] >= 2.0:
            last_report[0] = now
            click.echo(f"  {_mib(size)} after {now - started:.0f}s", err=True)

    try:
        result = fetch_uri(uri, dest, sha256=sha256, progress=progress)
    except FetchError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    rate = result.size_bytes / max(result.seconds, 1e-6)
    files = f", {result.files} files" if result.files != 1 else ""
    click.echo(
        f"fetched {uri} -> {result.path} ({_mib(result.size_bytes)}{files} in {result.seconds:.2f}s, "
        f"{_mib(int(rate))}/s) sha256 {result.sha256}"
    )
