"""Step 2: a torch model in S3 with quantize dynamic-int8 is optimized by a Job, validated,
served, and answers like the original model from inside the cluster and from the host."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DigitsModel
from e2e_kube import Cluster
from e2e_models import (
    cosine_rows,
    infer_from_pod,
    infer_http,
    infer_request,
    jobs_of,
    modelservice,
    original_logits,
    service_url,
    wait_for_phase,
)

NAME = "digits"


@pytest.fixture(scope="module")
def served(mserve: Cluster, module_namespace: str, digits: DigitsModel) -> dict:
    """The user's step: apply a ModelService for the .pt2 model and wait for Ready."""
    mserve.apply(modelservice(NAME, digits.uris["pt2"], quantize="dynamic-int8"), module_namespace)
    return wait_for_phase(mserve, module_namespace, NAME, "Ready", timeout=900)


@pytest.fixture(scope="module")
def samples(digits: DigitsModel) -> np.ndarray:
    return np.load(digits.samples)["x"][:32]


def test_a_job_ran_the_optimizer(mserve: Cluster, module_namespace: str, served: dict) -> None:
    jobs = jobs_of(mserve, module_namespace, NAME)
    assert len(jobs) == 1
    assert jobs[0]["status"].get("succeeded") == 1


def test_status_carries_the_optimization_report(served: dict) -> None:
    report = served["status"]["optimization"]
    assert report["verdict"] == "passed"
    assert report["quantize"] == "dynamic-int8"
    assert report["minCosine"] >= 0.99
    assert served["status"]["artifact"]["digest"]


def test_measured_session_options_reach_the_runtime(
    mserve: Cluster, module_namespace: str, served: dict
) -> None:
    from mserve_contract.optimization_report import SessionOptions

    recorded = SessionOptions.model_validate(served["status"]["artifact"]["sessionOptions"])
    pod = mserve.get("-n", module_namespace, "deployment", NAME)["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value", "") for e in pod["containers"][0]["env"]}
    assert SessionOptions.model_validate_json(env["MSERVE_SESSION_OPTIONS"]) == recorded


def test_host_answer_agrees_with_the_original_model(
    mserve: Cluster, module_namespace: str, served: dict, digits: DigitsModel, samples: np.ndarray
) -> None:
    served_logits = infer_http(service_url(mserve, module_namespace, NAME), NAME, samples)
    original = original_logits(str(digits.folder / "model.onnx"), samples)
    assert served_logits.shape == original.shape
    assert (served_logits.argmax(1) == original.argmax(1)).mean() >= 0.95
    assert cosine_rows(served_logits, original).min() >= 0.98


def test_pod_in_the_cluster_reaches_the_service_by_dns_name(
    mserve: Cluster, module_namespace: str, served: dict, samples: np.ndarray
) -> None:
    url = f"http://{NAME}.{module_namespace}.svc:8080/v2/models/{NAME}/infer"
    image = mserve.get("-n", module_namespace, "deployment", NAME)["spec"]["template"]["spec"]["containers"][
        0
    ]["image"]
    answer = infer_from_pod(mserve, module_namespace, image, url, infer_request(samples[:4]))
    from_pod = np.asarray(answer["outputs"][0]["data"], dtype=np.float32).reshape(4, -1)
    from_host = infer_http(service_url(mserve, module_namespace, NAME), NAME, samples[:4])
    np.testing.assert_allclose(from_pod, from_host, rtol=1e-4, atol=1e-4)


def test_tritonclient_works_from_the_host(
    mserve: Cluster, module_namespace: str, served: dict, samples: np.ndarray
) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(service_url(mserve, module_namespace, NAME).removeprefix("http://"))
    assert client.is_model_ready(NAME)
    tensor = triton.InferInput("x", list(samples.shape), "FP32")
    tensor.set_data_from_numpy(samples, binary_data=True)
    result = client.infer(NAME, [tensor])
    output_name = client.get_model_metadata(NAME)["outputs"][0]["name"]
    expected = infer_http(service_url(mserve, module_namespace, NAME), NAME, samples)
    np.testing.assert_allclose(result.as_numpy(output_name), expected, rtol=1e-4, atol=1e-4)
