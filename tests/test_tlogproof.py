"""C2SP tlog-proof@v1: round trips, strict parsing, verification."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from personality.errors import FormatError, ProofError, SignatureError, VerificationError
from personality.tlog.checkpoint import Checkpoint, sign_checkpoint
from personality.tlog.merkle import inclusion_proof, leaf_hash, node_hash, root_from_leaf_hashes
from personality.tlog.note import Signer
from personality.tlog.proof import TlogProof, format_tlog_proof, parse_tlog_proof, verify_tlog_proof

SIGNER = Signer("gk.example/log", Ed25519PrivateKey.from_private_bytes(b"\x03" * 32))
LEAVES = [leaf_hash(b"entry %d" % i) for i in range(11)]
CP = sign_checkpoint(Checkpoint("gk.example/log", 11, root_from_leaf_hashes(LEAVES)), [SIGNER])


def _get(level: int, index: int) -> bytes:
    hs = LEAVES
    for _ in range(level):
        hs = [node_hash(hs[i], hs[i + 1]) for i in range(0, len(hs) - 1, 2)]
    return hs[index]


def _proof(index: int = 6, extra: bytes | None = b"entry 6") -> TlogProof:
    return TlogProof(index, tuple(inclusion_proof(index, 11, _get)), CP, extra)


def test_layout_and_verify() -> None:
    p = _proof()
    data = format_tlog_proof(p)
    lines = data.split(b"\n")
    assert lines[0] == b"c2sp.org/tlog-proof@v1"
    assert lines[1] == b"extra ZW50cnkgNg=="
    assert lines[2] == b"index 6"
    assert data.endswith(b"\n\n" + CP)
    assert parse_tlog_proof(data) == p
    sc = verify_tlog_proof(p, LEAVES[6], "gk.example/log", [SIGNER.verifier()])
    assert sc.size == 11
    with pytest.raises(ProofError):
        verify_tlog_proof(p, LEAVES[5], "gk.example/log", [SIGNER.verifier()])
    with pytest.raises(ProofError, match="not in the checkpoint"):
        verify_tlog_proof(TlogProof(11, p.proof, CP), LEAVES[6], "gk.example/log", [SIGNER.verifier()])
    with pytest.raises(VerificationError):
        verify_tlog_proof(p, LEAVES[6], "other", [SIGNER.verifier()])
    other = Signer("gk.example/log", Ed25519PrivateKey.from_private_bytes(b"\x04" * 32))
    with pytest.raises(SignatureError):
        verify_tlog_proof(p, LEAVES[6], "gk.example/log", [other.verifier()])


def test_without_extra_and_hashes() -> None:
    single = sign_checkpoint(Checkpoint("gk.example/log", 1, LEAVES[0]), [SIGNER])
    p = TlogProof(0, (), single)
    data = format_tlog_proof(p)
    assert data == b"c2sp.org/tlog-proof@v1\nindex 0\n\n" + single
    assert parse_tlog_proof(data) == p
    verify_tlog_proof(p, LEAVES[0], "gk.example/log", [SIGNER.verifier()])


GOOD = format_tlog_proof(_proof())
H = GOOD.split(b"\n")[3]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (GOOD.replace(b"@v1", b"@v2"), "must start with"),
        (GOOD.replace(b"index 6", b"index 06"), "leading zeros"),
        (GOOD.replace(b"index 6", b"index -6"), "leading zeros"),
        (GOOD.replace(b"index 6", b"index  6"), "leading zeros"),
        (GOOD.replace(b"index 6\n", b""), "needs an 'index"),
        (GOOD.replace(b"extra ZW50cnkgNg==", b"extra ZW50cnkgNg="), "base64"),
        (GOOD.replace(b"extra ZW50cnkgNg==", b"extra "), "empty"),
        (GOOD.replace(b"extra ZW50cnkgNg==\nindex 6", b"index 6\nextra ZW50cnkgNg=="), "base64"),
        (GOOD.replace(H, H[:-4] + b"AA=="), "not 32"),
        (GOOD.replace(H, H[:-1]), "base64"),
        (GOOD.replace(H + b"\n", b""), None),  # parses; the proof no longer verifies
        (GOOD.replace(b"\n", b"\r\n"), "carriage return"),
        (GOOD.replace(b"\n\n", b"\n", 1), "no blank line|base64"),
        (GOOD + b"x", "newline"),
        (GOOD.replace(b"gk.example/log\n11", b"gk.example/log\n011"), "leading zeros"),
        (b"\xff" + GOOD, "UTF-8"),
        (GOOD.replace(b"index 6\n", b"index 6\n" + (H + b"\n") * 64), "more than 63"),
        (b"c2sp.org/tlog-proof@v1\nindex 0\n\n" + b"x" * 600_000, "limit"),
    ],
)
def test_malformed(data: bytes, message: str | None) -> None:
    if message is None:
        p = parse_tlog_proof(data)
        with pytest.raises(ProofError):
            verify_tlog_proof(p, LEAVES[6], "gk.example/log", [SIGNER.verifier()])
        return
    with pytest.raises(FormatError, match=message):
        parse_tlog_proof(data)


def test_format_rejects_bad_values() -> None:
    for p in [TlogProof(-1, (), CP), TlogProof(0, (b"x",), CP), TlogProof(0, (), b"not a note"),
              TlogProof(0, (), CP, b"")]:
        with pytest.raises(FormatError):
            format_tlog_proof(p)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, (1 << 63) - 1), st.lists(st.binary(min_size=32, max_size=32), max_size=63),
       st.one_of(st.none(), st.binary(min_size=1, max_size=200)))
def test_round_trip(index: int, proof: list[bytes], extra: bytes | None) -> None:
    p = TlogProof(index, tuple(proof), CP, extra)
    data = format_tlog_proof(p)
    assert parse_tlog_proof(data) == p
    assert format_tlog_proof(parse_tlog_proof(data)) == data


def test_documented_example_verifies() -> None:
    from pathlib import Path

    from personality.tlog.cosig import parse_cosignature_vkey
    from personality.tlog.note import parse_note, parse_vkey, verified_signatures

    doc = (Path(__file__).parents[1] / "docs" / "formats-tlog.md").read_text()
    start = doc.index("```\nc2sp.org/tlog-proof@v1\n") + 4
    text = doc[start : doc.index("```", start)]
    p = parse_tlog_proof(text.encode())
    assert p.extra == b"entry 2"
    log = parse_vkey("log.example/gk+900053f9+AYqI4910CfGV/VLbLTy6XXLKZwm/HZQSG/N0iAG0D29c")
    witness = parse_cosignature_vkey(
        "witness.example/w1+df1c0a35+BIE5dw6ofRdfVqNUZsNMfszLjYqRtO43ol32D1uPybOU"
    )
    sc = verify_tlog_proof(p, leaf_hash(p.extra), "log.example/gk", [log])
    assert sc.size == 5
    assert len(verified_signatures(parse_note(p.checkpoint), [log, witness])) == 2
    assert format_tlog_proof(p) == text.encode()
