"""Can the leaderboard listen on host:port? One-line errors before Gradio loads (stdlib only)."""
from __future__ import annotations

import errno
import socket


class PortInUse(ValueError):
    """The leaderboard's port is taken: one line (exit code 2), with a free port to use instead."""


def _bind_error(host: str, port: int) -> OSError | None:
    """None when ``host:port`` can be bound now (what the server will do), else the error."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        return exc
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
        try:
            s.bind(addr)
        except OSError as exc:
            return exc
    return None


def check_port(host: str, port: int) -> None:
    """Fail in one line (ValueError, exit code 2) when the leaderboard could not listen on host:port."""
    if not 1 <= port <= 65535:
        raise ValueError(f"--port {port} is not a port number (1-65535)")
    exc = _bind_error(host, port)
    if exc is None:
        return
    if isinstance(exc, socket.gaierror):
        raise ValueError(f"--host {host} is not an address of this machine ({exc.strerror})")
    if exc.errno == errno.EADDRINUSE:
        free = next((p for p in range(port + 1, min(port + 100, 65535) + 1) if _bind_error(host, p) is None), None)
        hint = f"pass --port {free}" if free else "pass another --port"
        raise PortInUse(f"port {port} on {host} is already in use (another leaderboard?); {hint}")
    if exc.errno == errno.EACCES:
        raise ValueError(f"--port {port}: permission denied (ports below 1024 need privileges); pass --port 7860")
    if exc.errno == errno.EADDRNOTAVAIL:
        raise ValueError(f"--host {host} is not an address of this machine")
    raise ValueError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --host or --port")
