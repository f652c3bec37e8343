"""The local-mode protocol between ``gk exec`` (running as the SSH user) and the root-owned agent.

Pure encoding and strict parsing, no I/O. One Unix stream connection carries one SSH session::

    gk exec                                    agent (root, gatekeeper.agent.local)
    ───────                                    ─────
    DecideRequest   ─────────────────────────▶ peer uid checked (SO_PEERCRED), gate.decide(...)
                    ◀───────────────────────── DecisionReply (reason, exit status, message, shell)
    (allowed: spawn <shell> -c, wait)
    ExitReport      ─────────────────────────▶ gate.record_exit(...)
                    ◀───────────────────────── Ack

Framing: a 4-byte big-endian payload length (1..:data:`MAX_PAYLOAD`), then the payload::

    payload   = version:u8 (= VERSION) type:u8 fields
    str/bytes = length:u32be data         (str: UTF-8)
    opt(x)    = 0x00 | 0x01 x
    'Q' DecideRequest  kind:str account:str command:bytes auth_key:str bundle:opt(str) peer:str
    'R' DecisionReply  code:str exit_status:u8 message:str index:opt(u64) key_fingerprint:str shell:str
    'X' ExitReport     status:opt(u8) signal:opt(u8)
    'K' Ack

A small binary format rather than JSON because ``gk exec`` starts for every SSH command: this module
imports only ``struct`` and :mod:`gatekeeper.errors` (no ``json``/``re``/``enum``/``dataclasses``),
which keeps the ForceCommand's start-up short (see docs/openssh.md). Parsing is strict: every field
bounded and typed, UTF-8 strict, known reason codes with their own exit status, no trailing bytes;
anything else raises :class:`LocalProtocolError` (never ``ValueError``/``struct.error``).
"""

from __future__ import annotations

import struct

from gatekeeper.errors import GatekeeperError

__all__ = [
    "VERSION",
    "MAX_PAYLOAD",
    "MAX_STRING",
    "HEADER_SIZE",
    "KINDS",
    "REASON_STATUS",
    "LocalProtocolError",
    "DecideRequest",
    "DecisionReply",
    "ExitReport",
    "Ack",
    "Message",
    "encode",
    "payload_length",
    "parse_message",
    "reason_from_code",
]

VERSION = 1
HEADER_SIZE = 4
# A bundle is at most a few KiB (entry ≤ 64 KiB plus a proof); the command is ≤ 64 KiB in an action.
MAX_PAYLOAD = 256 * 1024
MAX_STRING = 128 * 1024

# What the SSH client asked sshd for: an exec with a command, a shell (no SSH_ORIGINAL_COMMAND),
# a subsystem (SSH_ORIGINAL_COMMAND is the subsystem's configured command, e.g. sftp-server), or an
# exec on a PTY (sshd allocated one although the snippet says PermitTTY no). Only "exec" can run.
KINDS = ("exec", "shell", "subsystem", "pty")

# gatekeeper.gate.Reason as code -> exit status, so that gk exec need not import enum/dataclasses
# to read a decision. tests/test_exec_protocol.py checks that this equals Reason exactly.
REASON_STATUS: dict[str, int] = {
    "allowed": 0,
    "no-bundle": 210,
    "malformed-bundle": 211,
    "bad-signature": 212,
    "key-mismatch": 213,
    "wrong-host": 214,
    "wrong-account": 215,
    "command-mismatch": 216,
    "not-yet-valid": 217,
    "expired": 218,
    "replay": 219,
    "bad-inclusion-proof": 220,
    "bad-checkpoint": 221,
    "log-fork": 222,
    "log-unavailable": 223,
    "halted": 224,
    "not-exec": 225,
    "unknown-account": 226,
    "witness-quorum": 227,
    "policy": 228,
    "internal-error": 229,
}

_HEADER = struct.Struct(">I")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class LocalProtocolError(GatekeeperError):
    """A local-mode message is malformed, too large, or of an unexpected type."""

    exit_code = 229  # Reason.INTERNAL


