"""The log core: integration, dedupe, proofs, fault injection, reload; every step re-verified."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from personality.errors import (
    ConflictError,
    NotFoundError,
    OverloadedError,
    RefusedError,
    StorageError,
    VerificationError,
)
from personality.log import AcceptAny, Log, Sequencer
from personality.storage.base import SequencingStore, TileStore
from personality.storage.memory import Fault, MemorySequencingStore, MemoryTileStore
from personality.storage.sqlite import open_sqlite
from personality.storage.tree import FullTileCache, TreeState
from personality.tlog import merkle
from personality.tlog.checkpoint import open_checkpoint
from personality.tlog.note import Signer, generate_signer
from personality.tlog.tiles import (
    TilePath,
    entry_bundles_for_size,
    parse_entry_bundle,
    tile_hash_getter,
    tiles_for_size,
)

ORIGIN = "example.com/test-log"


@pytest.fixture
def signer() -> Signer:
    return generate_signer(ORIGIN)


def check_log(seq: SequencingStore, tiles: TileStore, signer: Signer, expected: list[bytes]) -> None:
    """Re-verify everything from storage alone: the checkpoint's signature, every entry bundle, the
    root rebuilt from the entries, every hash tile, and the dedupe index."""
    raw = seq.checkpoint()
    assert raw is not None
    cp = open_checkpoint(raw, ORIGIN, [signer.verifier()])
    assert cp.size == len(expected)
    entries: list[bytes] = []
    for tp in entry_bundles_for_size(cp.size):
        entries.extend(parse_entry_bundle(tiles.get_tile(tp), tp.width))
    assert entries == expected
    hashes = [merkle.leaf_hash(e) for e in entries]
    assert merkle.root_from_leaf_hashes(hashes) == cp.root
    # Every hash tile is what the leaves say it is.
    getter = tile_hash_getter(cp.size, tiles.get_tile)
    for tp in tiles_for_size(cp.size):
        assert tp.level is not None
        span = 1 << (8 * tp.level)
        for i in range(tp.width):
            start = (tp.index * 256 + i) * span
            assert getter(8 * tp.level, tp.index * 256 + i) == merkle.root_from_leaf_hashes(
                hashes[start : start + span]
            )
    assert seq.lookup(hashes) == {h: i for i, h in enumerate(hashes)}
    # A fresh sequencer loads exactly this state (a reader: it does not take the lock).
    st = TreeState.load(cp.size, raw, tiles, FullTileCache(tiles))
    assert (st.size, st.root) == (cp.size, cp.root)


def _integrate(s: Sequencer, entries: list[bytes]) -> list[tuple[int, bool]]:
    results, _ = s.integrate(entries, [merkle.leaf_hash(e) for e in entries])
    return results


def test_batches_across_tile_boundaries_verify_after_every_step(signer: Signer) -> None:
    seq, tiles = MemorySequencingStore(), MemoryTileStore()
    s = Sequencer(seq, tiles, signer)
    s.load()
    check_log(seq, tiles, signer, [])
    logged: list[bytes] = []
    rng = random.Random(7)
    for step in range(30):
        batch = [f"entry-{step}-{i}".encode() for i in range(rng.choice([1, 2, 255, 256, 257, 600]))]
        results = _integrate(s, batch)
        assert results == [(len(logged) + i, False) for i in range(len(batch))]
        logged += batch
        if step % 5 == 4:
            check_log(seq, tiles, signer, logged)
    check_log(seq, tiles, signer, logged)
    assert len(logged) > 256 * 2


def test_level_one_tiles_complete(signer: Signer) -> None:
    seq, tiles = MemorySequencingStore(), MemoryTileStore()
    s = Sequencer(seq, tiles, signer)
    s.load()
    logged = [i.to_bytes(4, "big") for i in range(256 * 256 + 3)]
    for i in range(0, len(logged), 4096):
        _integrate(s, logged[i : i + 4096])
    assert tiles.get_tile(TilePath(1, 0)) == b"".join(
        merkle.root_from_leaf_hashes([merkle.leaf_hash(e) for e in logged[j * 256 : (j + 1) * 256]])
        for j in range(256)
    )
    assert s.state.size == len(logged)
    assert s.state.root == merkle.root_from_leaf_hashes([merkle.leaf_hash(e) for e in logged])


def test_proofs_verify_for_every_size_and_index(signer: Signer) -> None:
    seq, tiles = MemorySequencingStore(), MemoryTileStore()
    s = Sequencer(seq, tiles, signer)
    s.load()
    entries = [f"e{i}".encode() for i in range(600)]
    for i in range(0, 600, 97):
        _integrate(s, entries[i : i + 97])
    hashes = [merkle.leaf_hash(e) for e in entries]
    roots = {n: merkle.root_from_leaf_hashes(hashes[:n]) for n in range(601)}
    rng = random.Random(3)
    for _ in range(400):
        n = rng.randint(1, 600)
        i = rng.randrange(n)
        merkle.verify_inclusion(i, n, hashes[i], s.inclusion_proof(i, n), roots[n])
        m = rng.randint(0, n)
        merkle.verify_consistency(m, n, roots[m], roots[n], s.consistency_proof(m, n))
    with pytest.raises(NotFoundError):
        s.inclusion_proof(0, 601)
    with pytest.raises(NotFoundError):
        s.inclusion_proof(5, 5)
    with pytest.raises(NotFoundError):
        s.consistency_proof(10, 601)
    with pytest.raises(NotFoundError):
        s.consistency_proof(11, 10)


def test_dedupe_within_a_batch_and_across_batches(signer: Signer) -> None:
    seq, tiles = MemorySequencingStore(), MemoryTileStore()
    s = Sequencer(seq, tiles, signer)
    s.load()
    assert _integrate(s, [b"a", b"b", b"a"]) == [(0, False), (1, False), (0, True)]
    assert _integrate(s, [b"b", b"c"]) == [(1, True), (2, False)]
    commits = seq.commits
    assert _integrate(s, [b"c", b"a"]) == [(2, True), (0, True)]
    assert seq.commits == commits  # nothing new: no commit, no new checkpoint
    check_log(seq, tiles, signer, [b"a", b"b", b"c"])


@pytest.mark.parametrize(
    ("store", "method", "fault"),
    [
        ("tiles", "put_tiles", Fault.FAIL),
        ("tiles", "put_tiles", Fault.FAIL_AFTER),
        ("seq", "commit", Fault.FAIL),
        ("seq", "lookup", Fault.FAIL),
    ],
)
def test_a_failed_batch_changes_nothing_and_the_log_recovers(
    signer: Signer, store: str, method: str, fault: Fault
) -> None:
    seq, tiles = MemorySequencingStore(), MemoryTileStore()
    s = Sequencer(seq, tiles, signer)
    s.load()
    logged = [f"x{i}".encode() for i in range(300)]
    _integrate(s, logged)
    before = s.state
    (tiles if store == "tiles" else seq).inject(method, fault)  # type: ignore[attr-defined]
    with pytest.raises(StorageError):
        _integrate(s, [b"lost-1", b"lost-2"])
    assert s.state is before
    check_log(seq, tiles, signer, logged)
    # The next batch is integrated normally; the lost entries can be resubmitted.
    assert _integrate(s, [b"lost-2", b"new"]) == [(300, False), (301, False)]
    check_log(seq, tiles, signer, [*logged, b"lost-2", b"new"])


def test_commit_that_fails_but_persists_is_acknowledged(signer: Signer) -> None:
    seq, tiles = MemorySequencingStore(), MemoryTileStore()
    s = Sequencer(seq, tiles, signer)
    s.load()
    seq.inject("commit", Fault.FAIL_AFTER)
    assert _integrate(s, [b"a", b"b"]) == [(0, False), (1, False)]
    check_log(seq, tiles, signer, [b"a", b"b"])


def test_unknown_commit_outcome_reloads_and_resubmission_dedupes(signer: Signer) -> None:
    seq, tiles = MemorySequencingStore(), MemoryTileStore()
    s = Sequencer(seq, tiles, signer)
    s.load()
    seq.inject("commit", Fault.FAIL_AFTER)
    seq.inject("checkpoint", Fault.FAIL)  # the read-back fails too: outcome unknown
    with pytest.raises(StorageError, match="outcome is unknown"):
        _integrate(s, [b"a", b"b"])
    # It did persist: resubmitting gets the existing indexes, no second leaf.
    assert _integrate(s, [b"b", b"a", b"c"]) == [(1, True), (0, True), (2, False)]
    check_log(seq, tiles, signer, [b"a", b"b", b"c"])


def test_a_second_sequencer_cannot_start(signer: Signer, tmp_path: Path) -> None:
    seq, tiles = open_sqlite(tmp_path / "log.db")
    Sequencer(seq, tiles, signer).load()
    seq2, tiles2 = open_sqlite(tmp_path / "log.db")
    with pytest.raises(ConflictError, match="already sequencing"):
        Sequencer(seq2, tiles2, signer).load()
    seq.close()
    Sequencer(seq2, tiles2, signer).load()  # the lock went with the first store
    seq2.close()


def test_a_stale_sequencer_loses_the_compare_and_swap(signer: Signer) -> None:
    seq, tiles = MemorySequencingStore(), MemoryTileStore()
    s1, s2 = Sequencer(seq, tiles, signer), Sequencer(seq, tiles, signer)
    s1.load()
    seq.unlock()  # a lock that failed to exclude (the CAS is the safety net)
    s2.load()
    _integrate(s1, [b"one"])
    cp_one = seq.checkpoint()
    with pytest.raises(ConflictError):
        _integrate(s2, [b"two"])
    # The stale sequencer signed a checkpoint for size 1 too, but the CAS kept it from being
    # stored: there is still exactly one checkpoint of size 1. (Its tiles, written before the
    # commit, did overwrite the edge: that is why load() takes the sequencer lock.)
    assert seq.checkpoint() == cp_one


def test_wrong_key_refuses_to_load(signer: Signer) -> None:
    seq, tiles = MemorySequencingStore(), MemoryTileStore()
    Sequencer(seq, tiles, signer).load()
    seq.unlock()
    with pytest.raises(VerificationError, match="does not belong to this log"):
        Sequencer(seq, tiles, generate_signer(ORIGIN)).load()


def test_sqlite_log_reopens_with_the_same_state(signer: Signer, tmp_path: Path) -> None:
    seq, tiles = open_sqlite(tmp_path / "log.db")
    s = Sequencer(seq, tiles, signer)
    s.load()
    entries = [f"s{i}".encode() for i in range(1000)]
    for i in range(0, 1000, 333):
        _integrate(s, entries[i : i + 333])
    seq.close()
    tiles.close()
    seq, tiles = open_sqlite(tmp_path / "log.db")
    check_log(seq, tiles, signer, entries)
    seq.close()


# -- the asyncio Log -----------------------------------------------------------------------------


class _GatedTiles(MemoryTileStore):
    """A tile store whose writes wait for a gate: holds the integrator inside a batch."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()

    def put_tiles(self, tiles: Mapping[TilePath, bytes]) -> None:
        self.gate.wait(10)
        super().put_tiles(tiles)


