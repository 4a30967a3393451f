"""The canary's pure parts: the rollout file's validation, the credit share, the answer
comparison, and the two settings refusing careless values by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from mserve_runtime.canary_split import CreditShare
from mserve_runtime.cli import serve
from mserve_runtime.rollout_config import (
    MAX_FILE_BYTES,
    NO_ROLLOUT,
    RolloutConfigError,
    RolloutFile,
    canary_origin,
    parse_rollout,
)
from mserve_runtime.shadow_compare import compare_answers, flat_cosine, top1_matches


def _file(canary: object, generation: object = 3) -> bytes:
    return json.dumps({"generation": generation, "canary": canary, "unknown": {"ignored": True}}).encode()


def test_a_full_file_is_read_with_its_defaults() -> None:
    config = parse_rollout(
        _file(
            {
                "url": "http://m-canary.ns.svc.cluster.local:8080/",
                "revision": 4,
                "weight": 12.5,
                "tolerance": None,
            }
        )
    )
    assert config.generation == 3
    canary = config.canary
    assert canary is not None
    assert canary.url == "http://m-canary.ns.svc.cluster.local:8080"
    assert (canary.revision, canary.weight, canary.mirror_percent) == (4, 12.5, 0)
    assert (canary.cosine, canary.max_abs_error) == (None, None)
    tolerance = {"cosine": 0.999, "maxAbsError": 0.01}
    assert parse_rollout(_file({"url": "https://c", "tolerance": tolerance})).canary.max_abs_error == 0.01


@pytest.mark.parametrize("content", [b"", b"  \n", _file(None)])
def test_empty_or_null_canary_is_no_split(content: bytes) -> None:
    assert parse_rollout(content).canary is None


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"{not json", "document"),
        (b"[1]", "document"),
        (_file({"url": "http://c:80", "weight": 150}), "canary.weight"),
        (_file({"url": "http://c:80", "weight": -1}), "canary.weight"),
        (_file({"url": "http://c:80", "mirrorPercent": 101}), "canary.mirrorPercent"),
        (_file({"url": "http://c:80", "weight": "lots"}), "canary.weight"),
        (_file({"url": "http://c:80", "tolerance": {"cosine": 2}}), "canary.tolerance.cosine"),
        (_file({"url": "http://c:80", "tolerance": {"maxAbsError": -1}}), "canary.tolerance.maxAbsError"),
        (_file({"url": "http://c:80/v2/models"}), "canary.url"),
        (_file({"url": "file:///etc/passwd"}), "canary.url"),
        (_file({"url": "http://user:pw@c:80"}), "canary.url"),
        (_file({"url": "http://c:99999"}), "canary.url"),
        (_file({"url": "http://c:80?x=1"}), "canary.url"),
        (_file({"weight": 5}), "canary.url"),
        (_file(None, generation=-1), "generation"),
        (b'{"generation": 1, "pad": "' + b"x" * MAX_FILE_BYTES + b'"}', f"{MAX_FILE_BYTES} bytes"),
    ],
)
def test_a_careless_file_is_rejected_naming_the_field(content: bytes, named: str) -> None:
    with pytest.raises(RolloutConfigError, match=named.replace(".", r"\.")):
        parse_rollout(content)


@pytest.mark.parametrize("url", ["http://[::1]:8080", "https://canary", "http://10.0.0.7:1"])
def test_origins_are_kept(url: str) -> None:
    assert canary_origin(url) == url


def test_the_file_keeps_its_last_good_config(tmp_path: Path) -> None:
    path = tmp_path / "rollout.json"
    applied, errors = [], []
    watched = RolloutFile(str(path), applied.append, lambda: errors.append(1))
    assert watched.config == NO_ROLLOUT
    assert not errors
    path.write_bytes(_file({"url": "http://c:1", "weight": 10}))
    watched.check()
    watched.check()  # unchanged content: applied once
    assert len(applied) == 2
    assert watched.config.canary.weight == 10
    path.write_bytes(b"{")
    watched.check()
    watched.check()
    assert errors == [1]
    assert watched.config.canary.weight == 10
    path.unlink()
    path.mkdir()
    watched.check()
    assert errors == [1, 1]
    assert watched.config.generation == 3


@pytest.mark.parametrize("percent", [0, 0.5, 5, 10, 33.3, 50, 99.9, 100])
def test_the_credit_share_is_exact_at_every_count(percent: float) -> None:
    share = CreditShare()
    taken = 0
    for n in range(1, 2001):
        taken += share.take(percent)
        assert abs(taken - n * percent / 100) <= 1, (n, taken)


def test_agreement_by_cosine_abs_error_and_top1() -> None:
    logits = np.array([[1.0, 3.0, 2.0], [0.5, 0.1, 0.2]], dtype=np.float32)
    same = compare_answers({"y": logits}, {"y": logits.copy()})
    assert same.agree
    assert same.min_cosine == pytest.approx(1.0)
    assert same.max_abs == 0
    relabelled = compare_answers({"y": logits}, {"y": logits[:, [2, 0, 1]]})
    assert not relabelled.agree
    assert relabelled.outputs[0].top1_rows == 2
    assert relabelled.outputs[0].top1_same == 0
    nudged = logits + 0.01
    assert compare_answers({"y": logits}, {"y": nudged}).agree
    assert not compare_answers({"y": logits}, {"y": nudged}, max_abs_error=0.001).agree
    assert not compare_answers({"y": logits}, {"y": -logits}, cosine=-1).agree  # top-1 differs
    assert not compare_answers({"y": logits}, {}).agree  # missing output
    assert not compare_answers({"y": logits}, {"y": logits[:1]}, cosine=-1).agree  # other shape
    assert not compare_answers({"y": logits}, {"y": np.full_like(logits, np.nan)}, cosine=-1).agree
    labels = np.array(["a", "b"], dtype=object)
    assert compare_answers({"l": labels}, {"l": labels.copy()}).agree
    assert not compare_answers({"l": labels}, {"l": labels[::-1].copy()}).agree


def test_figures_at_the_edges() -> None:
    assert flat_cosine(np.zeros(3), np.zeros(3)) == 1.0
    assert flat_cosine(np.zeros(3), np.ones(3)) == 0.0
    assert top1_matches(np.ones(4), np.ones(4)) is None  # rank 1: no rows of classes
    assert top1_matches(np.ones((4, 1)), np.ones((4, 1))) is None
    rows = top1_matches(np.eye(3).reshape(1, 3, 3), np.eye(3)[::-1].reshape(1, 3, 3))
    assert rows is not None
    assert rows.tolist() == [False, True, False]


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--shadow-max-in-flight", "0"], {}, "MSERVE_SHADOW_MAX_IN_FLIGHT"),
        ([], {"MSERVE_SHADOW_MAX_IN_FLIGHT": "-3"}, "MSERVE_SHADOW_MAX_IN_FLIGHT"),
        ([], {"MSERVE_SHADOW_MAX_IN_FLIGHT": "lots"}, "MSERVE_SHADOW_MAX_IN_FLIGHT"),
        ([], {"MSERVE_SHADOW_MAX_IN_FLIGHT": "100000"}, "MSERVE_SHADOW_MAX_IN_FLIGHT"),
        (["--rollout-file", "{dir}"], {}, "MSERVE_ROLLOUT_FILE"),
        ([], {"MSERVE_ROLLOUT_FILE": "x" * 5000}, "MSERVE_ROLLOUT_FILE"),
    ],
)
def test_careless_settings_are_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], named: str
) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(serve, [str(model), *(a.format(dir=tmp_path) for a in args)])
    assert result.exit_code == 2, result.output
    assert named in result.output
