"""`auto`'s choice on measured figures: the margin, the serving batch, ties to accuracy, fp32 otherwise."""

from __future__ import annotations

from pathlib import Path

from mserve_contract.optimization_report import OutputValidation
from mserve_optimizer.auto_select import choose_auto
from mserve_optimizer.quantize import Variant
from mserve_optimizer.search import Built, Judged


def _judged(name: str, mode: str, small: float, large: float, cosine: float = 0.999) -> Judged:
    check = OutputValidation(
        name="y",
        max_abs_error=0.0,
        mean_rel_error=0.0,
        cosine=cosine,
        cosine_min=cosine,
        passed=cosine > 0.98,
    )
    built = Built(Variant(name, "", lambda s, d: None, mode), Path(f"/tmp/{name}.onnx"))
    return Judged(built, [check], small, large)


def test_fp32_when_no_variant_beats_it_by_the_margin() -> None:
    fp32 = _judged("fp32", "none", 1.0, 10.0)
    slower = _judged("dyn", "dynamic-int8", 1.7, 9.0)  # the digits MLP: 0.58x at batch 1
    barely = _judged("static", "static-int8", 0.97, 9.8)  # 3%: inside the noise
    chosen, why = choose_auto([fp32, slower, barely], 32)
    assert chosen is fp32
    assert "5% faster" in why
    assert "0.59x at batch 1" in slower.verdict
    assert "not 5% faster" in barely.verdict


def test_a_variant_slower_at_the_serving_batch_does_not_pay() -> None:
    fp32 = _judged("fp32", "none", 1.0, 10.0)
    fast_small_slow_large = _judged("dyn", "dynamic-int8", 0.5, 12.0)
    chosen, _ = choose_auto([fp32, fast_small_slow_large], 32)
    assert chosen is fp32
    assert "0.83x at batch 32" in fast_small_slow_large.verdict


def test_fastest_paying_variant_wins_and_a_failing_one_never_does() -> None:
    fp32 = _judged("fp32", "none", 1.0, 10.0)
    failing = _judged("per-tensor", "dynamic-int8", 0.2, 2.0, cosine=0.5)
    good = _judged("per-channel", "dynamic-int8", 0.5, 5.0)
    better = _judged("static", "static-int8", 0.4, 4.0)
    chosen, why = choose_auto([fp32, failing, good, better], 32)
    assert chosen is better
    assert "2.50x at batch 1" in why
    assert failing.verdict == "failed validation"
    assert "static did better" in good.verdict


def test_within_the_tie_the_more_accurate_variant_wins() -> None:
    fp32 = _judged("fp32", "none", 1.0, 10.0)
    fast = _judged("per-tensor", "dynamic-int8", 0.50, 5.0, cosine=0.991)
    accurate = _judged("per-channel", "dynamic-int8", 0.51, 5.05, cosine=0.999)
    chosen, _ = choose_auto([fp32, fast, accurate], 32)
    assert chosen is accurate
