"""Width arithmetic on stored tile values, shared by the drivers (pure, no I/O)."""

from __future__ import annotations

from personality.errors import NotFoundError, StorageError
from personality.tlog.tiles import TilePath

HASH_SIZE = 32


def width_of(level: int | None, data: bytes) -> int:
    """How many hashes (or entries) a stored tile value holds; :class:`StorageError` if malformed."""
    if level is not None:
        if len(data) % HASH_SIZE:
            raise StorageError(f"stored hash tile at level {level} is {len(data)} bytes, not whole hashes")
        return len(data) // HASH_SIZE
    n = pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise StorageError("stored entry bundle ends inside a length prefix")
        pos += 2 + int.from_bytes(data[pos : pos + 2], "big")
        n += 1
    if pos != len(data):
        raise StorageError("stored entry bundle ends inside an entry")
    return n


def prefix(path: TilePath, stored_width: int, data: bytes) -> bytes:
    """The first ``path.width`` items of a stored tile value of ``stored_width`` items.

    Raises :class:`NotFoundError` if the stored value is narrower than asked.
    """
    want = path.width
    if stored_width < want:
        raise NotFoundError(f"tile {_describe(path)} is not stored at width {want} (have {stored_width})")
    if stored_width == want:
        return data
    if path.level is not None:
        return data[: want * HASH_SIZE]
    pos = 0
    for _ in range(want):
        pos += 2 + int.from_bytes(data[pos : pos + 2], "big")
    return data[:pos]


def _describe(path: TilePath) -> str:
    kind = "entries" if path.level is None else f"level {path.level}"
    return f"{kind} #{path.index}"
