"""The processes a load benchmark drives and watches: vegeta as an open loop, pinning to CPUs,
a process's CPU time and peak memory from /proc (used by overload.py and refusal_cost.py)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np
import orjson

from tests.support.cluster_access import cache_dir, versions

ROOT = Path(__file__).resolve().parent.parent
# vegeta's workers, each with its own keep-alive connection: a client fleet's pools, not one
# connection per outstanding request (with those, a slow server gets thousands of sockets).
CONNECTIONS = 512


@contextmanager
def pinned(cpus: set[int]) -> Iterator[None]:
    """This thread (and the processes and threads it starts meanwhile) on `cpus` only."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process and its threads have used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM), MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) / 1024


def vegeta_binary() -> Path:
    """hack/build.sh's cached vegeta, built on first use (a benchmark-only target, not `all`)."""
    binary = cache_dir() / "bin" / f"vegeta-{versions()['VEGETA_VERSION']}"
    if not binary.exists():
        subprocess.run(["bash", str(ROOT / "hack" / "build.sh"), "vegeta"], check=True)
    return binary


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    if not latencies_s:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan")}
    p50, p99 = np.percentile(latencies_s, [50, 99])
    return {"n": len(latencies_s), "p50_ms": 1000 * p50, "p99_ms": 1000 * p99}


def run_vegeta(url: str, body: bytes, rate: float, seconds: float, work: Path, cpu: int) -> dict:
    """An open loop (vegeta, pinned to `cpu`): `rate` requests/s for `seconds` whatever the
    answers do; per status (0 = no answer within 30 s), count and latency percentiles."""
    vegeta = str(vegeta_binary())
    (work / "body.json").write_bytes(body)
    (work / "targets.txt").write_text(f"POST {url}\nContent-Type: application/json\n@{work / 'body.json'}\n")
    attack = [
        "taskset", "-c", str(cpu), vegeta, "attack", "-format=http", f"-targets={work / 'targets.txt'}",
        f"-rate={round(rate)}/1s", f"-duration={seconds}s", "-timeout=30s", "-max-body=0",
        f"-max-workers={CONNECTIONS}", f"-max-connections={CONNECTIONS}", f"-output={work / 'results.bin'}",
    ]  # fmt: skip
    subprocess.run(attack, check=True, env={**os.environ, "GOMAXPROCS": "1"}, timeout=seconds + 60)
    encode = [vegeta, "encode", "--to", "json", str(work / "results.bin")]
    lines = subprocess.run(encode, capture_output=True, check=True).stdout.splitlines()
    by_status: dict[str, list[float]] = {}
    stamps = []
    for line in lines:
        result = orjson.loads(line)
        by_status.setdefault(str(result["code"]), []).append(result["latency"] / 1e9)
        stamps.append(result["timestamp"])
    stamps.sort()
    span = (datetime.fromisoformat(stamps[-1]) - datetime.fromisoformat(stamps[0])).total_seconds()
    return {
        "offered_rps": len(lines) / max(span, 1e-9),
        "sent": len(lines),
        "answered": len(lines) - len(by_status.get("0", [])),
        "status": {code: percentiles(values) for code, values in by_status.items()},
    }
