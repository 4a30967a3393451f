"""Usage and cost, as a platform team sees them: two teams call one model with their own API
keys; the operator's status.usage shows requests/s, error rate, p99 and the cost per 1,000
inferences (the e2e install sets a price sheet, conftest.helm_install); a real Prometheus
scrapes the runtime and the operator, and every query of the chart's Grafana dashboard returns
data.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator

import e2e_prometheus
import httpx
import pytest
from conftest import Forward, port_forward
from e2e_kube import CHART, Cluster, wait_until
from e2e_models import DigitsModel, modelservice, wait_for_phase

NAME = "metered"
KEYS_SECRET = "metered-keys"
TRAFFIC_SECONDS = 20
# Grafana's interval variable, as Grafana would set it for a short range
RATE_INTERVAL = "1m"


@pytest.fixture(scope="module")
def prometheus(mserve: Cluster) -> Iterator[str]:
    e2e_prometheus.deploy(mserve)
    forward = port_forward(mserve, e2e_prometheus.NAMESPACE, e2e_prometheus.NAME, e2e_prometheus.PORT)
    yield forward.url
    forward.process.terminate()
    e2e_prometheus.remove(mserve)


@pytest.fixture(scope="module")
def metered(
    mserve: Cluster, module_namespace: str, digits: DigitsModel
) -> Iterator[tuple[Forward, dict[str, str]]]:
    keys = {"team-a": f"a-{secrets.token_hex(16)}", "team-b": f"b-{secrets.token_hex(16)}"}
    data = {k: base64.b64encode(v.encode()).decode() for k, v in keys.items()}
    mserve.apply(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": KEYS_SECRET}, "data": data},
        module_namespace,
    )
    manifest = modelservice(NAME, digits.uris["onnx"], quantize="none")
    manifest["spec"]["access"] = {"authentication": "apiKey", "apiKeySecrets": [KEYS_SECRET]}
    mserve.apply(manifest, module_namespace)
    wait_for_phase(mserve, module_namespace, NAME, "Ready", timeout=420)
    forward = port_forward(mserve, module_namespace, NAME, 8080)
    yield forward, keys
    forward.process.terminate()


def _send(url: str, keys: dict[str, str], seconds: float) -> dict[str, int]:
    """team-a makes 6 calls in 10, team-b 4, one of them with a wrong shape: a 400, which
    the runtime counts as an answered, failed request (a call refused for its key is not metered)."""
    good = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 64], "data": [0.5] * 192}]}
    bad = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 63], "data": [0.5] * 189}]}
    calls = [("team-a", good), ("team-a", good), ("team-b", good)] * 3 + [("team-b", bad)]
    sent: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=10) as client:
        i = 0
        while time.monotonic() < deadline:
            caller, body = calls[i % len(calls)]
            headers = {"Authorization": f"Bearer {keys[caller]}"}
            answer = client.post(f"/v2/models/{NAME}/infer", json=body, headers=headers)
            assert answer.status_code == (200 if body is good else 400), answer.text
            sent[caller] = sent.get(caller, 0) + 1
            i += 1
            time.sleep(0.05)
    return sent


@pytest.fixture(scope="module")
def traffic(prometheus: str, metered: tuple[Forward, dict[str, str]]) -> dict[str, int]:
    forward, keys = metered
    # Traffic while Prometheus scrapes, so that every rate() has two samples of every series.
    return _send(forward.url, keys, TRAFFIC_SECONDS)


def _panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((CHART / "dashboards" / "mserve.json").read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", RATE_INTERVAL))
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def test_status_usage_shows_rate_errors_p99_and_cost(
    mserve: Cluster, module_namespace: str, traffic: dict
) -> None:
    def measured() -> dict | None:
        usage = mserve.get("-n", module_namespace, "msvc", NAME).get("status", {}).get("usage", {})
        return usage if usage.get("requestsPerSecond") and usage.get("costPer1kInferences") else None

    usage = wait_until("status.usage with traffic and cost", measured, timeout=90)
    print("status.usage:", json.dumps(usage, indent=1))
    assert usage["pods"] == 1
    assert 0 < usage["errorRate"] < 0.5  # the tenth of the calls with a wrong shape
    assert 0 < usage["p99Seconds"] < 10
    assert usage["hourlyCost"] > 0
    assert "costMessage" not in usage
    wide = mserve.kubectl("-n", module_namespace, "get", "msvc", NAME, "-o", "wide")
    print(wide)
    header, row = wide.splitlines()[:2]
    assert header.split()[-2:] == ["REQ/S", "COST/1K"]
    requests_per_second, cost = (float(column) for column in row.split()[-2:])
    assert requests_per_second > 0
    assert cost > 0


def test_prometheus_has_usage_per_caller_and_the_operator_cost(
    prometheus: str, module_namespace: str, traffic: dict
) -> None:
    promql = f'sum by (caller) (mserve_usage_requests_total{{namespace="{module_namespace}"}})'
    # a key is named <secret>/<entry> in metrics, never by its value
    expected = {f"{KEYS_SECRET}/{caller}": float(count) for caller, count in traffic.items()}

    def per_caller() -> dict[str, float]:
        result = e2e_prometheus.wait_for_data(prometheus, promql)
        return {series["metric"]["caller"]: float(series["value"][1]) for series in result}

    # the last scrape after the traffic has every request
    got = wait_until(
        "Prometheus' count per caller", lambda: (g := per_caller()) == expected and g, timeout=60
    )
    print(f"PromQL: {promql}\n  -> {got}")
    cost = e2e_prometheus.wait_for_data(
        prometheus,
        f'mserve_operator_usage_cost_per_1k_inferences{{modelservice="{NAME}",namespace="{module_namespace}"}}',
    )
    assert float(cost[0]["value"][1]) > 0


@pytest.mark.parametrize(("title", "promql"), _panel_queries())
def test_every_dashboard_query_returns_data(prometheus: str, traffic: dict, title: str, promql: str) -> None:
    assert e2e_prometheus.wait_for_data(prometheus, promql), title