class _RefuseB:
    def check(self, entry: bytes) -> None:
        if entry.startswith(b"b"):
            raise RefusedError("entries starting with b are not allowed here")


def test_log_add_returns_verifiable_bundle_and_dedupes(signer: Signer) -> None:
    async def main() -> None:
        log = Log(MemorySequencingStore(), MemoryTileStore(), signer, admission=AcceptAny())
        await log.start()
        results = await asyncio.gather(*(log.add(f"c{i}".encode()) for i in range(50)))
        assert sorted(r.index for r in results) == list(range(50))
        for r in results:
            assert r.checkpoint is not None and r.size is not None and r.proof is not None
            cp = open_checkpoint(r.checkpoint, ORIGIN, [signer.verifier()])
            merkle.verify_inclusion(r.index, r.size, r.leaf_hash, r.proof, cp.root)
        again = await log.add(b"c7")
        assert again.duplicate and again.index == results[7].index
        assert log.index_of(merkle.leaf_hash(b"c7")) == results[7].index
        with pytest.raises(NotFoundError):
            log.index_of(merkle.leaf_hash(b"never added"))
        quick = await log.add(b"quick", wait=False)
        assert quick.checkpoint is None and quick.index == 50
        await log.close()

    asyncio.run(main())


def test_log_concurrent_identical_adds_share_one_leaf(signer: Signer) -> None:
    async def main() -> None:
        log = Log(MemorySequencingStore(), MemoryTileStore(), signer)
        await log.start()
        results = await asyncio.gather(*(log.add(b"same") for _ in range(10)))
        assert {r.index for r in results} == {0}
        assert sum(not r.duplicate for r in results) == 1
        assert log.size == 1
        await log.close()

    asyncio.run(main())


