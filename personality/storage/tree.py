"""The committed tree as the sequencer and the read path see it: its right edge in memory, full
tiles through a cache over the :class:`~personality.storage.base.TileStore`.

A :class:`TreeState` is immutable once published: the integrator works on a :meth:`~TreeState.copy`
and swaps the reference only after the batch is durable, so readers on other threads never see a
half-integrated batch and a failed batch leaves nothing behind in memory.

Every perfect subtree of height ``8*L + s`` (``0 <= s < 8``) lives in tile level ``L``: its hash is
either in a full tile (:class:`FullTileCache`, which expands a tile into its 8 internal levels
once) or in the edge tile of level ``L`` (:class:`EdgeTile`, which keeps all 8 internal levels as
the tree grows). So any hash a proof needs costs one dictionary lookup and one slice; proofs do
not hash.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

from personality.errors import FormatError, NotFoundError, StorageError
from personality.storage.base import TileStore
from personality.tlog.merkle import EMPTY_ROOT, CompactRange, HashGetter
from personality.tlog.tiles import TILE_WIDTH, TilePath, pack_entry_bundle, parse_entry_bundle

__all__ = ["EdgeTile", "FullTileCache", "TreeState", "Expanded"]

_H = 32
_SUBLEVELS = 8
# A full tile expanded: for each sublevel s, the concatenated hashes of its 256 >> s nodes.
Expanded = tuple[bytes, ...]
_sha256 = hashlib.sha256


def _expand(level0: Sequence[bytes]) -> list[list[bytes]]:
    levels = [list(level0)]
    for _ in range(1, _SUBLEVELS):
        below = levels[-1]
        levels.append(
            [_sha256(b"\x01" + below[i] + below[i + 1]).digest() for i in range(0, len(below) - 1, 2)]
        )
    return levels


class EdgeTile:
    """The rightmost tile of one tile level, with every complete internal node (mutable)."""

    __slots__ = ("index", "levels")

    def __init__(self, index: int, levels: list[list[bytes]] | None = None) -> None:
        self.index = index
        self.levels = levels if levels is not None else [[] for _ in range(_SUBLEVELS)]

    @classmethod
    def from_hashes(cls, index: int, hashes: Sequence[bytes]) -> EdgeTile:
        return cls(index, _expand(hashes))

    def copy(self) -> EdgeTile:
        return EdgeTile(self.index, [lv.copy() for lv in self.levels])

    @property
    def width(self) -> int:
        return len(self.levels[0])

    def expanded(self) -> Expanded:
        return tuple(b"".join(lv) for lv in self.levels)


class FullTileCache:
    """LRU of expanded full hash tiles, read through from a :class:`TileStore`. Thread-safe.

    Full tiles of the committed tree never change, so entries never go stale. Raises what the
    store raises (``NotFoundError``, ``StorageError``); a stored tile of the wrong length is a
    ``StorageError``.
    """

    def __init__(self, store: TileStore, max_tiles: int = 4096) -> None:
        self._store = store
        self._max = max(1, max_tiles)
        self._lru: OrderedDict[tuple[int, int], Expanded] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, level: int, index: int) -> Expanded:
        key = (level, index)
        with self._lock:
            exp = self._lru.get(key)
            if exp is not None:
                self._lru.move_to_end(key)
                self.hits += 1
                return exp
            self.misses += 1
        data = self._store.get_tile(TilePath(level, index))
        if len(data) != TILE_WIDTH * _H:
            raise StorageError(f"stored full tile {TilePath(level, index)} is {len(data)} bytes")
        levels = _expand([data[i : i + _H] for i in range(0, len(data), _H)])
        exp = tuple(b"".join(lv) for lv in levels)
        self.put(level, index, exp)
        return exp

    def put(self, level: int, index: int, exp: Expanded) -> None:
        with self._lock:
            self._lru[(level, index)] = exp
            self._lru.move_to_end((level, index))
            while len(self._lru) > self._max:
                self._lru.popitem(last=False)


class TreeState:
    """One committed tree: size, root, signed checkpoint, compact range, edge tiles, edge bundle."""

    __slots__ = ("size", "root", "checkpoint", "compact", "edges", "bundle_index", "bundle", "packed")

    def __init__(
        self,
        checkpoint: bytes,
        compact: CompactRange,
        edges: list[EdgeTile],
        bundle: list[bytes],
        root: bytes | None = None,
        packed: bytes | None = None,
    ) -> None:
        self.size = compact.size
        self.root = root if root is not None else compact.root()
        self.checkpoint = checkpoint
        self.compact = compact
        self.edges = edges
        self.bundle_index = compact.size // TILE_WIDTH
        self.bundle = bundle
        # The edge bundle as stored (grown by appending, never re-packed).
        self.packed = packed if packed is not None else pack_entry_bundle(bundle)

    @classmethod
    def empty(cls, checkpoint: bytes) -> TreeState:
        return cls(checkpoint, CompactRange(0, []), [], [], EMPTY_ROOT)

    @classmethod
    def load(cls, size: int, checkpoint: bytes, store: TileStore, cache: FullTileCache) -> TreeState:
        """Rebuild the state of ``size`` from stored tiles (raises ``NotFoundError``/``StorageError``)."""
        edges: list[EdgeTile] = []
        level = 0
        while size >> (8 * level):
            n, w = divmod(size >> (8 * level), TILE_WIDTH)
            if w:
                data = store.get_tile(TilePath(level, n, w))
                edges.append(EdgeTile.from_hashes(n, [data[i : i + _H] for i in range(0, len(data), _H)]))
            else:
                edges.append(EdgeTile(n))
            level += 1
        n, w = divmod(size, TILE_WIDTH)
        bundle: list[bytes] = []
        packed = b""
        if w:
            packed = store.get_tile(TilePath(None, n, w))
            try:
                bundle = parse_entry_bundle(packed, w)
            except FormatError as exc:
                raise StorageError(f"stored entry bundle {n} is damaged: {exc}") from exc
        partial = cls(checkpoint, CompactRange(0, []), edges, bundle, EMPTY_ROOT, packed)
        compact = CompactRange.from_getter(size, partial.getter(cache))
        return cls(checkpoint, compact, edges, bundle, None, packed)

    def copy(self) -> TreeState:
        return TreeState(
            self.checkpoint,
            self.compact.copy(),
            [e.copy() for e in self.edges],
            self.bundle.copy(),
            self.root,
            self.packed,
        )

    # -- integration (only on a private copy) ---------------------------------------------------

    def extend(
        self, entries: Sequence[bytes], leaf_hashes: Sequence[bytes]
    ) -> tuple[dict[TilePath, bytes], list[tuple[int, int, Expanded]]]:
        """Append leaves; return the tiles to write and the full tiles completed (for the cache).

        Mutates this state: call it on a :meth:`copy`. ``root`` and ``checkpoint`` are left for the
        caller to set once it has signed.
        """
        tiles: dict[TilePath, bytes] = {}
        completed: list[tuple[int, int, Expanded]] = []
        edges = self.edges
        touched: set[int] = set()
        for level, index, h in self.compact.extend(leaf_hashes):
            tl = level >> 3
            s = level & 7
            if tl == len(edges):
                edges.append(EdgeTile(0))
            e = edges[tl]
            n = (index << s) >> 8
            if n != e.index:
                # The previous tile of this level completed with an earlier leaf of this batch.
                exp = e.expanded()
                tiles[TilePath(tl, e.index)] = exp[0]
                completed.append((tl, e.index, exp))
                e = edges[tl] = EdgeTile(n)
            e.levels[s].append(h)
            touched.add(tl)
        for tl in touched:
            e = edges[tl]
            if e.width == TILE_WIDTH:
                exp = e.expanded()
                tiles[TilePath(tl, e.index)] = exp[0]
                completed.append((tl, e.index, exp))
                edges[tl] = EdgeTile(e.index + 1)
            elif e.width:
                tiles[TilePath(tl, e.index, e.width)] = b"".join(e.levels[0])
        bundle = self.bundle
        bidx = self.bundle_index
        parts = [self.packed]
        for entry in entries:
            bundle.append(entry)
            parts.append(len(entry).to_bytes(2, "big"))
            parts.append(entry)
            if len(bundle) == TILE_WIDTH:
                tiles[TilePath(None, bidx)] = b"".join(parts)
                bidx += 1
                bundle = []
                parts = []
        self.packed = b"".join(parts)
        if bundle and entries:
            tiles[TilePath(None, bidx, len(bundle))] = self.packed
        self.bundle = bundle
        self.bundle_index = bidx
        self.size = self.compact.size
        return tiles, completed

    # -- reads ------------------------------------------------------------------------------------

    def getter(self, cache: FullTileCache) -> HashGetter:
        """A :data:`HashGetter` over this tree; raises ``NotFoundError`` for incomplete subtrees."""
        edges = self.edges

        def get(level: int, index: int) -> bytes:
            tl = level >> 3
            s = level & 7
            if tl >= len(edges) or index < 0:
                raise NotFoundError(f"subtree at level {level}, index {index} is not in the tree")
            e = edges[tl]
            j = index << s
            n = j >> 8
            k = (j & 255) >> s
            if n == e.index:
                lv = e.levels[s]
                if k < len(lv):
                    return lv[k]
            elif n < e.index:
                return cache.get(tl, n)[s][k * _H : (k + 1) * _H]
            raise NotFoundError(f"subtree at level {level}, index {index} is not complete yet")

        return get

    def read_tile(self, path: TilePath, store: TileStore, cache: FullTileCache) -> bytes:
        """Tile ``path`` if this tree has reached it, else ``NotFoundError``."""
        count = self.size if path.level is None else self.size >> (8 * path.level)
        if path.index * TILE_WIDTH + path.width > count:
            raise NotFoundError(f"tile {path} is beyond the tree of size {self.size}")
        if path.level is None:
            if path.index == self.bundle_index:
                if path.width == len(self.bundle):
                    return self.packed
                return pack_entry_bundle(self.bundle[: path.width])
            return store.get_tile(path)
        e = self.edges[path.level]
        if path.index == e.index:
            return b"".join(e.levels[0][: path.width])
        return cache.get(path.level, path.index)[0][: path.width * _H]
