"""The local-mode protocol between ``gk exec`` (running as the SSH user) and the root-owned agent.

Pure encoding and strict parsing, no I/O. One Unix stream connection carries one SSH session::

    gk exec                                    agent (root, gatekeeper.agent.local)
    ───────                                    ─────
    DecideRequest   ─────────────────────────▶ peer uid checked (SO_PEERCRED), gate.decide(...)
                    ◀───────────────────────── DecisionReply (reason, message, index, shell)
    (allowed: fork, exec /bin/sh -c, wait)
    ExitReport      ─────────────────────────▶ gate.record_exit(...)
                    ◀───────────────────────── Ack

Framing: a 4-byte big-endian payload length, then the payload: one UTF-8 JSON object, at most
:data:`MAX_PAYLOAD` bytes. Parsing is strict: exactly the documented keys, each with its type; no
duplicate keys, no NaN/Infinity, no trailing data; ``"v"`` must be :data:`VERSION`. Anything else
raises :class:`LocalProtocolError` (never ``ValueError``/``KeyError``).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any

from gatekeeper.errors import GatekeeperError
from gatekeeper.gate import Reason

__all__ = [
    "VERSION",
    "MAX_PAYLOAD",
    "HEADER_SIZE",
    "KINDS",
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

_HEADER = struct.Struct(">I")


class LocalProtocolError(GatekeeperError):
    """A local-mode message is malformed, too large, or of an unexpected type."""

    exit_code = Reason.INTERNAL.exit_status


@dataclass(frozen=True)
class DecideRequest:
    """gk exec → agent: one SSH session as sshd described it to the ForceCommand."""

    account: str  # the account gk exec runs as (checked against the peer's uid)
    command: bytes  # SSH_ORIGINAL_COMMAND, exact bytes (b"" for a shell request)
    auth_key: str  # "ssh-ed25519 AAAA..." from the SSH_USER_AUTH file
    bundle: str | None  # GK_BUNDLE, or None when the client sent none
    peer: str = ""  # "address:port" from SSH_CONNECTION, for the journal
    kind: str = "exec"  # one of KINDS


@dataclass(frozen=True)
class DecisionReply:
    """agent → gk exec: the gate's decision; ``shell`` is the interpreter to run ``-c`` with."""

    reason: Reason
    message: str
    index: int | None = None
    key_fingerprint: str = ""
    shell: str = "/bin/sh"

    @property
    def allowed(self) -> bool:
        return self.reason is Reason.ALLOWED


@dataclass(frozen=True)
class ExitReport:
    """gk exec → agent: how the allowed command ended: exit ``status``, or ``signal`` if killed."""

    status: int | None
    signal: int | None = None


@dataclass(frozen=True)
class Ack:
    """agent → gk exec: the exit report has been journaled."""


Message = DecideRequest | DecisionReply | ExitReport | Ack


def reason_from_code(code: str) -> Reason:
    """The :class:`Reason` whose ``code`` is ``code``; raises :class:`LocalProtocolError`."""
    for reason in Reason:
        if reason.code == code:
            return reason
    raise LocalProtocolError(f"unknown reason code {code[:40]!r}")


