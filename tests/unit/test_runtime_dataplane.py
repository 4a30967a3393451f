"""DataPlane: ready only after load + warm-up, not ready while draining, lookups and checks."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
from mserve_runtime.admission import RequestScope, current_scope
from mserve_runtime.cpu_limit import available_cpus
from mserve_runtime.dataplane import DataPlane
from mserve_runtime.errors import (
    ClientGone,
    DeadlineExceeded,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
)
from mserve_runtime.inference_types import InferenceRequest, InputTensor, RequestedOutput
from mserve_runtime.settings import RuntimeSettings
from onnx import TensorProto, helper, numpy_helper, save


def _model(path: Path, batch_dim: str | int = "batch") -> Path:
    three = numpy_helper.from_array(np.array(3.0, dtype=np.float32), "three")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "three"], ["y"]), helper.make_node("Neg", ["x"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, 2])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch_dim, 2]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [batch_dim, 2]),
        ],
        initializer=[three],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))
    return path


def _plane(tmp_path: Path, **settings: object) -> DataPlane:
    path = _model(tmp_path / "m.onnx", settings.pop("batch_dim", "batch"))  # type: ignore[arg-type]
    settings.setdefault("threads", 1)
    return DataPlane(RuntimeSettings(model_path=str(path), model_name="m", **settings))


def _request(x: np.ndarray, outputs: list[str] | None = None) -> InferenceRequest:
    wanted = [RequestedOutput(n) for n in outputs] if outputs else None
    return InferenceRequest("r1", [InputTensor("x", "FP32", list(x.shape), x)], {}, wanted)


def test_ready_only_after_load_and_not_while_draining(tmp_path: Path) -> None:
    plane = _plane(tmp_path)
    assert plane.live()
    assert not plane.ready()
    assert not plane.model_ready("m")
    with pytest.raises(ModelNotReady):
        asyncio.run(plane.infer("m", _request(np.ones((1, 2), np.float32))))
    plane.load()
    assert plane.ready()
    assert plane.model_ready("m", "1")
    plane.start_draining()
    assert not plane.ready()
    assert not plane.model_ready("m")


def test_infer_outputs_subset_and_id(tmp_path: Path) -> None:
    plane = _plane(tmp_path)
    plane.load()
    x = np.array([[1, 2]], np.float32)
    response = asyncio.run(plane.infer("m", _request(x, ["z"])))
    assert response.id == "r1"
    assert [o.name for o in response.outputs] == ["z"]
    np.testing.assert_array_equal(response.outputs[0].data, -x)


def test_lookup_errors(tmp_path: Path) -> None:
    plane = _plane(tmp_path)
    plane.load()
    with pytest.raises(ModelNotFound, match="'other' is not served"):
        plane.model_metadata("other")
    with pytest.raises(ModelNotFound, match="no version '2'"):
        plane.model_ready("m", "2")
    with pytest.raises(InvalidInput, match="unknown output 'w'"):
        asyncio.run(plane.infer("m", _request(np.ones((1, 2), np.float32), ["w"])))


def test_batching_needs_a_dynamic_first_dimension(tmp_path: Path) -> None:
    fixed = _plane(tmp_path, max_batch_size=8, batch_dim=1)
    fixed.load()
    assert fixed.batcher is None
    dynamic = _plane(tmp_path, max_batch_size=8)
    dynamic.load()
    assert dynamic.batcher is not None


def test_batched_infer_returns_each_request_its_rows(tmp_path: Path) -> None:
    plane = _plane(tmp_path, max_batch_size=8, max_batch_delay_ms=20)
    plane.load()

    async def many() -> list:
        xs = [np.full((1 + i % 2, 2), i, np.float32) for i in range(6)]
        responses = await asyncio.gather(*(plane.infer("m", _request(x)) for x in xs))
        return list(zip(xs, responses, strict=True))

    for x, response in asyncio.run(many()):
        np.testing.assert_array_equal(response.outputs[0].data, x * 3)
        np.testing.assert_array_equal(response.outputs[1].data, -x)


def test_load_failure_is_a_model_load_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"nope")
    plane = DataPlane(RuntimeSettings(model_path=str(bad), model_name="m", threads=1))
    with pytest.raises(ModelLoadError, match="cannot load"):
        plane.load()
    assert not plane.ready()


def test_cuda_that_onnxruntime_cannot_start_is_a_load_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort
    from mserve_runtime.onnx_model import SessionConfig, build_session

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    # onnxruntime-gpu installed but no usable GPU: the provider is listed, the session falls back to CPU.
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    with pytest.raises(ModelLoadError, match="could not start CUDAExecutionProvider"):
        build_session(str(_model(tmp_path / "m.onnx")), SessionConfig(threads=1, device="cuda"))


def test_cuda_missing_from_onnxruntime_is_a_load_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort
    from mserve_runtime.onnx_model import SessionConfig, build_session

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ModelLoadError, match=r"no CUDAExecutionProvider .* install mserve\[gpu\]"):
        build_session(str(_model(tmp_path / "m.onnx")), SessionConfig(threads=1, device="cuda"))


@pytest.mark.parametrize("ending", ["client_gone", "deadline"])
def test_queued_work_of_a_request_whose_scope_ends_never_runs(tmp_path: Path, ending: str) -> None:
    plane = _plane(tmp_path, threads=available_cpus())
    plane.load()
    assert plane.workers == 1

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        gate = threading.Event()
        busy = loop.run_in_executor(plane._executor, gate.wait)  # the only worker, taken
        scope = RequestScope(loop.time() + (0.05 if ending == "deadline" else 30), "a test")
        current_scope.set(scope)
        task = loop.create_task(plane.infer("m", _request(np.ones((1, 2), np.float32))))
        await asyncio.sleep(0.02)
        if ending == "client_gone":
            scope.give_up("client_gone")
        with pytest.raises(ClientGone if ending == "client_gone" else DeadlineExceeded):
            await task
        gate.set()
        await busy
        await asyncio.sleep(0.05)

    asyncio.run(scenario())
    registry = plane.metrics.registry
    assert registry.get_sample_value("mserve_batch_size_count", {"model": "m"}) == 0
    assert registry.get_sample_value("mserve_requests_dropped_total", {"model": "m", "reason": ending}) == 1
