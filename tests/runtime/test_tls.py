"""MSERVE_TLS_CERT_FILE/KEY_FILE on a real `mserve serve`: REST and gRPC over TLS with
tritonclient's ssl options, a certificate rotated mid-test (as a Secret volume update
rotates it) and picked up without a restart, and careless files refused by name."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from cryptography import x509

from tests.support.models import DigitsModel
from tests.support.polling import wait_until
from tests.support.secret_volume import write_secret
from tests.support.serving import MSERVE, Server, serving
from tests.support.tls_certs import Issued, issue


def _served_serial(server: Server, port: int | None = None) -> int:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    import socket

    with (
        socket.create_connection(("127.0.0.1", port or server.port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _http_infer(server: Server, ca: Path) -> np.ndarray:
    client = triton_http.InferenceServerClient(server.host, ssl=True, ssl_options={"ca_certs": str(ca)})
    try:
        tensor = triton_http.InferInput("x", [1, 64], "FP32")
        tensor.set_data_from_numpy(np.full((1, 64), 0.5, dtype=np.float32), binary_data=True)
        return client.infer("digits", [tensor]).as_numpy("logits")
    finally:
        client.close()


def _grpc_infer(server: Server, ca: Path) -> np.ndarray:
    client = triton_grpc.InferenceServerClient(server.grpc_url, ssl=True, root_certificates=str(ca))
    try:
        tensor = triton_grpc.InferInput("x", [1, 64], "FP32")
        tensor.set_data_from_numpy(np.full((1, 64), 0.5, dtype=np.float32))
        return client.infer("digits", [tensor], client_timeout=10).as_numpy("logits")
    finally:
        client.close()


def _tls_volume(path: Path, issued: Issued) -> None:
    write_secret(path, {"tls.crt": issued.cert_pem, "tls.key": issued.key_pem})


def test_rest_and_grpc_serve_tls_and_pick_up_a_renewed_certificate(
    digits: DigitsModel, tmp_path: Path
) -> None:
    first, second = issue("first"), issue("second")
    ca1, ca2 = first.write_ca(tmp_path / "ca1.pem"), second.write_ca(tmp_path / "ca2.pem")
    volume = tmp_path / "tls"
    _tls_volume(volume, first)
    args = ("--tls-cert-file", str(volume / "tls.crt"), "--tls-key-file", str(volume / "tls.key"))
    with serving(digits.path, "digits", tmp_path / "mserve.log", *args, grpc=True) as server:
        assert _http_infer(server, ca1).shape == (1, 10)
        assert _grpc_infer(server, ca1).shape == (1, 10)
        assert _served_serial(server) == first.serial
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/v2/health/ready", verify=ssl.create_default_context(cafile=str(ca2)))
        # Plaintext to the TLS port gets nothing served.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{server.port}/v2/health/ready", timeout=5)
        # The admin port stays plain HTTP for the scraper and the probes.
        assert httpx.get(f"{server.admin_url}/metrics").status_code == 200

        pid = server.proc.pid
        _tls_volume(volume, second)
        wait_until("the renewed certificate", lambda: _served_serial(server) == second.serial, 15, 0.3)
        assert _http_infer(server, ca2).shape == (1, 10)
        assert _grpc_infer(server, ca2).shape == (1, 10)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/v2/health/ready", verify=ssl.create_default_context(cafile=str(ca1)))

        # A broken renewal (key of another certificate) is refused; the current one stays.
        write_secret(volume, {"tls.crt": first.cert_pem, "tls.key": second.key_pem})
        wait_until(
            "the refusal logged",
            lambda: "cannot be loaded, keeping the current certificate" in server.logs(),
            15,
            0.3,
        )
        assert _served_serial(server) == second.serial
        assert _grpc_infer(server, ca2).shape == (1, 10)
        assert server.proc.pid == pid


def _start_fails(model: Path, *args: str) -> str:
    command = [
        str(MSERVE),
        "serve",
        str(model),
        "--port",
        "0",
        "--grpc-port",
        "0",
        "--admin-port",
        "0",
        *args,
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    return out.stdout + out.stderr


def test_a_certificate_without_a_key_is_refused_naming_both(digits: DigitsModel, tmp_path: Path) -> None:
    cert = tmp_path / "tls.crt"
    cert.write_bytes(issue().cert_pem)
    said = _start_fails(digits.path, "--tls-cert-file", str(cert))
    assert "MSERVE_TLS_CERT_FILE and MSERVE_TLS_KEY_FILE must be set together" in said


def test_careless_tls_files_are_refused_naming_them(digits: DigitsModel, tmp_path: Path) -> None:
    one, other = issue(), issue()
    (tmp_path / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    (tmp_path / "one.crt").write_bytes(one.cert_pem)
    (tmp_path / "other.key").write_bytes(other.key_pem)
    (tmp_path / "one.key").write_bytes(one.key_pem)
    cases = [
        (tmp_path / "missing.crt", tmp_path / "one.key"),
        (tmp_path / "garbage.pem", tmp_path / "one.key"),
        (tmp_path / "one.crt", tmp_path / "other.key"),  # not its key
        (tmp_path / "one.crt", tmp_path),  # a directory
    ]
    for cert, key in cases:
        said = _start_fails(digits.path, "--tls-cert-file", str(cert), "--tls-key-file", str(key))
        assert "MSERVE_TLS_CERT_FILE / MSERVE_TLS_KEY_FILE cannot be loaded" in said, (cert, key, said)
