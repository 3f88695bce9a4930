"""Free loopback ports for the servers the tests start, chosen outside the kernel's ephemeral
range: a port the kernel handed out for a moment (bind to 0) may be taken as the source port of
any outgoing connection before the server binds it, making the server fail to start."""

from __future__ import annotations

import random
import socket
from pathlib import Path

RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
FALLBACK = (20000, 32767)  # below Linux's default ephemeral range (32768-60999)


def _chosen_range() -> tuple[int, int]:
    try:
        low, high = (int(part) for part in RANGE.read_text().split())
    except (OSError, ValueError):
        return FALLBACK
    if low > 21000:
        return 20000, low - 1
    if high < 64535:
        return high + 1, 65535
    return FALLBACK  # the whole range is ephemeral: binding is the only check left


def free_port() -> int:
    """A port nothing listens on or connects from now, outside the ephemeral range."""
    low, high = _chosen_range()
    for _ in range(200):
        port = random.randint(low, high)  # nosec B311 # a port number, not a secret
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {low} and {high}")
