"""Validation figures and thresholds on arrays whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from mserve_optimizer.validate import compare_output, is_classifier_output, row_cosines, thresholds_for


def test_identical_outputs_pass_everything() -> None:
    x = np.random.default_rng(0).normal(size=(16, 10)).astype(np.float32)
    result = compare_output("logits", x, x.copy(), thresholds_for("none", 0.0, {}))
    assert result.passed
    assert (result.max_abs_error, result.mean_rel_error, result.cosine, result.top1_agreement) == (0, 0, 1, 1)


def test_known_figures() -> None:
    reference = np.array([[1.0, 0.0], [0.0, 2.0]])
    candidate = np.array([[0.0, 1.0], [0.0, 2.5]])
    result = compare_output("scores", reference, candidate, {"cosine": 0.9})
    assert result.max_abs_error == 1.0
    assert result.mean_rel_error == pytest.approx(2.5 / 3.0)
    assert result.cosine == pytest.approx(0.5)  # rows: orthogonal (0) and parallel (1)
    assert result.cosine_min == 0.0
    assert result.top1_agreement == 0.5
    assert not result.passed
    assert result.failures == ["cosine 0.5 < 0.9 (short by 0.4)"]


def test_nan_and_shape_mismatch_fail() -> None:
    reference = np.ones((2, 3))
    assert not compare_output("y", reference, np.full((2, 3), np.nan), {}).passed
    assert "shape" in compare_output("y", reference, np.ones((2, 4)), {}).failures[0]


def test_zero_rows_count_as_agreeing() -> None:
    assert row_cosines(np.zeros((2, 3)), np.zeros((2, 3))).tolist() == [1.0, 1.0]


def test_classifier_shaped_outputs() -> None:
    assert is_classifier_output("logits", np.zeros((4, 10), dtype=np.float32))
    assert not is_classifier_output("sentence_embedding", np.zeros((4, 384), dtype=np.float32))
    assert not is_classifier_output("last_hidden_state", np.zeros((4, 8, 384), dtype=np.float32))
    assert not is_classifier_output("label", np.zeros((4, 10), dtype=np.int64))


def test_thresholds_per_mode_pruning_and_overrides() -> None:
    assert thresholds_for("dynamic-int8", 0.0, {})["cosine"] == 0.99
    assert thresholds_for("fp16", 0.0, {})["cosine"] > thresholds_for("static-int8", 0.0, {})["cosine"]
    pruned = thresholds_for("none", 0.5, {})
    assert pruned["cosine"] == 0.98
    assert pruned["mean_rel"] == 0.30
    assert thresholds_for("none", 0.5, {"cosine": 0.5, "max_abs": 1.0}) == {
        **pruned,
        "cosine": 0.5,
        "max_abs": 1.0,
    }
