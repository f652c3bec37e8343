"""GK_BUNDLE: a base64 line of a c2sp.org/tlog-proof@v1 whose extra is the action entry."""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper import action as A
from gatekeeper import sshsig
from gatekeeper.bundle import (
    MAX_BUNDLE,
    MAX_BUNDLED_ENTRY,
    Bundle,
    bundle_size,
    encode_bundle,
    parse_bundle,
    parse_bundle_entry,
)
from gatekeeper.errors import ActionFormatError
from personality.tlog.checkpoint import Checkpoint, sign_checkpoint
from personality.tlog.merkle import leaf_hash, verify_inclusion
from personality.tlog.note import generate_signer
from personality.tlog.proof import TlogProof, format_tlog_proof, parse_tlog_proof

LOG = generate_signer("log.example.com")
WITNESSES = [generate_signer(f"witness-{i:02d}.example.org") for i in range(20)]


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def examples(default: int) -> int:
    """Hypothesis examples per property: ``default`` in the unit suite, the ``GK_FUZZ_EXAMPLES``
    environment variable when set (``make fuzz``: many more)."""
    return int(os.environ.get("GK_FUZZ_EXAMPLES", default))


def fake_entry(command: bytes = b"systemctl restart nginx", signer_raw: bytes = bytes(32)) -> bytes:
    """A structurally valid entry (its signature is not a valid one: bundles don't verify)."""
    pub = _string(b"ssh-ed25519") + _string(signer_raw)
    a = A.Action(
        kind="exec",
        targets=(A.Target("web-01"),),
        account="deploy",
        command=command,
        nonce=bytes(16),
        not_before=1795938000,
        not_after=1795938300,
        signer=sshsig.PublicKey("ssh-ed25519", pub).openssh(),
        reason="INC-1234",
    )
    blob = (
        b"SSHSIG"
        + struct.pack(">I", 1)
        + _string(pub)
        + _string(A.NAMESPACE.encode())
        + _string(b"")
        + _string(b"sha512")
        + _string(_string(b"ssh-ed25519") + _string(bytes(64)))
    )
    return A.encode_entry(A.encode_action(a), sshsig.armor(blob))


def checkpoint(size: int, root: bytes = bytes(32), cosigners: int = 0) -> bytes:
    return sign_checkpoint(Checkpoint("log.example.com", size, root), [LOG, *WITNESSES[:cosigners]])


def make(entry: bytes | None = None, index: int = 5, proof_len: int = 3, size: int = 8) -> Bundle:
    proof = tuple(hashlib.sha256(bytes([i])).digest() for i in range(proof_len))
    return Bundle(entry or fake_entry(), index, proof, checkpoint(size))


def test_round_trip_and_layout() -> None:
    b = make()
    text = encode_bundle(b)
    assert "\n" not in text and " " not in text
    assert parse_bundle(text) == b
    assert len(text) == bundle_size(b)
    inner = base64.b64decode(text, validate=True)
    assert inner.startswith(b"c2sp.org/tlog-proof@v1\nextra ")
    # an ordinary tlog-proof: any tlog-proof reader sees the entry, index, proof and checkpoint
    assert parse_tlog_proof(inner) == TlogProof(b.index, b.proof, b.checkpoint, b.entry)


def test_a_real_inclusion_proof_survives_the_trip() -> None:
    entries = [fake_entry(f"echo {i}".encode()) for i in range(3)]
    leaves = [leaf_hash(e) for e in entries]
    left = hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).digest()
    root = hashlib.sha256(b"\x01" + left + leaves[2]).digest()
    b = Bundle(entries[2], 2, (left,), checkpoint(3, root))
    got = parse_bundle(encode_bundle(b))
    verify_inclusion(got.index, 3, leaf_hash(got.entry), got.proof, root)


@settings(max_examples=examples(100), deadline=None)
@given(
    command=st.binary(min_size=1, max_size=300),
    index=st.integers(0, 2**40),
    proof_len=st.integers(0, 40),
    cosigners=st.integers(0, 3),
)
def test_round_trip_property(command: bytes, index: int, proof_len: int, cosigners: int) -> None:
    proof = tuple(hashlib.sha256(i.to_bytes(2, "big")).digest() for i in range(proof_len))
    b = Bundle(fake_entry(command), index, proof, checkpoint(index + 1, cosigners=cosigners))
    text = encode_bundle(b)
    assert parse_bundle(text) == b
    assert encode_bundle(parse_bundle(text)) == text


