"""A minimal, synchronous ssh-agent client: list the keys, ask for a signature.

Only the two requests Gatekeeper needs, from the agent protocol (draft-miller-ssh-agent, as
OpenSSH's ``ssh-agent`` speaks it): ``SSH_AGENTC_REQUEST_IDENTITIES`` (11) → ``IDENTITIES_ANSWER``
(12), and ``SSH_AGENTC_SIGN_REQUEST`` (13) → ``SIGN_RESPONSE`` (14), with ``SSH_AGENT_FAILURE`` (5)
as the refusal. Messages are ``uint32 length ‖ byte type ‖ contents``; strings are ``uint32 length ‖
bytes``. Answers are parsed strictly (bounded sizes, no trailing bytes), and everything that goes
wrong — no socket, a refusal, a malformed or oversized answer, a timeout — is one
:class:`~gatekeeper.errors.ConfigError` naming the agent's socket.

It exists so that ``gk submit`` / ``gk ssh`` can sign with an agent key without importing a whole
SSH implementation (asyncssh costs ~140 ms to import). No I/O at import time.
"""

from __future__ import annotations

import socket
import struct

from gatekeeper.errors import ConfigError

__all__ = ["AgentClient", "SSH_AGENT_RSA_SHA2_256", "SSH_AGENT_RSA_SHA2_512", "MAX_MESSAGE"]

SSH_AGENT_FAILURE = 5
SSH_AGENTC_REQUEST_IDENTITIES = 11
SSH_AGENT_IDENTITIES_ANSWER = 12
SSH_AGENTC_SIGN_REQUEST = 13
SSH_AGENT_SIGN_RESPONSE = 14
SSH_AGENT_RSA_SHA2_256 = 2  # sign-request flags: RSA keys sign with rsa-sha2-256 / -512
SSH_AGENT_RSA_SHA2_512 = 4
MAX_MESSAGE = 256 * 1024  # OpenSSH's own limit for one agent message
MAX_KEYS = 4096


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class _Cursor:
    """Bounds-checked reader over an agent answer; short data raises ValueError."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def u32(self) -> int:
        if len(self._data) - self._pos < 4:
            raise ValueError("truncated")
        (value,) = struct.unpack_from(">I", self._data, self._pos)
        self._pos += 4
        return int(value)

    def string(self) -> bytes:
        n = self.u32()
        if len(self._data) - self._pos < n:
            raise ValueError("truncated")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def end(self) -> None:
        if self._pos != len(self._data):
            raise ValueError(f"{len(self._data) - self._pos} trailing bytes")


class AgentClient:
    """One connection to the agent at ``path`` (``$SSH_AUTH_SOCK``). Use as a context manager.

    ``timeout`` bounds each request (a key added with ``ssh-add -c`` waits for the user to confirm
    every signature, so it is generous). Raises :class:`ConfigError` when the socket cannot be
    reached."""

    def __init__(self, path: str, *, timeout: float = 60.0) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except OSError as exc:
            self._sock.close()
            raise ConfigError(f"ssh-agent at {path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fail(self, why: str) -> ConfigError:
        return ConfigError(f"ssh-agent at {self.path}: {why}")

    def _recv_exactly(self, n: int) -> bytes:
        chunks: list[bytes] = []
        while n:
            chunk = self._sock.recv(min(n, 65536))
            if not chunk:
                raise self._fail("the agent closed the connection")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _request(self, message_type: int, contents: bytes) -> tuple[int, bytes]:
        try:
            self._sock.sendall(_string(bytes([message_type]) + contents))
            (length,) = struct.unpack(">I", self._recv_exactly(4))
            if not 1 <= length <= MAX_MESSAGE:
                raise self._fail(f"malformed answer (length {length})")
            answer = self._recv_exactly(length)
        except TimeoutError:
            raise self._fail("no answer in time") from None
        except OSError as exc:
            raise self._fail(exc.strerror or str(exc)) from None
        return answer[0], answer[1:]

    def identities(self) -> list[tuple[bytes, str]]:
        """The agent's keys, in its order: (public key blob, comment)."""
        kind, body = self._request(SSH_AGENTC_REQUEST_IDENTITIES, b"")
        if kind != SSH_AGENT_IDENTITIES_ANSWER:
            raise self._fail(f"unexpected answer type {kind} to a key list request")
        try:
            cur = _Cursor(body)
            count = cur.u32()
            if count > MAX_KEYS:
                raise ValueError(f"{count} keys")
            keys = [(cur.string(), cur.string().decode("utf-8", "replace")) for _ in range(count)]
            cur.end()
        except ValueError as exc:
            raise self._fail(f"malformed key list ({exc})") from None
        return keys

    def sign(self, key_blob: bytes, data: bytes, flags: int = 0) -> bytes:
        """The agent's signature of ``data`` with the key ``key_blob``: the SSH signature blob
        ``string(algorithm) ‖ string(signature)``. Not verified here (the caller verifies)."""
        kind, body = self._request(
            SSH_AGENTC_SIGN_REQUEST, _string(key_blob) + _string(data) + struct.pack(">I", flags)
        )
        if kind == SSH_AGENT_FAILURE:
            raise self._fail("the agent refused to sign (key not usable, or confirmation denied)")
        if kind != SSH_AGENT_SIGN_RESPONSE:
            raise self._fail(f"unexpected answer type {kind} to a sign request")
        try:
            cur = _Cursor(body)
            signature = cur.string()
            cur.end()
        except ValueError as exc:
            raise self._fail(f"malformed signature answer ({exc})") from None
        return signature
