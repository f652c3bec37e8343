"""RFC 6962 hashing, proofs and the compact range: upstream vectors and properties."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from personality.errors import NotFoundError, ProofError
from personality.tlog.merkle import (
    EMPTY_ROOT,
    CompactRange,
    HashGetter,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_inclusion,
    root_from_leaf_hashes,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).parents[1].parent / "shared" / "testvectors" / "rfc6962"


def _b64(s: str | None) -> bytes:
    return base64.b64decode(s or "", validate=True)


def _vector_files(kind: str) -> list[Path]:
    return sorted((VECTORS / kind).glob("*/*.json"))


class RefTree:
    """Every perfect subtree hash of a tree, computed naively from the leaves."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.levels = [leaves]
        while len(self.levels[-1]) > 1:
            prev = self.levels[-1]
            self.levels.append([node_hash(prev[i], prev[i + 1]) for i in range(0, len(prev) - 1, 2)])

    def get(self, level: int, index: int) -> bytes:
        if level >= len(self.levels) or index >= len(self.levels[level]):
            raise NotFoundError(f"no hash at ({level}, {index})")
        return self.levels[level][index]

    def root(self, size: int) -> bytes:
        return root_from_leaf_hashes(self.levels[0][:size])


def _tree(n: int) -> RefTree:
    return RefTree([leaf_hash(i.to_bytes(4, "big")) for i in range(n)])


BIG = _tree(300)


