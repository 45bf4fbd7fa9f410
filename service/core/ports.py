"""TCP ports a process is about to listen on: is one taken, and which ones are free."""

from __future__ import annotations

import socket
from collections.abc import Collection

ANY_INTERFACE = "0.0.0.0"
HIGHEST_PORT = 65535


def listen_error(host: str, port: int) -> OSError | None:
    """Why listening on ``host:port`` would fail now (None when it would succeed).

    The probe binds as uvicorn and prometheus-client do (``SO_REUSEADDR``), so a port left in
    TIME_WAIT by a stopped server counts as free, as it does for them.
    """
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
            sock.listen(1)
        except OSError as exc:
            return exc
    return None


def port_in_use(host: str, port: int) -> bool:
    return listen_error(host, port) is not None


def free_port_block(
    host: str, start: int, count: int = 1, avoid: Collection[int] = ()
) -> int | None:
    """The lowest port from ``start`` on where ``count`` consecutive ports are free on ``host``
    and none is in ``avoid``; None if there is no such block below 65536.

    Searching upwards from the usual port keeps a second instance's ports predictable
    (9100 taken: 9102, 9103 …) rather than anywhere in the ephemeral range.
    """
    base = start
    while base + count - 1 <= HIGHEST_PORT:
        taken = next(
            (
                port
                for port in range(base, base + count)
                if port in avoid or port_in_use(host, port)
            ),
            None,
        )
        if taken is None:
            return base
        base = taken + 1
    return None
