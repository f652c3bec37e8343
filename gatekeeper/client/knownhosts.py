"""OpenSSH ``known_hosts`` files, read the way ``ssh`` reads them (the subset a client needs).

Supported: comma-separated host patterns with ``*`` / ``?`` wildcards and ``!`` negation,
``[host]:port`` names, hashed names (``|1|salt|hmac``), ``@revoked`` lines (a revoked key is refused
even if another line lists it), comments and blank lines. ``@cert-authority`` lines are ignored
(host certificates are not supported: such a host is "unknown" and refused). Malformed lines are
skipped, as ``ssh`` does, so one bad line never locks a user out of every host.

Matching is pure; :func:`load` reads files and :func:`append_host_key` appends one line (used by
``--accept-new``; the file and its directory are created with modes 0600/0700).
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["KnownHosts", "host_key_name", "fingerprint_blob", "key_type_of_blob", "append_host_key"]

_MAX_FILE_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True)
class _Entry:
    patterns: tuple[str, ...]
    key_type: str
    blob: bytes
    marker: str  # "" or "@revoked"


def _decode_b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def key_type_of_blob(blob: bytes) -> str:
    """The key type string at the start of an SSH public key blob ("" if malformed)."""
    if len(blob) < 4:
        return ""
    n = int.from_bytes(blob[:4], "big")
    if n > 64 or len(blob) < 4 + n:
        return ""
    try:
        return blob[4 : 4 + n].decode("ascii")
    except UnicodeDecodeError:
        return ""


def fingerprint_blob(blob: bytes) -> str:
    """OpenSSH's ``SHA256:<unpadded base64>`` fingerprint of a public key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def host_key_name(host: str, port: int) -> str:
    """The name ``ssh`` looks up: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


def _hashed_match(pattern: str, name: str) -> bool:
    parts = pattern.split("|")
    if len(parts) != 4 or parts[1] != "1":
        return False
    salt, want = _decode_b64(parts[2]), _decode_b64(parts[3])
    if salt is None or want is None:
        return False
    got = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return hmac.compare_digest(got, want)


def _pattern_match(pattern: str, name: str) -> bool:
    if pattern.startswith("|"):
        return _hashed_match(pattern, name)
    # ssh compares host names case-insensitively; fnmatchcase keeps '*'/'?' semantics and nothing else
    # ('[' would be a character class in fnmatch, but in known_hosts it starts "[host]:port").
    if "*" not in pattern and "?" not in pattern:
        return pattern.lower() == name.lower()
    escaped = pattern.lower().replace("[", "[[]")
    return fnmatch.fnmatchcase(name.lower(), escaped)


def _entry_matches(entry: _Entry, name: str) -> bool:
    matched = False
    for pattern in entry.patterns:
        if pattern.startswith("!"):
            if _pattern_match(pattern[1:], name):
                return False
        elif _pattern_match(pattern, name):
            matched = True
    return matched


def _parse_line(line: str) -> _Entry | None:
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    marker = ""
    if fields[0].startswith("@"):
        marker, fields = fields[0], fields[1:]
        if marker not in ("@revoked", "@cert-authority"):
            return None
    if len(fields) < 3:
        return None
    blob = _decode_b64(fields[2])
    if blob is None or key_type_of_blob(blob) != fields[1]:
        return None
    return _Entry(tuple(fields[0].split(",")), fields[1], blob, marker)


@dataclass
class KnownHosts:
    """The entries of one or more known_hosts files, in order."""

    entries: list[_Entry] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> KnownHosts:
        return cls([e for e in (_parse_line(line) for line in text.splitlines()) if e is not None])

    def keys_for(self, name: str) -> list[bytes]:
        """Public key blobs trusted for ``name`` (revoked keys removed; certificate authorities are
        not trusted here)."""
        revoked = self.revoked()
        out: list[bytes] = []
        for e in self.entries:
            if e.marker == "" and e.blob not in revoked and e.blob not in out and _entry_matches(e, name):
                out.append(e.blob)
        return out

    def revoked(self) -> set[bytes]:
        return {e.blob for e in self.entries if e.marker == "@revoked"}

    def key_types_for(self, name: str) -> list[str]:
        types: list[str] = []
        for blob in self.keys_for(name):
            t = key_type_of_blob(blob)
            if t not in types:
                types.append(t)
        return types


def load(paths: Iterable[Path]) -> KnownHosts:
    """Read every existing file of ``paths`` (missing or unreadable files are skipped, as ``ssh``
    does; an oversize file is skipped too)."""
    known = KnownHosts()
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read(_MAX_FILE_SIZE + 1)
        except OSError:
            continue
        if len(data) > _MAX_FILE_SIZE:
            continue
        known.entries.extend(KnownHosts.parse(data.decode("utf-8", "replace")).entries)
    return known


def append_host_key(path: Path, names: Sequence[str], blob: bytes, hashed: bool = False) -> None:
    """Append ``names keytype base64`` (names hashed when ``hashed``) to ``path``, creating the
    directory (0700) and the file (0600) if needed. The line is written with one ``write`` call and
    fsynced, so concurrent appenders never interleave within a line."""
    key_b64 = base64.b64encode(blob).decode()
    if hashed:
        hosts = []
        for name in names:
            salt = secrets.token_bytes(20)
            digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
            hosts.append(f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}")
        host_field = ",".join(hosts)
    else:
        host_field = ",".join(names)
    line = f"{host_field} {key_type_of_blob(blob)} {key_b64}\n".encode()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
