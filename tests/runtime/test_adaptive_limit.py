"""The adaptive limit on requests in flight, on by default with dynamic batching, in a real
server: a closed loop of more clients than the model can serve promptly shrinks it (never
below its floor of 8) and the excess gets 503s; with `--latency-tolerance 0` the same load is
all admitted. Bounds are relative (queueing behind 10 batches is many times one batch's run),
not timings."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.models import build_tiny_mlp
from tests.support.serving import Server, serving

CLIENTS = 48
LOAD_S = 3.0
ROUNDS = 5
FLOOR = 8  # admission.ADAPTIVE_FLOOR
WIDTH = 1024
# Batches of 4 rows; the cap above the clients and the queue-delay bound off: only the
# adaptive limit sheds.
ISOLATED = (
    *("--max-batch-size", "4", "--max-batch-delay-ms", "1", "--threads", "1"),
    *("--max-in-flight", str(CLIENTS), "--max-queue-delay-ms", "0"),
)
BODY = {
    "inputs": [
        {"name": "x", "datatype": "FP32", "shape": [1, WIDTH], "data": np.linspace(-1, 1, WIDTH).tolist()}
    ]
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Runs of milliseconds: 10 batches queued are far past 3x one plus the slack (5 + 1 ms).
    path = tmp_path_factory.mktemp("adaptive") / "mlp.onnx"
    return build_tiny_mlp(path, sizes=(WIDTH, 2048, 2048, WIDTH))


def _limit(server: Server) -> float:
    found = re.search(r'^mserve_requests_in_flight_limit\{model="mlp"\} (\S+)$', server.metrics(), re.M)
    assert found, server.metrics()
    return float(found.group(1))


def _closed_loop(server: Server) -> tuple[Counter[int], list[float]]:
    """CLIENTS connections, each sending its next request when the last is answered, for
    LOAD_S; the statuses, and the limit in force sampled meanwhile."""
    statuses: Counter[int] = Counter()
    stop = time.monotonic() + LOAD_S
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            while time.monotonic() < stop:
                code = http.post(f"{server.url}/v2/models/mlp/infer", json=BODY).status_code
                with lock:
                    statuses[code] += 1

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    limits = []
    while any(thread.is_alive() for thread in threads):
        limits.append(_limit(server))
        time.sleep(0.2)
    for thread in threads:
        thread.join()
    return statuses, limits


def test_by_default_with_batching_a_queue_of_slow_runs_shrinks_the_limit_to_no_less_than_its_floor(
    model: Path, tmp_path: Path
) -> None:
    args = ("--no-access-log", *ISOLATED)
    with serving(model, "mlp", tmp_path / "mserve.log", *args) as server:
        assert "latency_tolerance=3 " in server.logs()
        assert _limit(server) == CLIENTS  # nothing measured yet: the cap
        # A starved client process may not keep the queue long in a given round: up to
        # ROUNDS rounds of load, until the limit has shed.
        statuses: Counter[int] = Counter()
        limits: list[float] = []
        for _ in range(ROUNDS):
            more, sampled = _closed_loop(server)
            statuses.update(more)
            limits.extend(sampled)
            if statuses[503]:
                break
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[200] > 0, statuses
        assert statuses[503] > 0, statuses
        assert FLOOR <= min(limits) < CLIENTS, limits
        after = httpx.post(f"{server.url}/v2/models/mlp/infer", json=BODY, timeout=30)
        assert after.status_code == 200, after.text


def test_tolerance_zero_turns_it_off_and_the_same_load_is_all_admitted(model: Path, tmp_path: Path) -> None:
    args = ("--no-access-log", *ISOLATED, "--latency-tolerance", "0")
    with serving(model, "mlp", tmp_path / "mserve.log", *args) as server:
        statuses, limits = _closed_loop(server)
        assert set(statuses) == {200}, statuses
        assert set(limits) == {CLIENTS}, limits
