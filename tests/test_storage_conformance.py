"""One conformance suite for every storage driver (memory, SQLite): the contracts in storage.base."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from personality.errors import ConflictError, NotFoundError, StorageError
from personality.storage.base import SequencingStore, TileStore
from personality.storage.memory import Fault, MemorySequencingStore, MemoryTileStore
from personality.storage.sqlite import SQLiteSequencingStore, SQLiteTileStore, open_sqlite
from personality.tlog.merkle import leaf_hash
from personality.tlog.tiles import TilePath, pack_entry_bundle

DRIVERS = ["memory", "sqlite"]


@pytest.fixture(params=DRIVERS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SequencingStore, TileStore]]:
    seq: SequencingStore
    tiles: TileStore
    if request.param == "memory":
        seq, tiles = MemorySequencingStore(), MemoryTileStore()
    else:
        seq, tiles = open_sqlite(tmp_path / "log.db")
    yield seq, tiles
    seq.close()
    tiles.close()


def _hashes(n: int, start: int = 0) -> list[bytes]:
    return [leaf_hash(str(i).encode()) for i in range(start, start + n)]


def test_drivers_implement_the_protocols(stores: tuple[SequencingStore, TileStore]) -> None:
    seq, tiles = stores
    assert isinstance(seq, SequencingStore)
    assert isinstance(tiles, TileStore)


def test_new_store_has_no_checkpoint_and_no_leaves(stores: tuple[SequencingStore, TileStore]) -> None:
    seq, _ = stores
    assert seq.checkpoint() is None
    assert seq.lookup(_hashes(3)) == {}
    assert seq.lookup([]) == {}


def test_commit_stores_checkpoint_and_dedupe_rows(stores: tuple[SequencingStore, TileStore]) -> None:
    seq, _ = stores
    hs = _hashes(1200)  # more than one lookup chunk
    seq.commit(None, b"cp-0", [])
    seq.commit(b"cp-0", b"cp-1", [(h, i) for i, h in enumerate(hs)])
    assert seq.checkpoint() == b"cp-1"
    found = seq.lookup(hs + _hashes(5, start=5000))
    assert found == {h: i for i, h in enumerate(hs)}


def test_compare_and_swap_refuses_a_stale_old_checkpoint(stores: tuple[SequencingStore, TileStore]) -> None:
    seq, _ = stores
    seq.commit(None, b"cp-a", [])
    with pytest.raises(ConflictError):
        seq.commit(None, b"cp-b", [(leaf_hash(b"x"), 0)])
    with pytest.raises(ConflictError):
        seq.commit(b"cp-other", b"cp-b", [(leaf_hash(b"x"), 0)])
    # Nothing of the losing commits is visible.
    assert seq.checkpoint() == b"cp-a"
    assert seq.lookup([leaf_hash(b"x")]) == {}


def test_taken_index_aborts_the_whole_commit(stores: tuple[SequencingStore, TileStore]) -> None:
    seq, _ = stores
    h = leaf_hash(b"x")
    seq.commit(None, b"cp-1", [(h, 0)])
    with pytest.raises(StorageError):
        seq.commit(b"cp-1", b"cp-2", [(leaf_hash(b"y"), 1), (leaf_hash(b"z"), 0)])
    assert seq.checkpoint() == b"cp-1"
    assert seq.lookup([leaf_hash(b"y"), leaf_hash(b"z"), h]) == {h: 0}


def test_lock_sequencer_excludes_a_second_sequencer(tmp_path: Path) -> None:
    a = MemorySequencingStore()
    a.lock_sequencer()
    with pytest.raises(ConflictError):
        a.lock_sequencer()
    s1, _ = open_sqlite(tmp_path / "log.db")
    s2, _ = open_sqlite(tmp_path / "log.db")
    s1.lock_sequencer()
    with pytest.raises(ConflictError, match="already sequencing"):
        s2.lock_sequencer()
    s1.close()
    s2.lock_sequencer()
    s2.close()


@pytest.mark.parametrize("merge_every", [1, 7, 1000])
def test_sqlite_dedupe_index_across_merges_and_reopen(tmp_path: Path, merge_every: int) -> None:
    seq, _ = open_sqlite(tmp_path / "log.db", merge_every=merge_every)
    reader, _ = open_sqlite(tmp_path / "log.db")  # another process's view of the same file
    hs = _hashes(300)
    cp = None
    for start in range(0, 300, 37):
        batch = [(h, start + i) for i, h in enumerate(hs[start : start + 37])]
        new = f"cp-{start}".encode()
        seq.commit(cp, new, batch)
        cp = new
        assert seq.lookup(hs[: start + 37] + _hashes(3, start=900)) == {
            h: i for i, h in enumerate(hs[: start + 37])
        }
        assert reader.lookup(hs[start : start + 37]) == dict(batch)
    seq.close()
    again, _ = open_sqlite(tmp_path / "log.db", merge_every=merge_every)
    assert again.lookup(hs) == {h: i for i, h in enumerate(hs)}
    again.close()
    reader.close()


def test_sqlite_dedupe_prefix_collisions(tmp_path: Path) -> None:
    # Leaf hashes that share their first 8 bytes but differ after: kept apart by the overflow.
    base = leaf_hash(b"collide")
    hs = [base[:8] + bytes([i]) * 24 for i in range(5)]
    seq, _ = open_sqlite(tmp_path / "log.db", merge_every=2)
    seq.commit(None, b"a", [(hs[0], 0), (hs[1], 1)])
    seq.commit(b"a", b"b", [(hs[2], 2), (hs[3], 3)])
    assert seq.lookup(hs) == {hs[0]: 0, hs[1]: 1, hs[2]: 2, hs[3]: 3}
    seq.close()
    again, _ = open_sqlite(tmp_path / "log.db")
    assert again.lookup(hs) == {hs[0]: 0, hs[1]: 1, hs[2]: 2, hs[3]: 3}
    again.close()


def test_concurrent_commits_from_the_same_checkpoint_one_wins(
    stores: tuple[SequencingStore, TileStore],
) -> None:
    seq, _ = stores
    seq.commit(None, b"base", [])
    results: list[str] = []

    def attempt(i: int) -> None:
        try:
            seq.commit(b"base", f"cp-{i}".encode(), [(leaf_hash(f"e{i}".encode()), 0)])
            results.append("won")
        except ConflictError:
            results.append("lost")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["lost"] * 7 + ["won"]
    winner = seq.checkpoint()
    assert winner is not None
    i = int(winner.decode().split("-")[1])
    assert seq.lookup([leaf_hash(f"e{j}".encode()) for j in range(8)]) == {leaf_hash(f"e{i}".encode()): 0}


def test_tiles_round_trip_and_prefixes(stores: tuple[SequencingStore, TileStore]) -> None:
    _, tiles = stores
    hashes = _hashes(256)
    entries = [bytes([i]) * i for i in range(256)]
    tiles.put_tiles(
        {
            TilePath(0, 0): b"".join(hashes),
            TilePath(None, 0): pack_entry_bundle(entries),
            TilePath(1, 0, 3): b"".join(hashes[:3]),
        }
    )
    assert tiles.get_tile(TilePath(0, 0)) == b"".join(hashes)
    assert tiles.get_tile(TilePath(0, 0, 17)) == b"".join(hashes[:17])
    assert tiles.get_tile(TilePath(None, 0)) == pack_entry_bundle(entries)
    assert tiles.get_tile(TilePath(None, 0, 9)) == pack_entry_bundle(entries[:9])
    assert tiles.get_tile(TilePath(1, 0, 2)) == b"".join(hashes[:2])
    with pytest.raises(NotFoundError):
        tiles.get_tile(TilePath(1, 0, 4))  # narrower than asked
    with pytest.raises(NotFoundError):
        tiles.get_tile(TilePath(1, 0))
    with pytest.raises(NotFoundError):
        tiles.get_tile(TilePath(0, 1))
    with pytest.raises(NotFoundError):
        tiles.get_tile(TilePath(None, 5, 1))


def test_later_put_replaces_the_stored_value(stores: tuple[SequencingStore, TileStore]) -> None:
    _, tiles = stores
    a, b = _hashes(10), _hashes(10, start=100)
    tiles.put_tiles({TilePath(0, 7, 10): b"".join(a)})
    tiles.put_tiles({TilePath(0, 7, 4): b"".join(b[:4])})  # a crash orphan overwritten by a shorter tile
    assert tiles.get_tile(TilePath(0, 7, 4)) == b"".join(b[:4])
    with pytest.raises(NotFoundError):
        tiles.get_tile(TilePath(0, 7, 5))


def test_hash_tile_length_must_match_its_path_width(stores: tuple[SequencingStore, TileStore]) -> None:
    _, tiles = stores
    with pytest.raises(StorageError):
        tiles.put_tiles({TilePath(0, 0, 3): b"\x00" * 64})
    with pytest.raises(StorageError):
        tiles.put_tiles({TilePath(1, 0): b"\x00" * 32 * 255})


def test_tiles_become_visible_to_other_threads_with_the_commit(
    stores: tuple[SequencingStore, TileStore],
) -> None:
    seq, tiles = stores
    seen: list[bytes] = []
    tiles.put_tiles({TilePath(None, 0, 1): pack_entry_bundle([b"one"])})
    seq.commit(None, b"cp", [(leaf_hash(b"one"), 0)])
    t = threading.Thread(target=lambda: seen.append(tiles.get_tile(TilePath(None, 0, 1))))
    t.start()
    t.join()
    assert seen == [pack_entry_bundle([b"one"])]


def test_sqlite_state_survives_reopening(tmp_path: Path) -> None:
    seq, tiles = open_sqlite(tmp_path / "log.db")
    tiles.put_tiles({TilePath(None, 0, 1): pack_entry_bundle([b"hello"])})
    seq.commit(None, b"cp", [(leaf_hash(b"hello"), 0)])
    seq.close()
    tiles.close()
    seq2, tiles2 = SQLiteSequencingStore(tmp_path / "log.db"), SQLiteTileStore(tmp_path / "log.db")
    assert seq2.checkpoint() == b"cp"
    assert seq2.lookup([leaf_hash(b"hello")]) == {leaf_hash(b"hello"): 0}
    assert tiles2.get_tile(TilePath(None, 0, 1)) == pack_entry_bundle([b"hello"])
    seq2.close()
    tiles2.close()
    with pytest.raises(StorageError):
        seq2.checkpoint()


def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "log.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError):
        SQLiteSequencingStore(bad)


def test_memory_fault_fail_persists_nothing() -> None:
    seq = MemorySequencingStore()
    seq.inject("commit", Fault.FAIL)
    with pytest.raises(StorageError):
        seq.commit(None, b"cp", [(leaf_hash(b"a"), 0)])
    assert seq.checkpoint() is None
    assert seq.lookup([leaf_hash(b"a")]) == {}


def test_memory_fault_fail_after_persists() -> None:
    seq = MemorySequencingStore()
    seq.inject("commit", Fault.FAIL_AFTER)
    with pytest.raises(StorageError):
        seq.commit(None, b"cp", [(leaf_hash(b"a"), 0)])
    assert seq.checkpoint() == b"cp"
    assert seq.lookup([leaf_hash(b"a")]) == {leaf_hash(b"a"): 0}


def test_memory_tile_fault_writes_part_of_the_batch() -> None:
    tiles = MemoryTileStore()
    tiles.inject("put_tiles", Fault.FAIL)
    batch = {TilePath(0, i, 1): leaf_hash(bytes([i])) for i in range(4)}
    with pytest.raises(StorageError):
        tiles.put_tiles(batch)
    stored = 0
    for tp in batch:
        try:
            tiles.get_tile(tp)
            stored += 1
        except NotFoundError:
            pass
    assert stored == 2
