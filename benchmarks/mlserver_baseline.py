"""MLServer as a baseline: its own venv, a minimal MLModel around the same ONNX file.

MLServer's pins conflict with ours, so it lives in ~/.cache/mserve/mlserver-venv, created
on first use. Its REST API has no binary extension, so it is measured with JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CACHE = Path(os.environ.get("MSERVE_CACHE", Path.home() / ".cache" / "mserve"))
MLSERVER_VENV = CACHE / "mlserver-venv"
MLSERVER_VERSION = "1.7.1"


MLSERVER_MODEL = """
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = {threads}
        self._session = ort.InferenceSession(
            self.settings.parameters.uri, options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self.ready = True
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        outputs = self._session.run(None, {{self._input: x}})
        names = [o.name for o in self._session.get_outputs()]
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output(n, y) for n, y in zip(names, outputs)]
        )
"""


def ensure_mlserver() -> Path:
    """MLServer in its own venv (its pins conflict with ours); created on first use."""
    mlserver = MLSERVER_VENV / "bin" / "mlserver"
    if mlserver.exists():
        return mlserver
    print(f"creating {MLSERVER_VENV} with mlserver=={MLSERVER_VERSION} (once)...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True, timeout=300)
    pip = [
        str(MLSERVER_VENV / "bin" / "pip"),
        "install",
        "-q",
        f"mlserver=={MLSERVER_VERSION}",
        "onnxruntime",
        "numpy",
    ]
    done = subprocess.run(pip, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0 or not mlserver.exists():
        shutil.rmtree(MLSERVER_VENV, ignore_errors=True)
        raise RuntimeError(f"pip install mlserver=={MLSERVER_VERSION} failed: {done.stderr[-500:]}")
    return mlserver


@contextmanager
def mlserver_serving(work: Path, model: Path, body: bytes, threads: int) -> Iterator[int]:
    """A ready MLServer serving `model` as 'tiny' with adaptive batching (32 rows, 2 ms); its port."""
    import httpx

    from tests.support.ports import free_port

    mlserver = ensure_mlserver()
    root = work / "mlserver"
    (root / "tiny").mkdir(parents=True, exist_ok=True)
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    (root / "settings.json").write_text(
        json.dumps(
            {
                "http_port": http_port,
                "grpc_port": grpc_port,
                "metrics_port": metrics_port,
                # Its default worker pool did not start on these machines (see docs/runtime.md).
                "parallel_workers": 0,
                "debug": False,
            }
        )
    )
    (root / "tiny" / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "tiny",
                "implementation": "onnx_runtime_model.OnnxRuntimeModel",
                "max_batch_size": 32,
                "max_batch_time": 0.002,
                "parameters": {"uri": str(model)},
            }
        )
    )
    (root / "tiny" / "onnx_runtime_model.py").write_text(MLSERVER_MODEL.format(threads=threads))
    log = (work / "mlserver.log").open("wb")
    proc = subprocess.Popen(
        [str(mlserver), "start", str(root)], stdout=log, stderr=subprocess.STDOUT, cwd=root / "tiny"
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mlserver exited {proc.returncode}: {(work / 'mlserver.log').read_text()[-800:]}"
                )
            try:
                if (
                    httpx.get(f"http://127.0.0.1:{http_port}/v2/models/tiny/ready", timeout=1).status_code
                    == 200
                ):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlserver not ready after 120 s")
            time.sleep(0.2)
        check = httpx.post(f"http://127.0.0.1:{http_port}/v2/models/tiny/infer", content=body, timeout=10)
        check.raise_for_status()
        yield http_port
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
