"""Who may log in to the agent: an OpenSSH ``authorized_keys`` file and trusted user-CA keys.

The agent does this matching itself (asyncssh's ``authorized_client_keys`` would hide which key
authenticated, and it parses but does not enforce several options). Supported ``authorized_keys``
options are the ones that only *restrict* what the agent refuses anyway (``restrict``, ``no-pty``,
``no-port-forwarding``, ``no-agent-forwarding``, ``no-X11-forwarding``, ``no-user-rc``) and
``from="pattern-list"`` (addresses, ``*``/``?`` wildcards, CIDR, ``!`` negation; no DNS). A line
with any other option (``command=``, ``environment=``, ``permitopen=``, ``cert-authority``,
``expiry-time=``, …) is *skipped* with a warning: the key is not authorized, never authorized with
the option ignored. Certificates are accepted only from the trusted CA file (the equivalent of
sshd's ``TrustedUserCAKeys``), must be user certificates inside their validity period, must list
the requested account among their principals (an empty principal list is refused), must not carry
``force-command`` and are bound to their ``source-address`` if they carry one.

:class:`KeyRing` reloads both files when they change; a file that cannot be read makes the ring
authorize nobody from it (fail closed) and reports why through ``warnings``.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
from asyncssh.public_key import (
    CERT_TYPE_USER,
    SSHOpenSSHCertificate,
    decode_ssh_certificate,
    decode_ssh_public_key,
)

__all__ = ["AuthorizedKey", "Identity", "KeyRing", "parse_authorized_keys", "parse_ca_keys", "match_from"]

_RESTRICTIONS = frozenset(
    {"restrict", "no-pty", "no-port-forwarding", "no-agent-forwarding", "no-x11-forwarding", "no-user-rc"}
)
MAX_KEYS_FILE = 1 << 20


@dataclass(frozen=True)
class AuthorizedKey:
    """One usable ``authorized_keys`` entry."""

    key: asyncssh.SSHKey
    from_patterns: tuple[str, ...] = ()  # empty: any address
    line: int = 0


@dataclass(frozen=True)
class Identity:
    """The key that authenticated a connection (for certificates: the certified key, and the cert)."""

    key: asyncssh.SSHKey
    openssh: str  # "ssh-ed25519 AAAA..." without comment: ExecRequest.auth_key
    fingerprint: str  # "SHA256:..."
    certificate: SSHOpenSSHCertificate | None = None

    @classmethod
    def of(cls, key: asyncssh.SSHKey, certificate: SSHOpenSSHCertificate | None = None) -> Identity:
        text = key.export_public_key("openssh").decode("ascii").split()
        return cls(
            key=key,
            openssh=f"{text[0]} {text[1]}",
            fingerprint=key.get_fingerprint("sha256"),
            certificate=certificate,
        )


def _split_options(line: str) -> tuple[str, str]:
    """Split a leading option list (up to the first unquoted blank) from the rest of the line."""
    quoted = False
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == '"':
            quoted = not quoted
        elif ch == "\\" and quoted:
            i += 1  # the escaped character cannot end the quote
        elif ch in " \t" and not quoted:
            return line[:i], line[i:].lstrip()
        i += 1
    raise ValueError("no key after options" if not quoted else "unterminated quote in options")


def _parse_options(text: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(text):
        j = i
        while j < len(text) and text[j] not in ',="':
            j += 1
        name = text[i:j].lower()
        if not name:
            raise ValueError("empty option")
        value: str | None = None
        if j < len(text) and text[j] == "=":
            if j + 1 >= len(text) or text[j + 1] != '"':
                raise ValueError(f"option {name}= needs a quoted value")
            k = j + 2
            chars: list[str] = []
            while k < len(text) and text[k] != '"':
                if text[k] == "\\" and k + 1 < len(text) and text[k + 1] == '"':
                    k += 1
                chars.append(text[k])
                k += 1
            if k >= len(text):
                raise ValueError(f"unterminated value for option {name}")
            value = "".join(chars)
            j = k + 1
        elif j < len(text) and text[j] == '"':
            raise ValueError("unexpected quote in options")
        out.append((name, value))
        if j < len(text):
            if text[j] != ",":
                raise ValueError("options must be separated by commas")
            j += 1
            if j >= len(text):
                raise ValueError("trailing comma in options")
        i = j
    return out


def _import_key(text: str) -> asyncssh.SSHKey:
    fields = text.split()
    if len(fields) < 2:
        raise ValueError("expected: key-type base64 [comment]")
    try:
        key = asyncssh.import_public_key(f"{fields[0]} {fields[1]}")
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise ValueError(f"not a public key: {exc}") from None
    return key


def _looks_like_key(text: str) -> bool:
    first = text.split(None, 1)[0]
    return first.startswith(("ssh-", "ecdsa-", "sk-", "rsa-")) or first.endswith("@openssh.com")


def parse_authorized_keys(text: str) -> tuple[list[AuthorizedKey], list[str]]:
    """Parse ``authorized_keys`` text. Returns (usable entries, warnings). Never raises on content:
    a bad line is skipped (not authorized) and explained in a warning naming its line number."""
    keys: list[AuthorizedKey] = []
    warnings: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            options: list[tuple[str, str | None]] = []
            if not _looks_like_key(line):
                opt_text, line = _split_options(line)
                options = _parse_options(opt_text)
            patterns: list[str] = []
            for name, value in options:
                if name == "from" and value is not None:
                    patterns.extend(p for p in value.split(",") if p)
                elif name in _RESTRICTIONS and value is None:
                    continue
                else:
                    raise ValueError(f"option {name!r} is not supported by the agent")
            if any(k == "from" for k, _ in options) and not patterns:
                raise ValueError("empty from= pattern list")
            keys.append(AuthorizedKey(_import_key(line), tuple(patterns), number))
        except ValueError as exc:
            warnings.append(f"authorized_keys line {number}: {exc}; line ignored")
    return keys, warnings


def parse_ca_keys(text: str) -> tuple[list[asyncssh.SSHKey], list[str]]:
    """Parse a trusted user-CA file (one public key per line, ``#`` comments). Returns
    (keys, warnings); a bad line is skipped and explained."""
    keys: list[asyncssh.SSHKey] = []
    warnings: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(_import_key(line))
        except ValueError as exc:
            warnings.append(f"trusted CA keys line {number}: {exc}; line ignored")
    return keys, warnings


def match_from(patterns: Sequence[str], address: str) -> bool:
    """sshd ``from=`` semantics on an address (no DNS): a matching ``!`` pattern denies, otherwise
    any matching positive pattern allows; no pattern matching denies."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    text = str(ip)
    allowed = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        if "/" in body:
            try:
                hit = ip in ipaddress.ip_network(body, strict=False)
            except ValueError:
                hit = False
        else:
            hit = fnmatch.fnmatchcase(text, body.lower())
        if hit and negate:
            return False
        allowed = allowed or hit
    return allowed


@dataclass
class _Watched:
    path: Path | None
    stamp: tuple[int, int, int] | None = None
    warnings: list[str] = field(default_factory=list)


class KeyRing:
    """The authorized keys and trusted CAs, reloaded when either file changes (checked on every
    call to :meth:`identify`, i.e. once per authentication attempt: a removed key stops working
    for new connections immediately)."""

    def __init__(
        self,
        authorized_keys: Path,
        trusted_ca_keys: Path | None = None,
        *,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self._auth = _Watched(Path(authorized_keys))
        self._ca = _Watched(Path(trusted_ca_keys) if trusted_ca_keys else None)
        self._keys: list[AuthorizedKey] = []
        self._cas: list[asyncssh.SSHKey] = []
        self._warn = warn or (lambda _msg: None)
        self.reload()

    @property
    def warnings(self) -> list[str]:
        return self._auth.warnings + self._ca.warnings

    @property
    def key_count(self) -> int:
        return len(self._keys)

    def _read(self, watched: _Watched, force: bool) -> str | None:
        """Return new text if the file changed (None if unchanged); '' if unreadable."""
        assert watched.path is not None
        try:
            st = os.stat(watched.path)
        except OSError as exc:
            stamp = None
            if watched.stamp is not None or force:
                watched.stamp = stamp
                watched.warnings = [f"{watched.path}: {exc.strerror}; nobody is authorized by it"]
                self._warn(watched.warnings[0])
                return ""
            return None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == watched.stamp and not force:
            return None
        watched.stamp = stamp
        try:
            with open(watched.path, "rb") as fh:
                data = fh.read(MAX_KEYS_FILE + 1)
            if len(data) > MAX_KEYS_FILE:
                raise OSError(f"larger than {MAX_KEYS_FILE} bytes")
            return data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            watched.warnings = [f"{watched.path}: cannot read ({exc}); nobody is authorized by it"]
            self._warn(watched.warnings[0])
            return ""

    def reload(self, *, force: bool = True) -> None:
        text = self._read(self._auth, force)
        if text is not None:
            self._keys, self._auth.warnings = parse_authorized_keys(text)
            for w in self._auth.warnings:
                self._warn(f"{self._auth.path}: {w}")
        if self._ca.path is not None:
            text = self._read(self._ca, force)
            if text is not None:
                self._cas, self._ca.warnings = parse_ca_keys(text)
                for w in self._ca.warnings:
                    self._warn(f"{self._ca.path}: {w}")

    def identify(self, username: str, key_data: bytes, peer_address: str) -> Identity | None:
        """The identity ``key_data`` (an SSH public key or certificate blob from a userauth
        request) would authenticate as ``username`` from ``peer_address``, or None if it may not.
        Does not check the signature: the caller does."""
        self.reload(force=False)
        try:
            cert = decode_ssh_certificate(key_data)
        except (asyncssh.KeyImportError, ValueError):
            cert = None
        if cert is not None:
            return self._identify_cert(username, cert, peer_address)
        try:
            key = decode_ssh_public_key(key_data)
        except (asyncssh.KeyImportError, ValueError):
            return None
        for entry in self._keys:
            if entry.key.public_data == key.public_data:
                if entry.from_patterns and not match_from(entry.from_patterns, peer_address):
                    continue
                return Identity.of(key)
        return None

    def _identify_cert(self, username: str, cert: asyncssh.SSHCertificate, peer: str) -> Identity | None:
        if not isinstance(cert, SSHOpenSSHCertificate):  # X.509: not supported
            return None
        if not any(ca.public_data == cert.signing_key.public_data for ca in self._cas):
            return None
        if not cert.principals or username not in cert.principals:
            return None
        try:
            cert.validate(CERT_TYPE_USER, username)  # type and validity period
        except ValueError:
            return None
        if cert.options.get("force-command") is not None:
            return None
        sources = cert.options.get("source-address")
        if isinstance(sources, list | tuple) and sources:
            try:
                ip = ipaddress.ip_address(peer)
            except ValueError:
                return None
            if not any(isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network) and ip in net
                       for net in sources):
                return None
        return Identity.of(cert.key, cert)
