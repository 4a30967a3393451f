"""`--quantize auto`: serve the fastest validated variant, or the fp32 graph when nothing pays.

Every candidate was validated with its own mode's thresholds and timed, interleaved, at
batch 1 and at the serving batch (`batching.maxBatchSize`). The baseline is the fp32
candidate (the graph-optimized original). A variant must beat it by `MARGIN` at one of the
two batch sizes without being more than `MARGIN` slower at the other; of those, the best
speed-up at batch 1 wins, and within `search.SPEED_TIE` of it the more accurate one. The
margin is wider than the noise of alternating runs on a quiet machine, so a variant is not
chosen on a tie that the next measurement would reverse.
"""

from __future__ import annotations

from mserve_optimizer.search import SPEED_TIE, Judged

MARGIN = 0.05
BASELINE_MODE = "none"


def speedups(candidate: Judged, baseline: Judged) -> tuple[float | None, float | None]:
    """fp32 time / candidate time at batch 1 and at the serving batch (> 1: faster)."""

    def ratio(base: float | None, own: float | None) -> float | None:
        return base / own if base and own else None

    return ratio(baseline.ms_small, candidate.ms_small), ratio(baseline.ms_large, candidate.ms_large)


def _pays(small: float | None, large: float | None) -> bool:
    figures = [r for r in (small, large) if r is not None]
    if not figures:
        return False
    return max(figures) >= 1 + MARGIN and min(figures) >= 1 - MARGIN


def _score(small: float | None, large: float | None) -> float:
    """Batch 1 decides (the latency a caller feels; the serving batch only has to hold up),
    unless only the serving batch was timed."""
    return small if small is not None else large or 0.0


def _figures(small: float | None, large: float | None, batch: int | None) -> str:
    text = f"{small:.2f}x at batch 1" if small is not None else "not timed at batch 1"
    if large is not None:
        text += f", {large:.2f}x at batch {batch}"
    return text


def choose_auto(judged: list[Judged], batch: int | None) -> tuple[Judged | None, str]:
    """The candidate to serve and why; sets each candidate's `verdict` (why it lost, or won)."""
    baseline = next((j for j in judged if j.built.variant.mode == BASELINE_MODE and j.passed), None)
    for j in judged:
        if j.built.path is None:
            j.verdict = "not built"
        elif not j.passed:
            j.verdict = "failed validation"
    if baseline is None or baseline.ms_small is None:
        return None, "the fp32 baseline did not pass validation"
    paying: list[tuple[float, Judged]] = []
    for j in judged:
        if j is baseline or not j.passed:
            continue
        small, large = speedups(j, baseline)
        if _pays(small, large):
            paying.append((_score(small, large), j))
        else:
            j.verdict = (
                f"not {MARGIN:.0%} faster than fp32 without being slower elsewhere "
                f"({_figures(small, large, batch)})"
            )
    if len(judged) == 1:
        baseline.verdict = "chosen"
        return baseline, "the only candidate"
    if not paying:
        baseline.verdict = "chosen: no variant beat it"
        return baseline, (
            f"no variant was {MARGIN:.0%} faster than the fp32 original here: "
            "serving the graph-optimized original"
        )
    best_score = max(score for score, _ in paying)
    close = [j for score, j in paying if score >= best_score * (1 - SPEED_TIE)]
    chosen = max(close, key=lambda j: j.min_cosine)
    for score, j in paying:
        if j is not chosen:
            j.verdict = f"passed and paid ({score:.2f}x) but {chosen.built.variant.name} did better"
    baseline.verdict = "baseline: slower than the chosen variant"
    small, large = speedups(chosen, baseline)
    chosen.verdict = "chosen"
    return chosen, f"auto: fastest of {len(paying)} that paid, {_figures(small, large, batch)} vs fp32"
