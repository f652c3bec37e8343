"""Static export: the files are exactly the tlog-tiles read path, readable by the static client."""

from __future__ import annotations

from pathlib import Path

import pytest

from personality.client import LogClient, LogVerifier, StaticTransport
from personality.errors import StorageError
from personality.log import Sequencer
from personality.static import export_from_stores, export_static
from personality.storage.memory import MemorySequencingStore, MemoryTileStore
from personality.storage.sqlite import open_sqlite
from personality.tlog import merkle
from personality.tlog.note import Signer, generate_signer

ORIGIN = "test.example/static"


def _grow(s: Sequencer, start: int, n: int) -> list[bytes]:
    entries = [f"static entry {i}".encode() for i in range(start, start + n)]
    s.integrate(entries, [merkle.leaf_hash(e) for e in entries])
    return entries


@pytest.fixture
def signer() -> Signer:
    return generate_signer(ORIGIN)


def test_export_is_readable_by_the_static_client(tmp_path: Path, signer: Signer) -> None:
    seq, tiles = MemorySequencingStore(), MemoryTileStore()
    s = Sequencer(seq, tiles, signer)
    s.load()
    out = tmp_path / "www"
    entries = _grow(s, 0, 300)
    first = export_from_stores(seq, tiles, out)
    assert (first.size, first.skipped) == (300, 0)
    assert (out / "checkpoint").read_bytes() == seq.checkpoint()
    assert (out / "tile/0/000").stat().st_size == 256 * 32
    assert (out / "tile/0/001.p/44").exists() and (out / "tile/entries/001.p/44").exists()
    assert (out / "tile/1/000.p/1").exists()

    verifier = LogVerifier(ORIGIN, [signer.verifier()], LogClient(StaticTransport(out)))
    old = verifier.update()
    assert old.size == 300

    entries += _grow(s, 300, 600)
    second = export_from_stores(seq, tiles, out)
    assert second.size == 900 and second.skipped == 2  # tile/0/000 and tile/entries/000 were there
    assert (out / "tile/0/001.p/44").exists()  # older partials stay for older checkpoints
    new = verifier.update()  # consistent with the checkpoint of size 300
    assert new.size == 900
    client = LogClient(StaticTransport(out))
    assert client.entries(0, 900, 900) == entries
    for index in (0, 255, 256, 899):
        verifier.verify_inclusion(entries[index], index, new)
    assert not list(out.rglob(".*tmp*"))


def test_export_static_from_a_sqlite_log(tmp_path: Path, signer: Signer) -> None:
    db = tmp_path / "log.db"
    seq, tiles = open_sqlite(db)
    s = Sequencer(seq, tiles, signer)
    s.load()
    entries = _grow(s, 0, 10)
    result = export_static(db, tmp_path / "out")  # a reader next to the running sequencer
    assert result.size == 10
    client = LogClient(StaticTransport(tmp_path / "out"))
    assert client.entries(0, 10, 10) == entries
    seq.close()


def test_export_of_a_missing_log_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        export_static(tmp_path / "nothing.db", tmp_path / "out")
    with pytest.raises(StorageError, match="no checkpoint"):
        export_from_stores(MemorySequencingStore(), MemoryTileStore(), tmp_path / "out")
