"""MSERVE_RATE_LIMIT_RPS/BURST on a real `mserve serve`: a bucket per caller, 429 with
Retry-After over REST, RESOURCE_EXHAUSTED over gRPC, other callers untouched."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import httpx
import pytest
from mserve_runtime.grpc_v2.generated import grpc_predict_v2_pb2 as pb
from mserve_runtime.grpc_v2.generated import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.support.models import DigitsModel
from tests.support.secret_volume import write_secret
from tests.support.serving import MSERVE, serving

GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}


def test_each_key_has_its_own_bucket_and_429_says_when_to_retry(digits: DigitsModel, tmp_path: Path) -> None:
    write_secret(tmp_path / "keys" / "team", {"a": "key-a-123", "b": "key-b-456"})
    args = ("--auth", "apiKey", "--api-keys-dir", str(tmp_path / "keys"))
    args += ("--rate-limit-rps", "0.5", "--rate-limit-burst", "3")
    with serving(digits.path, "digits", tmp_path / "mserve.log", *args, grpc=True) as server:
        url = f"{server.url}/v2/models/digits/infer"
        codes = [httpx.post(url, json=GOOD, headers={"X-API-Key": "key-a-123"}).status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        limited = httpx.post(url, json=GOOD, headers={"X-API-Key": "key-a-123"})
        assert limited.status_code == 429
        retry_after = limited.headers["retry-after"]
        assert retry_after.isdigit()
        assert 1 <= int(retry_after) <= 2  # one token at 0.5/s
        assert "rate limit of 0.5 requests/s (burst 3) exceeded for 'team/a'" in limited.json()["error"]

        # Another key is not slowed down by the first.
        assert httpx.post(url, json=GOOD, headers={"X-API-Key": "key-b-456"}).status_code == 200
        # gRPC draws from the same bucket.
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=(("x-api-key", "key-a-123"),))
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert ("retry-after", retry_after) in tuple(refused.value.trailing_metadata())
            # Health is never limited.
            for _ in range(5):
                assert stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live
        # Unauthenticated requests are refused before they could spend anyone's bucket.
        assert httpx.post(url, json=GOOD).status_code == 401

        time.sleep(int(retry_after))
        assert httpx.post(url, json=GOOD, headers={"X-API-Key": "key-a-123"}).status_code == 200
        metrics = server.metrics()
        assert 'mserve_usage_requests_total{caller="team/a",model="digits"} 4.0' in metrics


def test_without_authentication_everyone_shares_the_anonymous_bucket(
    digits: DigitsModel, tmp_path: Path
) -> None:
    args = ("--rate-limit-rps", "1", "--rate-limit-burst", "2")
    with serving(digits.path, "digits", tmp_path / "mserve.log", *args) as server:
        url = f"{server.url}/v2/models/digits/infer"
        codes = [httpx.post(url, json=GOOD).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        for _ in range(5):
            assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--rate-limit-rps", "-1"),
        ("--rate-limit-rps", "nan"),
        ("--rate-limit-rps", "inf"),
        ("--rate-limit-burst", "-3"),
        ("--rate-limit-burst", "1e99"),
    ],
)
def test_careless_rate_limits_stop_start_up_naming_the_setting(
    digits: DigitsModel, flag: str, value: str
) -> None:
    import subprocess

    command = [str(MSERVE), "serve", str(digits.path), flag, value]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    name = flag.removeprefix("--").replace("-", "_")
    assert name in out.stderr or flag in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
