"""C2SP signed-note: text signed by one or more Ed25519 keys (https://c2sp.org/signed-note).

Wire format::

    <text, one or more lines, each ending in "\\n">
    <blank line>
    — <key name> <base64(4-byte key ID || signature)>
    ...

Parsing is strict (see ``docs/formats-tlog.md``): valid UTF-8, no control characters but newline,
at most :data:`MAX_NOTE_SIZE` bytes and :data:`MAX_SIGNATURES` signature lines, every signature
line well formed (a malformed line rejects the whole note, it is not skipped), no two signatures
with the same key name and ID, canonical base64, nothing after the last newline. Every parser
raises :class:`~personality.errors.FormatError`; verification raises
:class:`~personality.errors.SignatureError`.

Keys: an Ed25519 key ID is ``SHA-256(name || "\\n" || 0x01 || public key)[:4]``; verifier keys are
written ``<name>+<8 hex key ID>+<base64(0x01 || public key)>`` (vkey) and signer keys in the Go
``golang.org/x/mod/sumdb/note`` encoding ``PRIVATE+KEY+<name>+<hex ID>+<base64(0x01 || seed)>``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from personality.errors import FormatError, SignatureError
from personality.tlog._strict import b64decode, b64encode, utf8_text

__all__ = [
    "ALG_ED25519",
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "NoteSignature",
    "Note",
    "NoteSigner",
    "NoteVerifier",
    "Signer",
    "Verifier",
    "generate_signer",
    "signer_from_skey",
    "parse_vkey",
    "parse_key_string",
    "format_key_string",
    "key_id",
    "valid_key_name",
    "parse_note",
    "format_note",
    "parse_signature_line",
    "format_signature_line",
    "sign_note",
    "verified_signatures",
    "open_note",
]

ALG_ED25519 = 0x01
MAX_NOTE_SIZE = 256 * 1024
MAX_SIGNATURES = 100
MAX_NAME_LENGTH = 1024
_DASH = "\u2014 "
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_HEX_ID = re.compile(r"[0-9a-f]{8}")


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key ID, and the signature bytes after the ID."""

    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True)
class Note:
    """A parsed (not yet verified) note: ``body`` includes its final newline."""

    body: bytes
    signatures: tuple[NoteSignature, ...]


class NoteVerifier(Protocol):
    """Anything that checks one kind of note signature (Ed25519, cosignature/v1, ...)."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def verify(self, body: bytes, signature: bytes) -> bool: ...


class NoteSigner(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def sign(self, body: bytes) -> NoteSignature: ...


def valid_key_name(name: str) -> bool:
    """Non-empty, no Unicode space, no ``+``, no control character, bounded length, and valid
    UTF-8 once encoded: no lone surrogate (text from argv or the environment is decoded with
    ``surrogateescape``, so undecodable bytes arrive as ``\\udc80``-``\\udcff``)."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_NAME_LENGTH
        and "+" not in name
        and not any(ch.isspace() or ch < " " or "\ud800" <= ch <= "\udfff" for ch in name)
    )


def _check_name(name: str, what: str = "key name") -> None:
    if not valid_key_name(name):
        raise FormatError(
            f"{what} {name!r} is empty, too long, not UTF-8, or has a space, '+' or control character"
        )


def key_id(name: str, alg: int, public_key: bytes) -> bytes:
    """``SHA-256(name || "\\n" || alg || public_key)[:4]``."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public_key).digest()[:4]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


class Verifier:
    """An Ed25519 note verifier (signature type 0x01)."""

    __slots__ = ("_name", "_public_key", "_raw", "_key_id")

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        _check_name(name)
        self._name = name
        self._public_key = public_key
        self._raw = _raw_public(public_key)
        self._key_id = key_id(name, ALG_ED25519, self._raw)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._key_id

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._public_key

    def verify(self, body: bytes, signature: bytes) -> bool:
        """True iff ``signature`` (64 bytes, without the key ID) is this key's over ``body``."""
        if len(signature) != 64:
            return False
        try:
            self._public_key.verify(signature, body)
        except InvalidSignature:
            return False
        return True

    def vkey(self) -> str:
        return format_key_string(self._name, self._key_id, ALG_ED25519, self._raw, private=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Verifier) and (self._name, self._raw) == (other._name, other._raw)

    def __hash__(self) -> int:
        return hash((self._name, self._raw))

    def __repr__(self) -> str:
        return f"Verifier({self.vkey()!r})"


