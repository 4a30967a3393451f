"""An unmodified `tritonclient.http` works: JSON and binary, inputs and outputs, any batch size."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient

from tests.support.models import DATATYPES, DigitsModel, sample_datatype_array
from tests.support.serving import Server


@pytest.fixture(scope="module")
def digits_client(digits_server: Server) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(digits_server.host)


def test_health_and_metadata(digits_client: httpclient.InferenceServerClient) -> None:
    assert digits_client.is_server_live()
    assert digits_client.is_server_ready()
    assert digits_client.is_model_ready("digits")
    assert digits_client.is_model_ready("digits", "1")
    assert digits_client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    assert digits_client.get_model_metadata("digits")["inputs"][0]["shape"] == [-1, 64]


@pytest.mark.parametrize("batch", [1, 7, 64])
@pytest.mark.parametrize("binary_in", [False, True], ids=["json-in", "binary-in"])
@pytest.mark.parametrize("binary_out", [False, True], ids=["json-out", "binary-out"])
def test_infer(
    digits_client: httpclient.InferenceServerClient,
    digits: DigitsModel,
    batch: int,
    binary_in: bool,
    binary_out: bool,
) -> None:
    x = np.resize(digits.x_test, (batch, 64)).astype(np.float32)
    inp = httpclient.InferInput("x", [batch, 64], "FP32")
    inp.set_data_from_numpy(x, binary_data=binary_in)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary_out) for n in ("logits", "label")]
    result = digits_client.infer("digits", [inp], outputs=outputs, request_id=f"b{batch}")
    reference = ort.InferenceSession(str(digits.path), providers=["CPUExecutionProvider"])
    logits, label = reference.run(None, {"x": x})
    np.testing.assert_allclose(result.as_numpy("logits"), logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(result.as_numpy("label"), label)
    assert result.get_response()["id"] == f"b{batch}"


def test_infer_versioned_and_default_outputs(
    digits_client: httpclient.InferenceServerClient, digits: DigitsModel
) -> None:
    inp = httpclient.InferInput("x", [2, 64], "FP32")
    inp.set_data_from_numpy(digits.x_test[:2])
    result = digits_client.infer("digits", [inp], model_version="1")
    assert result.as_numpy("logits").shape == (2, 10)


def test_errors_surface_as_exceptions_with_the_message(
    digits_client: httpclient.InferenceServerClient,
) -> None:
    inp = httpclient.InferInput("x", [1, 3], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(httpclient.InferenceServerException, match=r"expected shape \[-1, 64\]"):
        digits_client.infer("digits", [inp])


def test_compressed_request_and_response(
    digits_client: httpclient.InferenceServerClient, digits: DigitsModel
) -> None:
    inp = httpclient.InferInput("x", [3, 64], "FP32")
    inp.set_data_from_numpy(digits.x_test[:3])
    result = digits_client.infer("digits", [inp], request_compression_algorithm="gzip")
    assert result.as_numpy("label").shape == (3,)


@pytest.mark.parametrize("datatype", list(DATATYPES))
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_every_datatype_round_trips(
    datatypes_server: Server, datatypes_model, datatype: str, binary: bool
) -> None:
    if datatype == "FP16" and not binary:
        pytest.skip("tritonclient sends FP16 only as binary (JSON has no 16-bit float)")
    client = httpclient.InferenceServerClient(datatypes_server.host)
    session = ort.InferenceSession(str(datatypes_model), providers=["CPUExecutionProvider"])
    inputs, feed = [], {}
    for i, dt in enumerate(DATATYPES):
        array = sample_datatype_array(dt, rows=3, seed=i)
        feed[f"in_{dt}"] = array
        tensor = httpclient.InferInput(f"in_{dt}", list(array.shape), dt)
        tensor.set_data_from_numpy(array, binary_data=binary or dt == "FP16")
        inputs.append(tensor)
    requested = [httpclient.InferRequestedOutput(f"out_{datatype}", binary_data=binary)]
    result = client.infer("datatypes", inputs, outputs=requested)
    got = result.as_numpy(f"out_{datatype}")
    expected = session.run([f"out_{datatype}"], feed)[0]
    if datatype == "BYTES":
        got = np.array(
            [g.decode() if isinstance(g, bytes) else g for g in got.ravel()], dtype=object
        ).reshape(3, 3)
    np.testing.assert_array_equal(got, expected)
    assert got.shape == (3, 3)
    assert [o["name"] for o in result.get_response()["outputs"]] == [f"out_{datatype}"]
