"""The processes a load benchmark drives and watches: vegeta as an open loop, pinning to CPUs,
a process's CPU time and peak memory from /proc (used by overload.py and refusal_cost.py)."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
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
# The attack's first second, while vegeta opens its connections (a burst of CONNECTIONS
# accepts and first requests at once), is also reported apart: "settled" leaves it out.
SETTLE_S = 1.0
# Set in the child that run_at_priority starts in a new session: the parent's pid.
_SESSION_MARK = "MSERVE_BENCH_SESSION_OF"


def default_priority() -> int:
    """The nice value benchmarks run at: -15 as root (so that the neighbours on a shared
    machine do not starve the measured server and its load generator), else unchanged (0)."""
    return -15 if os.geteuid() == 0 else 0


def add_priority_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nice",
        type=int,
        default=default_priority(),
        help="nice value of this benchmark, the servers and load generators it starts (they inherit "
        "it), and of its own scheduler autogroup: -20 to 19, default -15 as root, else 0; never a "
        "real-time class, which can hang a host",
    )


def run_at_priority(nice: int) -> str:
    """Go on at `nice`, with every process started from here; what was done, for the header.

    With the kernel's autogroups on (the default on desktop and many server kernels), a task's
    nice value counts only against its own session: the CPU is shared fairly between sessions
    first. So where they are on, this process runs the benchmark in a child that leads a new
    session, whose autogroup gets `nice` too (/proc/self/autogroup); the parent waits for it
    and forwards SIGINT and SIGTERM.
    """
    if not -20 <= nice <= 19:
        raise SystemExit(f"--nice must be from -20 to 19, received {nice}")
    before = os.getpriority(os.PRIO_PROCESS, 0)
    autogroups = Path("/proc/sys/kernel/sched_autogroup_enabled")
    grouped = autogroups.exists() and autogroups.read_text().strip() == "1"
    if grouped and nice != 0 and os.environ.get(_SESSION_MARK) != str(os.getppid()):
        env = {**os.environ, _SESSION_MARK: str(os.getpid())}
        child = subprocess.Popen([sys.executable, *sys.orig_argv[1:]], env=env, start_new_session=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda number, _frame: child.send_signal(number))
        raise SystemExit(child.wait())
    try:
        if nice != before:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        if grouped and nice != 0:
            Path("/proc/self/autogroup").write_text(str(nice))
    except PermissionError as exc:
        raise SystemExit(f"--nice {nice}: {exc} (a negative nice value needs root)") from exc
    where = f"autogroup {nice}, " if grouped and nice != 0 else ""
    return f"nice {nice} ({where}inherited by the server, clients and vegeta; was {before})"


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
    results = [orjson.loads(line) for line in lines]
    stamps = [datetime.fromisoformat(result["timestamp"]) for result in results]
    first = min(stamps)
    by_status: dict[str, list[float]] = {}
    settled: dict[str, list[float]] = {}
    for result, stamp in zip(results, stamps, strict=True):
        code, latency_s = str(result["code"]), result["latency"] / 1e9
        by_status.setdefault(code, []).append(latency_s)
        if (stamp - first).total_seconds() >= SETTLE_S:
            settled.setdefault(code, []).append(latency_s)
    span = (max(stamps) - first).total_seconds()
    return {
        "offered_rps": len(lines) / max(span, 1e-9),
        "sent": len(lines),
        "answered": len(lines) - len(by_status.get("0", [])),
        "status": {code: percentiles(values) for code, values in by_status.items()},
        "settled": {code: percentiles(values) for code, values in settled.items()},
    }
