"""When an explicitly requested mode counts as slower than the fp32 original: the 5% band, both batches."""

from __future__ import annotations

import pytest
from mserve_contract.optimization_report import LatencyFigures
from mserve_optimizer.pipeline import slower_than_original


def _latency(small: float, large: float) -> LatencyFigures:
    return LatencyFigures(
        batch_large=32,
        original_ms_small=1.0,
        optimized_ms_small=1 / small,
        original_ms_large=10.0,
        optimized_ms_large=10 / large,
        ratio_small=small,
        ratio_large=large,
    )


def test_digits_mlp_int8_at_batch_1_is_slower_with_its_figures() -> None:
    text = slower_than_original("dynamic-int8", _latency(0.58, 1.02))
    assert text == "dynamic-int8 is slower than the fp32 original here: 0.58x at batch 1, 1.02x at batch 32"


def test_slower_only_at_the_serving_batch_counts_too() -> None:
    assert "0.80x at batch 32" in slower_than_original("fp16", _latency(1.3, 0.8))


@pytest.mark.parametrize("mode", ["none", "auto"])
def test_none_and_auto_are_never_reported_slower(mode: str) -> None:
    assert slower_than_original(mode, _latency(0.5, 0.5)) == ""


def test_inside_the_noise_band_is_not_slower() -> None:
    assert slower_than_original("static-int8", _latency(0.96, 1.2)) == ""
