"""TCP reachability: the readiness probe's broker check, and the dev stack's wait loops."""

from __future__ import annotations

import socket


def port_open(port: int, host: str = "127.0.0.1", timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections there (names and IPv6 resolve too)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
