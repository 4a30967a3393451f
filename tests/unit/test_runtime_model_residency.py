"""The pool's bookkeeping: least-recently-used victims, models in use kept, names accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
from mserve_runtime.model_repository import list_repository, valid_model_name
from mserve_runtime.model_residency import ModelState, NoRoom, Residency, held_bytes


def _loaded(residency: Residency, *footprints: tuple[str, int]) -> None:
    for name, size in footprints:
        residency.start_loading(name, size)
        residency.loaded(name, size)


def test_nothing_is_evicted_while_the_model_fits() -> None:
    residency = Residency(100)
    _loaded(residency, ("a", 40))
    assert residency.victims(60, keep="b") == []


def test_least_recently_used_go_first_and_only_as_many_as_needed() -> None:
    residency = Residency(100)
    _loaded(residency, ("a", 30), ("b", 30), ("c", 30))
    residency.touch("a")  # b is now the least recently used, then c
    assert residency.victims(20, keep="d") == ["b"]
    assert residency.victims(50, keep="d") == ["b", "c"]


def test_models_in_use_are_never_victims() -> None:
    residency = Residency(100)
    _loaded(residency, ("a", 50), ("b", 50))
    residency.record("a").active = 1
    assert residency.victims(50, keep="c") == ["b"]
    residency.record("b").active = 2
    with pytest.raises(NoRoom) as caught:
        residency.victims(50, keep="c")
    assert caught.value.busy == ["a", "b"]


def test_a_loading_model_holds_its_estimate() -> None:
    residency = Residency(100)
    residency.start_loading("a", 70)
    assert residency.used_bytes == 70
    assert residency.record("a").state is ModelState.LOADING
    with pytest.raises(NoRoom):
        residency.victims(40, keep="b")
    residency.failed("a", "broken", (1, 2))
    assert residency.used_bytes == 0


def test_the_last_footprint_is_the_next_estimate() -> None:
    residency = Residency(100)
    assert residency.estimate("a", 10) == 10
    _loaded(residency, ("a", 25))
    residency.unloaded("a", ModelState.EVICTED, "room")
    assert residency.used_bytes == 0
    assert residency.estimate("a", 10) == 25


def test_held_bytes_grows_with_an_allocation() -> None:
    before = held_bytes()
    block = bytearray(8 << 20)
    assert held_bytes() - before >= 8 << 20
    del block


@pytest.mark.parametrize("name", ["m", "m0", "digits-v2", "a.b_c", "A" * 63])
def test_valid_names(name: str) -> None:
    assert valid_model_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", "a..b", "-a", "a-", "a b", "a/b", "ä", "a\x00", "A" * 64])
def test_invalid_names(name: str) -> None:
    assert not valid_model_name(name)


def test_listing_takes_both_layouts_and_skips_the_rest(tmp_path: Path) -> None:
    (tmp_path / "flat.onnx").write_bytes(b"x" * 3)
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "model.onnx").write_bytes(b"x" * 5)
    (tmp_path / "empty").mkdir()
    (tmp_path / ".hidden.onnx").write_bytes(b"x")
    (tmp_path / "bad name.onnx").write_bytes(b"x")
    (tmp_path / "readme.md").write_text("no")
    (tmp_path / "flat").mkdir()  # a second source of `flat`: the first in name order ("flat") wins
    (tmp_path / "flat" / "model.onnx").write_bytes(b"y")
    found = list_repository(tmp_path)
    assert {name: e.size_bytes for name, e in found.items()} == {"flat": 1, "nested": 5}
