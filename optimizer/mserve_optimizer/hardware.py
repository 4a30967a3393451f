"""What the optimizer measured on: the CPU model and the flags INT8 speed depends on, or the GPU.

INT8 pays on a CPU with VNNI (avx512_vnni, avx_vnni) or AMX and often not without them, so
the report says which it had; the Job runs where the serving pods run (operator's Job builder).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from mserve_contract.optimization_report import Hardware

from mserve_optimizer.ort_session import default_threads

# The flags that decide which INT8/FP16 kernels onnxruntime can use, in the order printed.
INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_facts(cpuinfo: str) -> tuple[str, list[str]]:
    """The model name and the INT8-relevant flags of the first CPU in a /proc/cpuinfo text."""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = " ".join(value.split())
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, [flag for flag in INT8_FLAGS if flag in flags]


def gpu_name() -> str:
    """The first GPU's name as nvidia-smi reports it ('' when there is none to ask)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return ""
    try:
        done = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout.strip().splitlines() or [""])[0] if done.returncode == 0 else ""


def detect(device: str, threads: int | None = None) -> Hardware:
    try:
        model, flags = cpu_facts(CPUINFO.read_text())
    except OSError:
        model, flags = "", []
    gpu = (gpu_name() or "CUDA device") if device == "cuda" else ""
    return Hardware(cpu_model=model, cpu_flags=flags, cpus=threads or default_threads(), gpu=gpu)
