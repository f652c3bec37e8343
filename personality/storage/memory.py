"""In-memory drivers for tests, with fault injection.

Nothing here is durable; the point is to exercise the log's error handling. Each driver accepts
one-shot faults per method (:meth:`MemorySequencingStore.inject`):

``Fault.FAIL``
    raise :class:`StorageError` and change nothing ("fail and don't persist").
``Fault.FAIL_AFTER``
    apply the change, then raise :class:`StorageError` ("fail but persist": the write reached
    storage but the acknowledgement was lost).

Both drivers are thread-safe (one lock each).
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from personality.errors import ConflictError, NotFoundError, StorageError
from personality.storage._tiledata import prefix, width_of
from personality.storage.base import TileKey
from personality.tlog.tiles import TilePath

__all__ = ["Fault", "MemorySequencingStore", "MemoryTileStore"]


class Fault(enum.Enum):
    FAIL = "fail"
    FAIL_AFTER = "fail-after"


class _Faults:
    def __init__(self) -> None:
        self._queue: dict[str, deque[Fault]] = {}

    def clear(self) -> None:
        self._queue.clear()

    def inject(self, method: str, fault: Fault) -> None:
        self._queue.setdefault(method, deque()).append(fault)

    def take(self, method: str) -> Fault | None:
        q = self._queue.get(method)
        return q.popleft() if q else None


def _raise(method: str, fault: Fault) -> None:
    raise StorageError(f"injected fault in {method} ({fault.value})")


class MemorySequencingStore:
    """:class:`~personality.storage.base.SequencingStore` in a dict (tests only)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checkpoint: bytes | None = None
        self._leaves: dict[bytes, int] = {}
        self._indexes: set[int] = set()
        self._faults = _Faults()
        self._locked = False
        self.commits = 0

    def inject(self, method: str, fault: Fault) -> None:
        """Make the next call of ``method`` (``checkpoint``, ``lookup``, ``commit``) fail."""
        with self._lock:
            self._faults.inject(method, fault)

    def lock_sequencer(self) -> None:
        with self._lock:
            if self._locked:
                raise ConflictError("another sequencer holds this log's lock")
            self._locked = True

    def clear_faults(self) -> None:
        """Forget faults injected but not triggered yet."""
        with self._lock:
            self._faults.clear()

    def unlock(self) -> None:
        """Let another sequencer object take over (the memory store survives its sequencer)."""
        with self._lock:
            self._locked = False

    def checkpoint(self) -> bytes | None:
        with self._lock:
            fault = self._faults.take("checkpoint")
            if fault is not None:
                _raise("checkpoint", fault)
            return self._checkpoint

    def lookup(self, leaf_hashes: Iterable[bytes]) -> dict[bytes, int]:
        with self._lock:
            fault = self._faults.take("lookup")
            if fault is not None:
                _raise("lookup", fault)
            out: dict[bytes, int] = {}
            for h in leaf_hashes:
                i = self._leaves.get(h)
                if i is not None:
                    out[h] = i
            return out

    def commit(self, old: bytes | None, new: bytes, leaves: Sequence[tuple[bytes, int]]) -> None:
        with self._lock:
            fault = self._faults.take("commit")
            if fault is Fault.FAIL:
                _raise("commit", fault)
            if self._checkpoint != old:
                raise ConflictError("the stored checkpoint changed: another sequencer is running")
            seen: set[bytes] = set()
            for h, i in leaves:
                if h in self._leaves or h in seen:
                    raise StorageError(f"leaf hash {h.hex()} is already in the dedupe index")
                if i in self._indexes:
                    raise StorageError(f"index {i} is already taken")
                seen.add(h)
            self._checkpoint = new
            self._leaves.update(leaves)
            self._indexes.update(i for _, i in leaves)
            self.commits += 1
            if fault is Fault.FAIL_AFTER:
                _raise("commit", fault)

    def close(self) -> None:
        self.unlock()


class MemoryTileStore:
    """:class:`~personality.storage.base.TileStore` in a dict (tests only)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tiles: dict[TileKey, tuple[int, bytes]] = {}
        self._faults = _Faults()
        self.writes = 0

    def inject(self, method: str, fault: Fault) -> None:
        """Make the next call of ``method`` (``put_tiles``, ``get_tile``) fail.

        ``FAIL`` on ``put_tiles`` writes the first half of the batch, then raises: a crash in the
        middle of a batch.
        """
        with self._lock:
            self._faults.inject(method, fault)

    def clear_faults(self) -> None:
        """Forget faults injected but not triggered yet."""
        with self._lock:
            self._faults.clear()

    def put_tiles(self, tiles: Mapping[TilePath, bytes]) -> None:
        with self._lock:
            fault = self._faults.take("put_tiles")
            items = list(tiles.items())
            if fault is Fault.FAIL:
                items = items[: len(items) // 2]
            for path, data in items:
                w = width_of(path.level, data)  # the memory driver also parses bundles: tests
                if w != path.width:
                    raise StorageError(f"tile value holds {w} items but its path says {path.width}")
                self._tiles[(path.level, path.index)] = (w, bytes(data))
                self.writes += 1
            if fault is not None:
                _raise("put_tiles", fault)

    def get_tile(self, path: TilePath) -> bytes:
        with self._lock:
            fault = self._faults.take("get_tile")
            if fault is not None:
                _raise("get_tile", fault)
            stored = self._tiles.get((path.level, path.index))
        if stored is None:
            raise NotFoundError(f"tile {path} is not stored")
        return prefix(path, stored[0], stored[1])

    def close(self) -> None:
        pass
