"""SQLite drivers: the embedded default, one database file holding both stores.

``open_sqlite(path)`` returns a :class:`SQLiteSequencingStore` and a :class:`SQLiteTileStore` on
the same file, in WAL mode. Each thread gets its own connection (SQLite connections must not be
shared between threads), so readers never wait for the integrator's fsync. The two stores share
those per-thread connections: the integrator thread writes tiles and commits through one
connection, whose page cache SQLite would otherwise drop whenever another connection wrote.

Durability, and why one fsync per batch is enough:

* The sequencing store commits with ``synchronous=FULL``: the WAL is fsynced before ``commit``
  returns.
* The tile store, when it shares the sequencing store's connections (``open_sqlite``), does not
  commit at all: ``put_tiles`` opens (or joins) a transaction on the integrator thread's
  connection and leaves it open, and the ``commit`` that follows continues that transaction. The
  tiles and the checkpoint that refers to them become durable together, atomically, under one
  fsync; if the batch fails, the rollback drops the tiles, which were beyond the committed tree
  anyway. This satisfies the ``TileStore`` contract ("durable no later than the next successful
  commit") with the strongest form of it. Other threads never see uncommitted tiles. A tile store
  in a file of its own (no ``connections``) commits each ``put_tiles`` with ``FULL``.
* The merge of the dedupe index (below) commits with ``synchronous=NORMAL``: losing it in a power
  failure loses nothing, it is redone from ``leaves``. SQLite recovers a WAL as a prefix (frames
  carry a cumulative checksum), so it can never survive without the commits before it.

The dedupe index. Inserting one random 32-byte key per entry into a B-tree is what limits a
large log: each insert dirties a different page, so a 4096-entry batch rewrites thousands of
pages (measured: 10+ microseconds per entry at 1 M entries). Instead:

* ``leaves(idx, h)`` gets one row per entry in index order (appends are cheap), in the same
  transaction as the checkpoint -- this is the durable dedupe record.
* ``leaf_index(k, idx)`` maps the first 8 bytes of a leaf hash (as a signed integer ``k``) to its
  index, for every entry below the ``merged`` watermark in ``meta``. Entries above it are looked
  up in an in-memory dict rebuilt from ``leaves`` on open. Every ``merge_every`` entries the
  integrator merges the dict into ``leaf_index`` in key order (one sorted pass over the B-tree
  instead of thousands of scattered ones) and advances the watermark in the same transaction,
  which needs no fsync of its own: if a crash loses it, the rows are still in ``leaves`` and are
  merged again.
* A hit in ``leaf_index`` is confirmed against ``leaves.h``; two leaf hashes with the same 8-byte
  prefix (expected after ~2**32 entries) go to ``leaf_index_overflow``, keyed by the full hash.

Schema (``user_version`` 1)::

    meta(key TEXT PRIMARY KEY, value BLOB)            -- 'checkpoint', 'merged'
    leaves(idx INTEGER PRIMARY KEY, k INTEGER, h BLOB) -- every leaf hash, by index; k = prefix
    leaf_index(k INTEGER PRIMARY KEY, idx INTEGER)     -- merged part of the dedupe index
    leaf_index_overflow(h BLOB PRIMARY KEY, idx)       -- prefix collisions
    tiles(level, idx, width, data, PRIMARY KEY(level, idx))   -- level -1 = entry bundles
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from personality.errors import ConflictError, NotFoundError, StorageError
from personality.storage._sqlitedb import SCHEMA_VERSION, Connections, init_db, transaction
from personality.storage._tiledata import prefix
from personality.tlog.tiles import TilePath

__all__ = ["SQLiteSequencingStore", "SQLiteTileStore", "open_sqlite", "SCHEMA_VERSION"]

_CHUNK = 500  # bound parameters per statement, well under SQLITE_MAX_VARIABLE_NUMBER


def _key(leaf_hash: bytes) -> int:
    return int.from_bytes(leaf_hash[:8], "big", signed=True)


def _chunks(items: list[int] | list[bytes]) -> Iterable[tuple[list[int] | list[bytes], str]]:
    for i in range(0, len(items), _CHUNK):
        chunk = items[i : i + _CHUNK]
        yield chunk, ",".join("?" * len(chunk))


class SQLiteSequencingStore:
    """Checkpoint (compare-and-swap) and dedupe index in SQLite; see the module docstring.

    :meth:`lock_sequencer` takes an exclusive ``flock`` on ``<database>.lock`` (released by
    :meth:`close`, or by the kernel when the process dies, also by SIGKILL). The compare-and-swap
    (``BEGIN IMMEDIATE`` serialises the check and the write) stays the safety net.

    ``merge_every``: entries kept in the in-memory part of the dedupe index before they are merged
    into ``leaf_index`` (memory: roughly 130 bytes each).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        cache_kib: int = 131072,
        merge_every: int = 262144,
        connections: Connections | None = None,
    ) -> None:
        self._path = Path(path)
        init_db(self._path)
        self._conns = connections or Connections(self._path, "FULL", cache_kib)
        self._lock_fd: int | None = None
        self._merge_every = merge_every
        # The unmerged part of the dedupe index: every leaf with merged <= idx <= _recent_max.
        self._mu = threading.Lock()
        self._recent: dict[bytes, int] = {}
        self._merged = 0
        self._recent_max = -1
        self._stale = True

    @property
    def connections(self) -> Connections:
        return self._conns

    def lock_sequencer(self) -> None:
        if self._lock_fd is not None:
            return
        path = self._path.with_name(self._path.name + ".lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot create the sequencer lock {path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConflictError(
                f"another process is already sequencing {self._path} (it holds {path}); stop it first"
            ) from None
        self._lock_fd = fd

    def checkpoint(self) -> bytes | None:
        try:
            row = self._conns.get().execute("SELECT value FROM meta WHERE key='checkpoint'").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the checkpoint: {exc}") from exc
        return None if row is None else bytes(row[0])

    # -- the in-memory part of the dedupe index ----------------------------------------------------

    def _refresh(self, conn: sqlite3.Connection) -> None:
        """Catch up with rows committed by others (another process, or a commit that raised after
        it persisted) and with merges done elsewhere."""
        row = conn.execute("SELECT value FROM meta WHERE key='merged'").fetchone()
        merged = int(row[0]) if row else 0
        top = conn.execute("SELECT max(idx) FROM leaves").fetchone()[0]
        top = -1 if top is None else int(top)
        with self._mu:
            if merged == self._merged and top == self._recent_max:
                return
            start = max(self._recent_max + 1, merged)
        rows = conn.execute("SELECT idx, h FROM leaves WHERE idx >= ? AND idx <= ?", (start, top)).fetchall()
        with self._mu:
            if merged > self._merged:
                self._recent = {h: i for h, i in self._recent.items() if i >= merged}
                self._merged = merged
            for idx, h in rows:
                self._recent.setdefault(bytes(h), idx)
            self._recent_max = max(self._recent_max, top)

    def lookup(self, leaf_hashes: Iterable[bytes]) -> dict[bytes, int]:
        out: dict[bytes, int] = {}
        try:
            conn = self._conns.get()
            if conn.in_transaction:
                # Tiles of a batch that never reached commit(): they were beyond the committed
                # tree; drop them rather than let them ride along with the next commit.
                conn.execute("ROLLBACK")
            if self._lock_fd is None or self._stale:
                # Without the sequencer lock others may write; with it, only a commit that raised
                # can have changed the store behind this object's back.
                self._refresh(conn)
                self._stale = False
            wanted: dict[int, list[bytes]] = {}
            with self._mu:
                recent = self._recent
                for h in leaf_hashes:
                    i = recent.get(h)
                    if i is not None:
                        out[h] = i
                    else:
                        wanted.setdefault(_key(h), []).append(h)
            if not wanted:
                return out
            taken: list[bytes] = []  # their prefix belongs to another leaf: maybe in the overflow
            for chunk, marks in _chunks(list(wanted)):
                for k, idx, stored in conn.execute(
                    "SELECT li.k, li.idx, l.h FROM leaf_index li JOIN leaves l ON l.idx = li.idx "
                    f"WHERE li.k IN ({marks})",
                    chunk,
                ):
                    for h in wanted[k]:
                        if h == stored:
                            out[h] = idx
                        else:
                            taken.append(h)
            for chunk, marks in _chunks(taken):
                for h, idx in conn.execute(
                    f"SELECT h, idx FROM leaf_index_overflow WHERE h IN ({marks})", chunk
                ):
                    out[bytes(h)] = idx
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the dedupe index: {exc}") from exc
        return out

    def commit(self, old: bytes | None, new: bytes, leaves: Sequence[tuple[bytes, int]]) -> None:
        conn = self._conns.get()
        try:
            # Tiles written through the same connection (open_sqlite) are in this transaction.
            with transaction(conn, None if conn.in_transaction else "BEGIN IMMEDIATE"):
                row = conn.execute("SELECT value FROM meta WHERE key='checkpoint'").fetchone()
                current = None if row is None else bytes(row[0])
                if current != old:
                    raise ConflictError(
                        "the stored checkpoint is not the one this sequencer started from: another "
                        "sequencer is writing to the same log; stop one of them"
                    )
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('checkpoint', ?)", (new,))
                conn.executemany(
                    "INSERT INTO leaves(idx, k, h) VALUES (?, ?, ?)", [(i, _key(h), h) for h, i in leaves]
                )
        except sqlite3.IntegrityError as exc:
            raise StorageError(f"an index of this batch is already taken: {exc}") from exc
        except sqlite3.Error as exc:
            self._stale = True  # it may have committed after all ("fail but persist")
            raise StorageError(f"cannot commit the checkpoint: {exc}") from exc
        with self._mu:
            if leaves and self._recent_max + 1 == leaves[0][1]:
                for h, i in leaves:
                    self._recent.setdefault(h, i)
                self._recent_max = max(self._recent_max, max(i for _, i in leaves))
            due = len(self._recent) >= self._merge_every
        if due:
            self._merge(conn)

    def _merge(self, conn: sqlite3.Connection) -> None:
        """Move the in-memory part of the index into ``leaf_index`` (no fsync needed, see above).

        A failure here is not a failure of the commit that triggered it: the rows stay in memory
        and in ``leaves``, and the next commit tries again.
        """
        with self._mu:
            start, end = self._merged, self._recent_max + 1
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            try:
                with transaction(conn, "BEGIN IMMEDIATE"):
                    before = conn.total_changes
                    conn.execute(
                        "INSERT OR IGNORE INTO leaf_index(k, idx) "
                        "SELECT k, idx FROM leaves WHERE idx >= ? AND idx < ? ORDER BY k",
                        (start, end),
                    )
                    if conn.total_changes - before != end - start:
                        # Prefix collisions: the rows whose k went to an earlier leaf.
                        conn.execute(
                            "INSERT OR IGNORE INTO leaf_index_overflow(h, idx) "
                            "SELECT l.h, l.idx FROM leaves l JOIN leaf_index li ON li.k = l.k "
                            "WHERE l.idx >= ? AND l.idx < ? AND li.idx != l.idx",
                            (start, end),
                        )
                    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('merged', ?)", (str(end),))
            finally:
                conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error:
            return
        with self._mu:
            self._recent = {h: i for h, i in self._recent.items() if i >= end}
            self._merged = max(self._merged, end)

    def close(self) -> None:
        self._conns.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None