def encode(message: Message) -> bytes:
    """One frame (header + payload) for ``message``; raises :class:`LocalProtocolError` if the
    payload would exceed :data:`MAX_PAYLOAD`."""
    obj: dict[str, Any]
    if isinstance(message, DecideRequest):
        obj = {
            "type": "decide",
            "kind": message.kind,
            "account": message.account,
            "command": base64.b64encode(message.command).decode("ascii"),
            "auth_key": message.auth_key,
            "bundle": message.bundle,
            "peer": message.peer,
        }
    elif isinstance(message, DecisionReply):
        obj = {
            "type": "decision",
            "reason": message.reason.code,
            "message": message.message,
            "index": message.index,
            "key_fingerprint": message.key_fingerprint,
            "shell": message.shell,
        }
    elif isinstance(message, ExitReport):
        obj = {"type": "exit", "status": message.status, "signal": message.signal}
    else:
        obj = {"type": "ack"}
    obj["v"] = VERSION
    payload = json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()
    if len(payload) > MAX_PAYLOAD:
        raise LocalProtocolError(f"message of {len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    return _HEADER.pack(len(payload)) + payload


def payload_length(header: bytes) -> int:
    """The payload length announced by a 4-byte ``header``; raises :class:`LocalProtocolError` if
    the header is short or the length is zero or above :data:`MAX_PAYLOAD`."""
    if len(header) != HEADER_SIZE:
        raise LocalProtocolError("truncated frame header")
    (length,) = _HEADER.unpack(header)
    if length == 0 or length > MAX_PAYLOAD:
        raise LocalProtocolError(f"frame length {length} outside 1..{MAX_PAYLOAD}")
    return int(length)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise LocalProtocolError(f"duplicate key {key[:40]!r}")
        obj[key] = value
    return obj


def _reject_constant(name: str) -> Any:
    raise LocalProtocolError(f"non-finite number {name}")


_FIELDS: dict[str, frozenset[str]] = {
    "decide": frozenset({"v", "type", "kind", "account", "command", "auth_key", "bundle", "peer"}),
    "decision": frozenset({"v", "type", "reason", "message", "index", "key_fingerprint", "shell"}),
    "exit": frozenset({"v", "type", "status", "signal"}),
    "ack": frozenset({"v", "type"}),
}


def _str(obj: dict[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = obj[key]
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise LocalProtocolError(f"{key!r} must be a string")
    if len(value) > MAX_STRING:
        raise LocalProtocolError(f"{key!r} is too long")
    return value


def _int(obj: dict[str, Any], key: str, lo: int, hi: int) -> int | None:
    value = obj[key]
    if value is None:
        return None
    # bool is a subclass of int; JSON true must not pass as 1.
    if type(value) is not int or not lo <= value <= hi:
        raise LocalProtocolError(f"{key!r} must be an integer in {lo}..{hi} or null")
    return value


def parse_message(payload: bytes) -> Message:
    """Parse one frame payload (without its header). Raises :class:`LocalProtocolError`."""
    if len(payload) > MAX_PAYLOAD:
        raise LocalProtocolError("message too large")
    try:
        text = payload.decode("utf-8")
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise LocalProtocolError("message is not UTF-8") from exc
    except RecursionError as exc:
        raise LocalProtocolError("message nests too deeply") from exc
    except json.JSONDecodeError as exc:
        raise LocalProtocolError(f"message is not JSON: {exc.msg} at {exc.pos}") from exc
    if not isinstance(obj, dict):
        raise LocalProtocolError("message is not a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise LocalProtocolError("unknown message type")
    if set(obj) != _FIELDS[kind]:
        extra = sorted(set(obj) ^ _FIELDS[kind])
        raise LocalProtocolError(f"{kind} message has wrong fields: {', '.join(extra)[:80]}")
    if type(obj["v"]) is not int or obj["v"] != VERSION:
        raise LocalProtocolError(f"unsupported protocol version {obj['v']!r:.20}")

    if kind == "decide":
        command_b64 = _str(obj, "command")
        assert command_b64 is not None
        try:
            command = base64.b64decode(command_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise LocalProtocolError("'command' is not valid base64") from exc
        request_kind = _str(obj, "kind")
        if request_kind not in KINDS:
            raise LocalProtocolError("'kind' must be one of " + ", ".join(KINDS))
        account, auth_key, peer = _str(obj, "account"), _str(obj, "auth_key"), _str(obj, "peer")
        assert account is not None and auth_key is not None and peer is not None
        return DecideRequest(
            account=account,
            command=command,
            auth_key=auth_key,
            bundle=_str(obj, "bundle", optional=True),
            peer=peer,
            kind=request_kind,
        )
    if kind == "decision":
        code, message, fingerprint, shell = (
            _str(obj, "reason"),
            _str(obj, "message"),
            _str(obj, "key_fingerprint"),
            _str(obj, "shell"),
        )
        assert code is not None and message is not None and fingerprint is not None
        assert shell is not None
        return DecisionReply(
            reason=reason_from_code(code),
            message=message,
            index=_int(obj, "index", 0, 2**63 - 1),
            key_fingerprint=fingerprint,
            shell=shell,
        )
    if kind == "exit":
        return ExitReport(status=_int(obj, "status", 0, 255), signal=_int(obj, "signal", 1, 127))
    return Ack()
