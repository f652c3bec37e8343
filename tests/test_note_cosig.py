"""C2SP tlog-cosignature cosignature/v1: sign, verify, keys, and use alongside the log signature."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from personality.errors import FormatError, SignatureError
from personality.tlog.checkpoint import Checkpoint, format_checkpoint_body, open_checkpoint, sign_checkpoint
from personality.tlog.cosig import (
    Cosigner,
    cosignature_timestamp,
    cosigned_message,
    cosigner_from_skey,
    generate_cosigner,
    parse_cosignature_vkey,
)
from personality.tlog.note import Note, Signer, format_note, parse_note, parse_vkey, verified_signatures

LOG = Signer("gk.example/log", Ed25519PrivateKey.from_private_bytes(b"\x01" * 32))
WITNESS = Cosigner("witness.example/w1", Ed25519PrivateKey.from_private_bytes(b"\x02" * 32))


def _cosigned(ts: int = 1679315147) -> tuple[bytes, Checkpoint]:
    cp = Checkpoint("gk.example/log", 20852163, b"\x0a" * 32)
    note = parse_note(sign_checkpoint(cp, [LOG]))
    body = format_checkpoint_body(cp)
    cosig = WITNESS.cosign(body, ts)
    return format_note(Note(note.body, (*note.signatures, cosig))), cp


def test_message_layout() -> None:
    body = b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    assert cosigned_message(body, 1679315147) == b"cosignature/v1\ntime 1679315147\n" + body
    with pytest.raises(FormatError):
        cosigned_message(body, -1)
    with pytest.raises(FormatError):
        cosigned_message(body, 1 << 63)


def test_cosign_and_verify() -> None:
    data, cp = _cosigned()
    wv = WITNESS.verifier()
    note = parse_note(data)
    got = verified_signatures(note, [LOG.verifier(), wv])
    assert [s.name for s in got] == ["gk.example/log", "witness.example/w1"]
    assert cosignature_timestamp(got[1].signature) == 1679315147
    # The log's checkpoint opens with the log key alone (the cosignature is an unknown signature).
    assert open_checkpoint(data, "gk.example/log", [LOG.verifier()]).checkpoint == cp
    # An Ed25519 note verifier with the witness key does not accept a cosignature (different key ID).
    assert wv.key_id != LOG.verifier().key_id
    tampered = parse_note(data)
    sig = tampered.signatures[1]
    forged = type(sig)(sig.name, sig.key_id, (1679315148).to_bytes(8, "big") + sig.signature[8:])
    with pytest.raises(SignatureError):
        verified_signatures(Note(tampered.body, (tampered.signatures[0], forged)), [wv])


def test_keys_round_trip() -> None:
    c = generate_cosigner("witness.example/w2")
    assert parse_cosignature_vkey(c.verifier().vkey()) == c.verifier()
    assert cosigner_from_skey(c.skey()).verifier() == c.verifier()
    with pytest.raises(FormatError, match="0x04"):
        parse_cosignature_vkey(LOG.verifier().vkey())
    with pytest.raises(FormatError, match="not Ed25519"):
        parse_vkey(c.verifier().vkey())
    with pytest.raises(FormatError):
        cosignature_timestamp(b"\x00" * 71)
    with pytest.raises(FormatError, match="exceeds"):
        cosignature_timestamp(b"\xff" * 72)
    assert not c.verifier().verify(b"x\n", b"\x00" * 72)


def test_spec_example_framing() -> None:
    # c2sp.org/tlog-cosignature example (no public key is published): framing and timestamp.
    data = (
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
        "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzG"
        "ku9nTo+zyWE+xeMcTOAYQ8=\n"
        "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1"
        "nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
    ).encode()
    note = parse_note(data)
    assert format_note(note) == data
    w = note.signatures[1]
    assert w.key_id == bytes.fromhex("8d66cf3f")
    assert cosignature_timestamp(w.signature) == 1679315147