def test_parse_bundle_entry_returns_the_parsed_entry() -> None:
    b = make()
    bundle, signed = parse_bundle_entry(encode_bundle(b))
    assert bundle == b
    assert signed == A.parse_entry(b.entry)


@functools.cache
def _good_lines(proof_len: int, cosigners: int) -> list[bytes]:
    proof = tuple(hashlib.sha256(i.to_bytes(2, "big")).digest() for i in range(proof_len))
    b = Bundle(fake_entry(), 2**20, proof, checkpoint(2**20 + 1, cosigners=cosigners))
    return base64.b64decode(encode_bundle(b)).split(b"\n")


# bytes that keep base64 and decimal text well-formed, or break lines and padding subtly
_LIKELY = b"ABQgw09+/= \n"


@settings(max_examples=examples(300), deadline=None)
@given(
    data=st.data(),
    proof_len=st.integers(0, 20),
    cosigners=st.integers(0, 2),
    op=st.sampled_from(["replace", "insert", "delete"]),
)
def test_a_mutated_bundle_parses_only_in_its_one_encoding(
    data: st.DataObject, proof_len: int, cosigners: int, op: str
) -> None:
    """Canonical form without a re-encoding check: whatever one-byte change of the tlog-proof still
    parses (a hash, the entry's command or signature, the checkpoint's signature) re-encodes to
    exactly the text that was parsed, and its entry is the entry parsed."""
    lines = list(_good_lines(proof_len, cosigners))
    n = data.draw(st.sampled_from(range(len(lines))))  # a line, so that every part gets its share
    line = bytearray(lines[n])
    byte = st.one_of(st.sampled_from(_LIKELY), st.integers(0, 255))
    if op == "insert" or not line:
        line.insert(data.draw(st.integers(0, len(line))), data.draw(byte))
    elif op == "replace":
        pos = data.draw(st.integers(0, len(line) - 1))
        line[pos] = data.draw(byte.filter(lambda v: v != line[pos]))
    else:
        del line[data.draw(st.integers(0, len(line) - 1))]
    lines[n] = bytes(line)
    text = base64.b64encode(b"\n".join(lines)).decode()
    try:
        parsed, signed = parse_bundle_entry(text)
    except ActionFormatError:
        return
    assert encode_bundle(parsed) == text
    assert signed == A.parse_entry(parsed.entry)


def _spellings() -> dict[str, bytes]:
    """Other spellings of a valid bundle's tlog-proof, none of them canonical."""
    good = base64.b64decode(encode_bundle(make(index=5, proof_len=2)))
    head, _, cp = good.partition(b"\n\n")
    lines = head.split(b"\n")
    extra, index, h1, h2 = lines[1], lines[2], lines[3], lines[4]
    assert index == b"index 5"

    def join(*ls: bytes, tail: bytes = b"\n\n" + cp) -> bytes:
        return b"\n".join(ls) + tail

    hdr = lines[0]
    spellings = {
        "leading zero in the index": join(hdr, extra, b"index 05", h1, h2),
        "plus sign in the index": join(hdr, extra, b"index +5", h1, h2),
        "two spaces after index": join(hdr, extra, b"index  5", h1, h2),
        "trailing space": join(hdr, extra, index + b" ", h1, h2),
        "extra after index": join(hdr, index, extra, h1, h2),
        "extra twice": join(hdr, extra, extra, index, h1, h2),
        "empty hash line": join(hdr, extra, index, h1, b"", h2),
        "unpadded hash": join(hdr, extra, index, h1, h2.rstrip(b"=")),
        "hash with stray bits": join(hdr, extra, index, h1, h2[:42] + bytes([h2[42] ^ 1]) + b"="),
        "CRLF": join(hdr, extra, index, h1, h2).replace(b"\n", b"\r\n"),
        "blank line doubled": join(hdr, extra, index, h1, h2, tail=b"\n\n\n" + cp),
        "header with a trailing space": join(hdr + b" ", extra, index, h1, h2),
        "upper-case header": join(hdr.upper(), extra, index, h1, h2),
        "extra without its space": join(hdr, b"extra" + extra[6:], index, h1, h2),
        "unpadded extra": join(hdr, extra.rstrip(b"="), index, h1, h2),
        "checkpoint without its final newline": join(hdr, extra, index, h1, h2)[:-1],
    }
    assert good == join(hdr, extra, index, h1, h2) and good not in spellings.values()
    return spellings


