"""Hostile proofs and a hostile static log.

- ``merkle.verify_inclusion`` / ``verify_consistency`` / ``root_from_inclusion`` with arbitrary
  integers (negative, huge) and hash lists of arbitrary lengths raise ``ProofError`` and nothing
  else;
- a valid proof with any one bit flipped (in a proof hash, the leaf hash or a root), a hash dropped,
  added or duplicated, never verifies;
- a static log (``LogClient`` over ``FetchTransport``) whose tiles, entry bundles and checkpoint are
  random or mutated bytes: proofs computed from tiles, entries and ``LogVerifier.update`` raise
  ``PersonalityError`` subclasses and nothing else, and a verifier never accepts a checkpoint its
  key did not sign.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz.mutate import mutated  # noqa: E402
from personality.client import FetchTransport, LogClient, LogVerifier  # noqa: E402
from personality.errors import NotFoundError, PersonalityError, ProofError  # noqa: E402
from personality.tlog import merkle  # noqa: E402
from personality.tlog.checkpoint import Checkpoint, sign_checkpoint  # noqa: E402
from personality.tlog.note import generate_signer  # noqa: E402
from personality.tlog.tiles import (  # noqa: E402  # noqa: E402
    build_hash_tile,
    entry_bundles_for_size,
    format_tile_path,
    pack_entry_bundle,
    tiles_for_size,
)

EXAMPLES = int(os.environ.get("GK_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

INTS = st.one_of(st.integers(-5, 70), st.integers(min_value=-(2**70), max_value=2**70),
                 st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63)]))
HASHISH = st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40))
PROOFS = st.lists(HASHISH, max_size=140)


class Tree:
    """A small real tree of ``n`` leaves with every perfect subtree hash kept."""

    def __init__(self, n: int) -> None:
        self.entries = [b"entry %d" % i for i in range(n)]
        self.levels = [[merkle.leaf_hash(e) for e in self.entries]]
        while len(self.levels[-1]) > 1:
            prev = self.levels[-1]
            self.levels.append([merkle.node_hash(prev[i], prev[i + 1]) for i in range(0, len(prev) - 1, 2)])

    def get(self, level: int, index: int) -> bytes:
        try:
            return self.levels[level][index]
        except IndexError:
            raise NotFoundError(f"({level}, {index})") from None

    def root(self, size: int) -> bytes:
        return merkle.root_from_leaf_hashes(self.levels[0][:size])


TREE = Tree(700)


@FUZZ
@given(INTS, INTS, HASHISH, PROOFS, HASHISH)
def test_verify_inclusion_garbage(
    index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes
) -> None:
    try:
        merkle.verify_inclusion(index, size, leaf, proof, root)
    except ProofError:
        return
    # accepted: then it really is a valid proof of a tree with that root
    assert merkle.root_from_inclusion(index, size, leaf, proof) == root


@FUZZ
@given(INTS, INTS, HASHISH, HASHISH, PROOFS)
def test_verify_consistency_garbage(m: int, n: int, r1: bytes, r2: bytes, proof: list[bytes]) -> None:
    try:
        merkle.verify_consistency(m, n, r1, r2, proof)
    except ProofError:
        return
    assert 0 <= m <= n


@st.composite
def inclusion_cases(draw: st.DrawFn) -> tuple[int, int, list[bytes]]:
    size = draw(st.integers(2, len(TREE.entries)))
    index = draw(st.integers(0, size - 1))
    return index, size, merkle.inclusion_proof(index, size, TREE.get)


@FUZZ
@given(inclusion_cases(), st.data())
def test_any_change_to_an_inclusion_proof_fails(
    case: tuple[int, int, list[bytes]], data: st.DataObject
) -> None:
    index, size, proof = case
    leaf, root = TREE.levels[0][index], TREE.root(size)
    merkle.verify_inclusion(index, size, leaf, proof, root)
    what = data.draw(st.sampled_from(["proof", "leaf", "root", "drop", "add", "dup"]))
    if what in ("proof", "drop", "dup") and not proof:
        what = "leaf"
    if what == "proof":
        i = data.draw(st.integers(0, len(proof) - 1))
        proof = [*proof[:i], _flip(data, proof[i]), *proof[i + 1:]]
    elif what == "leaf":
        leaf = _flip(data, leaf)
    elif what == "root":
        root = _flip(data, root)
    elif what == "drop":
        del proof[data.draw(st.integers(0, len(proof) - 1))]
    elif what == "add":
        proof.insert(data.draw(st.integers(0, len(proof))), data.draw(st.binary(min_size=32, max_size=32)))
    else:
        i = data.draw(st.integers(0, len(proof) - 1))
        proof.insert(i, proof[i])
    try:
        merkle.verify_inclusion(index, size, leaf, proof, root)
    except ProofError:
        return
    raise AssertionError(f"a changed proof ({what}) verified: index {index}, size {size}")


@FUZZ
@given(st.data())
def test_any_change_to_a_consistency_proof_fails(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, len(TREE.entries)))
    m = data.draw(st.integers(1, n - 1))
    proof = merkle.consistency_proof(m, n, TREE.get)
    r1, r2 = TREE.root(m), TREE.root(n)
    merkle.verify_consistency(m, n, r1, r2, proof)
    what = data.draw(st.sampled_from(["proof", "r1", "r2", "drop", "add"]))
    if what == "proof":
        i = data.draw(st.integers(0, len(proof) - 1))
        proof = [*proof[:i], _flip(data, proof[i]), *proof[i + 1:]]
    elif what == "r1":
        r1 = _flip(data, r1)
    elif what == "r2":
        r2 = _flip(data, r2)
    elif what == "drop":
        del proof[data.draw(st.integers(0, len(proof) - 1))]
    else:
        proof.insert(data.draw(st.integers(0, len(proof))), data.draw(st.binary(min_size=32, max_size=32)))
    try:
        merkle.verify_consistency(m, n, r1, r2, proof)
    except ProofError:
        return
    raise AssertionError(f"a changed consistency proof ({what}) verified: {m} -> {n}")


def _flip(data: st.DataObject, h: bytes) -> bytes:
    i = data.draw(st.integers(0, len(h) * 8 - 1))
    b = bytearray(h)
    b[i // 8] ^= 1 << (i % 8)
    return bytes(b)


# -- a hostile static log ----------------------------------------------------------------------------

SIGNER = generate_signer("static.example/log")
SIZE = 600


def _static_files() -> dict[str, bytes]:
    files = {"checkpoint": sign_checkpoint(Checkpoint(SIGNER.name, SIZE, TREE.root(SIZE)), [SIGNER])}
    for tp in tiles_for_size(SIZE):
        files[format_tile_path(tp)] = build_hash_tile(tp, TREE.get)
    for tp in entry_bundles_for_size(SIZE):
        start = tp.index * 256
        files[format_tile_path(tp)] = pack_entry_bundle(TREE.entries[start:start + tp.width])
    return files


FILES = _static_files()
NAMES = sorted(FILES)


def _client(files: dict[str, bytes]) -> LogClient:
    def fetch(path: str) -> bytes:
        try:
            return files[path]
        except KeyError:
            raise NotFoundError(path) from None

    return LogClient(FetchTransport(fetch))


def test_the_static_log_is_valid() -> None:
    client = _client(FILES)
    v = LogVerifier(SIGNER.name, [SIGNER.verifier()], client)
    sc = v.update()
    assert sc.size == SIZE
    for i in (0, 255, 256, 599):
        v.verify_inclusion(TREE.entries[i], i, sc)
    assert client.entries(250, 260, SIZE) == TREE.entries[250:260]


@FUZZ
@given(st.data())
def test_hostile_static_log(data: st.DataObject) -> None:
    """One file of the static log replaced by a mutant or random bytes: only PersonalityError."""
    name = data.draw(st.sampled_from(NAMES), label="file")
    bad = data.draw(st.one_of(mutated((FILES[name],)), st.binary(max_size=9000)), label="content")
    files = {**FILES, name: bad}
    client = _client(files)
    verifier = LogVerifier(SIGNER.name, [SIGNER.verifier()], client)
    calls = [
        lambda: verifier.update(),
        lambda: client.inclusion_proof(data.draw(st.integers(0, SIZE - 1)), SIZE),
        lambda: client.consistency_proof(data.draw(st.integers(0, SIZE)), SIZE),
        lambda: client.entries(0, SIZE, SIZE),
    ]
    for call in calls:
        try:
            call()
        except PersonalityError:
            pass
    # A checkpoint the key did not sign is never accepted.
    if name == "checkpoint" and bad != FILES["checkpoint"]:
        try:
            sc = LogVerifier(SIGNER.name, [SIGNER.verifier()], client).update()
        except PersonalityError:
            return
        assert sc.raw == bad and sc.root == TREE.root(SIZE) and sc.size == SIZE
