"""The host's durable verification state: checkpoint heads, spent nonces, the halted flag.

One SQLite file (``heads.sqlite3``) in a state directory that only its owner may enter (0700); the
file itself is 0600. WAL journal with ``synchronous=FULL``: every method that writes returns only
after its transaction is committed and fsynced, so a caller that runs a command *after*
:meth:`HeadStore.commit` returned :attr:`CommitStatus.OK` knows that the new head and the spent nonce
survive a crash or power loss.

Contents and their contracts:

- ``checkpoints``: append-only history of verified signed checkpoints, one per (origin, size), kept
  verbatim. Rows are never updated or deleted (SQLite triggers refuse it). The *newest head* of an
  origin is its largest stored checkpoint. A checkpoint of a size already stored is never replaced.
- ``spent``: nonces of actions that ran here, keyed by (nonce, signer key fingerprint), with the log
  index and time. A row is pruned only once its action can no longer pass the validity check
  (``expires_at`` = not_after + clock skew) plus a grace period against clock steps.
- ``halts``: append-only fork evidence: both conflicting signed checkpoints verbatim, the kind
  (``fork``, ``rollback``) and a one-line detail. The store is *halted* while any halt row is newer
  than the last unhalt.
- ``unhalts``: append-only journal of operators clearing the halted state (who, when, what note,
  through which halt id).

Concurrency: one connection guarded by a lock, so several threads (agent connections) may share a
store; writes use ``BEGIN IMMEDIATE`` with a busy timeout, so several processes may share the file
(the agent and ``gk agent status``/``unhalt``). Errors from SQLite surface as
:class:`~gatekeeper.errors.GatekeeperError`; a state directory or file with unsafe permissions is a
:class:`~gatekeeper.errors.ConfigError`.
"""

from __future__ import annotations

import enum
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatekeeper.errors import ConfigError, GatekeeperError

__all__ = [
    "DB_NAME",
    "NONCE_PRUNE_GRACE",
    "StoredHead",
    "Spend",
    "HaltRecord",
    "UnhaltRecord",
    "CommitStatus",
    "CommitResult",
    "HeadStore",
]

