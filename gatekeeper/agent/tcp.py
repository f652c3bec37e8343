"""The agent's TCP listener: asyncssh connections on sockets tuned for small request/response traffic.

Stock OpenSSH clients do not set ``TCP_NODELAY`` on non-PTY sessions, so each small packet they send
after one that is not yet acknowledged waits for our ACK; Linux delays ACKs up to 40 ms. Re-arming
``TCP_QUICKACK`` after every read makes the server acknowledge at once (FIELD-NOTES: 56–96 ms →
12.5 ms per new ``ssh`` connection; bench/agent_tcp.py measures it on this code). ``TCP_NODELAY`` is
set on our side too (asyncio already does it for TCP transports; we do not rely on that).

asyncssh builds its connection objects itself; it hands its connection factory to the ``tunnel``
object's ``create_server(factory, host, port)`` when one is given to :func:`asyncssh.listen`.
:class:`TunedListener` is such an object: it listens with :meth:`asyncio.loop.create_server` and
wraps each connection in :class:`_TunedProtocol`, which forwards every protocol call unchanged.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

__all__ = ["TunedListener"]

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def _set_opt(sock: Any, level: int, opt: int | None) -> None:
    if sock is None or opt is None:
        return
    try:
        sock.setsockopt(level, opt, 1)
    except OSError:  # not TCP (e.g. a test transport): nothing to tune
        pass


class _TunedProtocol(asyncio.Protocol):
    """Wraps an asyncssh connection: identical behaviour, plus socket options around reads."""

    def __init__(self, inner: asyncio.Protocol, quickack: bool) -> None:
        self._inner = inner
        self._quickack = quickack
        self._sock: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sock = transport.get_extra_info("socket")
        _set_opt(self._sock, socket.IPPROTO_TCP, socket.TCP_NODELAY)
        if self._quickack:
            _set_opt(self._sock, socket.IPPROTO_TCP, _QUICKACK)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._quickack:  # Linux clears quick-ack mode on its own; re-arm after every read
            _set_opt(self._sock, socket.IPPROTO_TCP, _QUICKACK)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class TunedListener:
    """The ``tunnel=`` argument of :func:`asyncssh.listen` that listens on real TCP sockets."""

    def __init__(self, *, quickack: bool = True, backlog: int = 100) -> None:
        self.quickack = quickack
        self.backlog = backlog

    async def create_server(
        self, session_factory: Callable[[str, int], Any], listen_host: str, listen_port: int
    ) -> asyncio.Server:
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.Protocol:
            inner = session_factory(listen_host, listen_port)
            return _TunedProtocol(inner, self.quickack)

        return await loop.create_server(
            factory, listen_host, listen_port, backlog=self.backlog, reuse_address=True
        )
