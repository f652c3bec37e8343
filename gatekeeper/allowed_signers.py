"""OpenSSH ``allowed_signers`` files (ssh-keygen(1), "ALLOWED SIGNERS"), parsed strictly.

One signer per line::

    principals [options] keytype base64-key [comment]

- ``principals``: comma-separated names or wildcard patterns; double quotes allow spaces.
- ``options`` (comma-separated, values in double quotes as OpenSSH requires):
  ``namespaces="pattern,..."`` (the key may only sign in matching namespaces; ``!pattern``
  excludes), ``valid-after="TIME"``, ``valid-before="TIME"`` with ``TIME`` =
  ``YYYYMMDD[HHMM[SS]]Z``. ``cert-authority`` (SSH certificates) is refused with a clear error.
- blank lines and lines starting with ``#`` are ignored.

Where OpenSSH is lenient or ambiguous we refuse: a timestamp without ``Z`` (OpenSSH reads it in the
machine's local time zone) is an error, as are unknown or repeated options, unsupported key types
(see :data:`gatekeeper.sshsig.KEY_TYPES`) and CR characters. One bad line rejects the whole file, so
a typo can never silently drop (or keep) a key. Validity follows OpenSSH exactly: a key is valid at
``t`` when ``valid_after <= t <= valid_before``.

:meth:`AllowedSigners.parse` is pure; :meth:`AllowedSigners.load` reads one file. Both raise
:class:`~gatekeeper.errors.ConfigError` naming the line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gatekeeper import sshsig
from gatekeeper.errors import ActionFormatError, ConfigError

__all__ = ["MAX_FILE_SIZE", "Signer", "AllowedSigners", "match_pattern_list"]

MAX_FILE_SIZE = 4 * 1024 * 1024
MAX_LINE = 16 * 1024
_OPTION_NAMES = ("cert-authority", "namespaces", "valid-after", "valid-before")
_TIME_RE = re.compile(r"([0-9]{8})(?:([0-9]{4})([0-9]{2})?)?(Z?)")
_OPTION_NAME_RE = re.compile(r"[A-Za-z-]+")
_TOKEN_RE = re.compile(r"[^ \t]*")


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.S)


def match_pattern_list(name: str, patterns: Sequence[str]) -> bool:
    """OpenSSH ``match_pattern_list``: true if some pattern matches and no ``!pattern`` does."""
    matched = False
    for p in patterns:
        negated = p.startswith("!")
        if _pattern_regex(p[1:] if negated else p).fullmatch(name):
            if negated:
                return False
            matched = True
    return matched


@dataclass(frozen=True)
class Signer:
    """One line of the file."""

    principals: tuple[str, ...]
    key: sshsig.PublicKey
    namespaces: tuple[str, ...] | None = None  # None = any namespace
    valid_after: int | None = None
    valid_before: int | None = None
    line: int = 0

    def valid_at(self, at: int) -> bool:
        if self.valid_after is not None and at < self.valid_after:
            return False
        return not (self.valid_before is not None and at > self.valid_before)

    def allows_namespace(self, namespace: str) -> bool:
        return self.namespaces is None or match_pattern_list(namespace, self.namespaces)


class _LineError(Exception):
    pass


def _take_token(text: str, what: str) -> tuple[str, str]:
    """Split the first token (double quotes may enclose spaces) from the rest of ``text``."""
    if text.startswith('"'):
        end = text.find('"', 1)
        if end < 0:
            raise _LineError(f"unterminated quote in {what}")
        token, rest = text[1:end], text[end + 1 :]
        if rest and rest[0] not in " \t":
            raise _LineError(f"{what}: expected a space after the closing quote")
        return token, rest.lstrip(" \t")
    m = _TOKEN_RE.match(text)
    assert m is not None
    token = m.group()
    if '"' in token:
        raise _LineError(f"{what}: stray quote")
    return token, text[m.end() :].lstrip(" \t")


def _parse_time(value: str, option: str) -> int:
    m = _TIME_RE.fullmatch(value)
    if not m:
        raise _LineError(f"{option}={value}: expected YYYYMMDD[HHMM[SS]]Z")
    if not m.group(4):
        raise _LineError(
            f"{option}={value}: add a trailing 'Z' (UTC); times without it are local time in "
            "OpenSSH and are refused here"
        )
    digits = m.group(1) + (m.group(2) or "0000") + (m.group(3) or "00")
    try:
        dt = datetime.strptime(digits, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise _LineError(f"{option}={value}: not a valid date and time") from None
    return int(dt.timestamp())


def _parse_options(text: str) -> tuple[dict[str, str], str]:
    """Parse ``opt[=value][,opt...]`` up to the first unquoted blank; return (options, rest)."""
    options: dict[str, str] = {}
    pos = 0
    while True:
        m = _OPTION_NAME_RE.match(text, pos)
        name = m.group() if m else ""
        if name not in _OPTION_NAMES:
            shown = re.split(r"[ \t,=]", text[pos:], maxsplit=1)[0]
            raise _LineError(f"unknown option {shown!r}")
        if name in options:
            raise _LineError(f"option {name!r} given twice")
        pos += len(name)
        value = ""
        if name == "cert-authority":
            if text[pos : pos + 1] == "=":
                raise _LineError("cert-authority takes no value")
        else:
            if text[pos : pos + 1] != "=":
                raise _LineError(f"option {name!r} needs a value")
            pos += 1
            if text[pos : pos + 1] != '"':
                raise _LineError(
                    f'option {name!r} needs a quoted value, e.g. {name}="..." (as OpenSSH requires)'
                )
            end = text.find('"', pos + 1)
            if end < 0:
                raise _LineError(f"unterminated quote in option {name!r}")
            value, pos = text[pos + 1 : end], end + 1
            if "\\" in value:
                raise _LineError(f"backslash in option {name!r}")
            if not value:
                raise _LineError(f"option {name!r} has an empty value")
        options[name] = value
        if pos >= len(text) or text[pos] in " \t":
            return options, text[pos:].lstrip(" \t")
        if text[pos] != ",":
            raise _LineError(f"unexpected {text[pos]!r} after option {name!r}")
        pos += 1


def _parse_line(line: str, number: int) -> Signer:
    principals_text, rest = _take_token(line, "principals")
    principals = tuple(principals_text.split(","))
    if not principals_text or any(not p for p in principals):
        raise _LineError("empty principal")
    if not rest:
        raise _LineError("missing public key")
    options: dict[str, str] = {}
    first = _TOKEN_RE.match(rest)
    assert first is not None
    if "=" in first.group() or first.group().startswith(_OPTION_NAMES):
        options, rest = _parse_options(rest)
    if "cert-authority" in options:
        raise _LineError(
            "cert-authority (trusting an SSH certificate authority) is not supported; list each "
            "signer's own key"
        )
    if not rest:
        raise _LineError("missing public key")
    try:
        key = sshsig.parse_public_key(rest)
    except ActionFormatError as exc:
        raise _LineError(str(exc)) from None
    namespaces = None
    if "namespaces" in options:
        namespaces = tuple(options["namespaces"].split(","))
        if any(not n or n == "!" for n in namespaces):
            raise _LineError("empty pattern in namespaces=")
    after = _parse_time(options["valid-after"], "valid-after") if "valid-after" in options else None
    before = _parse_time(options["valid-before"], "valid-before") if "valid-before" in options else None
    if after is not None and before is not None and before <= after:
        raise _LineError("valid-before is not later than valid-after")
    return Signer(principals, key, namespaces, after, before, number)


class AllowedSigners:
    """An immutable, parsed allowed_signers file."""

    def __init__(self, signers: Sequence[Signer]) -> None:
        self._signers = tuple(signers)

    @property
    def signers(self) -> tuple[Signer, ...]:
        return self._signers

    @classmethod
    def parse(cls, text: str, source: str = "allowed_signers") -> AllowedSigners:
        """Parse the file's text. Raises ConfigError (``<source>:<line>: <what is wrong>``)."""
        if len(text) > MAX_FILE_SIZE:
            raise ConfigError(f"{source}: larger than {MAX_FILE_SIZE} bytes")
        signers = []
        for number, raw in enumerate(text.split("\n"), 1):
            try:
                if "\r" in raw:
                    raise _LineError("carriage return (CRLF line endings are not allowed)")
                if len(raw) > MAX_LINE:
                    raise _LineError(f"line longer than {MAX_LINE} characters")
                if re.search(r"[\x00-\x08\x0b-\x1f\x7f]", raw):
                    raise _LineError("control character")
                line = raw.strip(" \t")
                if not line or line.startswith("#"):
                    continue
                signers.append(_parse_line(line, number))
            except _LineError as exc:
                raise ConfigError(f"{source}:{number}: {exc}") from None
        return cls(signers)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AllowedSigners:
        """Read and parse one file (UTF-8). Raises ConfigError if it is missing, unreadable,
        too large or malformed."""
        name = os.fspath(path)
        try:
            with open(name, "rb") as f:
                data = f.read(MAX_FILE_SIZE + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read allowed_signers file {name}: {exc.strerror or exc}") from None
        if len(data) > MAX_FILE_SIZE:
            raise ConfigError(f"{name}: larger than {MAX_FILE_SIZE} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{name}: not UTF-8 (byte {exc.start})") from None
        return cls.parse(text, name)

    def _matching(self, public_key: str) -> list[Signer]:
        try:
            blob = sshsig.parse_public_key(public_key).blob
        except ActionFormatError:
            return []
        return [s for s in self._signers if s.key.blob == blob]

    def principals_for(self, public_key: str, namespace: str, at: int) -> list[str]:
        """Principals of every line that lists ``public_key``, allows ``namespace`` and is valid at
        Unix time ``at`` (in file order, without duplicates). Empty means: not allowed."""
        out: list[str] = []
        for s in self._matching(public_key):
            if s.allows_namespace(namespace) and s.valid_at(at):
                out.extend(p for p in s.principals if p not in out)
        return out

    def why_not(self, public_key: str, namespace: str, at: int) -> str:
        """A sentence for a person saying why :meth:`principals_for` is empty (or "allowed")."""
        lines = self._matching(public_key)
        if not lines:
            return "the key is not listed in allowed_signers"
        if self.principals_for(public_key, namespace, at):
            return "allowed"
        reasons = []
        for s in lines:
            if not s.allows_namespace(namespace):
                reasons.append(f"line {s.line} does not allow namespace {namespace!r}")
            elif s.valid_after is not None and at < s.valid_after:
                reasons.append(f"line {s.line} is not valid before {_fmt(s.valid_after)}")
            elif s.valid_before is not None:
                reasons.append(f"line {s.line} expired at {_fmt(s.valid_before)}")
        return "; ".join(reasons)


def _fmt(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
