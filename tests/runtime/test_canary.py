"""Canary rollouts on real `mserve serve` processes: a stable (model_version 1) splits traffic
with a canary (model_version 2) by the rollout file, forwards it intact, falls back when the
canary is down, and mirrors a share whose answers it compares with its own."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.models import build_tiny_mlp
from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.secret_volume import write_secret
from tests.support.serving import Server, serving

X = np.random.default_rng(7).standard_normal((3, 16)).astype(np.float32)
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 16], "data": X.reshape(-1).tolist()}]}
INFER = "/v2/models/tiny/infer"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("canary-models")
    return {
        "tiny": build_tiny_mlp(root / "tiny.onnx"),
        "relabelled": build_tiny_mlp(root / "relabelled.onnx", label_order=[2, 3, 0, 1]),
    }


@pytest.fixture(scope="module")
def rollout_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rollout") / "rollout.json"


@pytest.fixture(scope="module")
def stable(
    models: dict[str, Path], rollout_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("stable") / "mserve.log"
    args = ("--rollout-file", str(rollout_file), "--request-timeout-s", "5")
    with serving(models["tiny"], "tiny", log, *args, env={"MSERVE_MODEL_VERSION": "1"}) as server:
        yield server


@pytest.fixture(scope="module")
def canary(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("canary") / "mserve.log"
    with serving(models["tiny"], "tiny", log, env={"MSERVE_MODEL_VERSION": "2"}) as server:
        yield server


@pytest.fixture(scope="module")
def relabelled(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("relabelled") / "mserve.log"
    with serving(models["relabelled"], "tiny", log, env={"MSERVE_MODEL_VERSION": "3"}) as server:
        yield server


_generation = [0]


def write_rollout(path: Path, canary: dict | None, raw: bytes | None = None) -> int:
    """Replace the file as the kubelet does (a new file renamed over it); its generation."""
    _generation[0] += 1
    content = (
        raw if raw is not None else json.dumps({"generation": _generation[0], "canary": canary}).encode()
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)
    return _generation[0]


def metric(server: Server, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
    found = re.search(pattern, server.metrics(), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def apply(stable: Server, path: Path, canary: dict | None) -> float:
    """Write the rollout file and wait until the stable applied it; the seconds that took."""
    generation = write_rollout(path, canary)
    started = time.monotonic()
    wait_until(
        f"generation {generation} applied",
        lambda: metric(stable, "mserve_rollout_generation") == generation,
        timeout=10,
        interval=0.05,
    )
    return time.monotonic() - started


def split(url: str, weight: float, mirror: float = 0, **extra: object) -> dict:
    return {"url": url, "revision": 2, "weight": weight, "mirrorPercent": mirror, **extra}


def versions(server: Server, n: int, headers: dict | None = None) -> list[str]:
    """The model_version of each of `n` answers (every one must be a 200)."""
    answered = []
    with server.client() as client:
        for _ in range(n):
            response = client.post(INFER, json=BODY, headers=headers)
            assert response.status_code == 200, response.text
            answered.append(response.json()["model_version"])
    return answered


def test_the_weight_decides_the_share_exactly(stable: Server, canary: Server, rollout_file: Path) -> None:
    seconds = apply(stable, rollout_file, split(canary.url, 10))
    assert seconds < 3, f"the rollout file took {seconds:.1f}s to apply"
    answered = versions(stable, 2000)
    share = answered.count("2") / len(answered)
    assert abs(share - 0.10) <= 0.01, share
    assert set(answered) == {"1", "2"}

    apply(stable, rollout_file, split(canary.url, 0))
    assert set(versions(stable, 50)) == {"1"}
    apply(stable, rollout_file, split(canary.url, 100))
    assert set(versions(stable, 50)) == {"2"}
    apply(stable, rollout_file, None)
    assert set(versions(stable, 20)) == {"1"}
    assert metric(stable, "mserve_canary_weight_percent") == 0


@pytest.mark.parametrize(
    ("what", "content"),
    [
        ("bad JSON", b'{"generation": 99, "canary": {"url": '),
        (
            "weight 150",
            json.dumps({"generation": 99, "canary": {"url": "http://h:1", "weight": 150}}).encode(),
        ),
        (
            "url with a path",
            json.dumps({"generation": 99, "canary": {"url": "http://h:1/v2", "weight": 0}}).encode(),
        ),
        (
            "file url",
            json.dumps({"generation": 99, "canary": {"url": "file:///etc/passwd", "weight": 0}}).encode(),
        ),
        ("huge file", b'{"generation": 99, "pad": "' + b"x" * (1 << 20) + b'"}'),
        ("a list", b"[1, 2, 3]"),
    ],
)
def test_a_malformed_file_keeps_the_last_good_config(
    stable: Server, canary: Server, rollout_file: Path, what: str, content: bytes
) -> None:
    good = _generation[0] + 1
    apply(stable, rollout_file, split(canary.url, 100))
    errors = metric(stable, "mserve_rollout_config_errors_total")
    write_rollout(rollout_file, None, raw=content)
    wait_until(
        f"the {what} counted",
        lambda: metric(stable, "mserve_rollout_config_errors_total") == errors + 1,
        timeout=10,
        interval=0.05,
    )
    assert metric(stable, "mserve_rollout_generation") == good
    assert set(versions(stable, 10)) == {"2"}  # still the last good config: all to the canary
    assert "rejected, keeping generation" in stable.logs()
    assert stable.alive()


def test_a_canary_that_is_down_costs_no_request(stable: Server, rollout_file: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    failed = metric(stable, "mserve_canary_forwarded_total", 'outcome="failed"')
    apply(stable, rollout_file, split(closed, 50))
    answered = versions(stable, 200)
    assert set(answered) == {"1"}
    assert metric(stable, "mserve_canary_forwarded_total", 'outcome="failed"') - failed == 100


def test_forwarded_requests_are_counted_by_the_canary_only(
    stable: Server, canary: Server, rollout_file: Path
) -> None:
    apply(stable, rollout_file, split(canary.url, 100))
    served = 'model="tiny",protocol="rest",status="200"'
    before = (
        metric(stable, "mserve_requests_total", served),
        metric(canary, "mserve_requests_total", served),
    )
    usage = metric(stable, "mserve_usage_requests_total", 'model="tiny",caller="anonymous"')
    answered = metric(stable, "mserve_canary_forwarded_total", 'outcome="answered"')
    assert set(versions(stable, 25)) == {"2"}
    assert metric(stable, "mserve_requests_total", served) == before[0]
    assert metric(canary, "mserve_requests_total", served) == before[1] + 25
    assert metric(stable, "mserve_usage_requests_total", 'model="tiny",caller="anonymous"') == usage
    assert metric(stable, "mserve_canary_forwarded_total", 'outcome="answered"') == answered + 25


def _binary_request() -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [3, 16], "parameters": {"binary_data_size": 192}}
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    headers = {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }
    return header + X.tobytes(), headers


def _binary_answer(response: httpx.Response) -> tuple[dict, np.ndarray]:
    length = int(response.headers["inference-header-content-length"])
    doc = json.loads(response.content[:length])
    return doc, np.frombuffer(response.content[length:], dtype=np.float32).reshape(3, 4)


def test_binary_requests_are_forwarded_intact(stable: Server, canary: Server, rollout_file: Path) -> None:
    body, headers = _binary_request()
    apply(stable, rollout_file, split(canary.url, 0))
    local = httpx.post(stable.url + INFER, content=body, headers=headers, timeout=10)
    apply(stable, rollout_file, split(canary.url, 100))
    forwarded = httpx.post(stable.url + INFER + "?trace=1", content=body, headers=headers, timeout=10)
    assert forwarded.status_code == 200, forwarded.text
    assert forwarded.headers["content-type"] == "application/octet-stream"
    (doc_local, y_local), (doc, y) = _binary_answer(local), _binary_answer(forwarded)
    assert (doc_local["model_version"], doc["model_version"]) == ("1", "2")
    np.testing.assert_array_equal(y, y_local)
    # A client error is the canary's to answer, as is.
    bad = httpx.post(stable.url + INFER, content=body[:-4], headers=headers, timeout=10)
    assert bad.status_code == 400
    assert "binary" in bad.json()["error"]


def _comparisons(server: Server) -> dict[str, float]:
    found = {
        r: metric(server, "mserve_shadow_comparisons_total", f'result="{r}"')
        for r in ("agree", "disagree", "error")
    }
    found["dropped"] = metric(server, "mserve_shadow_dropped_total")
    return found


def _mirror(stable: Server, rollout_file: Path, url: str, n: int) -> tuple[dict[str, float], list[dict]]:
    """`n` requests with every one mirrored to `url`; the comparisons' deltas and the answers."""
    apply(stable, rollout_file, split(url, 0, 100))
    before = _comparisons(stable)
    answers = []
    with stable.client() as client:
        for _ in range(n):
            response = client.post(INFER, json=BODY)
            assert response.status_code == 200
            answers.append(response.json())
    wait_until(
        "every mirror compared or dropped",
        lambda: sum(_comparisons(stable).values()) - sum(before.values()) == n,
        timeout=20,
        interval=0.1,
    )
    after = _comparisons(stable)
    return {k: after[k] - before[k] for k in after}, answers