DB_NAME = "heads.sqlite3"
SCHEMA_VERSION = "1"
# Spent nonces are kept this long after their action expired, so that a clock stepped backwards
# (NTP correction, a VM restored from a snapshot) cannot make a pruned action valid again.
NONCE_PRUNE_GRACE = 7 * 24 * 3600
_BUSY_TIMEOUT_MS = 5000
_PRUNE_INTERVAL = 3600  # seconds between prunes done by commit()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note BLOB NOT NULL,
    stored_at INTEGER NOT NULL,
    UNIQUE (origin, size)
);
CREATE TABLE IF NOT EXISTS spent (
    nonce BLOB NOT NULL,
    signer TEXT NOT NULL,
    idx INTEGER NOT NULL,
    spent_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (nonce, signer)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS spent_expiry ON spent (expires_at);
CREATE TABLE IF NOT EXISTS halts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    origin TEXT NOT NULL,
    detail TEXT NOT NULL,
    known BLOB NOT NULL,
    conflicting BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS unhalts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    who TEXT NOT NULL,
    note TEXT NOT NULL,
    through_halt INTEGER NOT NULL
);
"""

_APPEND_ONLY = ("checkpoints", "halts", "unhalts")


@dataclass(frozen=True)
class StoredHead:
    """A verified signed checkpoint as stored: ``note`` is the signed note, byte for byte."""

    seq: int
    origin: str
    size: int
    root: bytes
    note: bytes
    stored_at: int


@dataclass(frozen=True)
class Spend:
    """A nonce to mark spent: kept until ``expires_at`` (+ grace) has passed."""

    nonce: bytes
    signer: str  # SHA256:... fingerprint of the signing key
    index: int
    expires_at: int


@dataclass(frozen=True)
class HaltRecord:
    id: int
    at: int
    kind: str
    origin: str
    detail: str
    known: bytes  # the checkpoint this host held, verbatim
    conflicting: bytes  # the checkpoint that contradicts it, verbatim


@dataclass(frozen=True)
class UnhaltRecord:
    id: int
    at: int
    who: str
    note: str
    through_halt: int


class CommitStatus(enum.Enum):
    OK = "ok"
    HALTED = "halted"  # a fork was recorded meanwhile: nothing written
    REPLAY = "replay"  # the nonce is already spent: nothing written
    HEAD_MOVED = "head-moved"  # the newest head changed since it was read: verify again
    CONFLICT = "conflict"  # a different root is stored for this size: a fork, nothing written


@dataclass(frozen=True)
class CommitResult:
    status: CommitStatus
    spent: tuple[int, int] | None = None  # REPLAY: (index, spent_at) of the earlier use
    stored: StoredHead | None = None  # CONFLICT: the stored checkpoint of the same size


def _prepare_dir(state_dir: Path) -> None:
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = state_dir.stat()
    except OSError as exc:
        raise ConfigError(f"cannot create state directory {state_dir}: {exc.strerror}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"state directory {state_dir} is not a directory")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"state directory {state_dir} has mode {stat.S_IMODE(st.st_mode):o}; it must be 0700 "
            f"(chmod 700 {state_dir})"
        )
    if st.st_uid != os.geteuid():
        raise ConfigError(f"state directory {state_dir} is owned by uid {st.st_uid}, not by this user")


def _prepare_file(path: Path) -> None:
    """Create the database file 0600 (its directory entry made durable) or check an existing one."""
    try:
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if created:
            dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except OSError as exc:
        raise ConfigError(f"cannot open head store {path}: {exc.strerror}") from exc
    if st.st_mode & 0o077:
        raise ConfigError(
            f"head store {path} has mode {stat.S_IMODE(st.st_mode):o}; it must be 0600 (chmod 600 {path})"
        )


class HeadStore:
    """The durable verification state of one host. Open with :meth:`open`; close with :meth:`close`
    (or use it as a context manager). Thread-safe."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._next_prune = 0
        self.path = path

    @classmethod
    def open(cls, state_dir: str | os.PathLike[str]) -> HeadStore:
        """Open (creating if needed) the store in ``state_dir``. Raises :class:`ConfigError` when the
        directory or file cannot be created or is reachable by other users."""
        directory = Path(state_dir)
        _prepare_dir(directory)
        path = directory / DB_NAME
        _prepare_file(path)
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ConfigError(f"head store {path}: cannot enable WAL journal (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            for table in _APPEND_ONLY:
                for op in ("UPDATE", "DELETE"):
                    conn.execute(
                        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
                        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                    )
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                conn.execute("ROLLBACK")
                raise ConfigError(f"head store {path} has schema {row[0]}, expected {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open head store {path}: {exc}") from exc
        return cls(conn, path)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> HeadStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads -------------------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise GatekeeperError(f"head store {self.path}: {exc}") from exc

    def newest_head(self, origin: str) -> StoredHead | None:
        """The largest stored checkpoint of ``origin``, or None when none is stored."""
        with self._read() as conn:
            return _newest(conn, origin)

    def head_at_size(self, origin: str, size: int) -> StoredHead | None:
        """The stored checkpoint of ``origin`` with exactly ``size`` leaves, if any."""
        with self._read() as conn:
            return _at_size(conn, origin, size)

    def heads(self, origin: str) -> list[StoredHead]:
        """Every stored checkpoint of ``origin``, smallest first."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_HEAD_COLUMNS} FROM checkpoints WHERE origin = ? ORDER BY size", (origin,)
            ).fetchall()
        return [_head(r) for r in rows]

    def origins(self) -> list[str]:
        """Every log origin with a stored checkpoint."""
        with self._read() as conn:
            rows = conn.execute("SELECT DISTINCT origin FROM checkpoints ORDER BY origin").fetchall()
        return [str(r[0]) for r in rows]

    def halted(self) -> HaltRecord | None:
        """The newest halt not cleared by an unhalt, or None when the store is not halted."""
        with self._read() as conn:
            return _open_halt(conn)

    def halts(self) -> list[HaltRecord]:
        """Every fork ever recorded, oldest first (cleared ones too)."""
        with self._read() as conn:
            rows = conn.execute(f"SELECT {_HALT_COLUMNS} FROM halts ORDER BY id").fetchall()
        return [_halt(r) for r in rows]

    def unhalts(self) -> list[UnhaltRecord]:
        with self._read() as conn:
            rows = conn.execute("SELECT id, at, who, note, through_halt FROM unhalts ORDER BY id").fetchall()
        return [UnhaltRecord(int(r[0]), int(r[1]), str(r[2]), str(r[3]), int(r[4])) for r in rows]

    def spent_count(self) -> int:
        with self._read() as conn:
            return int(conn.execute("SELECT count(*) FROM spent").fetchone()[0])

    def spent(self, nonce: bytes, signer: str) -> tuple[int, int] | None:
        """``(index, spent_at)`` when this (nonce, signer) already ran here."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT idx, spent_at FROM spent WHERE nonce = ? AND signer = ?", (nonce, signer)
            ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    # -- writes ------------------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction, committed (fsynced) on normal exit and rolled back on
        any exception."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise GatekeeperError(f"head store {self.path}: {exc}") from exc
            try:
                yield conn
            except BaseException as exc:
                conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise GatekeeperError(f"head store {self.path}: {exc}") from exc
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise GatekeeperError(f"head store {self.path}: {exc}") from exc

    def commit(
        self,
        origin: str,
        checkpoint: tuple[int, bytes, bytes] | None,
        *,
        newest_seq: int | None,
        spend: Spend | None,
        now: int,
    ) -> CommitResult:
        """Atomically store a verified checkpoint and mark a nonce spent.

        ``checkpoint`` is ``(size, root, signed note)``; it is inserted unless a checkpoint of that
        size is already stored (same root: nothing to do; another root: :attr:`CommitStatus.CONFLICT`).
        ``newest_seq``, when not None, is the ``seq`` of the newest head the caller verified against
        (0: none stored); if the newest head is another one now, nothing is written and the result is
        :attr:`CommitStatus.HEAD_MOVED`. A halted store refuses (:attr:`CommitStatus.HALTED`), a spent
        nonce gives :attr:`CommitStatus.REPLAY`. On :attr:`CommitStatus.OK` everything is durable.
        Expired spent nonces are pruned in the same transaction, at most once an hour.
        """
        with self._write() as conn:
            if _open_halt(conn) is not None:
                return CommitResult(CommitStatus.HALTED)
            if newest_seq is not None:
                newest = _newest(conn, origin)
                if (newest.seq if newest else 0) != newest_seq:
                    return CommitResult(CommitStatus.HEAD_MOVED)
            if spend is not None:
                row = conn.execute(
                    "SELECT idx, spent_at FROM spent WHERE nonce = ? AND signer = ?",
                    (spend.nonce, spend.signer),
                ).fetchone()
                if row is not None:
                    return CommitResult(CommitStatus.REPLAY, spent=(int(row[0]), int(row[1])))
            if checkpoint is not None:
                size, root, note = checkpoint
                stored = _at_size(conn, origin, size)
                if stored is not None and stored.root != root:
                    return CommitResult(CommitStatus.CONFLICT, stored=stored)
                if stored is None:
                    conn.execute(
                        "INSERT INTO checkpoints (origin, size, root, note, stored_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (origin, size, root, note, now),
                    )
            if spend is not None:
                conn.execute(
                    "INSERT INTO spent (nonce, signer, idx, spent_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                    (spend.nonce, spend.signer, spend.index, now, spend.expires_at),
                )
                if now >= self._next_prune:
                    conn.execute("DELETE FROM spent WHERE expires_at < ?", (now - NONCE_PRUNE_GRACE,))
                    self._next_prune = now + _PRUNE_INTERVAL
        return CommitResult(CommitStatus.OK)

    def record_halt(
        self, *, kind: str, origin: str, detail: str, known: bytes, conflicting: bytes, now: int
    ) -> HaltRecord:
        """Durably record fork evidence (both checkpoints verbatim) and enter the halted state."""
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO halts (at, kind, origin, detail, known, conflicting) VALUES (?, ?, ?, ?, ?, ?)",
                (now, kind, origin, detail, known, conflicting),
            )
            halt_id = int(cur.lastrowid or 0)
        return HaltRecord(halt_id, now, kind, origin, detail, known, conflicting)

    def unhalt(self, *, who: str, note: str, now: int) -> UnhaltRecord | None:
        """Clear the halted state (every halt recorded so far), journalled. Returns None, writing
        nothing, when the store is not halted. Evidence and stored heads are kept."""
        with self._write() as conn:
            halt = _open_halt(conn)
            if halt is None:
                return None
            cur = conn.execute(
                "INSERT INTO unhalts (at, who, note, through_halt) VALUES (?, ?, ?, ?)",
                (now, who, note, halt.id),
            )
            unhalt_id = int(cur.lastrowid or 0)
        return UnhaltRecord(unhalt_id, now, who, note, halt.id)

    def prune_spent(self, now: int) -> int:
        """Delete spent nonces whose action expired more than the grace period ago; returns how many."""
        with self._write() as conn:
            cur = conn.execute("DELETE FROM spent WHERE expires_at < ?", (now - NONCE_PRUNE_GRACE,))
            return int(cur.rowcount)


