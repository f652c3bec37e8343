"""Offline proof bundles for auditors: one action, provably in the log, provably the same log.

A bundle is one canonical JSON document (``gatekeeper/audit-proof/v1``)::

    {"consistency": [{"checkpoint": "<signed note>", "proof": ["<base64 hash>", ...]}, ...],
     "format": "gatekeeper/audit-proof/v1",
     "tlog_proof": "<c2sp.org/tlog-proof@v1 text whose extra is the log entry>"}

- ``tlog_proof`` (C2SP tlog-proof): the entry (as ``extra``), its index, the inclusion proof and
  the signed checkpoint it is proven against.
- ``consistency``: the chain from a checkpoint the auditor already trusts to that checkpoint:
  each step is a signed checkpoint and the consistency proof from it to the next step's checkpoint
  (the last step's proof leads to the tlog-proof's checkpoint). Empty when the inclusion is proven
  directly against the trusted checkpoint, or when no trusted checkpoint was named.

Canonical: keys sorted, no spaces, ASCII only (``\\uXXXX`` escapes), one final newline;
:func:`verify_bundle` re-encodes what it parsed and rejects any other spelling, so every byte of
a bundle is either authenticated (signatures, hashes) or fixed by the encoding: any one-byte change
fails. Verification is pure and needs only the log's verifier key (and, to anchor the chain, the
auditor's trusted checkpoint) — no network, no log. Malformed bundles raise
``ActionFormatError``; bundles that do not verify raise ``LogMisbehaved`` (proofs, checkpoint
signatures) or ``SignatureInvalid`` (the action's SSHSIG).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gatekeeper import action as _action
from gatekeeper.audit.index import AuditIndex
from gatekeeper.errors import ActionFormatError, ConfigError, LogMisbehaved, SignatureInvalid
from personality.errors import FormatError, NotFoundError, ProofError, VerificationError
from personality.tlog import merkle
from personality.tlog.checkpoint import SignedCheckpoint, open_checkpoint, parse_signed_checkpoint
from personality.tlog.note import NoteVerifier
from personality.tlog.proof import TlogProof, format_tlog_proof, parse_tlog_proof, verify_tlog_proof

__all__ = [
    "FORMAT",
    "MAX_BUNDLE_SIZE",
    "Step",
    "AuditBundle",
    "Verified",
    "build_bundle",
    "encode",
    "decode",
    "verify_bundle",
]

FORMAT = "gatekeeper/audit-proof/v1"
MAX_BUNDLE_SIZE = 1 << 20
MAX_STEPS = 64


@dataclass(frozen=True)
class Step:
    checkpoint: bytes  # signed note, verbatim
    proof: tuple[bytes, ...]  # consistency proof from this checkpoint to the next one


@dataclass(frozen=True)
class AuditBundle:
    proof: TlogProof  # extra = the entry
    chain: tuple[Step, ...] = ()


@dataclass(frozen=True)
class Verified:
    """What a verified bundle proves."""

    index: int
    entry: bytes
    checkpoint: SignedCheckpoint  # the entry is included in this checkpoint
    anchor: SignedCheckpoint  # ... which is consistent with this one (the first of the chain)
    signed: _action.SignedAction | None  # the action, when the entry is a validly signed action
    action_problem: str = ""  # why ``signed`` is None


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode("ascii")


def encode(b: AuditBundle) -> bytes:
    doc = {
        "consistency": [
            {"checkpoint": s.checkpoint.decode("utf-8"), "proof": [_b64(h) for h in s.proof]} for s in b.chain
        ],
        "format": FORMAT,
        "tlog_proof": format_tlog_proof(b.proof).decode("utf-8"),
    }
    return (json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n").encode("ascii")


def _hash(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ActionFormatError(f"{what} is not a string")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ActionFormatError(f"{what} is not base64") from None
    if len(raw) != merkle.HASH_SIZE or _b64(raw) != value:
        raise ActionFormatError(f"{what} is not a canonical 32-byte hash")
    return raw


def decode(data: bytes) -> AuditBundle:
    """Parse a bundle strictly (structure only; nothing verified). Raises ActionFormatError."""
    if len(data) > MAX_BUNDLE_SIZE:
        raise ActionFormatError(f"proof bundle is larger than {MAX_BUNDLE_SIZE} bytes")
    try:
        doc = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ActionFormatError("proof bundle is not ASCII JSON") from None
    except RecursionError:  # json.loads recurses once per nesting level ("[[[[...")
        raise ActionFormatError("proof bundle is JSON nested too deeply") from None
    if not isinstance(doc, dict) or set(doc) != {"consistency", "format", "tlog_proof"}:
        raise ActionFormatError("proof bundle must have exactly: consistency, format, tlog_proof")
    if doc["format"] != FORMAT:
        raise ActionFormatError(f"proof bundle format is not {FORMAT!r}")
    if not isinstance(doc["tlog_proof"], str):
        raise ActionFormatError("tlog_proof is not a string")
    try:
        proof = parse_tlog_proof(doc["tlog_proof"].encode("utf-8"))
    except (FormatError, UnicodeEncodeError) as exc:
        raise ActionFormatError(f"tlog_proof: {exc}") from None
    if proof.extra is None:
        raise ActionFormatError("tlog_proof carries no entry (no 'extra' line)")
    steps = doc["consistency"]
    if not isinstance(steps, list) or len(steps) > MAX_STEPS:
        raise ActionFormatError(f"consistency must be a list of at most {MAX_STEPS} steps")
    chain = []
    for i, s in enumerate(steps):
        if not isinstance(s, dict) or set(s) != {"checkpoint", "proof"}:
            raise ActionFormatError(f"consistency step {i} must have exactly: checkpoint, proof")
        if not isinstance(s["checkpoint"], str) or not isinstance(s["proof"], list):
            raise ActionFormatError(f"consistency step {i} is malformed")
        if len(s["proof"]) > merkle.MAX_PROOF_LENGTH:
            raise ActionFormatError(f"consistency step {i}: proof too long")
        note = s["checkpoint"].encode("utf-8")
        try:
            parse_signed_checkpoint(note)
        except FormatError as exc:
            raise ActionFormatError(f"consistency step {i}: {exc}") from None
        chain.append(
            Step(note, tuple(_hash(h, f"consistency step {i} hash {j}") for j, h in enumerate(s["proof"])))
        )
    bundle = AuditBundle(proof, tuple(chain))
    if encode(bundle) != data:
        raise ActionFormatError("proof bundle is not in canonical form (was it edited?)")
    return bundle


def verify_bundle(
    data: bytes, verifiers: Sequence[NoteVerifier], *, origin: str | None = None, trusted: bytes | None = None
) -> Verified:
    """Verify a bundle offline (see the module docstring for what raises what).

    ``origin`` defaults to the first verifier's name. With ``trusted`` (a signed checkpoint the
    auditor holds), the chain must start at a checkpoint of the same size and root (or the entry
    must be proven directly against it).
    """
    if not verifiers:
        raise ConfigError("verifying a proof bundle needs the log's verifier key")
    origin = origin or verifiers[0].name
    b = decode(data)
    assert b.proof.extra is not None
    entry = b.proof.extra
    try:
        cp = verify_tlog_proof(b.proof, merkle.leaf_hash(entry), origin, verifiers)
    except (FormatError, VerificationError) as exc:
        raise LogMisbehaved(f"inclusion: {exc}") from None
    anchors: list[SignedCheckpoint] = []
    for i, s in enumerate(b.chain):
        try:
            anchors.append(open_checkpoint(s.checkpoint, origin, verifiers))
        except (FormatError, VerificationError) as exc:
            raise LogMisbehaved(f"consistency step {i}: {exc}") from None
    targets = [*anchors[1:], cp] if anchors else []
    for i, (s, a, t) in enumerate(zip(b.chain, anchors, targets, strict=True)):
        if a.size >= t.size:
            raise LogMisbehaved(f"consistency step {i}: sizes do not increase ({a.size} to {t.size})")
        try:
            merkle.verify_consistency(a.size, t.size, a.root, t.root, s.proof)
        except ProofError as exc:
            raise LogMisbehaved(f"consistency step {i}: {exc}") from None
    anchor = anchors[0] if anchors else cp
    if trusted is not None:
        try:
            mine = parse_signed_checkpoint(trusted)
        except FormatError as exc:
            raise ConfigError(f"trusted checkpoint: {exc}") from None
        if (mine.origin, mine.size, mine.root) != (anchor.origin, anchor.size, anchor.root):
            raise LogMisbehaved(
                f"the bundle is anchored at size {anchor.size}, not at your trusted checkpoint "
                f"of size {mine.size}"
            )
    try:
        signed: _action.SignedAction | None = _action.verify_entry(entry)
        problem = ""
    except ActionFormatError as exc:
        signed, problem = None, f"not an action: {exc}"
    except SignatureInvalid as exc:
        signed, problem = None, f"bad signature: {exc}"
    return Verified(b.proof.index, entry, cp, anchor, signed, problem)


def build_bundle(
    index: AuditIndex, n: int, verifiers: Sequence[NoteVerifier], trusted: bytes | None = None
) -> AuditBundle:
    """A bundle for entry ``n`` from the local index alone (the log may be offline).

    Without ``trusted``: inclusion in the newest verified checkpoint. With ``trusted`` (the
    auditor's checkpoint, verified here with ``verifiers``): the index must hold it or a later
    one, and its root must match the index's tree at that size (otherwise ``LogMisbehaved``: the
    auditor's log and this one differ); the entry is proven against it directly when it covers
    ``n``, else against the newest checkpoint with a consistency step from it.
    """
    latest = index.latest_checkpoint()
    if latest is None:
        raise ConfigError("the audit index has no verified checkpoint yet: run 'gk audit sync'")
    latest = open_checkpoint(latest.raw, index.origin, verifiers)
    if not 0 <= n < latest.size:
        raise NotFoundError(f"entry {n} is not under the newest verified checkpoint (size {latest.size})")
    entry = index.entry(n)
    chain: tuple[Step, ...] = ()
    target = latest
    if trusted is not None:
        try:
            anchor = open_checkpoint(trusted, index.origin, verifiers)
        except (FormatError, VerificationError) as exc:
            raise ConfigError(f"trusted checkpoint: {exc}") from None
        if anchor.size > latest.size:
            raise ConfigError(
                f"your trusted checkpoint (size {anchor.size}) is newer than the index "
                f"(size {latest.size}): sync first"
            )
        if anchor.size and merkle.subtree_hash(index.hash_getter(anchor.size), 0, anchor.size) != anchor.root:
            raise LogMisbehaved(
                f"your trusted checkpoint of size {anchor.size} is not in this log's history: a fork"
            )
        if n < anchor.size:
            target = anchor
        elif anchor.size < latest.size:
            proof = merkle.consistency_proof(anchor.size, latest.size, index.hash_getter(latest.size))
            chain = (Step(anchor.raw, tuple(proof)),)
    inclusion = merkle.inclusion_proof(n, target.size, index.hash_getter(target.size))
    bundle = AuditBundle(TlogProof(n, tuple(inclusion), target.raw, entry), chain)
    verify_bundle(encode(bundle), verifiers, origin=index.origin, trusted=trusted)  # never hand out a bad one
    return bundle