class Signer:
    """An Ed25519 note signer. Keep it secret: :meth:`skey` reveals the private key."""

    __slots__ = ("_name", "_private_key", "_verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self._name = name
        self._private_key = private_key
        self._verifier = Verifier(name, private_key.public_key())

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._verifier.key_id

    def sign(self, body: bytes) -> NoteSignature:
        return NoteSignature(self._name, self.key_id, self._private_key.sign(body))

    def verifier(self) -> Verifier:
        return self._verifier

    def skey(self) -> str:
        seed = self._private_key.private_bytes_raw()
        return format_key_string(self._name, self.key_id, ALG_ED25519, seed, private=True)

    def __repr__(self) -> str:
        return f"Signer({self._name!r}, key_id={self.key_id.hex()})"


def generate_signer(name: str) -> Signer:
    """A fresh Ed25519 signer (randomness from the OS)."""
    return Signer(name, Ed25519PrivateKey.generate())


def parse_key_string(text: str, *, private: bool) -> tuple[str, bytes, int, bytes]:
    """Split a vkey or skey into ``(name, key_id, alg, key material)``; raises ``FormatError``.

    The key ID is checked only for format here; callers recompute and compare it.
    """
    what = "signer key" if private else "verifier key"
    if not isinstance(text, str) or len(text) > 4 * MAX_NAME_LENGTH:
        raise FormatError(f"{what} is not a string of reasonable length")
    if private:
        if not text.startswith(_PRIVATE_PREFIX):
            raise FormatError(f"signer key must start with {_PRIVATE_PREFIX}")
        text = text[len(_PRIVATE_PREFIX) :]
    parts = text.split("+", 2)  # base64 may itself contain '+'; names and IDs may not
    if len(parts) != 3:
        raise FormatError(f"{what} must be <name>+<hex key ID>+<base64 key>")
    name, hex_id, b64 = parts
    _check_name(name)
    if not _HEX_ID.fullmatch(hex_id):
        raise FormatError(f"{what} ID {hex_id!r} must be 8 lowercase hex digits")
    raw = b64decode(b64, f"{what} material")
    if len(raw) < 2:
        raise FormatError(f"{what} material is too short")
    return name, bytes.fromhex(hex_id), raw[0], raw[1:]


def format_key_string(name: str, kid: bytes, alg: int, material: bytes, *, private: bool) -> str:
    """The inverse of :func:`parse_key_string`: ``[PRIVATE+KEY+]<name>+<hex ID>+<base64(alg || key)>``."""
    prefix = _PRIVATE_PREFIX if private else ""
    return f"{prefix}{name}+{kid.hex()}+{b64encode(bytes([alg]) + material)}"


def parse_vkey(text: str) -> Verifier:
    """Parse an Ed25519 ``name+hexid+base64(0x01||pub)`` verifier key; raises ``FormatError``."""
    name, kid, alg, material = parse_key_string(text, private=False)
    if alg != ALG_ED25519:
        raise FormatError(f"verifier key type {alg:#04x} is not Ed25519 (0x01)")
    if len(material) != 32:
        raise FormatError("Ed25519 verifier key must be 32 bytes")
    v = Verifier(name, Ed25519PublicKey.from_public_bytes(material))
    if v.key_id != kid:
        raise FormatError(f"verifier key ID {kid.hex()} does not match its name and key ({v.key_id.hex()})")
    return v


def signer_from_skey(text: str) -> Signer:
    """Parse a Go-compatible ``PRIVATE+KEY+name+hexid+base64(0x01||seed)``; raises ``FormatError``."""
    name, kid, alg, material = parse_key_string(text.strip(), private=True)
    if alg != ALG_ED25519:
        raise FormatError(f"signer key type {alg:#04x} is not Ed25519 (0x01)")
    if len(material) != 32:
        raise FormatError("Ed25519 signer key seed must be 32 bytes")
    s = Signer(name, Ed25519PrivateKey.from_private_bytes(material))
    if s.key_id != kid:
        raise FormatError(f"signer key ID {kid.hex()} does not match its name and key")
    return s


def parse_signature_line(line: str) -> NoteSignature:
    """Parse ``— <name> <base64>`` (without the newline); raises ``FormatError``."""
    if not line.startswith(_DASH):
        raise FormatError(f"signature line must start with an em dash and a space: {line[:80]!r}")
    rest = line[len(_DASH):]
    parts = rest.split(" ")
    if len(parts) != 2:
        raise FormatError(f"signature line must be '— <name> <base64>': {line[:80]!r}")
    name, b64 = parts
    _check_name(name, "signature key name")
    raw = b64decode(b64, f"signature by {name!r}")
    if len(raw) < 5:
        raise FormatError(f"signature by {name!r} is shorter than a key ID and one byte")
    return NoteSignature(name, raw[:4], raw[4:])


def format_signature_line(sig: NoteSignature) -> bytes:
    """``— <name> <base64(key ID || signature)>\\n``; raises ``FormatError`` for a bad name or ID."""
    _check_name(sig.name, "signature key name")
    if len(sig.key_id) != 4 or not sig.signature:
        raise FormatError("a signature needs a 4-byte key ID and non-empty signature bytes")
    return f"{_DASH}{sig.name} {b64encode(sig.key_id + sig.signature)}\n".encode()


def _check_body(text: str) -> None:
    if not text.endswith("\n"):
        raise FormatError("note text must end with a newline")


def parse_note(data: bytes) -> Note:
    """Parse a signed note without verifying it; raises ``FormatError`` (see module docstring)."""
    if not isinstance(data, bytes | bytearray):
        raise FormatError("a note must be bytes")
    if len(data) > MAX_NOTE_SIZE:
        raise FormatError(f"note is {len(data)} bytes, more than the limit of {MAX_NOTE_SIZE}")
    text = utf8_text(data, "note")
    if not text.endswith("\n"):
        raise FormatError("note must end with a newline (missing newline or trailing bytes)")
    split = text.rfind("\n\n")
    if split < 0:
        raise FormatError("note has no blank line between its text and its signatures")
    body, sig_text = text[: split + 1], text[split + 2 :]
    if not sig_text:
        raise FormatError("note has no signature lines")
    lines = sig_text[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise FormatError(f"note has {len(lines)} signatures, more than the limit of {MAX_SIGNATURES}")
    sigs: list[NoteSignature] = []
    seen: set[tuple[str, bytes]] = set()
    for line in lines:
        sig = parse_signature_line(line)
        if (sig.name, sig.key_id) in seen:
            raise FormatError(f"duplicate signature by {sig.name!r} key ID {sig.key_id.hex()}")
        seen.add((sig.name, sig.key_id))
        sigs.append(sig)
    return Note(body.encode("utf-8"), tuple(sigs))


def format_note(note: Note) -> bytes:
    """Serialize ``note``; the result parses back to an equal ``Note``. Raises ``FormatError``."""
    _check_body(utf8_text(note.body, "note text"))
    if not note.signatures:
        raise FormatError("a note needs at least one signature")
    data = note.body + b"\n" + b"".join(format_signature_line(s) for s in note.signatures)
    if parse_note(data) != note:  # duplicates, size limits, and any other ambiguity
        raise FormatError("note does not have a unique encoding")
    return data


def sign_note(body: bytes, signers: Sequence[NoteSigner]) -> bytes:
    """Sign ``body`` (UTF-8 text ending in a newline) with every signer, in order."""
    _check_body(utf8_text(body, "note text"))
    return format_note(Note(body, tuple(s.sign(body) for s in signers)))


def verified_signatures(note: Note, verifiers: Sequence[NoteVerifier]) -> tuple[NoteSignature, ...]:
    """The signatures of ``note`` made by ``verifiers``, all checked.

    Signatures from unknown keys (name and key ID not both matching a verifier) are ignored. A
    signature from a known key that does not verify raises ``SignatureError`` (the whole note is
    rejected, as the spec recommends). Two verifiers with the same name and key ID are ambiguous
    and raise ``SignatureError`` too. The result may be empty.
    """
    known: dict[tuple[str, bytes], NoteVerifier] = {}
    for v in verifiers:
        k = (v.name, v.key_id)
        if k in known:
            raise SignatureError(f"two configured keys share the name {v.name!r} and key ID {v.key_id.hex()}")
        known[k] = v
    good: list[NoteSignature] = []
    for sig in note.signatures:
        match = known.get((sig.name, sig.key_id))
        if match is None:
            continue
        if not match.verify(note.body, sig.signature):
            raise SignatureError(f"signature by {sig.name!r} (key ID {sig.key_id.hex()}) does not verify")
        good.append(sig)
    return tuple(good)


def open_note(data: bytes, verifiers: Sequence[NoteVerifier]) -> Note:
    """Parse ``data`` and require at least one valid signature by one of ``verifiers``.

    Raises ``FormatError`` if malformed, ``SignatureError`` if no known key signed it or a known
    key's signature is invalid. Returns the whole parsed note (unknown signatures included).
    """
    note = parse_note(data)
    if not verified_signatures(note, verifiers):
        names = ", ".join(sorted({v.name for v in verifiers})) or "none configured"
        raise SignatureError(f"note is not signed by any trusted key ({names})")
    return note
