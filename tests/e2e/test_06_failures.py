"""Step 6: failures are reported where the user looks, and fixing the spec recovers."""

from __future__ import annotations

import re

from e2e_kube import Cluster
from e2e_models import DigitsModel, condition, modelservice, wait_for_phase


def test_wrong_model_uri_fails_naming_the_uri(mserve: Cluster, namespace: str, digits: DigitsModel) -> None:
    wrong = digits.uris["pt2"].replace("model.pt2", "no-such-model.pt2")
    mserve.apply(modelservice("digits-missing", wrong), namespace)
    failed = wait_for_phase(mserve, namespace, "digits-missing", "Failed", timeout=600)
    assert wrong in failed["status"]["message"] or wrong in condition(failed, "Optimized").get("message", "")


def test_failed_validation_reports_figures_and_a_fix_recovers(
    mserve: Cluster, namespace: str, digits: DigitsModel
) -> None:
    # INT8 weights cannot keep every logit within 1e-6 of the original: validation must fail.
    strict = modelservice("digits-strict", digits.uris["pt2"], tolerance={"maxAbsError": 1e-6})
    mserve.apply(strict, namespace)
    failed = wait_for_phase(mserve, namespace, "digits-strict", "Failed", timeout=600)
    optimized = condition(failed, "Optimized")
    assert optimized.get("reason") == "ValidationFailed", optimized
    text = optimized.get("message", "") + str(failed["status"].get("optimization", {}))
    assert re.search(r"\d\.\d+", text), f"no figures in {text!r}"

    mserve.patch(
        namespace,
        "msvc/digits-strict",
        {"spec": {"optimization": {"tolerance": {"maxAbsError": None, "cosine": 0.99}}}},
    )
    wait_for_phase(mserve, namespace, "digits-strict", "Ready", timeout=900)
