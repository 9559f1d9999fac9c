"""Free TCP ports for servers this process is about to start (`tradebot up`, the tests)."""

from __future__ import annotations

import socket
import threading

__all__ = ["free_port", "reserve_ports"]

# Ports handed out or reserved by this process. The kernel may offer a port again as soon as the probe
# socket is closed, before the server it was meant for has bound it: two servers would then collide.
_taken: set[int] = set()
_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now, never handed out before by this process nor reserved."""
    with _lock:
        while True:
            port = _offered_port(host)
            if port not in _taken:
                _taken.add(port)
                return port


def _offered_port(host: str) -> int:
    """The port the kernel picks for a socket bound to port 0 (free until the probe is closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def reserve_ports(*ports: int) -> None:
    """Ports chosen elsewhere (a command-line flag) that `free_port` must never hand out."""
    with _lock:
        _taken.update(ports)
