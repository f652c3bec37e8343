"""RFC 6962 / RFC 9162 §2 Merkle tree hashing, proofs and the compact range.

Pure functions over bytes: no I/O. Stored hashes are reached through a :data:`HashGetter`, a
callable ``get(level, index)`` that returns the hash of the *perfect* subtree of height ``level``
whose leftmost leaf is ``index << level`` (level 0 = leaf hashes). A getter raises
:class:`~personality.errors.NotFoundError` for a hash it does not hold; proof generation lets that
error propagate unchanged.

Verification takes plain values (index, size, hashes, proof, root) and raises
:class:`~personality.errors.ProofError` for anything that does not verify, including malformed input
(negative sizes, hashes that are not 32 bytes, proofs of the wrong length). It never raises anything
else for bad input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from personality.errors import ProofError

__all__ = [
    "HASH_SIZE",
    "EMPTY_ROOT",
    "MAX_PROOF_LENGTH",
    "HashGetter",
    "leaf_hash",
    "node_hash",
    "root_from_leaf_hashes",
    "subtree_hash",
    "inclusion_proof",
    "consistency_proof",
    "verify_inclusion",
    "verify_consistency",
    "root_from_inclusion",
    "CompactRange",
]

HASH_SIZE = 32
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()
# A tree of at most 2**63 leaves needs at most 63 hashes for an inclusion proof and 2*63 for a
# consistency proof; anything longer is malformed.
MAX_PROOF_LENGTH = 128
MAX_TREE_SIZE = 1 << 63

HashGetter = Callable[[int, int], bytes]

_sha256 = hashlib.sha256


def leaf_hash(entry: bytes) -> bytes:
    """``SHA-256(0x00 || entry)``."""
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes (RFC 9162 §2.1.1): the reference implementation."""
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = _split(n)
    return node_hash(root_from_leaf_hashes(hashes[:k]), root_from_leaf_hashes(hashes[k:]))


def _check_range(start: int, end: int) -> None:
    if not 0 <= start < end:
        raise ValueError(f"empty or negative leaf range [{start}, {end})")
    width = end - start
    if width > 1 and start % (1 << (width - 1).bit_length()):
        raise ValueError(f"leaf range [{start}, {end}) is not a node of any tree")


def subtree_hash(get: HashGetter, start: int, end: int) -> bytes:
    """The hash of leaves ``[start, end)``, a range that is a node of some tree.

    ``start`` must be a multiple of the smallest power of two ``>= end - start`` (programming
    error otherwise: ``ValueError``). Built from the perfect subtrees that tile the range, largest
    first, folded from the right as MTH does.
    """
    _check_range(start, end)
    parts: list[bytes] = []
    pos = start
    remaining = end - start
    while remaining:
        level = remaining.bit_length() - 1
        parts.append(get(level, pos >> level))
        pos += 1 << level
        remaining -= 1 << level
    h = parts[-1]
    for p in reversed(parts[:-1]):
        h = _sha256(b"\x01" + p + h).digest()
    return h


def _check_sizes(index: int, size: int) -> None:
    if not 0 <= index < size <= MAX_TREE_SIZE:
        raise ValueError(f"index {index} is not in a tree of size {size}")


