"""Pure transparency-log formats shared by the log and its verifiers (no I/O).

- :mod:`.merkle` — RFC 6962 / 9162 hashing, inclusion and consistency proofs, compact ranges
- :mod:`.note` — C2SP signed notes (Ed25519), vkeys and skeys
- :mod:`.checkpoint` — C2SP tlog-checkpoint
- :mod:`.cosig` — C2SP tlog-cosignature ``cosignature/v1``
- :mod:`.tiles` — C2SP tlog-tiles paths, hash tiles, entry bundles
- :mod:`.proof` — C2SP tlog-proof ``c2sp.org/tlog-proof@v1``

The most used names are re-exported here; see ``docs/formats-tlog.md`` for the formats.
"""

from personality.tlog.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    format_checkpoint_body,
    open_checkpoint,
    parse_checkpoint_body,
    parse_signed_checkpoint,
    sign_checkpoint,
)
from personality.tlog.cosig import CosignatureVerifier, Cosigner, parse_cosignature_vkey
from personality.tlog.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    HashGetter,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_inclusion,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from personality.tlog.note import (
    Note,
    NoteSignature,
    NoteVerifier,
    Signer,
    Verifier,
    format_note,
    generate_signer,
    open_note,
    parse_note,
    parse_vkey,
    sign_note,
    signer_from_skey,
    verified_signatures,
)
from personality.tlog.proof import TlogProof, format_tlog_proof, parse_tlog_proof, verify_tlog_proof
from personality.tlog.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    TilePath,
    format_tile_path,
    pack_entry_bundle,
    parse_entry_bundle,
    parse_hash_tile,
    parse_tile_path,
    tile_hash_getter,
    tiles_for_size,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Checkpoint",
    "CompactRange",
    "CosignatureVerifier",
    "Cosigner",
    "HashGetter",
    "Note",
    "NoteSignature",
    "NoteVerifier",
    "SignedCheckpoint",
    "Signer",
    "TilePath",
    "TlogProof",
    "Verifier",
    "consistency_proof",
    "format_checkpoint_body",
    "format_note",
    "format_tile_path",
    "format_tlog_proof",
    "generate_signer",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "open_checkpoint",
    "open_note",
    "pack_entry_bundle",
    "parse_checkpoint_body",
    "parse_cosignature_vkey",
    "parse_entry_bundle",
    "parse_hash_tile",
    "parse_note",
    "parse_signed_checkpoint",
    "parse_tile_path",
    "parse_tlog_proof",
    "parse_vkey",
    "root_from_inclusion",
    "root_from_leaf_hashes",
    "sign_checkpoint",
    "sign_note",
    "signer_from_skey",
    "tile_hash_getter",
    "tiles_for_size",
    "verified_signatures",
    "verify_consistency",
    "verify_inclusion",
    "verify_tlog_proof",
]
