"""The action: ``gatekeeper/action/v1``, the signed log entry that authorises one command.

Format (byte by byte in docs/formats-action.md): UTF-8 text, LF line endings, one field per line
as ``<name> <value>``, in this fixed order::

    gatekeeper/action/v1
    kind exec
    host <name>[ SHA256:<fingerprint>]      1..64 lines, names strictly ascending
    account <account>
    command <printable ASCII>               or: command-base64 <base64>   (exactly one canonical form)
    nonce <32..64 lowercase hex digits>
    not-before <YYYY-MM-DDTHH:MM:SSZ>
    not-after <YYYY-MM-DDTHH:MM:SSZ>
    signer <key type> <base64>
    reason <text>                           optional; omitted when empty

Every valid action has exactly one encoding: ``parse_action(encode_action(a)) == a`` and
``encode_action(parse_action(b)) == b`` for every ``b`` that parses; anything else raises
:class:`~gatekeeper.errors.ActionFormatError` with the line and the rule that was broken.

The log *entry* is the body, a blank line, then the armored SSHSIG of the body in namespace
:data:`NAMESPACE` (``ssh-keygen -Y verify -n action@gatekeeper`` checks it). Everything here is
pure: no I/O and no clock; :func:`new_action` draws a random nonce unless one is given.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import TypeVar

from gatekeeper import sshsig
from gatekeeper.errors import ActionFormatError, SignatureInvalid

__all__ = [
    "VERSION",
    "NAMESPACE",
    "KINDS",
    "RESERVED_KINDS",
    "MAX_TARGETS",
    "MAX_HOST_NAME",
    "MAX_ACCOUNT",
    "MAX_COMMAND",
    "MAX_REASON",
    "MIN_NONCE",
    "MAX_NONCE",
    "MAX_WINDOW",
    "DEFAULT_WINDOW",
    "MAX_ENTRY",
    "Target",
    "Action",
    "SignedAction",
    "encode_action",
    "parse_action",
    "encode_entry",
    "parse_entry",
    "verify_entry",
    "new_action",
    "format_time",
    "parse_time",
    "escape_command",
]

VERSION = "gatekeeper/action/v1"
NAMESPACE = "action@gatekeeper"
KINDS = ("exec",)
RESERVED_KINDS = ("approval", "git-push", "config", "k8s")  # names kept for later versions

MAX_TARGETS = 64
MAX_HOST_NAME = 253  # a DNS name
MAX_ACCOUNT = 64
MAX_COMMAND = 16 * 1024  # bytes, before base64
MAX_REASON = 1024  # bytes of UTF-8
MIN_NONCE = 16  # bytes (128 bits)
MAX_NONCE = 32
#: Policy constant: no action is valid for more than a day. Agents may enforce a shorter window.
MAX_WINDOW = 24 * 3600
DEFAULT_WINDOW = 300
#: Entries are stored in C2SP entry bundles with uint16 lengths.
MAX_ENTRY = 65535
_MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z

_HOST_RE = re.compile(r"[a-z0-9_:][a-z0-9._:-]*")
_FP_RE = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
_ACCOUNT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_NONCE_RE = re.compile(r"(?:[0-9a-f]{2})+")
# printable ASCII, not starting or ending with a space (bytes patterns match bytes, not characters)
_PLAIN_RE = re.compile(rb"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
_TIME_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")
# Characters never allowed in a reason: C0, DEL, C1, and the bidirectional / line-separator /
# byte-order controls that can make an audit trail read differently from what it says.
_REASON_BAD = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]")

_D = TypeVar("_D")

# Field order; "host" repeats, "command" / "command-base64" are one slot, "reason" is optional.
_ORDER = {
    "kind": 0,
    "host": 1,
    "account": 2,
    "command": 3,
    "command-base64": 3,
    "nonce": 4,
    "not-before": 5,
    "not-after": 6,
    "signer": 7,
    "reason": 8,
}
_REQUIRED = ("kind", "host", "account", "command", "nonce", "not-before", "not-after", "signer")


@dataclass(frozen=True)
class Target:
    """A host the action may run on: its name and, when known, its host key fingerprint."""

    name: str
    host_key: str | None = None  # "SHA256:<43 base64 chars>"


@dataclass(frozen=True)
class Action:
    """One authorised action. Times are Unix seconds (UTC); ``signer`` is ``"<type> <base64>"``."""

    kind: str
    targets: tuple[Target, ...]
    account: str
    command: bytes
    nonce: bytes
    not_before: int
    not_after: int
    signer: str
    reason: str = ""


@dataclass(frozen=True)
class SignedAction:
    """A parsed log entry: the action, its exact body bytes and the armored SSHSIG over them."""

    action: Action
    body: bytes
    signature: bytes


# -- times ------------------------------------------------------------------------------------


def _check_time(t: int) -> None:
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= _MAX_TIME:
        raise ActionFormatError(f"time {t!r} is not a whole number of seconds in 1970..9999")


def format_time(t: int) -> str:
    """Unix seconds -> ``YYYY-MM-DDTHH:MM:SSZ`` (1970..9999). Raises ActionFormatError."""
    _check_time(t)
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@lru_cache(maxsize=4096)
def _day_start(year: str, month: str, day: str) -> int | None:
    """Unix seconds at 00:00:00Z of a calendar date, None if there is no such date."""
    try:
        return int(datetime(int(year), int(month), int(day), tzinfo=UTC).timestamp())
    except ValueError:
        return None


def parse_time(text: str) -> int:
    """Strict inverse of :func:`format_time` (no fractions, no offsets, no leap seconds)."""
    m = _TIME_RE.fullmatch(text)
    if not m:
        raise ActionFormatError(f"time {text!r} is not YYYY-MM-DDTHH:MM:SSZ")
    hour, minute, second = int(m[4]), int(m[5]), int(m[6])
    day = _day_start(m[1], m[2], m[3])  # the date is shared by many actions: cached
    if day is None or hour > 23 or minute > 59 or second > 59:
        raise ActionFormatError(f"time {text!r} is not a valid date and time")
    t = day + hour * 3600 + minute * 60 + second
    if t < 0:
        raise ActionFormatError(f"time {text!r} is before 1970")
    return t


# -- field rules, shared by encode and parse --------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind in RESERVED_KINDS:
        raise ActionFormatError(f"kind {kind!r} is reserved and not supported by {VERSION}")
    if kind not in KINDS:
        raise ActionFormatError(f"unknown kind {kind!r} (supported: {', '.join(KINDS)})")


def _check_target(t: Target) -> None:
    if not isinstance(t.name, str) or not 0 < len(t.name) <= MAX_HOST_NAME:
        raise ActionFormatError(f"host name must be 1..{MAX_HOST_NAME} characters")
    if not _HOST_RE.fullmatch(t.name):
        raise ActionFormatError(
            f"host name {t.name!r}: use lowercase letters, digits and . _ : - (not first: . -)"
        )
    if t.host_key is not None:
        if not isinstance(t.host_key, str) or not _FP_RE.fullmatch(t.host_key):
            raise ActionFormatError(f"host {t.name}: host key must be 'SHA256:' and 43 base64 characters")
        sshsig.b64decode_canonical(t.host_key[7:] + "=", f"host {t.name}: host key")


def _check_targets(targets: tuple[Target, ...]) -> None:
    if not isinstance(targets, tuple) or not 0 < len(targets) <= MAX_TARGETS:
        raise ActionFormatError(f"an action names 1..{MAX_TARGETS} hosts")
    for prev, cur in zip(targets, targets[1:], strict=False):
        if prev.name == cur.name:
            raise ActionFormatError(f"host {cur.name!r} is listed twice")
        if prev.name > cur.name:
            raise ActionFormatError(f"hosts must be sorted by name: {cur.name!r} comes before {prev.name!r}")


def _check_account(account: str) -> None:
    if not isinstance(account, str) or not 0 < len(account) <= MAX_ACCOUNT:
        raise ActionFormatError(f"account must be 1..{MAX_ACCOUNT} characters")
    if not _ACCOUNT_RE.fullmatch(account):
        raise ActionFormatError(f"account {account!r}: use letters, digits and _ . - (not first: . -)")


def _plain_command(command: bytes) -> bool:
    """The plain form is used exactly when every byte is printable ASCII and the ends are not spaces
    (callers have checked that ``command`` is not empty)."""
    return _PLAIN_RE.fullmatch(command) is not None


def _check_command(command: bytes) -> None:
    if not isinstance(command, bytes) or not 0 < len(command) <= MAX_COMMAND:
        raise ActionFormatError(f"command must be 1..{MAX_COMMAND} bytes")


def _check_nonce(nonce: bytes) -> None:
    if not isinstance(nonce, bytes) or not MIN_NONCE <= len(nonce) <= MAX_NONCE:
        raise ActionFormatError(f"nonce must be {MIN_NONCE}..{MAX_NONCE} bytes")


def _check_window(not_before: int, not_after: int) -> None:
    _check_time(not_before)
    _check_time(not_after)
    if not_after <= not_before:
        raise ActionFormatError("not-after must be later than not-before")
    if not_after - not_before > MAX_WINDOW:
        raise ActionFormatError(
            f"validity window {not_after - not_before}s exceeds the maximum {MAX_WINDOW}s"
        )


def _check_signer(signer: str) -> None:
    if not isinstance(signer, str):
        raise ActionFormatError("signer must be an OpenSSH public key string")
    problem = _signer_problem(signer)
    if problem is not None:
        raise ActionFormatError(problem)


@lru_cache(maxsize=256)
def _signer_problem(signer: str) -> str | None:
    """Why ``signer`` is not a canonical supported public key, or None. A pure function of the
    exact text, cached (bounded): the same few signers recur."""
    try:
        key = sshsig.parse_public_key(signer)
    except ActionFormatError as exc:
        return f"signer: {exc}"
    if key.openssh() != signer:
        return "signer must be written '<key type> <base64>' with no comment"
    return None


def _check_reason(reason: str) -> None:
    if not isinstance(reason, str):
        raise ActionFormatError("reason must be text")
    if not reason:
        return
    try:
        size = len(reason.encode("utf-8"))
    except UnicodeEncodeError:
        raise ActionFormatError("reason is not valid Unicode text") from None
    if size > MAX_REASON:
        raise ActionFormatError(f"reason is {size} bytes; at most {MAX_REASON} are allowed")
    bad = _REASON_BAD.search(reason)
    if bad:
        raise ActionFormatError(f"reason contains the control character U+{ord(bad.group()):04X}")
    if reason[0] == " " or reason[-1] == " ":
        raise ActionFormatError("reason must not start or end with a space")


# -- the body ---------------------------------------------------------------------------------


def encode_action(a: Action) -> bytes:
    """The canonical body of ``a`` (ends with a newline). Raises ActionFormatError if ``a`` is not
    a valid action under exactly the rules :func:`parse_action` applies."""
    _check_kind(a.kind)
    _check_targets(a.targets)
    lines = [VERSION, f"kind {a.kind}"]
    for t in a.targets:
        _check_target(t)
        lines.append(f"host {t.name}" + (f" {t.host_key}" if t.host_key is not None else ""))
    _check_account(a.account)
    lines.append(f"account {a.account}")
    _check_command(a.command)
    if _plain_command(a.command):
        lines.append("command " + a.command.decode("ascii"))
    else:
        lines.append("command-base64 " + _b64(a.command))
    _check_nonce(a.nonce)
    lines.append(f"nonce {a.nonce.hex()}")
    _check_window(a.not_before, a.not_after)
    lines.append(f"not-before {format_time(a.not_before)}")
    lines.append(f"not-after {format_time(a.not_after)}")
    _check_signer(a.signer)
    lines.append(f"signer {a.signer}")
    _check_reason(a.reason)
    if a.reason:
        lines.append(f"reason {a.reason}")
    body = ("\n".join(lines) + "\n").encode("utf-8")
    if len(body) > MAX_ENTRY:  # pragma: no cover - the field limits keep bodies under ~48 KiB
        raise ActionFormatError("action too large")
    return body


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def parse_action(data: bytes) -> Action:
    """Parse a canonical ``gatekeeper/action/v1`` body. Raises ActionFormatError, naming the line."""
    if not isinstance(data, bytes):
        raise ActionFormatError("an action is bytes")
    if len(data) > MAX_ENTRY:
        raise ActionFormatError(f"action longer than {MAX_ENTRY} bytes")
    if b"\r" in data:
        raise ActionFormatError("carriage return in action (CRLF line endings are not allowed)")
    if not data.endswith(b"\n"):
        raise ActionFormatError("action must end with a newline")
    try:  # "\n" never occurs inside a UTF-8 sequence: decoding the whole body is the same check
        lines = data[:-1].decode("utf-8").split("\n")
    except UnicodeDecodeError:
        for n, raw in enumerate(data[:-1].split(b"\n"), 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ActionFormatError(f"line {n}: not valid UTF-8") from None
        raise ActionFormatError("not valid UTF-8") from None  # pragma: no cover - a line fails
    if lines[0] != VERSION:
        if lines[0].startswith("gatekeeper/action/"):
            raise ActionFormatError(f"line 1: unsupported version {lines[0]!r} (this is {VERSION})")
        raise ActionFormatError(f"line 1: expected {VERSION!r}")

    fields: dict[str, str] = {}  # field name -> value ("command-base64" kept under its own name)
    line_of: dict[str, int] = {}
    hosts: list[tuple[int, str]] = []
    last_rank, last_name = -1, VERSION
    for n, line in enumerate(lines[1:], 2):
        name, sep, value = line.partition(" ")
        if not sep:
            raise ActionFormatError(f"line {n}: expected '<field> <value>'")
        if name not in _ORDER:
            raise ActionFormatError(f"line {n}: unknown field {name!r}")
        rank = _ORDER[name]
        if rank < last_rank:
            raise ActionFormatError(f"line {n}: field {name!r} must come before {last_name!r}")
        if rank == last_rank and name != "host":
            raise ActionFormatError(f"line {n}: field {name!r} repeats {last_name!r}")
        last_rank, last_name = rank, name
        if name == "host":
            hosts.append((n, value))
        else:
            fields[name], line_of[name] = value, n
    for name in _REQUIRED:
        present = (
            bool(hosts)
            if name == "host"
            else name in fields or name == "command" and ("command-base64" in fields)
        )
        if not present:
            raise ActionFormatError(f"missing field {name!r}")

    # the failing field's line is named by one handler per group (no closure per field: this is
    # the monitor's hot path); the checks run in the order of the fields
    try:
        _check_kind(fields["kind"])
    except ActionFormatError as exc:
        raise ActionFormatError(f"line {line_of['kind']}: {exc}") from None
    targets: list[Target] = []
    for n, value in hosts:
        parts = value.split(" ")
        if len(parts) > 2:
            raise ActionFormatError(f"line {n}: expected 'host <name>[ SHA256:<fingerprint>]'")
        target = Target(parts[0], parts[1] if len(parts) == 2 else None)
        try:
            _check_target(target)
        except ActionFormatError as exc:
            raise ActionFormatError(f"line {n}: {exc}") from None
        targets.append(target)
    try:
        _check_targets(tuple(targets))
    except ActionFormatError as exc:
        raise ActionFormatError(f"line {hosts[0][0]}: {exc}") from None
    name = "account"
    try:
        _check_account(fields["account"])
        name = "command" if "command" in fields else "command-base64"
        command = _parse_command(name, fields[name])
        name = "nonce"
        _parse_nonce(fields["nonce"])
        name = "not-before"
        not_before = parse_time(fields["not-before"])
        name = "not-after"
        not_after = parse_time(fields["not-after"])
        _check_window(not_before, not_after)
        name = "signer"
        _check_signer(fields["signer"])
    except ActionFormatError as exc:
        raise ActionFormatError(f"line {line_of[name]}: {exc}") from None
    if "reason" in fields:
        if not fields["reason"]:
            raise ActionFormatError(f"line {line_of['reason']}: empty reason (omit the line instead)")
        try:
            _check_reason(fields["reason"])
        except ActionFormatError as exc:
            raise ActionFormatError(f"line {line_of['reason']}: {exc}") from None
    return _frozen(
        Action,
        kind=fields["kind"],
        targets=tuple(targets),
        account=fields["account"],
        command=command,
        nonce=bytes.fromhex(fields["nonce"]),
        not_before=not_before,
        not_after=not_after,
        signer=fields["signer"],
        reason=fields.get("reason", ""),
    )


def _frozen(cls: type[_D], **values: object) -> _D:
    """``cls(**values)`` for a frozen dataclass without ``__post_init__``, every field given,
    without the generated ``__init__``'s per-field ``object.__setattr__`` (~4x faster: the
    monitor parses every action of a log). Equal and hashed like the constructed object."""
    obj = object.__new__(cls)
    obj.__dict__.update(values)
    return obj


def _parse_command(field: str, text: str) -> bytes:
    if field == "command":
        command = text.encode("utf-8")
        _check_command(command)
        if not _plain_command(command):
            raise ActionFormatError(
                "a command with non-printable or non-ASCII bytes, or leading or trailing spaces, "
                "must be written as command-base64"
            )
    else:
        command = sshsig.b64decode_canonical(text, "command-base64")
        _check_command(command)
        if _plain_command(command):
            raise ActionFormatError("a printable ASCII command must be written as plain 'command'")
    return command


def _parse_nonce(text: str) -> None:
    if not _NONCE_RE.fullmatch(text):
        raise ActionFormatError("nonce must be lowercase hexadecimal")
    _check_nonce(bytes.fromhex(text))


# -- entries ----------------------------------------------------------------------------------


def parse_entry(entry: bytes) -> SignedAction:
    """Split a log entry into its action and armored SSHSIG and parse both (structure only; the
    signature is *not* verified: use :func:`verify_entry`). Raises ActionFormatError."""
    if not isinstance(entry, bytes):
        raise ActionFormatError("an entry is bytes")
    if len(entry) > MAX_ENTRY:
        raise ActionFormatError(f"entry is {len(entry)} bytes; at most {MAX_ENTRY} are allowed")
    if b"\r" in entry:
        raise ActionFormatError("carriage return in entry (CRLF line endings are not allowed)")
    cut = entry.find(b"\n\n")
    if cut < 0:
        raise ActionFormatError("entry has no blank line between the action and its signature")
    body, signature = entry[: cut + 1], entry[cut + 2 :]
    action = parse_action(body)
    sshsig.parse_signature(sshsig.dearmor(signature))
    return SignedAction(action, body, signature)


def encode_entry(body: bytes, signature: bytes) -> bytes:
    """``body ‖ "\\n" ‖ signature``, checked with :func:`parse_entry` (so it fits in 65535 bytes
    and both parts are canonical). Raises ActionFormatError."""
    entry = body + b"\n" + signature
    signed = parse_entry(entry)
    if signed.body != body:
        raise ActionFormatError("the action body is not canonical")
    return entry


def verify_entry(entry: bytes | SignedAction) -> SignedAction:
    """Parse (if needed) and verify an entry: the SSHSIG must be valid in :data:`NAMESPACE` and
    made by exactly the key named in the action's ``signer`` field.

    Whether that key is *trusted* (allowed_signers, the SSH session's key) is the caller's check.
    Raises ActionFormatError (malformed) or SignatureInvalid.
    """
    signed = entry if isinstance(entry, SignedAction) else parse_entry(entry)
    key = sshsig.verify(signed.body, signed.signature, NAMESPACE)
    if key != signed.action.signer:
        raise SignatureInvalid(
            f"the action names signer {sshsig.fingerprint(signed.action.signer)} but was signed by "
            f"{sshsig.fingerprint(key)}"
        )
    return signed


# -- helpers ----------------------------------------------------------------------------------


def new_action(
    *,
    targets: Sequence[Target | str],
    account: str,
    command: bytes | str,
    signer: str,
    now: float,
    window: int = DEFAULT_WINDOW,
    reason: str = "",
    kind: str = "exec",
    nonce: bytes | None = None,
) -> Action:
    """Build a valid action valid from ``now`` for ``window`` seconds.

    Host names are lowercased and sorted; a ``str`` command is UTF-8 encoded; the signer's key
    comment is dropped; the nonce is 16 random bytes unless given. Raises ActionFormatError.
    """
    if isinstance(window, bool) or not isinstance(window, int) or not 0 < window <= MAX_WINDOW:
        raise ActionFormatError(f"window must be 1..{MAX_WINDOW} seconds")
    ts = [t if isinstance(t, Target) else Target(t) for t in targets]
    ts = sorted((Target(t.name.lower(), t.host_key) for t in ts), key=lambda t: t.name)
    start = int(now)
    action = Action(
        kind=kind,
        targets=tuple(ts),
        account=account,
        command=command.encode("utf-8") if isinstance(command, str) else command,
        nonce=os.urandom(MIN_NONCE) if nonce is None else nonce,
        not_before=start,
        not_after=start + window,
        signer=sshsig.parse_public_key(signer).openssh(),
        reason=reason,
    )
    encode_action(action)
    return action


def escape_command(command: bytes) -> str:
    """A one-line, terminal-safe rendering of command bytes: printable ASCII as is, backslash
    doubled, everything else as ``\\n``, ``\\t``, ``\\xNN`` escapes."""
    out = []
    for b in command:
        if b == 0x5C:
            out.append("\\\\")
        elif 0x20 <= b <= 0x7E:
            out.append(chr(b))
        elif b == 0x0A:
            out.append("\\n")
        elif b == 0x09:
            out.append("\\t")
        elif b == 0x0D:
            out.append("\\r")
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)
