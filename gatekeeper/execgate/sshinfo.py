"""What sshd tells a ForceCommand about the session: pure parsing, no I/O.

- ``SSH_USER_AUTH`` names a file (``ExposeAuthInfo yes``) listing the authentication methods that
  succeeded, one per line, e.g. ``publickey ssh-ed25519 AAAAC3Nz...``. :func:`parse_auth_info`
  returns the one public key that authenticated the session.
- ``SSH_ORIGINAL_COMMAND`` is the client's exec string; it is unset for a shell login, and for a
  subsystem request (sftp) it holds the subsystem's configured command, indistinguishable from an
  exec of that string. :func:`classify_command` sorts the three cases.
"""

from __future__ import annotations

import binascii
import struct

from gatekeeper.errors import GatekeeperError

__all__ = [
    "MAX_AUTH_INFO",
    "SUBSYSTEM_PROGRAMS",
    "AuthInfoError",
    "parse_auth_info",
    "classify_command",
]

MAX_AUTH_INFO = 64 * 1024

# Commands sshd substitutes for a subsystem request (the Subsystem line's command, first word).
# Debian 12's sshd (9.2) cannot drop Subsystem inside a Match block, so a gated account still sees
# sftp arrive as SSH_ORIGINAL_COMMAND=/usr/lib/openssh/sftp-server: refuse it by name.
SUBSYSTEM_PROGRAMS = frozenset({b"internal-sftp", b"sftp-server"})

_PLAIN_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
_MAX_KEY_BLOB = 16 * 1024


class AuthInfoError(GatekeeperError):
    """The SSH_USER_AUTH file does not name exactly one usable public key."""


def _key_type_of_blob(blob: bytes) -> str:
    if len(blob) < 4:
        raise AuthInfoError("public key blob is truncated")
    (length,) = struct.unpack(">I", blob[:4])
    if length > 64 or 4 + length > len(blob):
        raise AuthInfoError("public key blob is truncated")
    try:
        return blob[4 : 4 + length].decode("ascii")
    except UnicodeDecodeError as exc:
        raise AuthInfoError("public key blob has a non-ASCII type") from exc


def parse_auth_info(data: bytes) -> str:
    """The OpenSSH public key (``"<type> <base64>"``, no comment) that authenticated the session.

    ``data`` is the content of the ``SSH_USER_AUTH`` file. Exactly one ``publickey`` line is
    required (other methods, e.g. a second factor, may appear and are ignored); certificates are
    refused because an action is signed by, and bound to, a plain key. Raises
    :class:`AuthInfoError` with a message for the user.
    """
    if len(data) > MAX_AUTH_INFO:
        raise AuthInfoError("the SSH_USER_AUTH file is too large")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise AuthInfoError("the SSH_USER_AUTH file is not ASCII") from exc
    keys: list[str] = []
    for line in text.split("\n"):
        if not line:
            continue
        method, _, rest = line.partition(" ")
        if method != "publickey":
            continue
        fields = rest.split(" ")
        if len(fields) != 2 or not all(fields):
            raise AuthInfoError("malformed publickey line in the SSH_USER_AUTH file")
        key_type, key_b64 = fields
        if "-cert-" in key_type:
            raise AuthInfoError("certificate authentication is not supported; log in with a plain key")
        if key_type not in _PLAIN_KEY_TYPES:
            raise AuthInfoError(f"unsupported public key type {key_type[:40]!r}")
        if len(key_b64) > _MAX_KEY_BLOB:
            raise AuthInfoError("public key is too large")
        # binascii rather than base64 (which imports re) keeps gk exec's start-up short; decoding
        # in strict mode and requiring the canonical encoding is stricter than validate=True.
        try:
            blob = binascii.a2b_base64(key_b64, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise AuthInfoError("public key is not valid base64") from exc
        if binascii.b2a_base64(blob, newline=False).decode("ascii") != key_b64:
            raise AuthInfoError("public key is not canonical base64")
        if _key_type_of_blob(blob) != key_type:
            raise AuthInfoError("public key type does not match its blob")
        keys.append(f"{key_type} {key_b64}")
    if not keys:
        raise AuthInfoError("the session was not authenticated with a public key")
    if len(set(keys)) != 1:
        raise AuthInfoError("the session was authenticated with several public keys; use one")
    return keys[0]


def classify_command(original: bytes | None) -> str:
    """``"shell"`` when ``original`` is None (no SSH_ORIGINAL_COMMAND: an interactive login),
    ``"subsystem"`` when its first word names a subsystem program (``internal-sftp``,
    ``.../sftp-server``), else ``"exec"``."""
    if original is None:
        return "shell"
    words = original.split()
    if words and words[0].rsplit(b"/", 1)[-1] in SUBSYSTEM_PROGRAMS:
        return "subsystem"
    return "exec"
