"""Cost per 1,000 inferences: priced requests over measured throughput; careless sheets and
no traffic give no figure and say why, never a division by zero."""

from __future__ import annotations

import pytest
from mserve_operator.cost import PodRequests, PriceSheet, estimate, pod_requests
from mserve_operator.settings import OperatorSettings
from mserve_operator.usage_meter import usage_status
from mserve_operator.usage_window import UsageSummary
from pydantic import ValidationError

SHEET = PriceSheet(cpu_hour=0.04, memory_gib_hour=0.005, gpu_hour=2.5)


def _pod(**requests: str) -> dict:
    return {
        "spec": {
            "containers": [
                {"name": "runtime", "resources": {"requests": requests}},
                {"name": "sidecar", "resources": {}},
            ]
        }
    }


def test_pod_requests_sum_containers_in_cores_gib_and_gpus() -> None:
    got = pod_requests(
        _pod(cpu="500m", memory="512Mi", **{"nvidia.com/gpu": "1", "ephemeral-storage": "1Gi"})
    )
    assert got == PodRequests(cpu=0.5, memory_gib=0.5, gpus=1.0)
    assert pod_requests({"spec": {}}) == PodRequests()


def test_cost_is_hourly_price_over_inferences_per_hour_times_1000() -> None:
    pods = [PodRequests(cpu=1.0, memory_gib=2.0), PodRequests(cpu=1.0, memory_gib=2.0)]
    cost = estimate(SHEET, pods, successes_per_second=10.0)
    assert cost.hourly == pytest.approx(2 * 0.04 + 4 * 0.005)
    assert cost.per_1k_inferences == pytest.approx(0.1 / 36000 * 1000)
    assert cost.reason == ""


@pytest.mark.parametrize(
    ("sheet", "pods", "throughput", "hourly", "reason"),
    [
        (PriceSheet(), [PodRequests(cpu=1)], 10.0, None, "no price sheet configured"),
        (SHEET, [], 10.0, None, "no runtime pod is running"),
        (PriceSheet(cpu_hour=0.04), [PodRequests(cpu=1, gpus=1)], 10.0, None, "no GPU-hour price"),
        (SHEET, [PodRequests(cpu=1)], 0.0, 0.04, "no successful inference in the usage window"),
        (SHEET, [PodRequests(cpu=1)], None, 0.04, "two metrics scrapes are needed"),
    ],
)
def test_no_cost_figure_says_why(sheet, pods, throughput, hourly, reason) -> None:
    cost = estimate(sheet, pods, throughput)
    assert cost.per_1k_inferences is None
    assert cost.hourly == (pytest.approx(hourly) if hourly is not None else None)
    assert reason in cost.reason


def test_a_resource_left_unpriced_is_fine_when_no_pod_requests_it() -> None:
    cost = estimate(PriceSheet(cpu_hour=0.04, memory_gib_hour=0.0), [PodRequests(cpu=1, memory_gib=1)], 1.0)
    assert cost.per_1k_inferences == pytest.approx(0.04 / 3600 * 1000)


@pytest.mark.parametrize("field", ["price_cpu_hour", "price_memory_gib_hour", "price_gpu_hour"])
@pytest.mark.parametrize("price", [-0.01, float("inf"), float("nan"), "abc"])
def test_a_negative_infinite_or_unreadable_price_is_refused_naming_it(field: str, price: object) -> None:
    with pytest.raises(ValidationError, match=field):
        OperatorSettings(**{field: price})


def test_status_usage_names_every_figure_so_a_merge_patch_clears_stale_ones() -> None:
    summary = UsageSummary(
        seconds=300,
        requests=600,
        requests_per_second=2.0,
        successes_per_second=0.0,
        error_rate=1.0,
        p99_seconds=0.02,
    )
    cost = estimate(SHEET, [PodRequests(cpu=1)], summary.successes_per_second)
    usage = usage_status(summary, cost, pods=1, window_s=300, message="", now="2026-11-30T04:00:00Z")
    assert usage["requestsPerSecond"] == 2.0
    assert usage["costPer1kInferences"] is None
    assert usage["costMessage"] == "no successful inference in the usage window"
    assert usage["message"] is None
    empty = usage_status(None, estimate(PriceSheet(), [], None), 0, 300, "no runtime pod is running", "t")
    assert set(empty) == set(usage)
    assert empty["requestsPerSecond"] is None
