"""Reading one runtime pod's `/metrics` (admin port) into the counts `status.usage` summarises.

Only the runtime's own families are read: `mserve_requests_total` (answered requests by status)
and `mserve_request_duration_seconds` (latency buckets), summed over models and protocols, less
`mserve_shadow_comparisons_total` (requests mirrored to a canary, which counts them too).
"""

from __future__ import annotations

import ssl
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

REQUESTS_FAMILY = "mserve_requests"
LATENCY_FAMILY = "mserve_request_duration_seconds"
# On a stable pod during a canary: requests it also sent to the canary to compare the answers.
MIRRORED_FAMILY = "mserve_shadow_comparisons"
# Bodies larger than this are not a runtime's metrics page: stop reading rather than fill memory.
MAX_METRICS_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class PodCounts:
    """Cumulative counters of one runtime process since it started."""

    requests: float = 0.0
    failures: float = 0.0
    """Answered requests whose status is not a success (HTTP other than 2xx, gRPC other than OK)."""
    latency_buckets: dict[float, float] = field(default_factory=dict)
    """Cumulative latency histogram: upper bound (seconds, `inf` last) -> requests at or under it."""


def is_success(status: str) -> bool:
    return status == "OK" or (len(status) == 3 and status.startswith("2"))


def parse_counts(text: str) -> PodCounts:
    requests = failures = mirrored = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == REQUESTS_FAMILY:
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    requests += sample.value
                    if not is_success(sample.labels.get("status", "")):
                        failures += sample.value
        elif family.name == LATENCY_FAMILY:
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
        elif family.name == MIRRORED_FAMILY:
            mirrored += sum(s.value for s in family.samples if s.name.endswith("_total"))
    # A mirrored request is counted again by the canary pod that answered it: one caller's request
    # is billed once. Never below zero on a pod: each comparison follows a request the pod served.
    return PodCounts(max(0.0, requests - mirrored), failures, dict(sorted(buckets.items())))


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def read_page(ip: str, port: int, timeout_s: float, scheme: str = "http") -> str:
    """GET <scheme>://ip:port/metrics, at most MAX_METRICS_BYTES; raises OSError or ValueError.

    With `https` (a model served over TLS serves its admin port over TLS too) the certificate is
    not verified: it names the Service, not the pod's address, and its CA is the model owner's.
    Nothing secret is sent; the worst a spoofed page can do is skew the figures read from it.
    """
    host = f"[{ip}]" if ":" in ip else ip
    context = _unverified() if scheme == "https" else None
    url = f"{scheme}://{host}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout_s, context=context) as response:
        body = response.read(MAX_METRICS_BYTES + 1)
    if len(body) > MAX_METRICS_BYTES:
        raise ValueError(f"metrics page of {ip}:{port} is larger than {MAX_METRICS_BYTES} bytes")
    return body.decode("utf-8", errors="replace")


def scrape(ip: str, port: int, timeout_s: float, scheme: str = "http") -> PodCounts:
    """The request counts of one runtime pod (`read_page`'s errors)."""
    return parse_counts(read_page(ip, port, timeout_s, scheme))
