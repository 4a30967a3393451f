"""Access control's pure parts: credential parsing, the key table, the token bucket, settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from mserve_runtime import rate_limit
from mserve_runtime.access import MAX_CREDENTIAL_BYTES, credential
from mserve_runtime.auth_keys import ApiKeys, read_keys
from mserve_runtime.errors import Unauthenticated
from mserve_runtime.rate_limit import RateLimiter, retry_after_s
from mserve_runtime.settings import RuntimeSettings, parse_service_accounts
from pydantic import ValidationError

from tests.support.secret_volume import write_secret


@pytest.mark.parametrize(
    ("authorization", "api_key", "expected"),
    [
        (b"Bearer abc", None, b"abc"),
        (b"bearer   abc  ", None, b"abc"),
        (b"BEARER abc", b"ignored", b"abc"),
        (None, b"  k3y ", b"k3y"),
    ],
)
def test_credentials_are_read_from_either_header(
    authorization: bytes | None, api_key: bytes | None, expected: bytes
) -> None:
    assert credential(authorization, api_key, "API key") == expected


@pytest.mark.parametrize(
    ("authorization", "api_key", "said"),
    [
        (None, None, "no credential"),
        (b"", None, "received scheme ''"),
        (b"Bearer", None, "'Bearer' with no API key"),
        (b"Token abc", None, "received scheme 'Token'"),
        (b"\xc3\xa9 abc", None, "(not printable)"),
        (None, b"   ", "X-API-Key header is empty"),
        (b"Bearer " + b"k" * (MAX_CREDENTIAL_BYTES + 1), None, "longer than"),
    ],
)
def test_careless_credentials_are_named(
    authorization: bytes | None, api_key: bytes | None, said: str
) -> None:
    with pytest.raises(Unauthenticated) as refused:
        credential(authorization, api_key, "API key")
    assert said in refused.value.message


def test_keys_come_from_secret_volumes_hidden_entries_and_empty_values_skipped(tmp_path: Path) -> None:
    write_secret(tmp_path / "team-a", {"prod": "p-1", "empty": " \n"})
    write_secret(tmp_path / "team-b", {"ci": "c-2\n"})
    (tmp_path / "stray-file").write_text("not a secret directory")
    table, problems = read_keys(tmp_path)
    assert [name for name, _ in table] == ["team-a/prod", "team-b/ci"]
    assert problems == ["key 'team-a/empty' is empty and is ignored"]
    keys = ApiKeys(tmp_path)
    assert keys.match(b"p-1") == "team-a/prod"
    assert keys.match(b"c-2") == "team-b/ci"
    assert keys.match(b"c-2\n") is None  # values are stripped on disk, never on the wire
    assert keys.match(b"") is None


def test_a_rotation_is_seen_by_reload(tmp_path: Path) -> None:
    write_secret(tmp_path / "s", {"k": "old"})
    keys = ApiKeys(tmp_path)
    write_secret(tmp_path / "s", {"k": "new"})
    assert keys.reload()
    assert keys.match(b"new") == "s/k"
    assert keys.match(b"old") is None
    assert not keys.reload()  # unchanged


def test_no_directory_means_no_keys(tmp_path: Path) -> None:
    keys = ApiKeys(tmp_path / "missing")
    assert keys.table == ()
    assert keys.match(b"anything") is None


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_the_burst_then_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(rate_limit.time, "monotonic", clock)
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.wait_s("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait_s("a") == pytest.approx(0.5)
    assert limiter.wait_s("b") == 0.0  # its own bucket
    clock.now += 0.5
    assert limiter.wait_s("a") == 0.0
    clock.now += 100
    assert [limiter.wait_s("a") for _ in range(4)][-1] > 0  # refills to the burst, never past it


def test_burst_defaults_to_the_rate_rounded_up() -> None:
    assert RateLimiter(0.2).burst == 1
    assert RateLimiter(7.5).burst == 8


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert retry_after_s(0.001) == 1
    assert retry_after_s(1.0) == 1
    assert retry_after_s(1.01) == 2


def test_service_account_entries() -> None:
    assert parse_service_accounts(" team/app , ops/* ,") == ("team/app", "ops/*")
    for bad in ("team", "/app", "team/", "*/app", "Team/app", "team/app/x", "t" * 64 + "/a"):
        with pytest.raises(ValueError, match="is not 'namespace/name'"):
            parse_service_accounts(bad)


def test_tls_files_come_in_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="MSERVE_TLS_CERT_FILE and MSERVE_TLS_KEY_FILE"):
        RuntimeSettings(tls_key_file="/k.pem")
    assert RuntimeSettings(tls_cert_file="/c.pem", tls_key_file="/k.pem").tls_cert_file == "/c.pem"