class _Message:
    """Immutable value object: equality, hash and repr from ``__slots__``."""

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _init(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self).__name__, *self._values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class DecideRequest(_Message):
    """gk exec → agent: one SSH session as sshd described it to the ForceCommand."""

    __slots__ = ("account", "command", "auth_key", "bundle", "peer", "kind")
    account: str  # the account gk exec runs as (checked against the peer's uid)
    command: bytes  # SSH_ORIGINAL_COMMAND, exact bytes (b"" for a shell request)
    auth_key: str  # "ssh-ed25519 AAAA..." from the SSH_USER_AUTH file ("" if none)
    bundle: str | None  # GK_BUNDLE, or None when the client sent none
    peer: str  # "address:port" from SSH_CONNECTION, for the journal
    kind: str  # one of KINDS

    def __init__(
        self,
        account: str,
        command: bytes,
        auth_key: str,
        bundle: str | None,
        peer: str = "",
        kind: str = "exec",
    ) -> None:
        self._init(account=account, command=command, auth_key=auth_key, bundle=bundle, peer=peer, kind=kind)


class DecisionReply(_Message):
    """agent → gk exec: the gate's decision; ``shell`` is the interpreter to run ``-c`` with.

    Built from a :class:`gatekeeper.gate.Reason` (or anything with its ``code`` and
    ``exit_status``); :attr:`reason` gives the ``Reason`` back (imported on first use)."""

    __slots__ = ("code", "exit_status", "message", "index", "key_fingerprint", "shell")
    code: str
    exit_status: int
    message: str
    index: int | None
    key_fingerprint: str
    shell: str

    def __init__(
        self,
        reason: object,
        message: str,
        index: int | None = None,
        key_fingerprint: str = "",
        shell: str = "/bin/sh",
    ) -> None:
        code, status = getattr(reason, "code", None), getattr(reason, "exit_status", None)
        if not isinstance(code, str) or REASON_STATUS.get(code) != status:
            raise LocalProtocolError(f"not a gate reason: {reason!r:.60}")
        self._init(
            code=code,
            exit_status=status,
            message=message,
            index=index,
            key_fingerprint=key_fingerprint,
            shell=shell,
        )

    @property
    def allowed(self) -> bool:
        return self.code == "allowed"

    @property
    def reason(self) -> object:
        """The :class:`gatekeeper.gate.Reason` (typed ``object`` to keep this module light)."""
        return reason_from_code(self.code)


class ExitReport(_Message):
    """gk exec → agent: how the allowed command ended: exit ``status``, or ``signal`` if killed."""

    __slots__ = ("status", "signal")
    status: int | None
    signal: int | None

    def __init__(self, status: int | None, signal: int | None = None) -> None:
        self._init(status=status, signal=signal)


class Ack(_Message):
    """agent → gk exec: the exit report has been journaled."""

    __slots__ = ()


Message = DecideRequest | DecisionReply | ExitReport | Ack


def reason_from_code(code: str) -> object:
    """The :class:`gatekeeper.gate.Reason` whose ``code`` is ``code``; raises
    :class:`LocalProtocolError`. (Imports ``gatekeeper.gate``: not for gk exec's hot path.)"""
    from gatekeeper.gate import Reason

    for reason in Reason:
        if reason.code == code:
            return reason
    raise LocalProtocolError(f"unknown reason code {code[:40]!r}")


# -- encoding ---------------------------------------------------------------------------------------


def _bytes(out: list[bytes], data: bytes) -> None:
    if len(data) > MAX_STRING:
        raise LocalProtocolError(f"field of {len(data)} bytes exceeds {MAX_STRING}")
    out.append(_U32.pack(len(data)))
    out.append(data)


