"""Request limits from the cgroup memory limit (v1 and v2 files), and the shape checks they feed."""

from __future__ import annotations

from pathlib import Path

import pytest
from mserve_runtime.errors import InvalidInput
from mserve_runtime.memory_limit import cgroup_memory_limit
from mserve_runtime.request_limits import MAX_RANK, RequestLimits, check_shape, flatten_json_data
from mserve_runtime.settings import RuntimeSettings

GIB = 1 << 30
NO_PROC = Path("/nonexistent/cgroup")


def test_v2_memory_max(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("1073741824\n")
    assert cgroup_memory_limit(tmp_path, NO_PROC) == GIB


def test_v2_unlimited(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("max\n")
    assert cgroup_memory_limit(tmp_path, NO_PROC) is None


def test_v1_limit_in_bytes(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("536870912\n")
    assert cgroup_memory_limit(tmp_path, NO_PROC) == GIB // 2


def test_v1_unlimited_is_the_huge_page_aligned_number(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroup_memory_limit(tmp_path, NO_PROC) is None


def test_no_cgroup_files_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_memory_limit(tmp_path, NO_PROC) is None


def test_garbage_in_the_file_is_no_limit(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("lots\n")
    assert cgroup_memory_limit(tmp_path, NO_PROC) is None


def test_own_cgroup_and_its_parents_count_outside_a_namespace(tmp_path: Path) -> None:
    # v2: /proc/self/cgroup names our group; a parent's smaller limit wins.
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/kubepods/pod1/ctr\n")
    (tmp_path / "kubepods" / "pod1" / "ctr").mkdir(parents=True)
    (tmp_path / "kubepods" / "pod1" / "ctr" / "memory.max").write_text("max\n")
    (tmp_path / "kubepods" / "pod1" / "memory.max").write_text(f"{2 * GIB}\n")
    (tmp_path / "kubepods" / "memory.max").write_text(f"{8 * GIB}\n")
    assert cgroup_memory_limit(tmp_path, proc) == 2 * GIB


def test_own_v1_memory_cgroup(tmp_path: Path) -> None:
    proc = tmp_path / "proc-cgroup"
    proc.write_text("5:cpu,cpuacct:/\n4:memory:/job/abc\n")
    (tmp_path / "memory" / "job" / "abc").mkdir(parents=True)
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (tmp_path / "memory" / "job" / "abc" / "memory.limit_in_bytes").write_text(f"{GIB}\n")
    assert cgroup_memory_limit(tmp_path, proc) == GIB


def test_limits_for_a_1_gib_pod() -> None:
    limits = RequestLimits.derive(GIB)
    assert limits.max_request_bytes == 64 << 20  # capped at the old default
    assert limits.max_json_bytes == 16 << 20  # a quarter of 1 GiB over JSON's x16
    assert limits.max_elements == (256 << 20) // 64


def test_limits_shrink_with_a_small_pod() -> None:
    limits = RequestLimits.derive(128 << 20)
    assert limits.max_request_bytes == 16 << 20
    assert limits.max_json_bytes == 2 << 20
    assert limits.max_elements == 512 << 10


def test_settings_win_over_derivation_and_json_stays_within_the_body(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text(f"{GIB}\n")
    settings = RuntimeSettings(max_request_bytes=1000, max_elements=7)
    limits = RequestLimits.from_settings(settings, tmp_path)
    assert limits == RequestLimits(max_request_bytes=1000, max_json_bytes=1000, max_elements=7)


def test_memory_setting_replaces_the_cgroup(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text(f"{64 * GIB}\n")
    settings = RuntimeSettings(memory_limit_bytes=GIB)
    assert RequestLimits.from_settings(settings, tmp_path) == RequestLimits.derive(GIB)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MSERVE_MAX_ELEMENTS", "-1"),
        ("MSERVE_MAX_ELEMENTS", "0"),
        ("MSERVE_MAX_ELEMENTS", "ten"),
        ("MSERVE_MAX_JSON_BYTES", "0"),
        ("MSERVE_MAX_REQUEST_BYTES", "1.5"),
        ("MSERVE_MEMORY_LIMIT_BYTES", "-1"),
        ("MSERVE_MEMORY_LIMIT_BYTES", "1G"),
    ],
)
def test_hostile_limit_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=variable.removeprefix("MSERVE_").lower()):
        RuntimeSettings()


LIMITS = RequestLimits(max_request_bytes=1 << 20, max_json_bytes=1 << 20, max_elements=1000)


def test_check_shape_counts_elements() -> None:
    assert check_shape("x", [10, 100], LIMITS) == 1000
    assert check_shape("x", [], LIMITS) == 1
    assert check_shape("x", [0, 5], LIMITS) == 0


@pytest.mark.parametrize(
    ("shape", "counted", "words"),
    [
        ([1] * (MAX_RANK + 1), 0, ["'x'", "65 dimensions"]),
        ([3, -1], 0, ["'x'", "non-negative"]),
        ([0, 1 << 62, 1 << 62], 0, ["'x'", "more than 1000 elements"]),
        ([1001], 0, ["'x'", "MSERVE_MAX_ELEMENTS"]),
        ([600], 500, ["'x'", "more than 500 elements", "limit of 1000"]),
    ],
)
def test_check_shape_refuses(shape: list[int], counted: int, words: list[str]) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_shape("x", shape, LIMITS, counted)
    for word in words:
        assert word in caught.value.message


def test_flatten_nested_and_flat() -> None:
    assert flatten_json_data("x", [[1, 2], [3, 4]], 2) == [1, 2, 3, 4]
    assert flatten_json_data("x", [1, 2, 3, 4], 2) == [1, 2, 3, 4]
    assert flatten_json_data("x", 5, 0) == [5]


def test_flatten_refuses_nesting_deeper_than_the_rank() -> None:
    deep: list = ["a"]
    for _ in range(5000):  # far deeper than Python's recursion limit
        deep = [deep]
    with pytest.raises(InvalidInput, match="nested deeper than the shape's 1 dimensions"):
        flatten_json_data("x", deep, 1)


def test_flatten_refuses_ragged_data() -> None:
    with pytest.raises(InvalidInput, match="regular array"):
        flatten_json_data("x", [[1, 2], [3]], 2)
    with pytest.raises(InvalidInput, match="regular array"):
        flatten_json_data("x", [[1, 2], 3], 2)
