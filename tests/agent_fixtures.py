"""Test helpers for the agent's SSH server: small gates, a server on 127.0.0.1:0 in its own thread,
and client keys / known_hosts files for asyncssh, paramiko and OpenSSH.

:class:`OneCommandGate` is a fixture gate, not a mock of the verification core: it allows exactly
one registered (key, account, command[, bundle]) and refuses everything else with the Reason a real
gate would use, so the tests exercise the SSH front end alone. :class:`UnsafeAllowAllGate` allows
everything; it exists only for the gate-off benchmark and must never be importable from the
package.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from gatekeeper.agent.authkeys import KeyRing
from gatekeeper.agent.server import AgentListener, start_agent
from gatekeeper.agent.session import AgentSettings
from gatekeeper.gate import Decision, ExecRequest, Reason
from gatekeeper.journal import Journal

T = TypeVar("T")


def openssh_public(key: asyncssh.SSHKey) -> str:
    """``"ssh-ed25519 AAAA..."`` without comment (ExecRequest.auth_key form)."""
    kind, blob = key.export_public_key("openssh").decode().split()[:2]
    return f"{kind} {blob}"


@dataclass(frozen=True)
class Allowed:
    key: str
    account: str
    command: bytes
    bundle: str | None = None  # when set, GK_BUNDLE must carry exactly this


@dataclass
class OneCommandGate:
    """Allows exactly one (key, account, command[, bundle]); records every call."""

    allowed: Allowed | None = None
    index: int = 7
    delay: float = 0.0  # seconds decide() takes (to exercise the agent's timeout)
    fail: bool = False  # decide() raises (a broken gate: the agent must refuse)
    requests: list[ExecRequest] = field(default_factory=list)
    exits: list[tuple[ExecRequest, int | None]] = field(default_factory=list)

    def allow(self, key: asyncssh.SSHKey | str, account: str, command: str | bytes,
              bundle: str | None = None) -> None:
        key_text = key if isinstance(key, str) else openssh_public(key)
        raw = command.encode() if isinstance(command, str) else command
        self.allowed = Allowed(key_text, account, raw, bundle)

    async def decide(self, request: ExecRequest) -> Decision:
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("broken gate")
        a = self.allowed
        if a is None:
            return _refuse(Reason.POLICY, "nothing is allowed")
        if a.bundle is not None:
            if request.bundle is None:
                return _refuse(Reason.NO_BUNDLE, "no GK_BUNDLE was sent")
            if request.bundle != a.bundle:
                return _refuse(Reason.MALFORMED_BUNDLE, "the bundle does not parse")
        if request.auth_key != a.key:
            return _refuse(Reason.KEY_MISMATCH, "the action was signed by another key")
        if request.account != a.account:
            return _refuse(Reason.WRONG_ACCOUNT, "the action is for another account")
        if request.command != a.command:
            return _refuse(Reason.COMMAND_MISMATCH, "the command differs from the logged one")
        return Decision(Reason.ALLOWED, "", index=self.index)

    def record_exit(
        self, request: ExecRequest, decision: Decision, exit_status: int | None, *, signal: str | None = None
    ) -> None:
        self.exits.append((request, exit_status))


def _refuse(reason: Reason, text: str) -> Decision:
    return Decision(reason, f"gk: refused: {text}")


class UnsafeAllowAllGate:
    """Allows every request. Benchmarks only (the gate-off baseline); never in the package."""

    async def decide(self, request: ExecRequest) -> Decision:
        return Decision(Reason.ALLOWED, "", index=0)

    def record_exit(
        self, request: ExecRequest, decision: Decision, exit_status: int | None, *, signal: str | None = None
    ) -> None:
        pass


class AgentThread:
    """``start_agent`` on 127.0.0.1:0 in a private event loop on a daemon thread.

    Files (all under ``directory``): ``authorized_keys``, ``trusted_ca`` (when CAs are given),
    ``journal.jsonl``, ``known_hosts`` (for the bound port). Use as a context manager."""

    def __init__(
        self,
        directory: Path,
        gate: Any,
        *,
        authorized: list[asyncssh.SSHKey] = (),  # type: ignore[assignment]
        cas: list[asyncssh.SSHKey] = (),  # type: ignore[assignment]
        settings: AgentSettings | None = None,
    ) -> None:
        self.dir = directory
        self.gate = gate
        self.settings = settings or AgentSettings(kill_grace=0.5, decision_timeout=5.0)
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.authorized_keys = directory / "authorized_keys"
        self.authorized_keys.write_text("".join(k.export_public_key("openssh").decode() for k in authorized))
        self.trusted_ca: Path | None = None
        if cas:
            self.trusted_ca = directory / "trusted_ca"
            self.trusted_ca.write_text("".join(k.export_public_key("openssh").decode() for k in cas))
        self.journal_path = directory / "journal.jsonl"
        self.known_hosts = directory / "known_hosts"
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="agent")
        self._listener: AgentListener | None = None
        self._journal: Journal | None = None

    def __enter__(self) -> AgentThread:
        self._thread.start()
        self._journal = Journal(self.journal_path)
        keyring = KeyRing(self.authorized_keys, self.trusted_ca)
        self._listener = self.call(
            start_agent(
                gate=self.gate,
                host_key=self.host_key,
                keyring=keyring,
                settings=self.settings,
                journal=self._journal,
                host="127.0.0.1",
                port=0,
            )
        )
        self.port = self._listener.port
        public = self.host_key.export_public_key("openssh").decode().split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {public[0]} {public[1]}\n")
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __exit__(self, *exc: object) -> None:
        if self._listener is not None:
            listener = self._listener

            async def close() -> None:
                listener.close()
                await listener.wait_closed()
                await asyncio.sleep(0)

            self.call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        if self._journal is not None:
            self._journal.close()

    @property
    def connections(self) -> int:
        assert self._listener is not None
        return self._listener.connections

    def known_hosts_obj(self) -> asyncssh.SSHKnownHosts:
        return asyncssh.import_known_hosts(self.known_hosts.read_text())

    async def connect(self, username: str, keys: list[Any], **kwargs: Any) -> asyncssh.SSHClientConnection:
        """An asyncssh client connection with nothing from the user's own ssh configuration."""
        options: dict[str, Any] = {
            "username": username,
            "client_keys": keys,
            "known_hosts": self.known_hosts_obj(),
            "agent_path": None,
            "config": None,
            "password_auth": False,
            "kbdint_auth": False,
        }
        options.update(kwargs)
        return await asyncssh.connect("127.0.0.1", self.port, **options)


def write_private_key(key: asyncssh.SSHKey, path: Path) -> Path:
    """OpenSSH private key file (0600) plus ``.pub``, for ``ssh -i`` and paramiko."""
    key.write_private_key(str(path))
    os.chmod(path, 0o600)
    key.write_public_key(str(path) + ".pub")
    return path


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return bool(value)
        time.sleep(interval)


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