@pytest.mark.parametrize("name", sorted(_spellings()))
def test_other_spellings_are_refused(name: str) -> None:
    raw = _spellings()[name]
    with pytest.raises(ActionFormatError, match="bundle"):
        parse_bundle(base64.b64encode(raw).decode())


def _tlog(extra: bytes | None, index: int = 5, proof: tuple[bytes, ...] = ()) -> str:
    raw = format_tlog_proof(TlogProof(index, proof, checkpoint(8), extra))
    return base64.b64encode(raw).decode()


def test_malformed_bundles() -> None:
    good = encode_bundle(make())
    inner = base64.b64decode(good)
    cases = {
        "empty": ("", "empty"),
        "not base64": ("!!!" + good, "base64"),
        "newline inside": (good[:40] + "\n" + good[40:], "base64"),
        "trailing newline": (good + "\n", "base64"),
        "url-safe alphabet": (
            good.replace("+", "-").replace("/", "_") if ("+" in good or "/" in good) else "-",
            "base64",
        ),
        "unpadded": (good.rstrip("="), "base64") if good.endswith("=") else ("QQ", "base64"),
        "stray bits": (base64.b64encode(b"A").decode().replace("Q==", "R=="), "canonical"),
        "trailing bytes": (base64.b64encode(inner + b"x").decode(), "bundle"),
        "not a tlog-proof": (base64.b64encode(b"hello\n\nworld").decode(), "tlog-proof"),
        "missing extra": (_tlog(None), "no 'extra'"),
        "extra not an entry": (_tlog(b"not an action"), "not a valid action"),
        "extra is a bare action": (_tlog(fake_entry().split(b"\n\n")[0] + b"\n"), "not a valid action"),
        "too long": ("A" * (MAX_BUNDLE + 4), "limit"),
        "not text": (b"abc", "text"),  # bytes instead of str
    }
    for name, (text, message) in cases.items():
        with pytest.raises(ActionFormatError, match=message):
            parse_bundle(text)  # type: ignore[arg-type]
        assert name


def test_encode_refuses_what_cannot_be_parsed() -> None:
    with pytest.raises(ActionFormatError):
        encode_bundle(Bundle(b"not an entry", 0, (), checkpoint(1)))
    with pytest.raises(ActionFormatError, match="bundle"):
        encode_bundle(Bundle(fake_entry(), 0, (b"short",), checkpoint(1)))
    with pytest.raises(ActionFormatError, match="bundle"):
        encode_bundle(Bundle(fake_entry(), 0, (), b"not a checkpoint"))


def test_size_budget() -> None:
    """Entries up to MAX_BUNDLED_ENTRY fit with a 40-hash proof and a ~2 KiB cosigned checkpoint;
    bigger bundles are refused on encode."""
    cp = checkpoint(2**40, cosigners=15)
    assert 1800 < len(cp) <= 2048
    proof = tuple(hashlib.sha256(bytes([i])).digest() for i in range(40))
    base = len(fake_entry(b"x"))
    entry = fake_entry(b"x" * (MAX_BUNDLED_ENTRY - base + 1))
    assert len(entry) == MAX_BUNDLED_ENTRY
    b = Bundle(entry, 2**40 - 1, proof, cp)
    assert len(encode_bundle(b)) <= MAX_BUNDLE
    huge = Bundle(fake_entry(b"x" * A.MAX_COMMAND), 0, proof, cp)
    assert bundle_size(huge) > MAX_BUNDLE
    with pytest.raises(ActionFormatError, match="too large to hand to a host"):
        encode_bundle(huge)


@pytest.mark.parametrize(("log_size", "proof_len"), [(1_000_000, 20), (10_000_000, 24)])
def test_typical_bundle_size(log_size: int, proof_len: int) -> None:
    """The numbers quoted in docs/formats-action.md: a typical Ed25519 action, one log signature
    and two witness cosignatures."""
    proof = tuple(hashlib.sha256(bytes([i])).digest() for i in range(proof_len))
    b = Bundle(fake_entry(), log_size - 1, proof, checkpoint(log_size, cosigners=2))
    size = len(encode_bundle(b))
    assert size < MAX_BUNDLE // 4  # a quarter of the budget: room to spare