def test_a_relabelled_canary_disagrees_and_the_client_never_sees_it(
    stable: Server, relabelled: Server, rollout_file: Path
) -> None:
    below = metric(stable, "mserve_shadow_min_cosine_bucket", 'le="0.99"')
    top1_false = metric(stable, "mserve_shadow_top1_rows_total", 'match="false"')
    delta, answers = _mirror(stable, rollout_file, relabelled.url, 20)
    assert delta["agree"] == delta["error"] == 0
    assert delta["disagree"] >= 16, delta
    assert metric(stable, "mserve_shadow_min_cosine_bucket", 'le="0.99"') - below == delta["disagree"]
    assert metric(stable, "mserve_shadow_top1_rows_total", 'match="false"') > top1_false
    assert {a["model_version"] for a in answers} == {"1"}
    assert all(a["outputs"] == answers[0]["outputs"] for a in answers)


def test_an_identical_canary_agrees(stable: Server, canary: Server, rollout_file: Path) -> None:
    top1_false = metric(stable, "mserve_shadow_top1_rows_total", 'match="false"')
    exact = metric(stable, "mserve_shadow_max_abs_error_bucket", 'le="1e-06"')
    delta, _ = _mirror(stable, rollout_file, canary.url, 20)
    assert delta["disagree"] == delta["error"] == 0
    assert delta["agree"] >= 16, delta
    assert metric(stable, "mserve_shadow_top1_rows_total", 'match="false"') == top1_false
    assert metric(stable, "mserve_shadow_max_abs_error_bucket", 'le="1e-06"') - exact == delta["agree"]


