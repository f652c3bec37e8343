"""The agent's SSH server (asyncssh): public-key authentication, exec-only sessions, nothing else.

Authentication
    Public keys only: password, keyboard-interactive, host-based and GSS are all disabled. The
    agent matches keys itself (:class:`~gatekeeper.agent.authkeys.KeyRing`: ``authorized_keys`` plus
    certificates from trusted user CAs) and records *which* key authenticated: asyncssh keeps no
    record of it. The connection's ``validate_public_key`` (called by asyncssh for every publickey
    request, with the signature when there is one) is wrapped: our policy decides first, asyncssh
    then verifies the signature against the session id, and only a request whose signature verified
    sets the connection's identity. The :class:`asyncssh.SSHServer` callbacks accept exactly the
    key the wrapper is currently vetting, so if the wrapper were ever bypassed nobody could log in.

What is refused
    Sessions run only exec requests (see :mod:`gatekeeper.agent.session`); direct and forwarded TCP
    and Unix-socket forwarding, X11 and agent forwarding (asyncssh enables the latter by default),
    and PTYs are refused, the last three also marking the session so that its exec is refused.

Shutdown
    :meth:`AgentListener.close` stops listening and closes every connection, which terminates
    their children; :meth:`AgentListener.wait_closed` returns once they have been reaped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from gatekeeper.agent.authkeys import Identity, KeyRing
from gatekeeper.agent.session import AgentSettings, ExecSession, SessionContext
from gatekeeper.agent.tcp import TunedListener
from gatekeeper.gate import Gate
from gatekeeper.journal import Journal

__all__ = ["AgentListener", "start_agent", "SERVER_VERSION"]

log = logging.getLogger("gatekeeper.agent")

SERVER_VERSION = "Gatekeeper-agent"
_MAX_PKTSIZE = 32768
_WINDOW = 2 * 1024 * 1024

_Validate = Callable[[str, bytes, bytes, bytes], Awaitable[bool]]


@dataclass
class _Shared:
    gate: Gate
    keyring: KeyRing
    settings: AgentSettings
    journal: Journal | None
    connections: set[asyncssh.SSHServerConnection] = field(default_factory=set)
    sessions: set[ExecSession] = field(default_factory=set)


class _ExecChannel(asyncssh.SSHServerChannel[bytes]):
    """A session channel whose PTY, X11 and agent-forwarding requests are refused *and* reported to
    the session (asyncssh refuses the latter two silently), so the session can refuse its exec."""

    def _forbid(self, what: str) -> bool:
        session = self._session
        if isinstance(session, ExecSession):
            session.forbid(what)
        return False

    def _process_pty_req_request(self, packet: Any) -> bool:
        return self._forbid("a PTY")

    def _process_x11_req_request(self, packet: Any) -> bool:
        return self._forbid("X11 forwarding")

    def _process_auth_agent_req_at_openssh_dot_com_request(self, packet: Any) -> bool:  # type: ignore[override]
        return self._forbid("agent forwarding")


def _addr(info: Any) -> tuple[str, int]:
    if isinstance(info, tuple) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return "", 0


class _AgentConnection(asyncssh.SSHServer):
    """Per-connection state: authentication and session creation."""

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        self._conn: asyncssh.SSHServerConnection | None = None
        self._vetting: Identity | None = None
        self._identity: Identity | None = None
        self._username = ""
        self._failures = 0
        self._peer = ("", 0)
        self._local = ("", 0)

    # --- connection ---------------------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._shared.connections.add(conn)
        self._peer = _addr(conn.get_extra_info("peername"))
        self._local = _addr(conn.get_extra_info("sockname"))
        original: _Validate = conn.validate_public_key

        async def validate_public_key(username: str, key_data: bytes, msg: bytes, signature: bytes) -> bool:
            return await self._vet_key(original, username, key_data, msg, signature)

        conn.validate_public_key = validate_public_key  # type: ignore[method-assign]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._shared.connections.discard(self._conn)

    @property
    def peer(self) -> str:
        host, port = self._peer
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # --- authentication -----------------------------------------------------------------------

    async def _vet_key(self, original: _Validate, username: str, key_data: bytes, msg: bytes,
                       signature: bytes) -> bool:
        self._identity = None  # only the latest attempt can be the one that succeeds
        identity = self._shared.keyring.identify(username, key_data, self._peer[0])
        if identity is None:
            self._failed(f"key not authorized for {username!r}")
            return False
        self._vetting = identity
        try:
            ok = await original(username, key_data, msg, signature)
        finally:
            self._vetting = None
        if not ok:
            self._failed(f"bad signature by {identity.fingerprint}")
        elif msg:  # a signed request whose signature verified: this key authenticates the session
            self._identity = identity
            self._username = username
        return ok

    def _failed(self, why: str) -> None:
        self._failures += 1
        log.info("%s: authentication refused: %s", self.peer, why)
        if self._failures >= self._shared.settings.max_auth_tries and self._conn is not None:
            self._conn.disconnect(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "too many authentication failures"
            )

    def begin_auth(self, username: str) -> bool:
        return True  # authentication is always required

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        vetting = self._vetting
        return (
            vetting is not None
            and vetting.certificate is None
            and vetting.key.public_data == key.public_data
        )

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        vetting = self._vetting
        return (
            vetting is not None
            and vetting.certificate is not None
            and vetting.certificate.signing_key.public_data == key.public_data
        )

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def auth_completed(self) -> None:
        if self._identity is None and self._conn is not None:  # cannot happen; fail closed if it does
            log.error("%s: authenticated without a recorded key; closing", self.peer)
            self._conn.close()
            return
        assert self._identity is not None
        cert = " (certificate)" if self._identity.certificate is not None else ""
        log.info(
            "%s: %s authenticated with %s%s", self.peer, self._username, self._identity.fingerprint, cert
        )

    # --- channels -----------------------------------------------------------------------------

    def session_requested(self) -> Any:
        identity, conn = self._identity, self._conn
        if identity is None or conn is None:
            return False
        ctx = SessionContext(
            gate=self._shared.gate,
            settings=self._shared.settings,
            identity=identity,
            account=self._username,
            peer=self.peer,
            ssh_connection=f"{self._peer[0]} {self._peer[1]} {self._local[0]} {self._local[1]}",
            journal=self._shared.journal,
        )
        # Arguments as SSHServerConnection.create_server_channel passes them: no PTY, no line
        # editor, raw bytes (encoding None), asyncssh's default window and packet size.
        chan = _ExecChannel(
            conn, asyncio.get_running_loop(), False, False, False, 0, 1024, None, "strict",
            _WINDOW, _MAX_PKTSIZE,
        )
        session = ExecSession(ctx)
        self._shared.sessions.add(session)
        session.on_done(self._shared.sessions.discard)
        return chan, session

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
        log.info("%s: refused TCP forwarding to %s:%s", self.peer, dest_host, dest_port)
        return False

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        log.info("%s: refused remote forwarding from %s:%s", self.peer, listen_host, listen_port)
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        log.info("%s: refused Unix-socket forwarding to %s", self.peer, dest_path)
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        log.info("%s: refused remote Unix-socket forwarding from %s", self.peer, listen_path)
        return False


class AgentListener:
    """A running agent. ``host``/``port`` are the bound address (the real port when 0 was asked)."""

    def __init__(self, acceptor: asyncssh.SSHAcceptor, shared: _Shared) -> None:
        self._acceptor = acceptor
        self._shared = shared
        address = acceptor.get_addresses()[0]
        self.host: str = address[0]
        self.port: int = address[1]

    @property
    def connections(self) -> int:
        return len(self._shared.connections)

    def close(self) -> None:
        """Stop accepting and close every connection (their children are terminated)."""
        self._acceptor.close()
        for conn in list(self._shared.connections):
            conn.close()

    async def wait_closed(self) -> None:
        """Wait until the listener and every connection are closed and every command has been
        reaped; commands still alive ``kill_grace`` + 1 s after :meth:`close` get SIGKILL."""
        await self._acceptor.wait_closed()
        for conn in list(self._shared.connections):
            await conn.wait_closed()
        sessions = list(self._shared.sessions)
        if sessions:
            grace = self._shared.settings.kill_grace + 1.0
            waits = [asyncio.create_task(s.done.wait()) for s in sessions]
            _, pending = await asyncio.wait(waits, timeout=grace)
            for task in pending:
                task.cancel()
            for session in sessions:
                session.kill()
            if pending:
                await asyncio.wait([asyncio.create_task(s.done.wait()) for s in sessions], timeout=grace)


async def start_agent(
    *,
    gate: Gate,
    host_key: asyncssh.SSHKey,
    keyring: KeyRing,
    settings: AgentSettings | None = None,
    journal: Journal | None = None,
    host: str = "127.0.0.1",
    port: int = 2222,
) -> AgentListener:
    """Listen on ``host:port`` (port 0: any free port) and serve until closed.

    ``gate`` decides every exec; ``journal`` receives the refusals the front end makes itself (not
    exec, unknown account, gate timeout or error). Raises ``OSError`` if the address is unavailable.
    """
    settings = settings or AgentSettings()
    shared = _Shared(gate=gate, keyring=keyring, settings=settings, journal=journal)
    acceptor = await asyncssh.listen(
        host,
        port,
        tunnel=TunedListener(quickack=settings.quickack),
        server_factory=lambda: _AgentConnection(shared),
        server_host_keys=[host_key],
        server_version=SERVER_VERSION,
        authorized_client_keys=None,
        password_auth=False,
        kbdint_auth=False,
        host_based_auth=False,
        gss_host=None,
        public_key_auth=True,
        allow_pty=False,
        x11_forwarding=False,
        agent_forwarding=False,
        allow_scp=False,
        login_timeout=settings.login_timeout,
        keepalive_interval=settings.keepalive_interval,
        keepalive_count_max=3,
        config=None,
    )
    return AgentListener(acceptor, shared)
