"""Free loopback ports for the servers the tests and benchmarks start."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _below_ephemeral() -> range:
    """Ports the kernel never hands to an outgoing connection on its own."""
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(10000, max(low, 10001))


def free_port() -> int:
    """A port free on every address now, outside the kernel's ephemeral range.

    A port the kernel picked for us (bind to port 0) comes from the ephemeral range, where
    any process's next outgoing connection may take it between this call and the server's
    bind; on a busy machine that happens (EADDRINUSE). Below the range only another
    listener can take it.
    """
    candidates = _below_ephemeral()
    for _ in range(100):
        port = random.choice(candidates)
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
