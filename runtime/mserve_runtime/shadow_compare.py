"""Do two models answer alike? The figures both the optimizer's offline validation and the
runtime's live shadow comparison use: cosine, absolute error and top-1 per row.

Pure numpy, nothing about HTTP: the optimizer imports these (one definition of each figure).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_COSINE = 0.99


def _rows(array: np.ndarray) -> np.ndarray:
    values = np.asarray(array, dtype=np.float64)
    if values.ndim == 0:
        return values.reshape(1, 1)
    return values.reshape(values.shape[0], -1)


def row_cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row (first axis) of two arrays of one shape; two all-zero rows
    are alike (1.0), one all-zero row is not (0.0)."""
    a, b = _rows(reference), _rows(candidate)
    dot = (a * b).sum(axis=1)
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    norms = norm_a * norm_b
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        cosine = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 0.0)
    return np.where((norm_a == 0) & (norm_b == 0), 1.0, cosine)


def flat_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Cosine of the two arrays flattened (NaN counts as no agreement: 0.0)."""
    cosine = row_cosines(np.reshape(reference, (1, -1)), np.reshape(candidate, (1, -1)))[0]
    return float(np.nan_to_num(cosine, nan=0.0))


def abs_errors(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """|candidate - reference| element by element; a NaN answer is infinitely wrong."""
    diff = np.abs(np.asarray(candidate, dtype=np.float64) - np.asarray(reference, dtype=np.float64))
    return np.nan_to_num(diff, nan=np.inf)


def top1_matches(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray | None:
    """Per row, whether the argmax over the last axis is the same; None where that means
    nothing (rank below 2, or a last axis of one)."""
    if reference.ndim < 2 or reference.shape[-1] < 2:
        return None
    return (reference.argmax(axis=-1) == candidate.argmax(axis=-1)).reshape(-1)


@dataclass(frozen=True, slots=True)
class OutputAgreement:
    """One output's figures; `cosine` 0 and `max_abs` inf when the shapes differ or it is missing."""

    name: str
    cosine: float
    max_abs: float
    top1_rows: int = 0
    top1_same: int = 0


@dataclass(frozen=True, slots=True)
class Agreement:
    """A whole answer against another: each output's figures and the verdict."""

    outputs: tuple[OutputAgreement, ...]
    agree: bool

    @property
    def min_cosine(self) -> float:
        return min((o.cosine for o in self.outputs), default=1.0)

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)


def compare_output(name: str, reference: np.ndarray, candidate: np.ndarray | None) -> OutputAgreement:
    """The figures of one output tensor (`candidate` None: the other answer lacks it)."""
    if candidate is None or reference.shape != candidate.shape:
        return OutputAgreement(name, 0.0, float("inf"))
    if reference.dtype == object or candidate.dtype == object:  # BYTES: equal or not
        same = bool(np.array_equal(reference, candidate))
        return OutputAgreement(name, 1.0 if same else 0.0, 0.0 if same else float("inf"))
    errors = abs_errors(reference, candidate)
    top1 = top1_matches(reference, candidate)
    return OutputAgreement(
        name,
        flat_cosine(reference, candidate),
        float(errors.max()) if errors.size else 0.0,
        0 if top1 is None else int(top1.size),
        0 if top1 is None else int(top1.sum()),
    )


def compare_answers(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    cosine: float | None = None,
    max_abs_error: float | None = None,
) -> Agreement:
    """Every output of `reference` against the same-named one of `candidate`. They agree when
    each output's cosine is at least `cosine` (default 0.99), its max abs error at most
    `max_abs_error` (when given), every row has the same top-1, and no output is missing, of
    another shape, or NaN where the reference is not."""
    bound = DEFAULT_COSINE if cosine is None else cosine
    outputs = tuple(compare_output(name, array, candidate.get(name)) for name, array in reference.items())
    agree = all(
        o.cosine >= bound
        and (max_abs_error is None or o.max_abs <= max_abs_error)
        and o.max_abs != float("inf")
        and o.top1_same == o.top1_rows
        for o in outputs
    )
    return Agreement(outputs, agree)
