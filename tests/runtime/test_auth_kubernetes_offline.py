"""MSERVE_AUTH=kubernetes when the API server cannot be reached: 503 / UNAVAILABLE naming
why, never a pass and never a 500; requests without a token are still 401. (With a real
API server: tests/integration/test_runtime_tokenreview.py.)"""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import pytest
from mserve_runtime.grpc_v2.generated import grpc_predict_v2_pb2 as pb
from mserve_runtime.grpc_v2.generated import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.support.models import DigitsModel
from tests.support.ports import free_port
from tests.support.serving import serving
from tests.support.tls_certs import issue

GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}


def test_an_unreachable_api_server_is_a_503_not_a_pass(digits: DigitsModel, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("runtime-own-token\n")
    ca = issue().write_ca(tmp_path / "ca.crt")
    env = {
        "MSERVE_AUTH": "kubernetes",
        "MSERVE_ALLOWED_SERVICE_ACCOUNTS": "team/*",
        "MSERVE_KUBE_API_URL": f"https://127.0.0.1:{free_port()}",  # nothing listens there
        "MSERVE_KUBE_TOKEN_FILE": str(tmp_path / "token"),
        "MSERVE_KUBE_CA_FILE": str(ca),
    }
    with serving(digits.path, "digits", tmp_path / "mserve.log", env=env, grpc=True) as server:
        url = f"{server.url}/v2/models/digits/infer"
        answer = httpx.post(url, json=GOOD, headers={"Authorization": "Bearer some.caller.token"})
        assert answer.status_code == 503
        assert "Kubernetes API server is unreachable" in answer.json()["error"]
        assert httpx.post(url, json=GOOD).status_code == 401
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=(("authorization", "Bearer a.b.c"),))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
        assert "some.caller.token" not in server.logs()
