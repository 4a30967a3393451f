"""/metrics in Prometheus format and JSON access logs."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.support.models import DigitsModel
from tests.support.serving import Server, serving

GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}


def test_metrics_count_requests_by_model_protocol_and_status(digits_server: Server) -> None:
    with digits_server.client() as http:
        before = digits_server.metrics()
        http.post("/v2/models/digits/infer", json=GOOD)
        http.post("/v2/models/digits/infer", json={"inputs": 3})
        http.post("/v2/models/unknown/infer", json=GOOD)
        metrics = httpx.get(f"{digits_server.admin_url}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for name in (
        "mserve_requests_total",
        "mserve_request_duration_seconds_bucket",
        "mserve_batch_size_bucket",
        "mserve_queue_wait_seconds",
        "mserve_requests_in_flight",
    ):
        assert name in text, name
    assert 'mserve_requests_total{model="digits",protocol="rest",status="200"}' in text
    assert 'mserve_requests_total{model="digits",protocol="rest",status="400"}' in text
    assert 'mserve_requests_total{model="_unknown",protocol="rest",status="404"}' in text
    assert text != before


def test_json_access_logs(digits: DigitsModel, tmp_path: Path) -> None:
    log = tmp_path / "mserve.log"
    with serving(digits.path, "digits", log, "--json-logs") as server:
        httpx.post(f"{server.url}/v2/models/digits/infer", json=GOOD)
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    access = [r for r in records if r.get("path") == "/v2/models/digits/infer"]
    assert access, records
    assert access[0]["status"] == 200
    assert access[0]["method"] == "POST"
    assert access[0]["duration_ms"] > 0
    assert {"time", "level", "logger", "message"} <= set(access[0])


def test_access_log_can_be_switched_off(digits: DigitsModel, tmp_path: Path) -> None:
    log = tmp_path / "mserve.log"
    with serving(digits.path, "digits", log, "--no-access-log") as server:
        httpx.post(f"{server.url}/v2/models/digits/infer", json=GOOD)
    assert "/v2/models/digits/infer" not in log.read_text()