def inclusion_proof(index: int, size: int, get: HashGetter) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves (RFC 9162 §2.1.3.1).

    Hashes are ordered from the leaf upwards. Raises ``ValueError`` if ``index >= size`` (a caller
    error: check the request first) and whatever ``get`` raises (``NotFoundError``).
    """
    _check_sizes(index, size)
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        level = k.bit_length() - 1
        if index < lo + k:
            path.append(subtree_hash(get, lo + k, hi))
            hi = lo + k
        else:
            path.append(get(level, lo >> level))
            lo += k
    path.reverse()
    return path


def consistency_proof(size1: int, size2: int, get: HashGetter) -> list[bytes]:
    """The consistency proof from ``size1`` to ``size2`` (RFC 9162 §2.1.4.1).

    Empty when ``size1 == 0`` or ``size1 == size2``. Raises ``ValueError`` unless
    ``0 <= size1 <= size2`` and whatever ``get`` raises (``NotFoundError``).
    """
    if not 0 <= size1 <= size2 <= MAX_TREE_SIZE:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == 0 or size1 == size2:
        return []
    path: list[bytes] = []
    lo, hi, m, complete = 0, size2, size1, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            path.append(subtree_hash(get, lo + k, hi))
            hi = lo + k
        else:
            level = k.bit_length() - 1
            path.append(get(level, lo >> level))
            lo += k
            m -= k
            complete = False
    if not complete:
        path.append(subtree_hash(get, lo, hi))
    path.reverse()
    return path


def _check_hash(what: str, h: object) -> None:
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        raise ProofError(f"{what} is not a {HASH_SIZE}-byte hash")


def _check_proof(proof: Sequence[bytes]) -> None:
    if len(proof) > MAX_PROOF_LENGTH:
        raise ProofError(f"proof has {len(proof)} hashes, more than any tree needs")
    for i, p in enumerate(proof):
        _check_hash(f"proof hash {i}", p)


def root_from_inclusion(index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof (RFC 9162 §2.1.3.2); raises ``ProofError``."""
    if not isinstance(index, int) or not isinstance(size, int) or not 0 <= index < size:
        raise ProofError(f"index {index} is not in a tree of size {size}")
    if size > MAX_TREE_SIZE:
        raise ProofError(f"tree size {size} is too large")
    _check_hash("leaf hash", leaf_hash)
    _check_proof(proof)
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError(f"inclusion proof for index {index} in size {size} is too long")
        if fn & 1 or fn == sn:
            r = _sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"inclusion proof for index {index} in size {size} is too short")
    return r


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    Returns ``None`` on success; raises ``ProofError`` otherwise (also for malformed input).
    """
    _check_hash("root", root)
    got = root_from_inclusion(index, size, leaf_hash, proof)
    if got != root:
        raise ProofError(f"inclusion proof for index {index} in size {size} does not match the root")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree ``(size2, root2)`` extends ``(size1, root1)`` (RFC 9162 §2.1.4.2).

    ``size1 == size2`` needs an empty proof and equal roots; ``size1 == 0`` needs an empty proof
    and ``root1`` equal to :data:`EMPTY_ROOT` (every tree extends the empty tree). Raises
    ``ProofError`` on any failure.
    """
    if not isinstance(size1, int) or not isinstance(size2, int) or not 0 <= size1 <= size2:
        raise ProofError(f"no consistency between size {size1} and size {size2}")
    if size2 > MAX_TREE_SIZE:
        raise ProofError(f"tree size {size2} is too large")
    if size1 == size2:
        # Nothing to prove: the roots must be the same bytes (upstream vectors accept any length).
        if proof:
            raise ProofError("consistency proof between equal sizes must be empty")
        if root1 != root2:
            raise ProofError(f"different roots for the same size {size1}")
        if size1 == 0 and root1 != EMPTY_ROOT:
            raise ProofError("the root of the empty tree is not the hash of the empty string")
        return
    _check_hash("first root", root1)
    _check_hash("second root", root2)
    _check_proof(proof)
    if size1 == 0:
        if proof:
            raise ProofError("consistency proof from the empty tree must be empty")
        if root1 != EMPTY_ROOT:
            raise ProofError("the root of the empty tree is not the hash of the empty string")
        return
    if not proof:
        raise ProofError(f"empty consistency proof from size {size1} to size {size2}")
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof from size {size1} to {size2} is too long")
        if fn & 1 or fn == sn:
            fr = _sha256(b"\x01" + c + fr).digest()
            sr = _sha256(b"\x01" + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha256(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"consistency proof from size {size1} to {size2} is too short")
    if fr != root1:
        raise ProofError(f"consistency proof does not match the root of size {size1}")
    if sr != root2:
        raise ProofError(f"consistency proof does not match the root of size {size2}")


class CompactRange:
    """The right edge of the tree ``[0, size)``: one perfect-subtree root per set bit of ``size``.

    ``hashes`` are those roots, largest (leftmost) first. :meth:`append` adds one leaf hash and
    returns the perfect subtrees it completed as ``(level, index, hash)``, level 0 first; a log
    stores exactly those to serve every later proof. Not thread-safe.
    """

    __slots__ = ("_size", "_hashes")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        hs = list(hashes)
        if size < 0 or len(hs) != size.bit_count():
            raise ValueError(f"a compact range of size {size} holds {size.bit_count()} hashes, not {len(hs)}")
        for h in hs:
            if len(h) != HASH_SIZE:
                raise ValueError("compact range hashes must be 32 bytes")
        self._size = size
        self._hashes = hs

    @classmethod
    def from_getter(cls, size: int, get: HashGetter) -> CompactRange:
        """Rebuild the range of ``size`` leaves from stored perfect-subtree hashes."""
        hs: list[bytes] = []
        pos = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                hs.append(get(level, pos >> level))
                pos += 1 << level
        return cls(size, hs)

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def copy(self) -> CompactRange:
        return CompactRange(self._size, self._hashes)

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; return the perfect subtrees completed, ``(0, size, leaf_hash)`` first."""
        idx = self._size
        hashes = self._hashes
        h = leaf_hash
        out = [(0, idx, h)]
        level = 0
        s = idx
        while s & 1:
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            level += 1
            s >>= 1
            out.append((level, s, h))
        hashes.append(h)
        self._size = idx + 1
        return out

    def extend(self, leaf_hashes: Iterable[bytes]) -> list[tuple[int, int, bytes]]:
        """Append many leaf hashes; return every completed subtree in the order they completed."""
        out: list[tuple[int, int, bytes]] = []
        hashes = self._hashes
        idx = self._size
        add = out.append
        pop = hashes.pop
        push = hashes.append
        for h in leaf_hashes:
            add((0, idx, h))
            level = 0
            s = idx
            while s & 1:
                h = _sha256(b"\x01" + pop() + h).digest()
                level += 1
                s >>= 1
                add((level, s, h))
            push(h)
            idx += 1
        self._size = idx
        return out

    def root(self) -> bytes:
        """MTH of the ``size`` leaves (:data:`EMPTY_ROOT` when empty)."""
        hs = self._hashes
        if not hs:
            return EMPTY_ROOT
        r = hs[-1]
        for h in reversed(hs[:-1]):
            r = _sha256(b"\x01" + h + r).digest()
        return r

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size})"