_HEAD_COLUMNS = "seq, origin, size, root, note, stored_at"
_HALT_COLUMNS = "id, at, kind, origin, detail, known, conflicting"


def _head(row: Any) -> StoredHead:
    seq, origin, size, root, note, stored_at = row
    return StoredHead(int(seq), str(origin), int(size), bytes(root), bytes(note), int(stored_at))


def _halt(row: Any) -> HaltRecord:
    hid, at, kind, origin, detail, known, conflicting = row
    return HaltRecord(
        int(hid), int(at), str(kind), str(origin), str(detail), bytes(known), bytes(conflicting)
    )


def _newest(conn: sqlite3.Connection, origin: str) -> StoredHead | None:
    row = conn.execute(
        f"SELECT {_HEAD_COLUMNS} FROM checkpoints WHERE origin = ? ORDER BY size DESC LIMIT 1", (origin,)
    ).fetchone()
    return None if row is None else _head(row)


def _at_size(conn: sqlite3.Connection, origin: str, size: int) -> StoredHead | None:
    row = conn.execute(
        f"SELECT {_HEAD_COLUMNS} FROM checkpoints WHERE origin = ? AND size = ?", (origin, size)
    ).fetchone()
    return None if row is None else _head(row)


def _open_halt(conn: sqlite3.Connection) -> HaltRecord | None:
    row = conn.execute(
        f"SELECT {_HALT_COLUMNS} FROM halts WHERE id > "
        "(SELECT coalesce(max(through_halt), 0) FROM unhalts) ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return None if row is None else _halt(row)