class SQLiteTileStore:
    """Hash tiles and entry bundles in SQLite; see the module docstring for durability."""

    def __init__(self, path: str | os.PathLike[str], *, connections: Connections | None = None) -> None:
        """``connections``: those of the :class:`SQLiteSequencingStore` on the same file (shared WAL,
        no fsync of its own); without it, the tile store is a file of its own and fsyncs."""
        self._path = Path(path)
        init_db(self._path)
        self._shares_wal = connections is not None
        self._conns = connections or Connections(self._path, "FULL", 16384)

    def put_tiles(self, tiles: Mapping[TilePath, bytes]) -> None:
        rows = []
        for path, data in tiles.items():
            if path.level is not None and len(data) != 32 * path.width:
                raise StorageError(f"hash tile {path} must be {32 * path.width} bytes, not {len(data)}")
            rows.append((-1 if path.level is None else path.level, path.index, path.width, data))
        conn = self._conns.get()
        try:
            if self._shares_wal:
                # Join (or open) the sequencing store's transaction: the tiles become durable with
                # the checkpoint commit that follows, atomically, under its single fsync.
                if not conn.in_transaction:
                    conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "INSERT OR REPLACE INTO tiles(level, idx, width, data) VALUES (?, ?, ?, ?)", rows
                )
            else:
                with transaction(conn, "BEGIN IMMEDIATE"):
                    conn.executemany(
                        "INSERT OR REPLACE INTO tiles(level, idx, width, data) VALUES (?, ?, ?, ?)", rows
                    )
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
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
        if not self._shares_wal:
            self._conns.close()


def open_sqlite(
    path: str | os.PathLike[str], *, merge_every: int = 262144
) -> tuple[SQLiteSequencingStore, SQLiteTileStore]:
    """Both stores on one database file (created if missing), tiles sharing the WAL."""
    seq = SQLiteSequencingStore(path, merge_every=merge_every)
    return seq, SQLiteTileStore(path, connections=seq.connections)
