"""Memory one request costs the server: peak RSS growth per MiB of body, JSON and binary.

    python benchmarks/request_memory.py [--baseline-tree DIR] [--quick]

Each measurement starts a fresh `mserve serve` with the limits a pod with a 1 GiB memory
limit derives (MSERVE_MEMORY_LIMIT_BYTES=1 GiB), resets the process's peak RSS
(/proc/PID/clear_refs), sends one request and reads the peak back (VmHWM). The largest
requests those limits accept are sent too, and their absolute peak compared with 1 GiB.
With --baseline-tree (a checkout's root, e.g. of the previous commit) the same requests go
to a server run from that tree's code, in the same run, for the ratio column.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "runtime"))

from models import build_tiny_mlp  # noqa: E402
from served import Server, serving  # noqa: E402

GIB = 1 << 30
MIB = 1 << 20
FEATURES = 64


def _status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) << 10
    return fields


def json_request(size: int, short: bool) -> bytes:
    """About `size` bytes of V2 JSON: numbers written "0.5" (short, the costliest per byte) or
    as float64 text of random values (what `json.dumps(array.tolist())` writes)."""
    per = 4 if short else 20
    rows = max(1, size // (per * FEATURES))
    values = [0.5] * (rows * FEATURES) if short else np.random.default_rng(0).random(rows * FEATURES).tolist()
    tensor = {"name": "x", "datatype": "FP32", "shape": [rows, FEATURES], "data": values}
    return orjson.dumps({"inputs": [tensor]})


def binary_request(size: int) -> tuple[bytes, dict[str, str]]:
    rows = max(1, size // (4 * FEATURES))
    raw = np.random.default_rng(0).random((rows, FEATURES), dtype=np.float32).tobytes()
    tensor = {
        "name": "x",
        "datatype": "FP32",
        "shape": [rows, FEATURES],
        "parameters": {"binary_data_size": len(raw)},
    }
    header = orjson.dumps({"inputs": [tensor]})
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


@dataclass
class Measured:
    status: int
    idle: int
    growth: int
    peak: int


def measure(model: Path, work: Path, tree: Path | None, body: bytes, headers: dict[str, str]) -> Measured:
    """One request to a fresh server; its peak RSS growth over the RSS just before."""
    env = {"MSERVE_MEMORY_LIMIT_BYTES": str(GIB)}
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(str(tree / p) for p in ("cli", "contract", "runtime"))
    with serving(model, "mlp", work / "mserve.log", "--no-access-log", env=env) as server:
        return _one(server, body, headers)


def _one(server: Server, body: bytes, headers: dict[str, str]) -> Measured:
    pid = server.proc.pid
    httpx.post(f"{server.url}/v2/models/mlp/infer", content=json_request(4096, True), timeout=60)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak RSS := current RSS
    idle = _status(pid)["VmRSS"]
    r = httpx.post(f"{server.url}/v2/models/mlp/infer", content=body, headers=headers, timeout=600)
    peak = _status(pid)["VmHWM"]
    return Measured(r.status_code, idle, peak - idle, peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-tree", type=Path, help="a checkout whose runtime is the baseline")
    parser.add_argument("--quick", action="store_true", help="skip the 64 MiB JSON request")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "runtime"))
    from mserve_runtime.request_limits import RequestLimits

    limits = RequestLimits.derive(GIB)
    largest_binary = min(limits.max_request_bytes, limits.max_elements * 4)
    cases: list[tuple[str, bytes, dict[str, str]]] = [
        ("JSON, numbers as 0.5", json_request(4 * MIB, True), {}),
        ("JSON, random float64 text", json_request(4 * MIB, False), {}),
        ("binary FP32", *binary_request(4 * MIB)),
        ("JSON 0.5, largest accepted", json_request(limits.max_json_bytes - 4096, True), {}),
        ("binary FP32, largest accepted", *binary_request(largest_binary - 4096)),
    ]
    if not args.quick:
        cases.append(("JSON 0.5, 64 MiB (old default limit)", json_request(64 * MIB - 4096, True), {}))
    print(
        f"# request memory: 1 GiB pod limits: body {limits.max_request_bytes / MIB:.0f} MiB, "
        f"JSON {limits.max_json_bytes / MIB:.0f} MiB, {limits.max_elements:,} elements; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    header = "| request | body MiB | status | idle RSS MiB | peak growth MiB | growth per body MiB |"
    header += " peak of 1 GiB |"
    rule = "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    if args.baseline_tree:
        header += " baseline status | baseline growth per MiB | growth vs baseline |"
        rule += " ---: | ---: | ---: |"
    lines = [header, rule]
    with tempfile.TemporaryDirectory(prefix="mserve-memory-") as tmp:
        work = Path(tmp)
        model = build_tiny_mlp(work / "mlp.onnx", sizes=(FEATURES, 32, 4))
        for name, body, headers in cases:
            mib = len(body) / MIB
            new = measure(model, work, None, body, headers)
            line = (
                f"| {name} | {mib:.1f} | {new.status} | {new.idle / MIB:.0f} | {new.growth / MIB:.0f} | "
                f"{new.growth / MIB / mib:.1f} | {new.peak / GIB:.0%} |"
            )
            if args.baseline_tree:
                old = measure(model, work, args.baseline_tree, body, headers)
                ratio = f"{new.growth / old.growth:.2f}" if old.growth > 0 else "-"
                per_mib = old.growth / MIB / mib
                line += f" {old.status} | {per_mib:.1f} (peak {old.peak / MIB:.0f} MiB) | {ratio} |"
            lines.append(line)
            print(line, flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
