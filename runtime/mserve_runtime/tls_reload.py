"""TLS for REST and gRPC from two PEM files, re-read when they change (a renewed certificate,
e.g. cert-manager updating the Secret volume) without a restart.

REST: uvicorn serves with `context`; `reload()` loads the new chain into that same context,
which every new connection is created from. gRPC: `grpc_credentials()` hands gRPC a fetcher
it calls at each handshake; it returns the new pair once after each reload. A changed pair is
first loaded into a scratch context, so a half-written or mismatched pair is never served:
the previous certificate stays until the files are whole again.
"""

from __future__ import annotations

import logging
import os
import ssl

import grpc

from mserve_runtime.errors import ConfigError

log = logging.getLogger("mserve.tls")

Stamp = tuple[tuple[int, int, int], tuple[int, int, int]]
_NAMES = "MSERVE_TLS_CERT_FILE / MSERVE_TLS_KEY_FILE"


def _new_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class TlsFiles:
    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = _new_context()
        self.version = 0
        self._stamp: Stamp | None = None
        self._refused: Stamp | None = None
        self.pem = (b"", b"")
        try:
            stamp = self._stat()
            self._load(stamp)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"{_NAMES} cannot be loaded: {_reason(exc)}") from None

    def _stat(self) -> Stamp:
        def one(path: str) -> tuple[int, int, int]:
            st = os.stat(path)  # follows the Secret volume's links to the current file
            return (st.st_ino, st.st_mtime_ns, st.st_size)

        return one(self.cert_file), one(self.key_file)

    def _load(self, stamp: Stamp) -> None:
        with open(self.cert_file, "rb") as cert, open(self.key_file, "rb") as key:
            pem = (cert.read(), key.read())
        _new_context().load_cert_chain(self.cert_file, self.key_file)  # whole and matching?
        if self._stat() != stamp:
            raise ValueError("the files changed while being read")
        self.context.load_cert_chain(self.cert_file, self.key_file)
        self.pem = pem
        self._stamp = stamp
        self.version += 1

    def reload(self) -> bool:
        """Load the files if they changed since the last load (call it off the event loop)."""
        try:
            stamp = self._stat()
        except OSError as exc:
            if self._refused is None:
                log.warning("TLS files unreadable, keeping the current certificate: %s", _reason(exc))
                self._refused = ((0, 0, 0), (0, 0, 0))
            return False
        if stamp == self._stamp or stamp == self._refused:
            return False
        try:
            self._load(stamp)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning(
                "TLS files changed but cannot be loaded, keeping the current certificate: %s", _reason(exc)
            )
            self._refused = stamp
            return False
        self._refused = None
        log.info("TLS certificate reloaded from %s", self.cert_file)
        return True

    def grpc_credentials(self) -> grpc.ServerCredentials:
        cert, key = self.pem
        seen = [self.version]

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # Called by gRPC at every handshake: nothing but a comparison unless a reload happened.
            if self.version == seen[0]:
                return None
            seen[0] = self.version
            new_cert, new_key = self.pem
            return grpc.ssl_server_certificate_configuration([(new_key, new_cert)])

        initial = grpc.ssl_server_certificate_configuration([(key, cert)])
        return grpc.dynamic_ssl_server_credentials(initial, fetch, require_client_authentication=False)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"