def test_a_hanging_canary_never_delays_an_answer(stable: Server, rollout_file: Path) -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=64) as hanging:  # accepts, never answers
        url = f"http://127.0.0.1:{hanging.getsockname()[1]}"
        apply(stable, rollout_file, split(url, 0, 100))
        before = _comparisons(stable)
        slowest = 0.0
        with stable.client() as client:
            for _ in range(20):
                started = time.monotonic()
                response = client.post(INFER, json=BODY)
                slowest = max(slowest, time.monotonic() - started)
                assert response.status_code == 200
                assert response.json()["model_version"] == "1"
        assert slowest < 1.0, slowest
        dropped = metric(stable, "mserve_shadow_dropped_total") - before["dropped"]
        assert dropped == 16  # MSERVE_SHADOW_MAX_IN_FLIGHT (4) hang until their timeout (5 s)
        wait_until(
            "the hanging mirrors counted as errors",
            lambda: (
                metric(stable, "mserve_shadow_comparisons_total", 'result="error"') - before["error"] == 4
            ),
            timeout=15,
        )
    apply(stable, rollout_file, None)


_CLOSED_LABELS = {
    "mserve_canary_forwarded_total": {"outcome": {"answered", "failed"}},
    "mserve_shadow_comparisons_total": {"result": {"agree", "disagree", "error"}},
    "mserve_shadow_top1_rows_total": {"match": {"true", "false"}},
}
_UNLABELLED = (
    "mserve_rollout_generation",
    "mserve_rollout_config_errors_total",
    "mserve_canary_weight_percent",
    "mserve_canary_mirror_percent",
    "mserve_canary_revision",
    "mserve_shadow_dropped_total",
)


