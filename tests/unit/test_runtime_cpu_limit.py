"""Intra-op threads from the cgroup CPU limit (v2 cpu.max, v1 cfs quota)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mserve_runtime import cpu_limit


@pytest.fixture(autouse=True)
def eight_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_limit, "available_cpus", lambda: 8)


def test_cgroup_v2_quota_rounds_up(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert cpu_limit.cgroup_cpu_limit(tmp_path) == 2.5
    assert cpu_limit.default_threads(tmp_path) == 3


def test_cgroup_v2_unlimited_uses_visible_cpus(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_limit.cgroup_cpu_limit(tmp_path) is None
    assert cpu_limit.default_threads(tmp_path) == 8


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    v1 = tmp_path / "cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_limit.default_threads(tmp_path) == 1


def test_cgroup_v1_unlimited(tmp_path: Path) -> None:
    v1 = tmp_path / "cpu,cpuacct"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_limit.default_threads(tmp_path) == 8


def test_limit_above_visible_cpus_is_capped(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("1600000 100000\n")
    assert cpu_limit.default_threads(tmp_path) == 8


def test_no_cgroup_files(tmp_path: Path) -> None:
    assert cpu_limit.default_threads(tmp_path) == 8
