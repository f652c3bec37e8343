"""C2SP signed notes: keys, round trips, strict parsing, verification rules."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from personality.errors import FormatError, SignatureError
from personality.tlog.note import (
    MAX_NOTE_SIZE,
    MAX_SIGNATURES,
    Note,
    NoteSignature,
    Signer,
    format_note,
    generate_signer,
    open_note,
    parse_note,
    parse_vkey,
    sign_note,
    signer_from_skey,
    verified_signatures,
)

# golang.org/x/mod/sumdb/note documentation example: the verifier key of PeterNeumann.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_SIGNED = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
    "\n"
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKv"
    "qfqdngotpRZb6KE6RyyBwJnAM=\n"
).encode()

SIGNER = Signer("example.com/log", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
OTHER = Signer("example.com/other", Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))


def test_go_vectors() -> None:
    v = parse_vkey(GO_VKEY)
    assert v.name == "PeterNeumann" and v.key_id.hex() == "c74f20a3"
    assert v.vkey() == GO_VKEY
    s = signer_from_skey(GO_SKEY)
    assert s.skey() == GO_SKEY
    assert s.verifier() == v
    note = open_note(GO_SIGNED, [v])
    assert note.body.startswith(b"If you think")
    assert format_note(note) == GO_SIGNED
    # Ed25519 is deterministic: signing again gives the upstream bytes.
    assert sign_note(note.body, [s]) == GO_SIGNED


def test_generate_and_round_trip_keys() -> None:
    s = generate_signer("gk.example/log")
    assert signer_from_skey(s.skey()).verifier() == s.verifier()
    assert parse_vkey(s.verifier().vkey()) == s.verifier()
    assert len(s.key_id) == 4


@pytest.mark.parametrize(
    ("vkey", "message"),
    [
        ("PeterNeumann+c74f20a3", "must be"),
        ("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "lowercase hex"),
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
        ("Peter+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
        ("Peter+Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "lowercase hex"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "space"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", "base64"),
        ("PeterNeumann+c74f20a3+ApC2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "base64"),
        ("PeterNeumann+c74f20a3+Ahpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "not Ed25519"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy", "32 bytes"),
        ("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "empty"),
    ],
)
def test_bad_vkeys(vkey: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_vkey(vkey)


def test_bad_skeys() -> None:
    with pytest.raises(FormatError, match="PRIVATE"):
        signer_from_skey(GO_SKEY.removeprefix("PRIVATE+"))
    with pytest.raises(FormatError, match="does not match"):
        signer_from_skey(GO_SKEY.replace("c74f20a3", "c74f20a4"))


def _sign(body: bytes, *signers: Signer) -> bytes:
    return sign_note(body, list(signers) or [SIGNER])


def test_verification_rules() -> None:
    body = b"hello\nworld\n"
    data = _sign(body, OTHER, SIGNER)
    note = open_note(data, [SIGNER.verifier()])  # unknown OTHER ignored
    assert len(note.signatures) == 2
    assert verified_signatures(note, [SIGNER.verifier(), OTHER.verifier()]) == note.signatures
    with pytest.raises(SignatureError, match="not signed by any trusted key"):
        open_note(_sign(body, OTHER), [SIGNER.verifier()])
    with pytest.raises(SignatureError, match="not signed by any trusted key"):
        open_note(data, [])
    # Same name, other key: different key ID, so ignored (not a failure) ...
    impostor = Signer(SIGNER.name, Ed25519PrivateKey.from_private_bytes(b"\x07" * 32))
    with pytest.raises(SignatureError, match="not signed"):
        open_note(_sign(body, impostor), [SIGNER.verifier()])
    # ... but a known name+ID whose signature fails rejects the whole note.
    bad = Note(body, (NoteSignature(SIGNER.name, SIGNER.key_id, b"\x00" * 64), OTHER.sign(body)))
    with pytest.raises(SignatureError, match="does not verify"):
        open_note(format_note(bad), [SIGNER.verifier(), OTHER.verifier()])
    tampered = data.replace(b"hello", b"jello")
    with pytest.raises(SignatureError):
        open_note(tampered, [SIGNER.verifier()])
    with pytest.raises(SignatureError, match="share the name"):
        open_note(data, [SIGNER.verifier(), SIGNER.verifier()])


def test_body_may_contain_blank_lines() -> None:
    body = b"a\n\nb\n"
    data = _sign(body)
    assert open_note(data, [SIGNER.verifier()]).body == body


GOOD = _sign(b"origin\n1\n")
SIG_LINE = GOOD.split(b"\n\n", 1)[1]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"origin\n1\n" + b"\n" + SIG_LINE.rstrip(b"\n"), "end with a newline"),
        (GOOD + b"x", "end with a newline"),
        (GOOD + b"\n", "no signature lines"),
        (GOOD + b"junk\n", "em dash"),
        (GOOD.replace(b"\n", b"\r\n"), "carriage return"),
        (GOOD.replace(b"origin", b"orig\xffin"), "UTF-8"),
        (GOOD.replace(b"origin", b"orig\tin"), "control character"),
        (b"origin\n1\n" + SIG_LINE, "no blank line"),
        (b"origin\n1\n\n", "no signature lines"),
        (GOOD + SIG_LINE, "duplicate signature"),
        (GOOD.replace("\u2014 ".encode(), b"- "), "em dash"),
        (GOOD.replace("\u2014 ".encode(), "\u2014".encode()), "em dash"),
        (GOOD.replace(b"example.com/log ", b"example.com/log  "), "signature line must be"),
        (GOOD.replace(b"example.com/log", b"example.com+log"), "space, '\\+'"),
        (GOOD[:-2] + b"\n", "base64"),
        (GOOD[:-3] + b"!=\n", "base64"),
        (b"origin\n1\n\n\xe2\x80\x94 k " + base64.b64encode(b"1234") + b"\n", "shorter than"),
        (b"x" * (MAX_NOTE_SIZE + 1), "limit"),
        (b"origin\n1\n\n"
         + b"".join(SIG_LINE.replace(b"example.com/log", b"k%d" % i) for i in range(MAX_SIGNATURES + 1)),
         "limit"),
    ],
)
def test_malformed_notes(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_note(data)


def test_non_canonical_base64_is_rejected() -> None:
    b64 = SIG_LINE.split(b" ")[-1].strip()
    raw = base64.b64decode(b64)
    # 68 bytes → 92 characters with "=" padding; the last character before it has 2 unused bits.
    assert len(raw) == 68 and b64.endswith(b"=") and not b64.endswith(b"==")
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(b64[-2:-1])
    assert last & 3 == 0
    noncanon = b64[:-2] + alphabet[last | 1 : (last | 1) + 1] + b"="
    assert base64.b64decode(noncanon) == raw
    with pytest.raises(FormatError, match="canonical"):
        parse_note(GOOD.replace(b64, noncanon))


def test_format_rejects_bad_notes() -> None:
    sig = SIGNER.sign(b"x\n")
    for note in [
        Note(b"x", (sig,)),
        Note(b"x\n", ()),
        Note(b"x\r\n", (sig,)),
        Note(b"x\n", (NoteSignature("a b", b"1234", b"s"),)),
        Note(b"x\n", (NoteSignature("ab", b"123", b"s"),)),
        Note(b"x\n", (sig, sig)),
    ]:
        with pytest.raises(FormatError):
            format_note(note)


names = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x2FFF, exclude_characters="+"),
    min_size=1, max_size=20,
).filter(lambda s: not any(c.isspace() for c in s))
lines = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x10FFFF, exclude_categories=["Cs"]),
                max_size=30)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(lines, min_size=1, max_size=5),
    st.lists(st.tuples(names, st.binary(min_size=4, max_size=4), st.binary(min_size=1, max_size=80)),
             min_size=1, max_size=5, unique_by=lambda t: (t[0], t[1])),
)
def test_round_trip(body_lines: list[str], sigs: list[tuple[str, bytes, bytes]]) -> None:
    note = Note(("\n".join(body_lines) + "\n").encode(), tuple(NoteSignature(*s) for s in sigs))
    data = format_note(note)
    assert parse_note(data) == note
    assert format_note(parse_note(data)) == data
