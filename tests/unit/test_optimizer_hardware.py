"""What the report says the latencies were measured on, read from /proc/cpuinfo's text."""

from __future__ import annotations

from mserve_contract.optimization_report import Hardware
from mserve_optimizer.hardware import cpu_facts, detect

CPUINFO = """processor	: 0
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu sse2 avx2 avx512f avx512_vnni amx_tile amx_int8 amx_bf16
processor	: 1
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu sse2
"""


def test_the_first_cpus_model_and_only_the_int8_relevant_flags() -> None:
    model, flags = cpu_facts(CPUINFO)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert flags == ["avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_int8", "amx_bf16"]


def test_no_cpuinfo_fields_give_empty_facts_not_an_error() -> None:
    assert cpu_facts("garbage\n: : :\n") == ("", [])


def test_this_machine_and_the_status_text() -> None:
    found = detect("cpu", threads=3)
    assert found.cpus == 3
    assert found.gpu == ""
    text = Hardware(cpu_model="X", cpu_flags=["avx2"], cpus=2, gpu="NVIDIA H200").text()
    assert text == "NVIDIA H200; X (avx2), 2 CPUs"
