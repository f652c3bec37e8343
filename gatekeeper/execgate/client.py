"""The ``gk exec`` side of the local-mode protocol: a blocking Unix-socket client (stdlib only).

``gk exec`` runs as the SSH user for every session, so this module imports nothing beyond the
standard library and :mod:`gatekeeper.execgate.protocol`: it must start fast and must not depend on
anything that user could influence.
"""

from __future__ import annotations

import socket
import struct

from gatekeeper.errors import GatekeeperError
from gatekeeper.execgate.protocol import (
    HEADER_SIZE,
    Ack,
    DecideRequest,
    DecisionReply,
    ExitReport,
    LocalProtocolError,
    Message,
    encode,
    parse_message,
    payload_length,
)

__all__ = ["LocalUnavailable", "LocalClient"]

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class LocalUnavailable(GatekeeperError):
    """The local agent cannot be reached, is not the expected owner, or went away mid-request."""

    exit_code = 223


class LocalClient:
    """One connection to the local agent, carrying one SSH session.

    Use :meth:`connect`, then :meth:`decide` once, then (for an allowed command) :meth:`report_exit`
    once, then :meth:`close`. Every method raises :class:`LocalUnavailable` on I/O errors, timeouts
    and EOF, and :class:`LocalProtocolError` on a malformed or unexpected reply.
    """

    def __init__(self, sock: socket.socket, path: str) -> None:
        self._sock = sock
        self._path = path

    @classmethod
    def connect(cls, path: str, *, timeout: float, server_uid: int | None = 0) -> LocalClient:
        """Connect to the agent's socket at ``path``. When ``server_uid`` is not None, the process
        that created the listening socket must run as that uid (SO_PEERCRED), so that a socket
        planted by someone else is never trusted."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            if server_uid is not None:
                creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
                _pid, uid, _gid = _UCRED.unpack(creds)
                if uid != server_uid:
                    raise LocalUnavailable(
                        f"the local gatekeeper socket {path} is served by uid {uid}, not {server_uid}"
                    )
        except OSError as exc:
            sock.close()
            raise LocalUnavailable(
                f"the local gatekeeper service at {path} is unreachable ({exc.strerror or exc})"
            ) from exc
        except LocalUnavailable:
            sock.close()
            raise
        return cls(sock, path)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def set_timeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def _send(self, message: Message) -> None:
        try:
            self._sock.sendall(encode(message))
        except OSError as exc:
            raise LocalUnavailable(f"lost the local gatekeeper service ({exc.strerror or exc})") from exc

    def _recv_exact(self, n: int) -> bytes:
        chunks: list[bytes] = []
        remaining = n
        while remaining:
            try:
                chunk = self._sock.recv(min(remaining, 65536))
            except TimeoutError as exc:
                raise LocalUnavailable("the local gatekeeper service did not answer in time") from exc
            except OSError as exc:
                raise LocalUnavailable(
                    f"lost the local gatekeeper service ({exc.strerror or exc})"
                ) from exc
            if not chunk:
                raise LocalUnavailable("the local gatekeeper service closed the connection")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _recv(self) -> Message:
        length = payload_length(self._recv_exact(HEADER_SIZE))
        return parse_message(self._recv_exact(length))

    def decide(self, request: DecideRequest) -> DecisionReply:
        """Send the session and return the agent's decision."""
        try:
            self._send(request)
        except LocalUnavailable:
            # The agent may have answered and closed before reading (e.g. too many pending
            # requests): its answer is still buffered here and says more than "broken pipe".
            try:
                early = self._recv()
            except (LocalUnavailable, LocalProtocolError):
                early = None
            if isinstance(early, DecisionReply) and not early.allowed:
                return early
            raise
        reply = self._recv()
        if not isinstance(reply, DecisionReply):
            raise LocalProtocolError("expected a decision from the local gatekeeper service")
        return reply

    def report_exit(self, report: ExitReport) -> None:
        """Report how the allowed command ended and wait until the agent has journaled it."""
        self._send(report)
        if not isinstance(self._recv(), Ack):
            raise LocalProtocolError("expected an acknowledgement from the local gatekeeper service")
