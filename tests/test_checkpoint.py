"""C2SP tlog-checkpoint: round trips, strict parsing, Tessera checkpoints, signature and origin checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from personality.errors import FormatError, SignatureError, VerificationError
from personality.tlog.checkpoint import (
    Checkpoint,
    format_checkpoint_body,
    open_checkpoint,
    parse_checkpoint_body,
    parse_signed_checkpoint,
    sign_checkpoint,
)
from personality.tlog.merkle import EMPTY_ROOT
from personality.tlog.note import Signer, parse_vkey

TESSERA = Path(__file__).parents[1].parent / "shared" / "testvectors" / "tessera-log"
TESSERA_ORIGIN = "example.com/log/testdata"
TESSERA_VKEY = "example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx"
SIGNER = Signer("gk.example/log", Ed25519PrivateKey.from_private_bytes(b"\x01" * 32))
ROOT_B64 = "rKbDipCvhuX1GZ7g5BBe8sA6BbJ7ja/1nk427v383cs="


def test_tessera_checkpoints() -> None:
    v = parse_vkey(TESSERA_VKEY)
    files = sorted(TESSERA.glob("checkpoint*"))
    assert len(files) == 17
    for f in files:
        sc = open_checkpoint(f.read_bytes(), TESSERA_ORIGIN, [v])
        assert sc.raw == f.read_bytes()
        if f.name != "checkpoint":
            assert sc.size == int(f.suffix[1:])
        assert format_checkpoint_body(sc.checkpoint) == sc.note.body
    empty = open_checkpoint((TESSERA / "checkpoint.0").read_bytes(), TESSERA_ORIGIN, [v])
    assert empty.size == 0 and empty.root == EMPTY_ROOT


def test_open_checks_origin_and_signature() -> None:
    cp = Checkpoint("gk.example/log", 3, b"\x11" * 32, ("ext one",))
    data = sign_checkpoint(cp, [SIGNER])
    assert open_checkpoint(data, "gk.example/log", [SIGNER.verifier()]).checkpoint == cp
    with pytest.raises(VerificationError, match="expected"):
        open_checkpoint(data, "gk.example/other", [SIGNER.verifier()])
    with pytest.raises(SignatureError):
        open_checkpoint(data, "gk.example/log", [parse_vkey(TESSERA_VKEY)])
    with pytest.raises(SignatureError):
        open_checkpoint(data.replace(b"\n3\n", b"\n4\n"), "gk.example/log", [SIGNER.verifier()])
    assert parse_signed_checkpoint(data).checkpoint == cp


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f"o\n01\n{ROOT_B64}\n", "leading zeros"),
        (f"o\n-1\n{ROOT_B64}\n", "leading zeros"),
        (f"o\n+1\n{ROOT_B64}\n", "leading zeros"),
        (f"o\n1_0\n{ROOT_B64}\n", "leading zeros"),
        (f"o\n\u0661\n{ROOT_B64}\n", "leading zeros"),
        (f"o\n 1\n{ROOT_B64}\n", "leading zeros"),
        (f"o\n9223372036854775808\n{ROOT_B64}\n", "larger than"),
        (f"o\n99999999999999999999\n{ROOT_B64}\n", "leading zeros"),
        ("o\n1\nrKbDipCvhuX1GZ7g5BBe8sA6BbJ7ja/1nk427v383c=\n", "base64"),
        ("o\n1\nrKbDipCvhuX1GZ7g5BBe8sA6BbJ7ja/1nk427v383cs\n", "base64"),
        ("o\n1\nrKbDipCvhuX1GZ7g5BBe8sA6BbJ7ja/1nk427v383ct=\n", "canonical"),
        ("o\n1\nrKbDipCvhuX1GZ7g5BBe8sA6BbJ7ja_1nk427v383cs=\n", "base64"),
        ("o\n1\nAAAA\n", "not 32"),
        (f"o\n1\n{ROOT_B64}", "newline"),
        (f"o\n1\n{ROOT_B64}\nx", "newline"),
        (f"o\n1\n{ROOT_B64}\n\n", "extension line 1 is empty"),
        (f"o\n1\n{ROOT_B64}\r\n", "carriage return"),
        (f"\n1\n{ROOT_B64}\n", "origin line is empty"),
        ("o\n1\n", "needs an origin"),
        (f"o\n1\n{ROOT_B64}\n" + "e\n" * 17, "extension lines"),
    ],
)
def test_malformed_bodies(body: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_checkpoint_body(body.encode())


def test_non_utf8_body() -> None:
    with pytest.raises(FormatError, match="UTF-8"):
        parse_checkpoint_body(b"\xc3\x28\n1\n" + ROOT_B64.encode() + b"\n")


def test_format_rejects_unrepresentable() -> None:
    for cp in [
        Checkpoint("o\nx", 1, b"\x00" * 32),
        Checkpoint("", 1, b"\x00" * 32),
        Checkpoint("o", -1, b"\x00" * 32),
        Checkpoint("o", 1, b"\x00" * 31),
        Checkpoint("o", 1, b"\x00" * 32, ("",)),
        Checkpoint("o", 1 << 63, b"\x00" * 32),
    ]:
        with pytest.raises(FormatError):
            format_checkpoint_body(cp)


text_line = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x10FFFF, exclude_categories=["Cs"]),
    min_size=1, max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(text_line, st.integers(min_value=0, max_value=(1 << 63) - 1), st.binary(min_size=32, max_size=32),
       st.lists(text_line, max_size=4))
def test_round_trip(origin: str, size: int, root: bytes, ext: list[str]) -> None:
    cp = Checkpoint(origin, size, root, tuple(ext))
    body = format_checkpoint_body(cp)
    assert parse_checkpoint_body(body) == cp
    assert format_checkpoint_body(parse_checkpoint_body(body)) == body
