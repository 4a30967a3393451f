"""onnxruntime session options: the runtime applies recorded ones, says which, and refuses bad ones."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from mserve_runtime.cpu_limit import default_threads
from served import MSERVE, serving

X = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]}


def _loaded_line(logs: str) -> str:
    return next(line for line in logs.splitlines() if "loaded model" in line)


def _infers(url: str) -> None:
    answer = httpx.post(f"{url}/v2/models/m/infer", json=X, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["shape"] == [1, 4]


def test_without_recorded_options_the_runtime_defaults_are_logged(tiny_mlp: Path, tmp_path: Path) -> None:
    with serving(tiny_mlp, "m", tmp_path / "log") as server:
        _infers(server.url)
        line = _loaded_line(server.logs())
    assert f"intra_op_threads={default_threads()} " in line
    assert "allow_spinning=0 execution_mode=sequential graph_level=all (runtime defaults)" in line


def test_recorded_options_are_applied_and_logged(tiny_mlp: Path, tmp_path: Path) -> None:
    recorded = {
        "intra_op_threads": 1,
        "inter_op_threads": 2,
        "allow_spinning": True,
        "execution_mode": "parallel",
        "graph_level": "extended",
    }
    env = {"MSERVE_SESSION_OPTIONS": json.dumps(recorded)}
    with serving(tiny_mlp, "m", tmp_path / "log", env=env) as server:
        _infers(server.url)
        line = _loaded_line(server.logs())
    assert (
        "intra_op_threads=1 inter_op_threads=2 allow_spinning=1 execution_mode=parallel "
        "graph_level=extended (recorded by the optimizer)"
    ) in line


def test_status_spelling_is_accepted_and_threads_setting_wins(tiny_mlp: Path, tmp_path: Path) -> None:
    # camelCase, as the ModelService status holds them; an explicit MSERVE_THREADS overrides.
    env = {"MSERVE_SESSION_OPTIONS": '{"intraOpThreads": 2, "graphLevel": "basic"}', "MSERVE_THREADS": "1"}
    with serving(tiny_mlp, "m", tmp_path / "log", env=env) as server:
        _infers(server.url)
        line = _loaded_line(server.logs())
    assert "intra_op_threads=1 " in line
    assert "graph_level=basic (recorded by the optimizer; threads from MSERVE_THREADS)" in line


def test_recorded_threads_above_the_cpus_are_lowered(tiny_mlp: Path, tmp_path: Path) -> None:
    env = {"MSERVE_SESSION_OPTIONS": '{"intra_op_threads": 1024}'}
    with serving(tiny_mlp, "m", tmp_path / "log", env=env) as server:
        _infers(server.url)
        logs = server.logs()
    assert f"recorded intra_op_threads=1024 is more than the {default_threads()} CPUs" in logs
    assert f"intra_op_threads={default_threads()} " in _loaded_line(logs)


BAD = [
    ('{"intra_op_threads": -1}', "intra_op_threads"),
    ('{"intra_op_threads": 100000}', "intra_op_threads"),
    ('{"intra_op_thread": 2}', "intra_op_thread"),
    ('{"execution_mode": "fast"}', "execution_mode"),
    ('{"allow_spinning": "sometimes"}', "allow_spinning"),
    ("[1, 2]", "session_options"),
    ("not json", "session_options"),
]


@pytest.mark.parametrize(("value", "named"), BAD, ids=[b[0] for b in BAD])
def test_bad_recorded_options_stop_start_up_naming_them(tiny_mlp: Path, value: str, named: str) -> None:
    proc = subprocess.run(
        [str(MSERVE), "serve", str(tiny_mlp), "--name", "m", "--port", "0", "--grpc-port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MSERVE_SESSION_OPTIONS": value},
    )
    assert proc.returncode == 2, proc.stderr
    assert "session_options" in proc.stderr
    assert named in proc.stderr
    assert "Traceback" not in proc.stderr
