"""Make each candidate variant, validate it against the original, time it, keep the fastest that passes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from mserve_contract.optimization_report import CandidateResult, OutputValidation

from mserve_optimizer.errors import BadInputError
from mserve_optimizer.graph import optimize_graph
from mserve_optimizer.latency import alternating_medians
from mserve_optimizer.options import InputSpec
from mserve_optimizer.ort_session import open_session, run_all
from mserve_optimizer.quantize import Variant
from mserve_optimizer.quantized_graph import quantized_nodes
from mserve_optimizer.samples import batch_of
from mserve_optimizer.steps import StepLog
from mserve_optimizer.validate import compare_outputs

# Candidates within this share of the fastest count as equally fast; among those the more
# accurate one wins (docs/optimizer.md, MiniLM: per-tensor was no faster and failed validation).
SPEED_TIE = 0.03
INT8_MODES = ("dynamic-int8", "static-int8")
CHOICE_BUDGET_SECONDS = 1.0
# Candidates are compared at the 20th percentile of their batch-1 times: on a shared machine
# the median carries other processes' load, the fast runs carry the model's own cost.
CHOICE_QUANTILE = 0.2


@dataclass
class Built:
    variant: Variant
    path: Path | None
    error: str = ""


@dataclass
class Judged:
    built: Built
    validation: list[OutputValidation]
    ms_small: float | None
    ms_large: float | None = None  # at the serving batch; timed under `auto` only
    verdict: str = ""  # why it was chosen or not, set by the choice

    @property
    def passed(self) -> bool:
        return self.built.path is not None and all(v.passed for v in self.validation)

    @property
    def min_cosine(self) -> float:
        return min((v.cosine_min for v in self.validation), default=0.0)


def build_variants(
    variants: list[Variant], base: Path, workdir: Path, log: StepLog, *, graph_level: str = "basic"
) -> list[Built]:
    """Make each candidate; `graph_level` above basic is applied to each one afterwards.

    The quantizers and the fp16 converter know standard ONNX ops, not onnxruntime's fused
    or NCHWc-layout ones, so the higher offline levels run after them, never before.
    """
    built = []
    for index, variant in enumerate(variants):
        dest = workdir / f"candidate-{index}.onnx"
        try:
            variant.make(base, dest)
            if variant.mode in INT8_MODES and not quantized_nodes(
                onnx.load(str(dest), load_external_data=False)
            ):
                # e.g. nodes_to_quantize naming Gemm nodes the dynamic quantizer rewrites first:
                # what comes out is the fp32 model under an INT8 name.
                raise ValueError("the quantizer quantized no node")
            if graph_level != "basic":
                made = dest.with_suffix(".made.onnx")
                dest.rename(made)
                optimize_graph(made, dest, graph_level)
            built.append(Built(variant, dest))
            log.note(f"{variant.name}: {dest.stat().st_size / 1e6:.2f} MB")
        except Exception as exc:  # a quantizer that cannot handle this graph rules out one candidate
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            built.append(Built(variant, None, f"{type(exc).__name__}: {reason}"))
            log.note(f"{variant.name}: failed to build ({reason})")
    return built


def judge(
    built: list[Built],
    reference: dict[str, np.ndarray],
    samples: dict[str, np.ndarray],
    specs: list[InputSpec],
    thresholds: Callable[[Variant], dict[str, float]],
    log: StepLog,
    *,
    large_batch: int | None = None,
    device: str = "cpu",
) -> list[Judged]:
    """Validate every candidate against `reference`, then time those that pass at batch 1
    (and at `large_batch` when given), interleaved."""
    judged: list[Judged] = []
    sessions = {}
    for item in built:
        if item.path is None:
            judged.append(Judged(item, [], None))
            continue
        try:
            session = open_session(item.path, device=device)
            names = [output.name for output in session.get_outputs()]
            outputs = run_all(session, samples, specs)
        except BadInputError as exc:  # a variant onnxruntime cannot run is ruled out, not fatal
            item.path, item.error = None, str(exc)
            judged.append(Judged(item, [], None))
            log.note(f"{item.variant.name}: cannot run ({exc})")
            continue
        validation = compare_outputs(
            names, [reference[name] for name in names], outputs, thresholds(item.variant)
        )
        judged.append(Judged(item, validation, None))
        sessions[len(judged) - 1] = session
    # Timed together, alternating, so that load on a shared machine hits every candidate alike.
    timed = [i for i in sessions if judged[i].passed] or list(sessions)
    if timed:
        medians = alternating_medians(
            [sessions[i] for i in timed],
            batch_of(samples, 1, specs),
            budget_s=CHOICE_BUDGET_SECONDS,
            quantile=CHOICE_QUANTILE,
        )
        for i, ms in zip(timed, medians, strict=True):
            judged[i].ms_small = ms
        if large_batch and large_batch > 1 and all(spec.dims[0] == -1 for spec in specs):
            medians = alternating_medians(
                [sessions[i] for i in timed],
                batch_of(samples, large_batch, specs),
                budget_s=CHOICE_BUDGET_SECONDS,
                quantile=CHOICE_QUANTILE,
            )
            for i, ms in zip(timed, medians, strict=True):
                judged[i].ms_large = ms
    for result in judged:
        if result.validation:
            verdict = "passes" if result.passed else "fails"
            ms = f"{result.ms_small:.3f} ms" if result.ms_small is not None else "not timed"
            if result.ms_large is not None:
                ms += f", batch-{large_batch} {result.ms_large:.3f} ms"
            log.note(
                f"{result.built.variant.name}: {verdict}, min cosine {result.min_cosine:.5f}, batch-1 {ms}"
            )
    return judged


def choose(judged: list[Judged]) -> tuple[Judged | None, str]:
    """The fastest passing candidate (ties broken by accuracy), and why."""
    passing = [j for j in judged if j.passed]
    if not passing:
        return None, "no candidate passed validation"
    fastest = min(passing, key=lambda j: j.ms_small or 0.0)
    close = [j for j in passing if (j.ms_small or 0.0) <= (fastest.ms_small or 0.0) * (1 + SPEED_TIE)]
    best = max(close, key=lambda j: j.min_cosine)
    if len(passing) == 1:
        why = "the only candidate that passed validation" if len(judged) > 1 else "the requested mode"
    elif best is fastest:
        why = f"fastest of {len(passing)} passing candidates"
    else:
        why = f"within {SPEED_TIE:.0%} of the fastest and more accurate (min cosine {best.min_cosine:.5f})"
    return best, why


def closest_failure(judged: list[Judged]) -> Judged | None:
    """The failing candidate that came nearest, whose figures explain the failure."""
    validated = [j for j in judged if j.validation]
    return max(validated, key=lambda j: j.min_cosine) if validated else None


def candidate_results(judged: list[Judged], chosen: Judged | None) -> list[CandidateResult]:
    baseline = next((j for j in judged if j.built.variant.mode == "none" and j.ms_small), None)
    results = []
    for j in judged:
        note = j.built.error or j.built.variant.note
        failures = [f"{v.name}: {', '.join(v.failures)}" for v in j.validation if not v.passed]
        if failures:
            note = f"{note}; failed: {'; '.join(failures)}"
        if j.verdict:
            note = f"{note}; {j.verdict}"
        elif j is chosen:
            note = f"{note}; chosen"
        small = baseline.ms_small / j.ms_small if baseline and j.ms_small else None
        large = baseline.ms_large / j.ms_large if baseline and baseline.ms_large and j.ms_large else None
        results.append(
            CandidateResult(
                name=j.built.variant.name,
                passed=j.passed,
                mode=j.built.variant.mode,
                ms_small=_round(j.ms_small),
                ms_large=_round(j.ms_large),
                speedup_small=_round(small, 3) if j.ms_large is not None else None,
                speedup_large=_round(large, 3),
                size_bytes=j.built.path.stat().st_size if j.built.path else None,
                min_cosine=round(j.min_cosine, 6) if j.validation else None,
                note=note,
            )
        )
    return results


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)
