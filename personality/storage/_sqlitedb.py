"""SQLite plumbing shared by the drivers: per-thread connections, schema, transactions."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from personality.errors import StorageError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS leaves (idx INTEGER PRIMARY KEY, k INTEGER NOT NULL, h BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS leaf_index (k INTEGER PRIMARY KEY, idx INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS leaf_index_overflow (h BLOB PRIMARY KEY, idx INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tiles (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    width INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (level, idx)
);
"""


class Connections:
    """One connection per thread to one database file; closes them all on :meth:`close`."""

    def __init__(self, path: Path, synchronous: str, cache_kib: int) -> None:
        self._path = path
        self._synchronous = synchronous
        self._cache_kib = cache_kib
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
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA busy_timeout=30000")
            # The dedupe index is written at random places: keep it in memory as long as it fits.
            conn.execute(f"PRAGMA cache_size=-{self._cache_kib}")
            # Fewer, larger WAL checkpoints: tiles make big transactions.
            conn.execute("PRAGMA wal_autocheckpoint=4000")
            # ...and do not keep a WAL that one big transaction (an index merge) grew.
            conn.execute("PRAGMA journal_size_limit=67108864")
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


def init_db(path: Path) -> None:
    """Create the schema in a new database; check the version of an existing one (no write then,
    so readers such as ``gk log export-static`` never take the write lock of a running log)."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:
                return
            if version != 0:
                raise StorageError(
                    f"{path} has schema version {version}; this gk understands {SCHEMA_VERSION}"
                )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StorageError(f"cannot initialise the log database {path}: {exc}") from exc


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, begin: str | None) -> Iterator[None]:
    """BEGIN ... COMMIT; on any failure (also of COMMIT itself) roll back so the connection is reusable.

    ``begin=None`` continues the transaction already open on ``conn``.
    """
    if begin is not None:
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
