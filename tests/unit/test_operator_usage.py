"""status.usage: the runtime's real metrics page parsed, windows over snapshots, p99, restarts."""

from __future__ import annotations

import math
import socket

import pytest
from mserve_operator.usage_scrape import PodCounts, parse_counts, scrape
from mserve_operator.usage_window import UsageWindow, quantile
from mserve_runtime.metrics import RuntimeMetrics
from mserve_runtime.usage_metrics import Usage, UsageMetrics
from prometheus_client import generate_latest, start_http_server

from tests.support.tls_certs import issue


def _runtime_page(ok: int, failed: int, seconds: float) -> str:
    metrics = RuntimeMetrics(models=frozenset({"digits"}))
    UsageMetrics(metrics.registry, metrics.models).record("digits", "team-a", Usage(rows=3), 10, 20)
    for _ in range(ok):
        metrics.observe_request("digits", "rest", "200", seconds)
    for _ in range(failed):
        metrics.observe_request("digits", "grpc", "UNAUTHENTICATED", seconds)
    metrics.observe_request("digits", "grpc", "OK", seconds)
    return generate_latest(metrics.registry).decode()


def test_the_runtime_page_is_read_as_requests_failures_and_latency_buckets() -> None:
    counts = parse_counts(_runtime_page(ok=7, failed=2, seconds=0.003))
    assert counts.requests == 10  # 7 REST 200, 2 gRPC UNAUTHENTICATED, 1 gRPC OK
    assert counts.failures == 2
    assert counts.latency_buckets[0.0025] == 0
    assert counts.latency_buckets[0.005] == 10
    assert counts.latency_buckets[math.inf] == 10


def test_a_page_without_runtime_metrics_counts_nothing() -> None:
    assert parse_counts("# HELP other x\n# TYPE other counter\nother_total 5\n") == PodCounts()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_scrape_reads_a_real_metrics_endpoint_and_names_an_unreachable_one() -> None:
    metrics = RuntimeMetrics(models=frozenset({"digits"}))
    metrics.observe_request("digits", "rest", "200", 0.01)
    port = _free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    try:
        assert scrape("127.0.0.1", port, timeout_s=2.0).requests == 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    with pytest.raises(OSError, match="refused"):
        scrape("127.0.0.1", port, timeout_s=1.0)


def _counts(requests: float, failures: float = 0.0, fast: float | None = None) -> PodCounts:
    fast = requests if fast is None else fast
    return PodCounts(requests, failures, {0.01: fast, 0.1: requests, math.inf: requests})


def test_window_gives_rate_error_rate_and_p99_between_its_oldest_and_newest_snapshot() -> None:
    window = UsageWindow(window_s=300)
    assert window.summary() is None
    window.add(0.0, {"a": _counts(100), "b": _counts(50)})
    assert window.summary() is None  # one snapshot is no rate
    window.add(10.0, {"a": _counts(200, failures=10, fast=100), "b": _counts(150)})
    summary = window.summary()
    assert summary is not None
    assert summary.seconds == 10
    assert summary.requests_per_second == pytest.approx(20.0)
    assert summary.successes_per_second == pytest.approx(19.0)
    assert summary.error_rate == pytest.approx(0.05)
    # 200 requests in the window, 100 under 10 ms: p99 is inside (0.01, 0.1]
    assert summary.p99_seconds == pytest.approx(0.01 + 0.09 * (198 - 100) / 100)


def test_a_restarted_or_new_pod_counts_from_zero_and_a_gone_pod_not_at_all() -> None:
    window = UsageWindow(window_s=300)
    window.add(0.0, {"a": _counts(1000), "gone": _counts(500)})
    window.add(10.0, {"a": _counts(30), "new": _counts(20)})  # a restarted: its counters went down
    summary = window.summary()
    assert summary is not None
    assert summary.requests_per_second == pytest.approx(5.0)


def test_the_window_drops_snapshots_older_than_it_but_stays_covered() -> None:
    window = UsageWindow(window_s=60)
    for at in range(0, 200, 10):
        window.add(float(at), {"a": _counts(at * 2)})
    summary = window.summary()
    assert summary is not None
    assert 60 <= summary.seconds <= 70
    assert summary.requests_per_second == pytest.approx(2.0)


def test_no_traffic_in_the_window_gives_zero_rate_and_no_error_rate_or_p99() -> None:
    window = UsageWindow(window_s=60)
    window.add(0.0, {"a": _counts(5)})
    window.add(30.0, {"a": _counts(5)})
    summary = window.summary()
    assert summary is not None
    assert (summary.requests_per_second, summary.error_rate, summary.p99_seconds) == (0.0, None, None)


def test_quantile_of_empty_buckets_and_of_the_inf_bucket() -> None:
    assert quantile(0.99, {}) is None
    assert quantile(0.99, {0.1: 0.0, math.inf: 0.0}) is None
    # every request slower than the largest finite bound: the bound is what can be said
    assert quantile(0.99, {0.1: 0.0, 1.0: 0.0, math.inf: 5.0}) == 1.0


def test_scrape_reads_an_admin_port_that_speaks_tls_under_a_ca_the_operator_does_not_know(tmp_path) -> None:
    issued = issue("digits.team-a.svc")
    (tmp_path / "tls.crt").write_bytes(issued.cert_pem)
    (tmp_path / "tls.key").write_bytes(issued.key_pem)
    metrics = RuntimeMetrics(models=frozenset({"digits"}))
    metrics.observe_request("digits", "grpc", "INTERNAL", 0.01)
    port = _free_port()
    server, thread = start_http_server(
        port,
        addr="127.0.0.1",
        registry=metrics.registry,
        certfile=str(tmp_path / "tls.crt"),
        keyfile=str(tmp_path / "tls.key"),
    )
    try:
        counts = scrape("127.0.0.1", port, timeout_s=2.0, scheme="https")
        assert (counts.requests, counts.failures) == (1, 1)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_requests_mirrored_to_a_canary_are_not_counted_twice() -> None:
    stable = _runtime_page(ok=7, failed=0, seconds=0.003)
    mirrored = (
        "# TYPE mserve_shadow_comparisons_total counter\n"
        'mserve_shadow_comparisons_total{result="agree"} 3\n'
        'mserve_shadow_comparisons_total{result="error"} 1\n'
    )
    # The canary pod counts the 4 mirrored requests among its own; the stable page takes them off.
    assert parse_counts(stable + mirrored).requests == parse_counts(stable).requests - 4
