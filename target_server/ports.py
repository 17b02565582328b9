"""Free and taken TCP ports, probed the way gunicorn and Locust will bind them (the server's own
check before it starts, and the harness's choice of ports for Locust).

Both bind an IPv6 socket for an IPv6 literal and IPv4 otherwise (no name lookup), with
SO_REUSEADDR; probing the same way avoids false "taken" or "free" answers.
"""
from __future__ import annotations

import errno
import socket


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel considers free right now (another process may still take it first)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_taken(host: str, port: int) -> bool:
    """True when something already listens there; other bind errors (bad address) propagate."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False
