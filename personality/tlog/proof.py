"""C2SP tlog-proof ``c2sp.org/tlog-proof@v1``: an offline-verifiable inclusion proof.

::

    c2sp.org/tlog-proof@v1
    extra <base64 opaque data>          (optional; not authenticated)
    index <decimal, no leading zeros>
    <base64 hash>                       (zero or more, from the leaf's sibling up)
    <blank line>
    <the signed checkpoint, verbatim>

Parsing is strict: UTF-8 without control characters, canonical base64, 32-byte hashes, at most
63 proof lines, a well-formed checkpoint note, bounded total size. Raises ``FormatError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from personality.errors import FormatError, ProofError
from personality.tlog._strict import b64decode, b64encode, decimal, utf8_text
from personality.tlog.checkpoint import SignedCheckpoint, open_checkpoint, parse_signed_checkpoint
from personality.tlog.merkle import HASH_SIZE, verify_inclusion
from personality.tlog.note import MAX_NOTE_SIZE, NoteVerifier
from personality.tlog.tiles import MAX_ENTRY_SIZE

__all__ = [
    "HEADER",
    "MAX_PROOF_SIZE",
    "TlogProof",
    "parse_tlog_proof",
    "format_tlog_proof",
    "verify_tlog_proof",
]

HEADER = "c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES = 63
MAX_EXTRA_SIZE = 2 * MAX_ENTRY_SIZE
MAX_PROOF_SIZE = MAX_NOTE_SIZE + 4 * MAX_EXTRA_SIZE // 3 + 64 * 64 + 256


@dataclass(frozen=True)
class TlogProof:
    """``checkpoint`` is the signed checkpoint note, byte for byte; ``extra`` is unauthenticated."""

    index: int
    proof: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None


def parse_tlog_proof(data: bytes) -> TlogProof:
    """Parse a tlog-proof; the checkpoint is parsed for well-formedness but NOT verified."""
    if not isinstance(data, bytes | bytearray):
        raise FormatError("a tlog-proof must be bytes")
    if len(data) > MAX_PROOF_SIZE:
        raise FormatError(f"tlog-proof is {len(data)} bytes, more than the limit of {MAX_PROOF_SIZE}")
    text = utf8_text(data, "tlog-proof")
    head, sep, checkpoint = text.partition("\n\n")
    if not sep:
        raise FormatError("tlog-proof has no blank line before its checkpoint")
    lines = head.split("\n")
    if lines[0] != HEADER:
        raise FormatError(f"tlog-proof must start with the line {HEADER!r}")
    pos = 1
    extra: bytes | None = None
    if pos < len(lines) and lines[pos].startswith("extra "):
        extra = b64decode(lines[pos][len("extra "):], "tlog-proof extra data")
        if not extra:
            raise FormatError("tlog-proof extra data is empty; omit the line instead")
        if len(extra) > MAX_EXTRA_SIZE:
            raise FormatError(f"tlog-proof extra data is larger than {MAX_EXTRA_SIZE} bytes")
        pos += 1
    if pos >= len(lines) or not lines[pos].startswith("index "):
        raise FormatError("tlog-proof needs an 'index <N>' line after the header (and extra)")
    index = decimal(lines[pos][len("index "):], "tlog-proof index")
    hash_lines = lines[pos + 1 :]
    if len(hash_lines) > MAX_PROOF_HASHES:
        raise FormatError(f"tlog-proof has {len(hash_lines)} proof hashes, more than {MAX_PROOF_HASHES}")
    proof: list[bytes] = []
    for i, line in enumerate(hash_lines):
        h = b64decode(line, f"tlog-proof hash {i}")
        if len(h) != HASH_SIZE:
            raise FormatError(f"tlog-proof hash {i} is {len(h)} bytes, not {HASH_SIZE}")
        proof.append(h)
    raw_checkpoint = checkpoint.encode("utf-8")
    parse_signed_checkpoint(raw_checkpoint)
    return TlogProof(index, tuple(proof), raw_checkpoint, extra)


def format_tlog_proof(p: TlogProof) -> bytes:
    """Serialize ``p``; raises ``FormatError`` if the result would not parse back to ``p``."""
    lines = [HEADER]
    if p.extra is not None:
        lines.append("extra " + b64encode(p.extra))
    lines.append(f"index {p.index}")
    lines.extend(b64encode(h) for h in p.proof)
    data = ("\n".join(lines) + "\n\n").encode("ascii") + p.checkpoint
    if parse_tlog_proof(data) != p:
        raise FormatError("tlog-proof does not round-trip (bad hash length, index or checkpoint)")
    return data


def verify_tlog_proof(
    p: TlogProof, leaf_hash: bytes, origin: str, verifiers: Sequence[NoteVerifier]
) -> SignedCheckpoint:
    """Verify the checkpoint (origin, signature) and the inclusion of ``leaf_hash`` at ``p.index``.

    Returns the verified checkpoint, whose consistency with earlier views the caller must still
    check. Raises ``FormatError``, ``SignatureError``, ``VerificationError`` or ``ProofError``.
    """
    sc = open_checkpoint(p.checkpoint, origin, verifiers)
    if p.index >= sc.size:
        raise ProofError(f"index {p.index} is not in the checkpoint of size {sc.size}")
    verify_inclusion(p.index, sc.size, leaf_hash, p.proof, sc.root)
    return sc
