"""C2SP tlog-tiles: tile paths, hash tiles and entry bundles (https://c2sp.org/tlog-tiles).

Paths::

    tile/<L>/<N>[.p/<W>]          hash tile at level L (0..63), index N, partial width W (1..255)
    tile/entries/<N>[.p/<W>]      entry bundle

``N`` is written in 3-digit groups, all but the last prefixed with ``x``: 1234067 is
``x001/x234/067``. A tile at level ``L`` holds up to 256 hashes of perfect subtrees of height
``8 * L``; a hash tile is their concatenation, an entry bundle is a sequence of big-endian uint16
length-prefixed entries. Pure functions; parsers raise ``FormatError``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from personality.errors import FormatError, NotFoundError
from personality.tlog.merkle import HASH_SIZE, HashGetter

__all__ = [
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "MAX_ENTRY_SIZE",
    "TilePath",
    "format_tile_path",
    "parse_tile_path",
    "encode_tile_index",
    "pack_entry_bundle",
    "parse_entry_bundle",
    "parse_hash_tile",
    "build_hash_tile",
    "tiles_for_size",
    "entry_bundles_for_size",
    "tiles_between",
    "tile_hash_getter",
]

TILE_HEIGHT = 8
TILE_WIDTH = 256
MAX_ENTRY_SIZE = 65535
MAX_TILE_LEVEL = 63
MAX_TILE_INDEX = (1 << 63) // TILE_WIDTH
_LEVEL = re.compile(r"0|[1-9][0-9]?")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")
_GROUP = re.compile(r"[0-9]{3}")


@dataclass(frozen=True)
class TilePath:
    """One tile resource. ``level=None`` is an entry bundle; ``width == 256`` is a full tile.

    Construction raises ``ValueError`` for out-of-range fields (a programming error; parsers
    raise ``FormatError`` before constructing).
    """

    level: int | None
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if self.level is not None and not 0 <= self.level <= MAX_TILE_LEVEL:
            raise ValueError(f"tile level {self.level} is not in 0..{MAX_TILE_LEVEL}")
        if not 0 <= self.index <= MAX_TILE_INDEX:
            raise ValueError(f"tile index {self.index} is out of range")
        if not 1 <= self.width <= TILE_WIDTH:
            raise ValueError(f"tile width {self.width} is not in 1..{TILE_WIDTH}")

    @property
    def is_entries(self) -> bool:
        return self.level is None

    @property
    def is_full(self) -> bool:
        return self.width == TILE_WIDTH

    def full(self) -> TilePath:
        """The full tile this (partial) tile will become."""
        return TilePath(self.level, self.index, TILE_WIDTH)

    def __str__(self) -> str:
        return format_tile_path(self)


def encode_tile_index(n: int) -> str:
    """``1234067`` → ``x001/x234/067``; ``5`` → ``005``."""
    if n < 0:
        raise ValueError("tile index must be non-negative")
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


def format_tile_path(tp: TilePath) -> str:
    """``tile/0/x001/234``, ``tile/entries/000.p/7``."""
    level = "entries" if tp.level is None else str(tp.level)
    suffix = "" if tp.width == TILE_WIDTH else f".p/{tp.width}"
    return f"tile/{level}/{encode_tile_index(tp.index)}{suffix}"


def parse_tile_path(path: str) -> TilePath:
    """Parse a path as written by :func:`format_tile_path` (no leading ``/``); raises ``FormatError``.

    Strict: the level has no leading zeros and is at most 63; every index group has 3 digits,
    all but the last start with ``x``, the first group is not ``x000``; ``.p/W`` has 1 <= W <= 255
    without leading zeros.
    """
    if not isinstance(path, str) or len(path) > 200:
        raise FormatError("tile path is not a string of reasonable length")
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise FormatError(f"tile path must start with tile/<level>/ : {path!r}")
    level: int | None
    if parts[1] == "entries":
        level = None
    elif _LEVEL.fullmatch(parts[1]) and int(parts[1]) <= MAX_TILE_LEVEL:
        level = int(parts[1])
    else:
        raise FormatError(f"tile level {parts[1]!r} must be 'entries' or 0..63 without leading zeros")
    groups = parts[2:]
    width = TILE_WIDTH
    if len(groups) >= 2 and groups[-2].endswith(".p"):
        if not _WIDTH.fullmatch(groups[-1]) or int(groups[-1]) >= TILE_WIDTH:
            raise FormatError(f"partial tile width {groups[-1]!r} must be 1..255 without leading zeros")
        width = int(groups[-1])
        groups = [*groups[:-2], groups[-2][:-2]]
    index = 0
    for i, g in enumerate(groups):
        last = i == len(groups) - 1
        digits = g if last else g[1:]
        if (not last and not g.startswith("x")) or not _GROUP.fullmatch(digits):
            raise FormatError(
                f"tile index element {g!r} in {path!r} must be 3 digits, prefixed with 'x' unless last"
            )
        if i == 0 and not last and digits == "000":
            raise FormatError(f"tile index in {path!r} has a redundant leading x000 element")
        index = index * 1000 + int(digits)
    if index > MAX_TILE_INDEX:
        raise FormatError(f"tile index in {path!r} is out of range")
    return TilePath(level, index, width)


def pack_entry_bundle(entries: Sequence[bytes]) -> bytes:
    """Concatenate up to 256 entries, each prefixed with its big-endian uint16 length."""
    if len(entries) > TILE_WIDTH:
        raise FormatError(f"an entry bundle holds at most {TILE_WIDTH} entries, not {len(entries)}")
    out = bytearray()
    for i, e in enumerate(entries):
        if len(e) > MAX_ENTRY_SIZE:
            raise FormatError(f"entry {i} is {len(e)} bytes, more than {MAX_ENTRY_SIZE}")
        out += len(e).to_bytes(2, "big")
        out += e
    return bytes(out)


def parse_entry_bundle(data: bytes, count: int | None = None) -> list[bytes]:
    """Split an entry bundle; with ``count``, require exactly that many entries.

    Raises ``FormatError`` on a truncated length or entry, more than 256 entries, or (with
    ``count``) a different number of entries.
    """
    entries: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if len(entries) == TILE_WIDTH:
            raise FormatError(f"entry bundle holds more than {TILE_WIDTH} entries")
        if pos + 2 > end:
            raise FormatError(f"entry bundle is truncated in the length of entry {len(entries)}")
        n = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if pos + n > end:
            raise FormatError(f"entry bundle is truncated in entry {len(entries)} ({n} bytes announced)")
        entries.append(bytes(data[pos : pos + n]))
        pos += n
    if count is not None and len(entries) != count:
        raise FormatError(f"entry bundle holds {len(entries)} entries, expected {count}")
    return entries


def parse_hash_tile(data: bytes, width: int) -> list[bytes]:
    """Split a hash tile of ``width`` hashes; raises ``FormatError`` if its length is not 32 * width."""
    if not 1 <= width <= TILE_WIDTH:
        raise FormatError(f"tile width {width} is not in 1..{TILE_WIDTH}")
    if len(data) != width * HASH_SIZE:
        raise FormatError(f"hash tile is {len(data)} bytes, expected {width * HASH_SIZE} for width {width}")
    return [bytes(data[i : i + HASH_SIZE]) for i in range(0, len(data), HASH_SIZE)]


def build_hash_tile(tp: TilePath, get: HashGetter) -> bytes:
    """The contents of hash tile ``tp`` from stored perfect-subtree hashes."""
    if tp.level is None:
        raise ValueError("entry bundles are not hash tiles")
    level = tp.level * TILE_HEIGHT
    first = tp.index * TILE_WIDTH
    return b"".join(get(level, first + i) for i in range(tp.width))


def _tiles_at(size: int, level: int | None) -> list[TilePath]:
    count = size >> (TILE_HEIGHT * (level or 0))
    out = [TilePath(level, n) for n in range(count // TILE_WIDTH)]
    if count % TILE_WIDTH:
        out.append(TilePath(level, count // TILE_WIDTH, count % TILE_WIDTH))
    return out


def tiles_for_size(size: int) -> list[TilePath]:
    """Every hash tile (full or partial) of a tree of ``size`` leaves, level by level."""
    out: list[TilePath] = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        out.extend(_tiles_at(size, level))
        level += 1
    return out


def entry_bundles_for_size(size: int) -> list[TilePath]:
    """Every entry bundle (full or partial) of a log of ``size`` entries."""
    return _tiles_at(size, None)


def tiles_between(old_size: int, new_size: int) -> list[TilePath]:
    """Hash tiles and entry bundles of ``new_size`` that a log of ``old_size`` did not have.

    These are what a log writes when it grows from ``old_size`` to ``new_size``.
    """
    if not 0 <= old_size <= new_size:
        raise ValueError("tiles_between needs 0 <= old_size <= new_size")
    out: list[TilePath] = []
    levels: list[int | None] = [None]
    level = 0
    while new_size >> (TILE_HEIGHT * level):
        levels.append(level)
        level += 1
    for lv in levels:
        shift = TILE_HEIGHT * (lv or 0)
        old_count, new_count = old_size >> shift, new_size >> shift
        for n in range(old_count // TILE_WIDTH, -(-new_count // TILE_WIDTH)):
            width = min(TILE_WIDTH, new_count - n * TILE_WIDTH)
            old_width = min(TILE_WIDTH, max(0, old_count - n * TILE_WIDTH))
            if width != old_width:
                out.append(TilePath(lv, n, width))
    return out


def _perfect_root(hashes: list[bytes]) -> bytes:
    sha = hashlib.sha256
    while len(hashes) > 1:
        hashes = [sha(b"\x01" + hashes[i] + hashes[i + 1]).digest() for i in range(0, len(hashes), 2)]
    return hashes[0]


def tile_hash_getter(size: int, read_tile: Callable[[TilePath], bytes]) -> HashGetter:
    """A :data:`HashGetter` for the tree of ``size`` leaves that reads hash tiles.

    A hash at level ``l`` comes from the tile at level ``l // 8``; levels between tile levels are
    recomputed by hashing. Tiles are requested with the width they have at ``size`` and cached
    for the life of the getter (keep getters short-lived). Raises ``NotFoundError`` for a subtree
    not complete at ``size``; ``FormatError`` for a tile of the wrong length; whatever
    ``read_tile`` raises otherwise.
    """
    cache: dict[TilePath, list[bytes]] = {}

    def get(level: int, index: int) -> bytes:
        if not 0 <= level <= MAX_TILE_LEVEL or index < 0:
            raise NotFoundError(f"no subtree at level {level}, index {index}")
        tile_level, height = divmod(level, TILE_HEIGHT)
        count = size >> (TILE_HEIGHT * tile_level)
        first = index << height
        last = (index + 1) << height
        if last > count:
            raise NotFoundError(f"subtree ({level}, {index}) is not complete in a tree of size {size}")
        n, offset = divmod(first, TILE_WIDTH)
        tp = TilePath(tile_level, n, min(TILE_WIDTH, count - n * TILE_WIDTH))
        hashes = cache.get(tp)
        if hashes is None:
            hashes = parse_hash_tile(read_tile(tp), tp.width)
            cache[tp] = hashes
        return _perfect_root(hashes[offset : offset + (1 << height)])

    return get