def _str(out: list[bytes], text: str) -> None:
    try:
        _bytes(out, text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise LocalProtocolError("text field is not encodable as UTF-8") from exc


def _opt_u8(out: list[bytes], value: int | None) -> None:
    if value is None:
        out.append(b"\x00")
    elif 0 <= value <= 255:
        out.append(bytes((1, value)))
    else:
        raise LocalProtocolError(f"{value} does not fit in a byte")


def encode(message: Message) -> bytes:
    """One frame (header + payload) for ``message``; raises :class:`LocalProtocolError` if a
    field cannot be encoded or the payload would exceed :data:`MAX_PAYLOAD`."""
    out: list[bytes] = []
    if isinstance(message, DecideRequest):
        if message.kind not in KINDS:
            raise LocalProtocolError(f"unknown session kind {message.kind!r:.40}")
        out.append(bytes((VERSION, ord("Q"))))
        _str(out, message.kind)
        _str(out, message.account)
        _bytes(out, message.command)
        _str(out, message.auth_key)
        if message.bundle is None:
            out.append(b"\x00")
        else:
            out.append(b"\x01")
            _str(out, message.bundle)
        _str(out, message.peer)
    elif isinstance(message, DecisionReply):
        out.append(bytes((VERSION, ord("R"))))
        _str(out, message.code)
        out.append(bytes((message.exit_status,)))
        _str(out, message.message)
        if message.index is None:
            out.append(b"\x00")
        elif 0 <= message.index < 2**63:
            out.append(b"\x01" + _U64.pack(message.index))
        else:
            raise LocalProtocolError("index out of range")
        _str(out, message.key_fingerprint)
        _str(out, message.shell)
    elif isinstance(message, ExitReport):
        if message.signal is not None and not 1 <= message.signal <= 127:
            raise LocalProtocolError(f"signal {message.signal} out of range")
        out.append(bytes((VERSION, ord("X"))))
        _opt_u8(out, message.status)
        _opt_u8(out, message.signal)
    elif isinstance(message, Ack):
        out.append(bytes((VERSION, ord("K"))))
    else:
        raise LocalProtocolError(f"not a message: {type(message).__name__}")
    payload = b"".join(out)
    if len(payload) > MAX_PAYLOAD:
        raise LocalProtocolError(f"message of {len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    return _HEADER.pack(len(payload)) + payload


# -- parsing ----------------------------------------------------------------------------------------


def payload_length(header: bytes) -> int:
    """The payload length announced by a 4-byte ``header``; raises :class:`LocalProtocolError` if
    the header is short or the length is zero or above :data:`MAX_PAYLOAD`."""
    if len(header) != HEADER_SIZE:
        raise LocalProtocolError("truncated frame header")
    (length,) = _HEADER.unpack(header)
    if length == 0 or length > MAX_PAYLOAD:
        raise LocalProtocolError(f"frame length {length} outside 1..{MAX_PAYLOAD}")
    return int(length)


class _Cursor:
    """Reads fields off a payload; every read is bounds-checked."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise LocalProtocolError("truncated message")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def bytes(self) -> bytes:
        (n,) = _U32.unpack(self.take(4))
        if n > MAX_STRING:
            raise LocalProtocolError(f"field of {n} bytes exceeds {MAX_STRING}")
        return self.take(n)

    def str(self) -> str:
        try:
            return self.bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LocalProtocolError("text field is not UTF-8") from exc

    def present(self) -> bool:
        flag = self.u8()
        if flag > 1:
            raise LocalProtocolError("optional field flag must be 0 or 1")
        return flag == 1

    def end(self) -> None:
        if self.pos != len(self.data):
            raise LocalProtocolError("trailing bytes after the message")


def parse_message(payload: bytes) -> Message:
    """Parse one frame payload (without its header). Raises :class:`LocalProtocolError`."""
    if len(payload) > MAX_PAYLOAD:
        raise LocalProtocolError("message too large")
    c = _Cursor(bytes(payload))
    version = c.u8()
    if version != VERSION:
        raise LocalProtocolError(f"unsupported protocol version {version}")
    kind = c.u8()
    message: Message
    if kind == ord("Q"):
        session = c.str()
        if session not in KINDS:
            raise LocalProtocolError("session kind must be one of " + ", ".join(KINDS))
        account, command, auth_key = c.str(), c.bytes(), c.str()
        bundle = c.str() if c.present() else None
        message = DecideRequest(account, command, auth_key, bundle, c.str(), session)
    elif kind == ord("R"):
        code = c.str()
        status = c.u8()
        if REASON_STATUS.get(code) != status:
            raise LocalProtocolError(f"unknown reason {code[:40]!r} with exit status {status}")
        text = c.str()
        index = _U64.unpack(c.take(8))[0] if c.present() else None
        if index is not None and index >= 2**63:
            raise LocalProtocolError("index out of range")
        message = DecisionReply(_Code(code, status), text, index, c.str(), c.str())
    elif kind == ord("X"):
        exit_status = c.u8() if c.present() else None
        signal = c.u8() if c.present() else None
        if signal is not None and not 1 <= signal <= 127:
            raise LocalProtocolError(f"signal {signal} out of range")
        message = ExitReport(exit_status, signal)
    elif kind == ord("K"):
        message = Ack()
    else:
        raise LocalProtocolError(f"unknown message type {kind}")
    c.end()
    return message


class _Code:
    """A (code, exit status) pair standing in for a Reason while parsing."""

    __slots__ = ("code", "exit_status")

    def __init__(self, code: str, exit_status: int) -> None:
        self.code = code
        self.exit_status = exit_status
