"""C2SP tlog-tiles: paths, bundles, hash tiles, the tile-backed hash getter."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from personality.errors import FormatError, NotFoundError
from personality.tlog.merkle import (
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from personality.tlog.tiles import (
    TilePath,
    build_hash_tile,
    encode_tile_index,
    entry_bundles_for_size,
    format_tile_path,
    pack_entry_bundle,
    parse_entry_bundle,
    parse_hash_tile,
    parse_tile_path,
    tile_hash_getter,
    tiles_between,
    tiles_for_size,
)

TESSERA = Path(__file__).parents[1].parent / "shared" / "testvectors" / "tessera-log"


def test_index_encoding() -> None:
    assert encode_tile_index(0) == "000"
    assert encode_tile_index(5) == "005"
    assert encode_tile_index(1000) == "x001/000"
    assert encode_tile_index(1234067) == "x001/x234/067"
    assert format_tile_path(TilePath(0, 1234)) == "tile/0/x001/234"
    assert format_tile_path(TilePath(None, 0, 7)) == "tile/entries/000.p/7"
    assert format_tile_path(TilePath(63, 1234067, 255)) == "tile/63/x001/x234/067.p/255"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tile/0/000.p/256", "1..255"),
        ("tile/0/000.p/0", "1..255"),
        ("tile/0/000.p/07", "1..255"),
        ("tile/0/000.p/", "1..255"),
        ("tile/0/001/234", "prefixed with 'x'"),
        ("tile/0/x001/x234", "prefixed with 'x'"),
        ("tile/0/1", "3 digits"),
        ("tile/0/0001", "3 digits"),
        ("tile/0/x000/001", "redundant"),
        ("tile/00/000", "leading zeros"),
        ("tile/64/000", "0..63"),
        ("tile/-1/000", "0..63"),
        ("tile/entry/000", "0..63"),
        ("/tile/0/000", "must start"),
        ("tiles/0/000", "must start"),
        ("tile/0", "must start"),
        ("tile/0/000/", "3 digits"),
        ("tile/0/x0a1/000", "3 digits"),
        ("tile/0/" + "x999/" * 7 + "999", "out of range"),
    ],
)
def test_bad_paths(path: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_tile_path(path)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.integers(0, 63)), st.integers(0, (1 << 55)), st.integers(1, 256))
def test_path_round_trip(level: int | None, index: int, width: int) -> None:
    tp = TilePath(level, index, width)
    assert parse_tile_path(format_tile_path(tp)) == tp


def test_tile_path_validation() -> None:
    for args in [(64, 0, 1), (0, -1, 1), (0, 0, 0), (0, 0, 257)]:
        with pytest.raises(ValueError):
            TilePath(*args)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=256))
def test_bundle_round_trip(entries: list[bytes]) -> None:
    data = pack_entry_bundle(entries)
    assert parse_entry_bundle(data) == entries
    assert parse_entry_bundle(data, len(entries)) == entries


def test_bundle_errors() -> None:
    with pytest.raises(FormatError, match="truncated in the length"):
        parse_entry_bundle(b"\x00\x01a\x00")
    with pytest.raises(FormatError, match="truncated in entry 1"):
        parse_entry_bundle(b"\x00\x01a\x00\x05abc")
    with pytest.raises(FormatError, match="expected 3"):
        parse_entry_bundle(pack_entry_bundle([b"a", b"b"]), 3)
    with pytest.raises(FormatError, match="more than 256"):
        parse_entry_bundle(b"\x00\x00" * 257)
    with pytest.raises(FormatError, match="more than 65535"):
        pack_entry_bundle([b"x" * 65536])
    with pytest.raises(FormatError, match="at most 256"):
        pack_entry_bundle([b""] * 257)
    assert parse_entry_bundle(pack_entry_bundle([b"x" * 65535])) == [b"x" * 65535]


def test_hash_tile_errors() -> None:
    assert parse_hash_tile(b"\x01" * 64, 2) == [b"\x01" * 32] * 2
    with pytest.raises(FormatError, match="expected 64"):
        parse_hash_tile(b"\x01" * 65, 2)
    with pytest.raises(FormatError, match="1..256"):
        parse_hash_tile(b"", 0)


def test_tiles_for_size() -> None:
    assert tiles_for_size(0) == []
    assert tiles_for_size(256) == [TilePath(0, 0), TilePath(1, 0, 1)]
    # The spec's example: 70,000 leaves.
    t = tiles_for_size(70000)
    assert sum(1 for p in t if p.level == 0 and p.is_full) == 273
    assert [p for p in t if not p.is_full] == [TilePath(0, 273, 112), TilePath(1, 1, 17), TilePath(2, 0, 1)]
    assert [p for p in t if p.level == 1 and p.is_full] == [TilePath(1, 0)]
    assert entry_bundles_for_size(300) == [TilePath(None, 0), TilePath(None, 1, 44)]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 70000), st.integers(0, 70000))
def test_tiles_between(a: int, b: int) -> None:
    old, new = min(a, b), max(a, b)
    expected = set(tiles_for_size(new) + entry_bundles_for_size(new)) - set(
        tiles_for_size(old) + entry_bundles_for_size(old))
    got = tiles_between(old, new)
    assert len(got) == len(set(got))
    assert set(got) == expected


def _stored_tree(n: int) -> dict[tuple[int, int], bytes]:
    cr = CompactRange()
    stored: dict[tuple[int, int], bytes] = {}
    for lv, idx, h in cr.extend(leaf_hash(i.to_bytes(4, "big")) for i in range(n)):
        stored[(lv, idx)] = h
    return stored


def test_tile_getter_matches_stored_hashes() -> None:
    n = 256 * 256 + 3 * 256 + 77
    stored = _stored_tree(n)

    def get(level: int, index: int) -> bytes:
        try:
            return stored[(level, index)]
        except KeyError:
            raise NotFoundError("no such hash") from None

    tiles = {tp: build_hash_tile(tp, get) for tp in tiles_for_size(n)}
    reads: list[TilePath] = []

    def read(tp: TilePath) -> bytes:
        reads.append(tp)
        return tiles[tp]

    tget = tile_hash_getter(n, read)
    for key in [(0, 0), (0, n - 1), (3, 5), (7, 0), (8, 0), (8, 256), (9, 1), (16, 0), (12, 15), (11, 31)]:
        assert tget(*key) == stored[key]
    with pytest.raises(NotFoundError):
        tget(0, n)
    with pytest.raises(NotFoundError):
        tget(17, 0)
    assert len(reads) == len(set(reads))  # cached
    leaves = [stored[(0, i)] for i in range(n)]
    root = root_from_leaf_hashes(leaves)
    for i in [0, 1, 255, 256, 65535, 65536, n - 1]:
        verify_inclusion(i, n, leaves[i], inclusion_proof(i, n, tget), root)
    small = n - 1000
    old_root = root_from_leaf_hashes(leaves[:small])
    verify_consistency(small, n, old_root, root, consistency_proof(small, n, tget))


def test_tile_getter_rejects_wrong_length() -> None:
    get = tile_hash_getter(5, lambda tp: b"\x00" * 32 * 4)
    with pytest.raises(FormatError, match="expected 160"):
        get(0, 0)


def test_tessera_tiles() -> None:
    bundle = parse_entry_bundle((TESSERA / "tile/entries/000.p/15").read_bytes(), 15)
    assert bundle[0] == b"one" and bundle[-1] == b"fivten"
    hashes = parse_hash_tile((TESSERA / "tile/0/000.p/15").read_bytes(), 15)
    assert hashes == [leaf_hash(e) for e in bundle]
    for f in (TESSERA / "tile").rglob("*"):
        if f.is_file():
            tp = parse_tile_path(f.relative_to(TESSERA).as_posix())
            assert format_tile_path(tp) == f.relative_to(TESSERA).as_posix()
