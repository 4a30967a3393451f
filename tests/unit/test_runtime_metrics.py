"""RuntimeMetrics: every label value from a closed set, whatever names and statuses come in."""

from __future__ import annotations

import random
import string

import pytest
from mserve_runtime.metrics import RuntimeMetrics
from prometheus_client import generate_latest


def test_unknown_models_and_odd_statuses_add_no_series() -> None:
    metrics = RuntimeMetrics()
    metrics.serve("digits")
    for protocol, status in (("rest", "200"), ("grpc", "OK"), ("rest", "404")):
        metrics.observe_request("digits", protocol, status, 0.001)
        metrics.observe_request("nope", protocol, status, 0.001)
    before = generate_latest(metrics.registry)
    rng = random.Random(5)
    for _ in range(500):
        name = "".join(rng.choices(string.printable, k=rng.choice((1, 50, 5000))))
        metrics.observe_request(name, "grpc", "OK", 0.001)
        metrics.observe_request(name, "rest", "404", 0.001)
    after = generate_latest(metrics.registry)
    assert len(after.splitlines()) == len(before.splitlines())
    assert len(metrics._request_children) == 6


def test_a_status_outside_the_closed_set_is_other_and_a_protocol_outside_it_is_refused() -> None:
    metrics = RuntimeMetrics(models=frozenset({"m"}))
    metrics.observe_request("m", "rest", "not a status", 0.001)
    metrics.observe_request("m", "grpc", "x" * 1000, 0.001)
    text = generate_latest(metrics.registry).decode()
    assert 'mserve_requests_total{model="m",protocol="rest",status="other"} 1.0' in text
    assert 'mserve_requests_total{model="m",protocol="grpc",status="other"} 1.0' in text
    with pytest.raises(ValueError, match="protocol"):
        metrics.observe_request("m", "smtp", "200", 0.001)