def _flip(b: bytes, bit: int) -> bytes:
    arr = bytearray(b)
    arr[bit // 8] ^= 1 << (bit % 8)
    return bytes(arr)


# --- upstream vectors --------------------------------------------------------------------------


@pytest.mark.parametrize("path", _vector_files("inclusion"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_inclusion_vectors(path: Path) -> None:
    v = json.loads(path.read_text())
    args = (v["leafIdx"], v["treeSize"], _b64(v["leafHash"]), [_b64(p) for p in v["proof"] or []],
            _b64(v["root"]))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", _vector_files("consistency"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_consistency_vectors(path: Path) -> None:
    v = json.loads(path.read_text())
    args = (v["size1"], v["size2"], _b64(v["root1"]), _b64(v["root2"]), [_b64(p) for p in v["proof"] or []])
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_vectors_present() -> None:
    assert len(_vector_files("inclusion")) > 50
    assert len(_vector_files("consistency")) > 50


# --- known answers -----------------------------------------------------------------------------


def test_known_hashes() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert root_from_leaf_hashes([]) == EMPTY_ROOT
    # RFC 6962 reference tree of 7 leaves (transparency-dev/merkle testonly), roots at sizes 1 and 8.
    leaves = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243",
                                         "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]
    roots = [root_from_leaf_hashes([leaf_hash(x) for x in leaves[:n]]) for n in range(1, 9)]
    assert roots[7].hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert roots[0].hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"


def test_subtree_hash_rejects_unaligned() -> None:
    with pytest.raises(ValueError):
        subtree_hash(BIG.get, 1, 3)
    with pytest.raises(ValueError):
        subtree_hash(BIG.get, 4, 4)
    assert subtree_hash(BIG.get, 8, 13) == root_from_leaf_hashes(BIG.levels[0][8:13])


def test_generation_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        inclusion_proof(5, 5, BIG.get)
    with pytest.raises(ValueError):
        consistency_proof(6, 5, BIG.get)
    assert consistency_proof(0, 5, BIG.get) == []
    assert consistency_proof(5, 5, BIG.get) == []


def test_getter_errors_propagate() -> None:
    small = _tree(4)
    with pytest.raises(NotFoundError):
        inclusion_proof(0, 8, small.get)


def test_verify_rejects_malformed_without_crashing() -> None:
    root = BIG.root(10)
    lh = BIG.levels[0][3]
    proof = inclusion_proof(3, 10, BIG.get)
    verify_inclusion(3, 10, lh, proof, root)
    for bad in [
        (3, 10, lh[:31], proof, root),
        (3, 10, lh, proof, root + b"\x00"),
        (3, 10, lh, [*proof[:-1], b"x"], root),
        (-1, 10, lh, proof, root),
        (10, 10, lh, proof, root),
        (3, 1 << 64, lh, proof, root),
        (3, 10, lh, proof * 100, root),
        (3, 10, lh, [*proof, "str"], root),
    ]:
        with pytest.raises(ProofError):
            verify_inclusion(*bad)  # type: ignore[arg-type]
    with pytest.raises(ProofError):
        verify_consistency(0, 5, b"\x00" * 32, BIG.root(5), [])
    with pytest.raises(ProofError):
        verify_consistency(5, 4, BIG.root(5), BIG.root(4), [])
    verify_consistency(0, 5, EMPTY_ROOT, BIG.root(5), [])
    verify_consistency(5, 5, BIG.root(5), BIG.root(5), [])


# --- properties --------------------------------------------------------------------------------


sizes = st.integers(min_value=1, max_value=300)


@st.composite
def index_and_size(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(sizes)
    return draw(st.integers(min_value=0, max_value=n - 1)), n


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(sizes)
    return draw(st.integers(min_value=1, max_value=n)), n


def test_every_proof_up_to_64_verifies() -> None:
    t = _tree(64)
    for n in range(1, 65):
        root = t.root(n)
        for i in range(n):
            verify_inclusion(i, n, t.levels[0][i], inclusion_proof(i, n, t.get), root)
        for m in range(n + 1):
            verify_consistency(m, n, t.root(m), root, consistency_proof(m, n, t.get))


@settings(max_examples=200, deadline=None)
@given(index_and_size(), st.data())
def test_inclusion_property(i_n: tuple[int, int], data: st.DataObject) -> None:
    i, n = i_n
    root = BIG.root(n)
    lh = BIG.levels[0][i]
    proof = inclusion_proof(i, n, BIG.get)
    verify_inclusion(i, n, lh, proof, root)
    assert root_from_inclusion(i, n, lh, proof) == root
    # Any one-bit change to the leaf hash, the root or any proof hash is rejected.
    target = data.draw(st.integers(min_value=0, max_value=len(proof) + 1))
    bit = data.draw(st.integers(min_value=0, max_value=255))
    if target == len(proof):
        lh = _flip(lh, bit)
    elif target == len(proof) + 1:
        root = _flip(root, bit)
    else:
        proof[target] = _flip(proof[target], bit)
    with pytest.raises(ProofError):
        verify_inclusion(i, n, lh, proof, root)


@settings(max_examples=200, deadline=None)
@given(two_sizes(), st.data())
def test_consistency_property(m_n: tuple[int, int], data: st.DataObject) -> None:
    m, n = m_n
    r1, r2 = BIG.root(m), BIG.root(n)
    proof = consistency_proof(m, n, BIG.get)
    verify_consistency(m, n, r1, r2, proof)
    if m == n:
        assert proof == []
    target = data.draw(st.integers(min_value=0, max_value=len(proof) + 1))
    bit = data.draw(st.integers(min_value=0, max_value=255))
    if target == len(proof):
        r1 = _flip(r1, bit)
    elif target == len(proof) + 1:
        r2 = _flip(r2, bit)
    else:
        proof[target] = _flip(proof[target], bit)
    with pytest.raises(ProofError):
        verify_consistency(m, n, r1, r2, proof)


@settings(max_examples=100, deadline=None)
@given(two_sizes())
def test_consistency_proof_for_other_sizes_fails(m_n: tuple[int, int]) -> None:
    m, n = m_n
    if m == n:
        return
    proof = consistency_proof(m, n, BIG.get)
    if m + 1 < n:
        with pytest.raises(ProofError):
            verify_consistency(m + 1, n, BIG.root(m + 1), BIG.root(n), proof)
    with pytest.raises(ProofError):
        verify_consistency(m, n, BIG.root(m), BIG.root(n), proof[:-1])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=300))
def test_compact_range_root(entries: list[bytes]) -> None:
    hashes = [leaf_hash(e) for e in entries]
    cr = CompactRange()
    stored: dict[tuple[int, int], bytes] = {}
    emitted: list[tuple[int, int, bytes]] = []
    for h in hashes:
        emitted.extend(cr.append(h))
        for level, index, sh in emitted[-(len(emitted) - len(stored)):]:
            assert (level, index) not in stored
            stored[(level, index)] = sh
    assert cr.size == len(hashes)
    assert cr.root() == root_from_leaf_hashes(hashes)
    assert len(cr.hashes) == len(hashes).bit_count()
    # The emitted subtrees are exactly every perfect subtree of the tree.
    ref = RefTree(hashes) if hashes else None
    expected = {(lv, i): h for lv, hs in enumerate(ref.levels) for i, h in enumerate(hs)} if ref else {}
    assert stored == expected
    getter: HashGetter = lambda level, index: stored[(level, index)]  # noqa: E731
    rebuilt = CompactRange.from_getter(len(hashes), getter)
    assert rebuilt.hashes == cr.hashes
    bulk = CompactRange()
    assert bulk.extend(hashes) == emitted
    assert bulk.root() == cr.root()


def test_compact_range_resumes() -> None:
    hashes = BIG.levels[0][:100]
    cr = CompactRange.from_getter(37, BIG.get)
    cr2 = cr.copy()
    cr.extend(hashes[37:])
    assert cr.root() == BIG.root(100)
    assert cr2.size == 37 and cr2.root() == BIG.root(37)
    with pytest.raises(ValueError):
        CompactRange(3, [b"\x00" * 32])