def test_canary_series_carry_only_closed_label_sets(stable: Server) -> None:
    text = stable.metrics()
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(("mserve_canary", "mserve_shadow", "mserve_rollout")):
            continue
        name, _, labels = line.split(" ")[0].partition("{")
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        name = re.sub(r"_created$", "_total", name)
        if name in _CLOSED_LABELS:
            for key, value in pairs.items():
                assert value in _CLOSED_LABELS[name][key], line
        elif name.endswith("_bucket"):
            assert set(pairs) == {"le"}, line
        else:
            assert not pairs, line
    for name in (*_CLOSED_LABELS, *_UNLABELLED):
        assert f"\n{name}" in text, name


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("canary-keys")
    write_secret(root / "team", {"key": "k-2b7e151628aed2a6"})
    return root


def test_the_callers_credential_goes_with_the_forward(
    models: dict[str, Path], keys_dir: Path, tmp_path: Path
) -> None:
    auth = ("--auth", "apiKey", "--api-keys-dir", str(keys_dir))
    path = tmp_path / "rollout.json"
    with (
        serving(
            models["tiny"], "tiny", tmp_path / "c.log", *auth, env={"MSERVE_MODEL_VERSION": "2"}
        ) as canary_,
        serving(
            models["tiny"],
            "tiny",
            tmp_path / "s.log",
            *auth,
            "--rollout-file",
            str(path),
            env={"MSERVE_MODEL_VERSION": "1"},
        ) as stable_,
    ):
        apply(stable_, path, split(canary_.url, 100))
        served = 'model="tiny",protocol="rest",status="200"'
        assert set(versions(stable_, 5, {"Authorization": "Bearer k-2b7e151628aed2a6"})) == {"2"}
        assert set(versions(stable_, 5, {"X-API-Key": "k-2b7e151628aed2a6"})) == {"2"}
        assert metric(canary_, "mserve_requests_total", served) == 10
        refused = httpx.post(stable_.url + INFER, json=BODY, timeout=10)
        assert refused.status_code == 401
        assert metric(canary_, "mserve_requests_total", served) == 10
        assert metric(stable_, "mserve_canary_forwarded_total", 'outcome="answered"') == 10


def test_v1_predict_is_split_and_mirrored_too(stable: Server, canary: Server, rollout_file: Path) -> None:
    instances = {"instances": X.tolist()}
    v1 = 'model="tiny",protocol="rest_v1",status="200"'
    apply(stable, rollout_file, split(canary.url, 100))
    before = metric(canary, "mserve_requests_total", v1)
    forwarded = httpx.post(f"{stable.url}/v1/models/tiny:predict", json=instances, timeout=10)
    assert forwarded.status_code == 200
    assert metric(canary, "mserve_requests_total", v1) == before + 1
    agree = metric(stable, "mserve_shadow_comparisons_total", 'result="agree"')
    apply(stable, rollout_file, split(canary.url, 0, 100))
    local = httpx.post(f"{stable.url}/v1/models/tiny:predict", json=instances, timeout=10)
    assert local.json() == forwarded.json()
    wait_until(
        "the V1 answer compared",
        lambda: metric(stable, "mserve_shadow_comparisons_total", 'result="agree"') == agree + 1,
        timeout=10,
        interval=0.1,
    )
    apply(stable, rollout_file, None)


def test_a_rollout_file_naming_the_stable_itself_does_not_loop(stable: Server, rollout_file: Path) -> None:
    answered = metric(stable, "mserve_canary_forwarded_total", 'outcome="answered"')
    apply(stable, rollout_file, split(stable.url, 100, 100))
    assert set(versions(stable, 5)) == {"1"}
    # Each request went round once: forwarded to itself, served there, never passed on again.
    assert metric(stable, "mserve_canary_forwarded_total", 'outcome="answered"') == answered + 5
    apply(stable, rollout_file, None)