def test_log_admission_refuses(signer: Signer) -> None:
    async def main() -> None:
        log = Log(MemorySequencingStore(), MemoryTileStore(), signer, admission=_RefuseB())
        await log.start()
        with pytest.raises(RefusedError):
            await log.add(b"bad")
        assert (await log.add(b"good")).index == 0
        assert "gk_log_refused_total 1" in log.metrics.render()
        await log.close()

    asyncio.run(main())


def test_log_overload_is_explicit(signer: Signer) -> None:
    async def main() -> None:
        tiles = _GatedTiles()
        log = Log(MemorySequencingStore(), tiles, signer, max_pending=3)
        await log.start()
        tiles.gate.clear()
        first = asyncio.create_task(log.add(b"in-flight"))
        await asyncio.sleep(0.05)  # the integrator is now blocked inside the first batch
        queued = [asyncio.create_task(log.add(f"q{i}".encode())) for i in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(OverloadedError) as exc:
            await log.add(b"one too many")
        assert exc.value.retry_after >= 1
        tiles.gate.set()
        done = await asyncio.gather(first, *queued)
        assert sorted(r.index for r in done) == [0, 1, 2, 3]
        assert "gk_log_overloaded_total 1" in log.metrics.render()
        await log.close()

    asyncio.run(main())


def test_log_failed_batch_reaches_every_waiter_and_log_continues(signer: Signer) -> None:
    async def main() -> None:
        seq = MemorySequencingStore()
        log = Log(seq, MemoryTileStore(), signer)
        await log.start()
        seq.inject("commit", Fault.FAIL)
        with pytest.raises(StorageError):
            await log.add(b"doomed")
        assert log.size == 0
        r = await log.add(b"doomed")
        assert (r.index, r.duplicate) == (0, False)
        await log.close()

    asyncio.run(main())


def test_every_checkpoint_is_byte_identical_to_the_strict_formatter(signer: Signer) -> None:
    from personality.tlog.checkpoint import Checkpoint, sign_checkpoint

    seq, tiles = MemorySequencingStore(), MemoryTileStore()
    s = Sequencer(seq, tiles, signer)
    s.load()
    for i in range(3):  # the first signature takes the strict path, later ones the fast path
        _integrate(s, [f"x{i}".encode()])
        st = s.state
        assert seq.checkpoint() == st.checkpoint
        assert st.checkpoint == sign_checkpoint(Checkpoint(ORIGIN, st.size, st.root), [signer])


_STEP = st.tuples(
    st.integers(min_value=0, max_value=300),  # new entries in the batch
    st.integers(min_value=0, max_value=5),  # resubmissions of logged entries
    st.sampled_from(
        [None, "put_tiles/fail", "put_tiles/fail-after", "commit/fail", "commit/fail-after", "lookup/fail"]
    ),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(_STEP, min_size=1, max_size=8), seed=st.integers(0, 2**32 - 1))
def test_any_sequence_of_batches_and_faults_keeps_the_log_verifiable(
    steps: list[tuple[int, int, str | None]], seed: int
) -> None:
    signer = generate_signer(ORIGIN)
    seq, tiles = MemorySequencingStore(), MemoryTileStore()
    s = Sequencer(seq, tiles, signer)
    s.load()
    rng = random.Random(seed)
    logged: list[bytes] = []
    counter = 0
    for new, again, fault in steps:
        fresh = [f"p{counter + i}".encode() for i in range(new)]
        counter += new
        batch = fresh + [rng.choice(logged) for _ in range(again if logged else 0)]
        rng.shuffle(batch)
        if fault is not None:
            method, kind = fault.split("/")
            (tiles if method == "put_tiles" else seq).inject(method, Fault(kind))  # type: ignore[attr-defined]
        try:
            results: list[tuple[int, bool]] | None = _integrate(s, batch)
        except StorageError:
            results = None
        seq.clear_faults()
        tiles.clear_faults()
        raw = seq.checkpoint()
        assert raw is not None
        size = open_checkpoint(raw, ORIGIN, [signer.verifier()]).size
        if size > len(logged):  # the batch was committed (possibly reported as a failure)
            logged += fresh and [e for e in dict.fromkeys(batch) if e in set(fresh)]
        assert size == len(logged)
        if fault in (None, "commit/fail-after") and batch:
            assert results is not None  # a fault that did not stop the commit is not an error
        if fault in ("commit/fail", "lookup/fail", "put_tiles/fail", "put_tiles/fail-after") and fresh:
            assert results is None and size == len(logged)
        if results is not None:
            assert [i for i, _ in results] == [logged.index(e) for e in batch]
            assert [was for _, was in results] == [
                e not in fresh or batch.index(e) < i for i, e in enumerate(batch)
            ]
        check_log(seq, tiles, signer, logged)
