"""C2SP tlog-cosignature ``cosignature/v1``: timestamped Ed25519 witness cosignatures.

A cosignature is an ordinary note signature line on a checkpoint, with signature type 0x04::

    key ID    = SHA-256(name || "\\n" || 0x04 || 32-byte public key)[:4]
    signature = uint64 big-endian timestamp || Ed25519(message)          (8 + 64 bytes)
    message   = "cosignature/v1\\n" "time <timestamp>\\n" <checkpoint note text>

so a :class:`CosignatureVerifier` is a :class:`~personality.tlog.note.NoteVerifier` and works
with :func:`~personality.tlog.note.open_note` / :func:`~personality.tlog.note.verified_signatures`.
Pure: the timestamp is a parameter, never read from a clock here.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from personality.errors import FormatError
from personality.tlog._strict import MAX_UINT63
from personality.tlog.note import NoteSignature, _check_name, format_key_string, key_id, parse_key_string

__all__ = [
    "ALG_COSIGNATURE_V1",
    "CosignatureVerifier",
    "Cosigner",
    "cosigned_message",
    "cosignature_timestamp",
    "parse_cosignature_vkey",
    "cosigner_from_skey",
    "generate_cosigner",
]

ALG_COSIGNATURE_V1 = 0x04
_SIG_LEN = 8 + 64


def cosigned_message(body: bytes, timestamp: int) -> bytes:
    """The bytes an Ed25519 cosigner signs for checkpoint text ``body`` at ``timestamp``."""
    if not 0 <= timestamp <= MAX_UINT63:
        raise FormatError(f"cosignature timestamp {timestamp} is out of range")
    return b"cosignature/v1\ntime %d\n" % timestamp + body


def cosignature_timestamp(signature: bytes) -> int:
    """The timestamp of a cosignature (the signature bytes after the key ID); raises ``FormatError``."""
    if len(signature) != _SIG_LEN:
        raise FormatError(f"cosignature/v1 signature is {len(signature)} bytes, not {_SIG_LEN}")
    ts = int.from_bytes(signature[:8], "big")
    if ts > MAX_UINT63:
        raise FormatError("cosignature timestamp exceeds 2**63 - 1")
    return ts


class CosignatureVerifier:
    """Checks ``cosignature/v1`` signatures by one witness (a NoteVerifier)."""

    __slots__ = ("_name", "_public_key", "_raw", "_key_id")

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        _check_name(name, "cosigner name")
        self._name = name
        self._public_key = public_key
        self._raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._key_id = key_id(name, ALG_COSIGNATURE_V1, self._raw)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._key_id

    def verify(self, body: bytes, signature: bytes) -> bool:
        """True iff ``signature`` (timestamp || Ed25519 signature) cosigns note text ``body``."""
        try:
            ts = cosignature_timestamp(signature)
            self._public_key.verify(signature[8:], cosigned_message(body, ts))
        except (FormatError, InvalidSignature):
            return False
        return True

    def vkey(self) -> str:
        return format_key_string(self._name, self._key_id, ALG_COSIGNATURE_V1, self._raw, private=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CosignatureVerifier) and (self._name, self._raw) == (other._name, other._raw)

    def __hash__(self) -> int:
        return hash((self._name, self._raw, ALG_COSIGNATURE_V1))

    def __repr__(self) -> str:
        return f"CosignatureVerifier({self.vkey()!r})"


class Cosigner:
    """A witness key producing ``cosignature/v1`` signatures."""

    __slots__ = ("_name", "_private_key", "_verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self._name = name
        self._private_key = private_key
        self._verifier = CosignatureVerifier(name, private_key.public_key())

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._verifier.key_id

    def cosign(self, body: bytes, timestamp: int) -> NoteSignature:
        """Cosign checkpoint text ``body`` as of ``timestamp`` (POSIX seconds)."""
        sig = self._private_key.sign(cosigned_message(body, timestamp))
        return NoteSignature(self._name, self.key_id, timestamp.to_bytes(8, "big") + sig)

    def verifier(self) -> CosignatureVerifier:
        return self._verifier

    def skey(self) -> str:
        """``PRIVATE+KEY+<name>+<hex ID>+<base64(0x04 || seed)>`` (the signed-note skey layout)."""
        seed = self._private_key.private_bytes_raw()
        return format_key_string(self._name, self.key_id, ALG_COSIGNATURE_V1, seed, private=True)


def generate_cosigner(name: str) -> Cosigner:
    return Cosigner(name, Ed25519PrivateKey.generate())


def parse_cosignature_vkey(text: str) -> CosignatureVerifier:
    """Parse ``name+hexid+base64(0x04||pub)``; raises ``FormatError``."""
    name, kid, alg, material = parse_key_string(text, private=False)
    if alg != ALG_COSIGNATURE_V1 or len(material) != 32:
        raise FormatError("cosigner verifier key must be type 0x04 with a 32-byte Ed25519 key")
    v = CosignatureVerifier(name, Ed25519PublicKey.from_public_bytes(material))
    if v.key_id != kid:
        raise FormatError(f"cosigner key ID {kid.hex()} does not match its name and key")
    return v


def cosigner_from_skey(text: str) -> Cosigner:
    """Parse ``PRIVATE+KEY+name+hexid+base64(0x04||seed)``; raises ``FormatError``."""
    name, kid, alg, material = parse_key_string(text.strip(), private=True)
    if alg != ALG_COSIGNATURE_V1 or len(material) != 32:
        raise FormatError("cosigner signer key must be type 0x04 with a 32-byte Ed25519 seed")
    c = Cosigner(name, Ed25519PrivateKey.from_private_bytes(material))
    if c.key_id != kid:
        raise FormatError(f"cosigner key ID {kid.hex()} does not match its name and key")
    return c
