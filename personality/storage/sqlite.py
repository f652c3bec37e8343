"""SQLite drivers: the embedded default, one database file holding both stores.

``open_sqlite(path)`` returns a :class:`SQLiteSequencingStore` and a :class:`SQLiteTileStore` on
the same file. The file runs in WAL mode. Each thread gets its own connection (SQLite connections
must not be shared between threads), so readers never wait for the integrator's fsync.

Durability, and why one fsync per batch is enough:

* The sequencing store commits with ``synchronous=FULL``: the WAL is fsynced before ``commit``
  returns.
* The tile store, when it shares the file with the sequencing store, commits with
  ``synchronous=NORMAL``: no fsync. Its frames sit in the same WAL *before* the frames of the
  checkpoint commit that follows, and SQLite recovers a WAL as a prefix (frames carry a cumulative
  checksum; recovery stops at the first frame that does not check). So when the checkpoint commit
  is durable, every tile written before it is durable too, and a crash before that commit can only
  lose tiles beyond the committed tree -- exactly the ``TileStore`` contract. A tile store in a
  *separate* file (``shares_wal=False``) commits with ``FULL`` instead.

Schema (``user_version`` 1)::

    meta(key TEXT PRIMARY KEY, value BLOB)             -- 'checkpoint'
    leaves(leaf_hash BLOB PRIMARY KEY, idx INTEGER)     -- dedupe index, WITHOUT ROWID
    tiles(level INTEGER, idx INTEGER, width INTEGER, data BLOB, PRIMARY KEY(level, idx))
                                                        -- level -1 = entry bundles
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from personality.errors import ConflictError, NotFoundError, StorageError
from personality.storage._tiledata import prefix, width_of
from personality.tlog.tiles import TilePath

__all__ = ["SQLiteSequencingStore", "SQLiteTileStore", "open_sqlite", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
_LOOKUP_CHUNK = 500  # well under SQLITE_MAX_VARIABLE_NUMBER

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS leaves (leaf_hash BLOB PRIMARY KEY, idx INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tiles (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    width INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (level, idx)
);
"""


class _Connections:
    """One connection per thread to one database file; closes them all on :meth:`close`."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self._path = path
        self._synchronous = synchronous
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise StorageError(f"the log database {self._path} is closed")
        try:
            conn = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA busy_timeout=30000")
            # Fewer, larger WAL checkpoints: tiles make big transactions.
            conn.execute("PRAGMA wal_autocheckpoint=4000")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the log database {self._path}: {exc}") from exc
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except sqlite3.Error:  # pragma: no cover - closing is best effort
                pass


def _init_db(path: Path) -> None:
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StorageError(
                    f"{path} has schema version {version}; this gk understands {SCHEMA_VERSION}"
                )
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StorageError(f"cannot initialise the log database {path}: {exc}") from exc


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, begin: str) -> Iterator[None]:
    """BEGIN ... COMMIT; on any failure (also of COMMIT itself) roll back so the connection is reusable."""
    conn.execute(begin)
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:  # pragma: no cover - the original error matters more
                pass
        raise


class SQLiteSequencingStore:
    """Checkpoint (compare-and-swap) and dedupe index in SQLite; see the module docstring.

    A second sequencer on the same file is caught by the compare-and-swap (``BEGIN IMMEDIATE``
    serialises the check and the write).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        _init_db(self._path)
        self._conns = _Connections(self._path, "FULL")

    def checkpoint(self) -> bytes | None:
        try:
            row = self._conns.get().execute("SELECT value FROM meta WHERE key='checkpoint'").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the checkpoint: {exc}") from exc
        return None if row is None else bytes(row[0])

    def lookup(self, leaf_hashes: Iterable[bytes]) -> dict[bytes, int]:
        hashes = list(leaf_hashes)
        out: dict[bytes, int] = {}
        try:
            conn = self._conns.get()
            for i in range(0, len(hashes), _LOOKUP_CHUNK):
                chunk = hashes[i : i + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                for h, idx in conn.execute(
                    f"SELECT leaf_hash, idx FROM leaves WHERE leaf_hash IN ({marks})", chunk
                ):
                    out[bytes(h)] = idx
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the dedupe index: {exc}") from exc
        return out

    def commit(self, old: bytes | None, new: bytes, leaves: Sequence[tuple[bytes, int]]) -> None:
        conn = self._conns.get()
        try:
            with _transaction(conn, "BEGIN IMMEDIATE"):
                row = conn.execute("SELECT value FROM meta WHERE key='checkpoint'").fetchone()
                current = None if row is None else bytes(row[0])
                if current != old:
                    raise ConflictError(
                        "the stored checkpoint is not the one this sequencer started from: another "
                        "sequencer is writing to the same log; stop one of them"
                    )
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('checkpoint', ?)", (new,))
                conn.executemany("INSERT INTO leaves(leaf_hash, idx) VALUES (?, ?)", leaves)
        except sqlite3.IntegrityError as exc:
            raise StorageError(f"a leaf hash of this batch is already in the dedupe index: {exc}") from exc
        except sqlite3.Error as exc:
            raise StorageError(f"cannot commit the checkpoint: {exc}") from exc

    def close(self) -> None:
        self._conns.close()


class SQLiteTileStore:
    """Hash tiles and entry bundles in SQLite; see the module docstring for durability."""

    def __init__(self, path: str | os.PathLike[str], *, shares_wal: bool = False) -> None:
        self._path = Path(path)
        _init_db(self._path)
        self._conns = _Connections(self._path, "NORMAL" if shares_wal else "FULL")

    def put_tiles(self, tiles: Mapping[TilePath, bytes]) -> None:
        rows = []
        for path, data in tiles.items():
            w = width_of(path.level, data)
            if w != path.width:
                raise StorageError(f"tile value holds {w} items but its path says {path.width}")
            rows.append((-1 if path.level is None else path.level, path.index, w, data))
        conn = self._conns.get()
        try:
            with _transaction(conn, "BEGIN"):
                conn.executemany(
                    "INSERT OR REPLACE INTO tiles(level, idx, width, data) VALUES (?, ?, ?, ?)", rows
                )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot write tiles: {exc}") from exc

    def get_tile(self, path: TilePath) -> bytes:
        level = -1 if path.level is None else path.level
        try:
            row = (
                self._conns.get()
                .execute("SELECT width, data FROM tiles WHERE level=? AND idx=?", (level, path.index))
                .fetchone()
            )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read tile {path}: {exc}") from exc
        if row is None:
            raise NotFoundError(f"tile {path} is not stored")
        return prefix(path, int(row[0]), bytes(row[1]))

    def close(self) -> None:
        self._conns.close()


def open_sqlite(path: str | os.PathLike[str]) -> tuple[SQLiteSequencingStore, SQLiteTileStore]:
    """Both stores on one database file (created if missing), tiles sharing the WAL."""
    return SQLiteSequencingStore(path), SQLiteTileStore(path, shares_wal=True)
