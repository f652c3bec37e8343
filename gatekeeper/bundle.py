"""The bundle a client hands to a host: ``GK_BUNDLE``.

A bundle is a C2SP tlog-proof (``c2sp.org/tlog-proof@v1``: index, inclusion proof, the signed
checkpoint with any cosignatures) whose ``extra`` line carries the log entry (the signed action).
``GK_BUNDLE`` is that tlog-proof text encoded as *one line* of standard, padded base64, so it
survives ``ssh -o SetEnv=GK_BUNDLE=...`` and any environment variable plumbing unchanged::

    GK_BUNDLE = base64( "c2sp.org/tlog-proof@v1\\n"
                        "extra " base64(entry) "\\n"
                        "index " N "\\n"
                        base64(hash) "\\n" ...          (inclusion proof, leaf side first)
                        "\\n"
                        <signed checkpoint note> )

The tlog-proof parser is ``personality.tlog.proof`` (one implementation for the whole project).
Parsing here is strict and bounded (:data:`MAX_BUNDLE` characters) and checks that the ``extra``
is a well-formed action entry; nothing is *verified* (signatures, proof, checkpoint): that is the
agent's job (``gatekeeper.verify``). Pure: no I/O. Errors are
:class:`~gatekeeper.errors.ActionFormatError`.

Canonical form: every value has exactly one ``GK_BUNDLE`` spelling, and ``parse_bundle`` accepts
only that one (``encode_bundle(parse_bundle(t)) == t``). This holds by construction, without
re-encoding what was parsed: the outer base64 is checked to be canonical, and
``parse_tlog_proof`` accepts only the canonical spelling of each part (the exact header line,
canonical base64 for ``extra`` and each 32-byte hash, a decimal index without leading zeros, no
empty or extra lines, the checkpoint kept byte for byte), so the parts it returns format back to
exactly the bytes it read. A length identity re-checks that cheaply on every parse, and the
hypothesis tests in ``tests/test_bundle.py`` pin the property against mutated input.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from gatekeeper import action as act
from gatekeeper.errors import ActionFormatError
from personality.errors import FormatError
from personality.tlog.merkle import HASH_SIZE
from personality.tlog.proof import HEADER, TlogProof, format_tlog_proof, parse_tlog_proof

__all__ = [
    "MAX_BUNDLE",
    "MAX_BUNDLED_ENTRY",
    "Bundle",
    "encode_bundle",
    "parse_bundle",
    "parse_bundle_entry",
    "bundle_size",
]

#: Upper bound on the ``GK_BUNDLE`` value, in characters (an environment variable with room to spare:
#: Linux allows 128 KiB per string, OpenSSH's ``SetEnv`` passes it as one argument).
MAX_BUNDLE = 16 * 1024
#: Entries up to this size always fit in a bundle whose checkpoint note is ≤ 2 KiB (a log signature
#: and a dozen cosignatures) and whose proof has ≤ 40 hashes (a log of 10^12 entries). The client
#: should refuse to submit larger actions: they could be logged but never handed to a host.
MAX_BUNDLED_ENTRY = 6 * 1024


@dataclass(frozen=True)
class Bundle:
    """A log entry with the proof that it is in the log."""

    entry: bytes
    index: int
    proof: tuple[bytes, ...]
    checkpoint: bytes  # the signed checkpoint note, byte for byte


def _tlog_proof(b: Bundle) -> bytes:
    try:
        return format_tlog_proof(TlogProof(b.index, tuple(b.proof), b.checkpoint, b.entry))
    except FormatError as exc:
        raise ActionFormatError(f"bundle: {exc}") from None


def bundle_size(b: Bundle) -> int:
    """Length of ``encode_bundle(b)`` without the size check (for diagnostics and benchmarks)."""
    return 4 * ((len(_tlog_proof(b)) + 2) // 3)


def encode_bundle(b: Bundle) -> str:
    """The ``GK_BUNDLE`` value for ``b``. Raises ActionFormatError if the entry is not a well-formed
    action entry, a part is malformed, or the result would exceed :data:`MAX_BUNDLE` characters."""
    act.parse_entry(b.entry)
    text = base64.b64encode(_tlog_proof(b)).decode("ascii")
    if len(text) > MAX_BUNDLE:
        raise ActionFormatError(
            f"bundle is {len(text)} characters, more than {MAX_BUNDLE}: the action is too large to hand "
            f"to a host (keep entries under {MAX_BUNDLED_ENTRY} bytes)"
        )
    return text


def _b64_len(n: int) -> int:
    return 4 * ((n + 2) // 3)


def _canonical_length(p: TlogProof) -> int:
    """Length of ``format_tlog_proof(p)``, computed without formatting (``p`` as parsed)."""
    n = len(HEADER) + 1 + len("index ") + len(str(p.index)) + 1
    if p.extra is not None:
        n += len("extra ") + _b64_len(len(p.extra)) + 1
    n += len(p.proof) * (_b64_len(HASH_SIZE) + 1)  # parse_tlog_proof returns HASH_SIZE-byte hashes
    return n + 1 + len(p.checkpoint)


def parse_bundle(text: str) -> Bundle:
    """Parse a ``GK_BUNDLE`` value: one line of canonical base64 of a tlog-proof whose ``extra`` is a
    well-formed action entry. Structure only; nothing is verified. Raises ActionFormatError."""
    return parse_bundle_entry(text)[0]


def parse_bundle_entry(text: str) -> tuple[Bundle, act.SignedAction]:
    """:func:`parse_bundle`, also returning its entry parsed as an action (``parse_entry(entry)``,
    which ``parse_bundle`` checks anyway), so that verifiers need not parse it twice. Structure
    only: the signature is *not* verified. Raises ActionFormatError."""
    if not isinstance(text, str):
        raise ActionFormatError("bundle: expected text")
    if len(text) > MAX_BUNDLE:
        raise ActionFormatError(f"bundle: {len(text)} characters, more than the limit of {MAX_BUNDLE}")
    if not text:
        raise ActionFormatError("bundle: empty")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ActionFormatError("bundle: not one line of standard base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise ActionFormatError("bundle: base64 is not in canonical form")
    try:
        proof = parse_tlog_proof(raw)
    except FormatError as exc:
        raise ActionFormatError(f"bundle: {exc}") from None
    if proof.extra is None:
        raise ActionFormatError("bundle: the tlog-proof carries no entry (no 'extra' line)")
    try:
        signed = act.parse_entry(proof.extra)
    except ActionFormatError as exc:
        raise ActionFormatError(f"bundle: the entry is not a valid action: {exc}") from None
    if _canonical_length(proof) != len(raw):  # pragma: no cover - parse_tlog_proof is canonical
        raise ActionFormatError("bundle: tlog-proof is not in canonical form")
    return Bundle(proof.extra, proof.index, proof.proof, proof.checkpoint), signed
