"""C2SP tlog-checkpoint: the signed tree head (https://c2sp.org/tlog-checkpoint).

The body of the signed note is::

    <origin>\\n
    <tree size, ASCII decimal, no leading zeros>\\n
    <base64 of the 32-byte RFC 6962 root hash>\\n
    [<extension line>\\n ...]

Parsing is strict: every line non-empty, size at most 2**63 - 1, canonical base64 of exactly 32
bytes, nothing after the last newline. Parsers raise ``FormatError``; :func:`open_checkpoint` also
raises ``SignatureError`` (not signed by a trusted key) and ``VerificationError`` (wrong origin).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from personality.errors import FormatError, VerificationError
from personality.tlog._strict import b64decode, b64encode, decimal, utf8_text
from personality.tlog.merkle import HASH_SIZE
from personality.tlog.note import Note, NoteSigner, NoteVerifier, open_note, parse_note, sign_note

__all__ = [
    "MAX_EXTENSIONS",
    "Checkpoint",
    "SignedCheckpoint",
    "parse_checkpoint_body",
    "format_checkpoint_body",
    "parse_signed_checkpoint",
    "open_checkpoint",
    "sign_checkpoint",
]

MAX_EXTENSIONS = 16
MAX_ORIGIN_LENGTH = 1024


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: ``origin`` identifies the log, ``root`` is the 32-byte MTH of ``size`` leaves."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint with the note it came in and the exact bytes received (keep them as evidence)."""

    checkpoint: Checkpoint
    note: Note
    raw: bytes

    @property
    def origin(self) -> str:
        return self.checkpoint.origin

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root


def parse_checkpoint_body(body: bytes) -> Checkpoint:
    """Parse the note text of a checkpoint; raises ``FormatError``."""
    text = utf8_text(body, "checkpoint")
    if not text.endswith("\n"):
        raise FormatError("checkpoint must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise FormatError("checkpoint needs an origin, a size and a root hash line")
    if len(lines) > 3 + MAX_EXTENSIONS:
        raise FormatError(f"checkpoint has more than {MAX_EXTENSIONS} extension lines")
    origin, size_text, root_text, *extensions = lines
    if not origin:
        raise FormatError("checkpoint origin line is empty")
    if len(origin) > MAX_ORIGIN_LENGTH:
        raise FormatError("checkpoint origin is too long")
    size = decimal(size_text, "checkpoint tree size")
    root = b64decode(root_text, "checkpoint root hash")
    if len(root) != HASH_SIZE:
        raise FormatError(f"checkpoint root hash is {len(root)} bytes, not {HASH_SIZE}")
    for i, ext in enumerate(extensions):
        if not ext:
            raise FormatError(f"checkpoint extension line {i + 1} is empty")
    return Checkpoint(origin, size, root, tuple(extensions))


def format_checkpoint_body(cp: Checkpoint) -> bytes:
    """The note text of ``cp``; raises ``FormatError`` if it would not parse back to ``cp``."""
    if not 0 <= cp.size < 1 << 63 or len(cp.root) != HASH_SIZE:
        raise FormatError("checkpoint size must be in [0, 2**63) and its root 32 bytes")
    lines = [cp.origin, str(cp.size), b64encode(cp.root), *cp.extensions]
    body = ("\n".join(lines) + "\n").encode("utf-8")
    if parse_checkpoint_body(body) != cp:
        raise FormatError("checkpoint origin or extensions contain newlines or empty lines")
    return body


def parse_signed_checkpoint(data: bytes) -> SignedCheckpoint:
    """Parse a checkpoint note WITHOUT verifying any signature (evidence, diagnostics)."""
    note = parse_note(data)
    return SignedCheckpoint(parse_checkpoint_body(note.body), note, bytes(data))


def open_checkpoint(data: bytes, origin: str, verifiers: Sequence[NoteVerifier]) -> SignedCheckpoint:
    """Parse and verify a checkpoint from the log ``origin`` signed by one of ``verifiers``.

    Raises ``FormatError`` (malformed), ``SignatureError`` (no valid trusted signature, or a
    trusted key's signature is invalid) or ``VerificationError`` (another log's origin).
    """
    note = open_note(data, verifiers)
    cp = parse_checkpoint_body(note.body)
    if cp.origin != origin:
        raise VerificationError(f"checkpoint is for log {cp.origin!r}, expected {origin!r}")
    return SignedCheckpoint(cp, note, bytes(data))


def sign_checkpoint(cp: Checkpoint, signers: Sequence[NoteSigner]) -> bytes:
    """The signed note of ``cp`` (signatures in the order of ``signers``)."""
    return sign_note(format_checkpoint_body(cp), signers)
