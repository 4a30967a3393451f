"""Does the optimized model still answer like the original? Per-output figures against thresholds."""

from __future__ import annotations

import re

import numpy as np
from mserve_contract.optimization_report import OutputValidation
from mserve_runtime.shadow_compare import abs_errors, row_cosines, top1_matches

# Lower bounds for cosine/cosine_min/top1, upper bounds for max_abs/mean_rel.
# Cosine is the main criterion; mean_rel is a sanity bound (relative L1 runs high on
# outputs with many near-zero entries, such as normalized embeddings).
DEFAULT_THRESHOLDS: dict[str, dict[str, float]] = {
    "none": {"cosine": 0.9999, "mean_rel": 1e-3, "top1": 0.99},
    "fp16": {"cosine": 0.999, "mean_rel": 0.02, "top1": 0.98},
    "dynamic-int8": {"cosine": 0.99, "mean_rel": 0.20, "top1": 0.95},
    "static-int8": {"cosine": 0.98, "mean_rel": 0.25, "top1": 0.90},
}
# Pruning changes answers by design; it gets the looser of these and the mode's thresholds.
PRUNED_THRESHOLDS: dict[str, float] = {"cosine": 0.98, "mean_rel": 0.30, "top1": 0.90}
LOWER_BOUNDS = ("cosine", "cosine_min", "top1")
AUTO_WORST_SAMPLE = 0.97

# A rank-2 output with a modest number of columns is read as class scores, unless its name
# says it is a vector representation, where an argmax means nothing.
_NOT_A_CLASSIFIER = re.compile(r"embed|hidden|pool|feature|vector|state", re.IGNORECASE)
MAX_CLASSES = 1000


def thresholds_for(
    mode: str, prune: float, overrides: dict[str, float], *, auto: bool = False
) -> dict[str, float]:
    """`auto` (a variant `--quantize auto` tried) also bounds the worst sample: an automatic
    choice must not trade a few badly served inputs for speed nobody asked for."""
    chosen = dict(DEFAULT_THRESHOLDS[mode])
    if auto and mode != "none":
        chosen.setdefault("cosine_min", AUTO_WORST_SAMPLE)
    if prune > 0:
        for key, loose in PRUNED_THRESHOLDS.items():
            current = chosen.get(key)
            if current is None:
                chosen[key] = loose
            else:
                chosen[key] = min(current, loose) if key in LOWER_BOUNDS else max(current, loose)
    chosen.update(overrides)
    return chosen


def is_classifier_output(name: str, array: np.ndarray) -> bool:
    return (
        array.ndim == 2
        and 2 <= array.shape[1] <= MAX_CLASSES
        and np.issubdtype(array.dtype, np.floating)
        and not _NOT_A_CLASSIFIER.search(name)
    )


def compare_output(
    name: str, reference: np.ndarray, candidate: np.ndarray, thresholds: dict[str, float]
) -> OutputValidation:
    """The figures for one output, and which thresholds it misses."""
    if reference.shape != candidate.shape:
        return OutputValidation(
            name=name,
            max_abs_error=float("inf"),
            mean_rel_error=float("inf"),
            cosine=0.0,
            cosine_min=0.0,
            thresholds=thresholds,
            passed=False,
            failures=[f"shape {candidate.shape} differs from the original's {reference.shape}"],
        )
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    failures = []
    if not np.isfinite(cand).all() and np.isfinite(ref).all():
        failures.append("produces NaN or infinite values where the original does not")
    # A NaN or infinite answer is infinitely wrong, and agrees with nothing.
    diff = abs_errors(ref, cand)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(ref).sum())
    mean_rel = float(diff.sum() / scale) if scale > 0 else float(diff.sum() > 0)
    cosines = np.nan_to_num(row_cosines(ref, cand), nan=0.0)
    top1 = None
    if is_classifier_output(name, reference):
        matches = top1_matches(reference, candidate)
        top1 = None if matches is None else float(matches.mean())
    figures = {
        "max_abs": max_abs,
        "mean_rel": mean_rel,
        "cosine": float(cosines.mean()),
        "cosine_min": float(cosines.min()),
        "top1": top1,
    }
    for key, bound in thresholds.items():
        value = figures.get(key)
        if value is None:
            continue
        if key in LOWER_BOUNDS and not value >= bound:
            failures.append(f"{key} {value:.6g} < {bound:g} (short by {bound - value:.3g})")
        elif key not in LOWER_BOUNDS and not value <= bound:
            failures.append(f"{key} {value:.6g} > {bound:g} (over by {value - bound:.3g})")
    return OutputValidation(
        name=name,
        max_abs_error=max_abs,
        mean_rel_error=mean_rel,
        cosine=figures["cosine"],
        cosine_min=figures["cosine_min"],
        top1_agreement=top1,
        thresholds=thresholds,
        passed=not failures,
        failures=failures,
    )


def compare_outputs(
    names: list[str], reference: list[np.ndarray], candidate: list[np.ndarray], thresholds: dict[str, float]
) -> list[OutputValidation]:
    return [
        compare_output(name, ref, cand, thresholds)
        for name, ref, cand in zip(names, reference, candidate, strict=True)
    ]


def failure_message(results: list[OutputValidation]) -> str:
    failed = [r for r in results if not r.passed]
    return "; ".join(f"output {r.name!r}: {', '.join(r.failures)}" for r in failed)
