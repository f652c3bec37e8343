"""The audit index: one SQLite file per log with every checked entry, decoded and searchable.

Filled by the same pipeline as ``gk monitor`` (:class:`~gatekeeper.monitor.monitor.LogMonitor`
with this index as its :class:`~gatekeeper.monitor.monitor.BatchObserver` and progress store), so
every row was hashed into a tree whose root matched a signed checkpoint before that checkpoint was
recorded here, and every action's signature was checked.

Contents:

- ``actions``: one row per entry: index, leaf hash, check status (``ok``, ``bad-signature``,
  ``malformed``, ``unknown-signer``) and the decoded fields; ``entries`` holds each entry itself
  (so proofs and exports work with the log offline), apart so that scans of ``actions`` stay
  small.
- ``targets``: (host, index) for host searches; ``principals``: (principal, signer fingerprint)
  from an allowed_signers file, when one was given.
- ``nodes``: perfect-subtree hashes at levels 8, 16, … (the upper hash tiles); with the leaf
  hashes they rebuild any tile, so inclusion and consistency proofs are computed locally
  (:meth:`AuditIndex.hash_getter`) and verified against stored signed checkpoints.
- ``checkpoints``: every signed checkpoint whose root the rebuild matched (*verified*), verbatim.
- ``meta``: origin, schema, and the scan progress (:class:`~gatekeeper.monitor.state.ScanState`).

Durability: WAL with ``synchronous=NORMAL`` — the index can always be rebuilt from the log, and a
crash loses at most the last transactions, never consistency (rows, nodes and progress of a batch
are one transaction; the progress never claims rows that are not there). Rows are written with
``INSERT OR REPLACE``, so re-checking a batch after a crash is harmless.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatekeeper.errors import ConfigError, GatekeeperError
from gatekeeper.monitor.check import Checked
from gatekeeper.monitor.rules import command_text
from gatekeeper.monitor.scan import Batch
from gatekeeper.monitor.state import ProcessedHead, ScanState
from personality.errors import NotFoundError
from personality.tlog import merkle
from personality.tlog.checkpoint import SignedCheckpoint, parse_signed_checkpoint
from personality.tlog.tiles import TILE_HEIGHT, TILE_WIDTH, TilePath, tile_hash_getter

__all__ = ["Row", "Query", "AuditIndex", "literal_hint"]

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS actions (
    idx INTEGER PRIMARY KEY,
    leaf_hash BLOB NOT NULL,
    status TEXT NOT NULL,
    error TEXT NOT NULL,
    kind TEXT,
    account TEXT,
    command TEXT,
    hosts TEXT,
    signer_fp TEXT,
    principals TEXT,
    reason TEXT,
    not_before INTEGER,
    not_after INTEGER,
    nonascii INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS actions_account ON actions (account);
CREATE INDEX IF NOT EXISTS actions_signer ON actions (signer_fp);
CREATE INDEX IF NOT EXISTS actions_time ON actions (not_before);
CREATE INDEX IF NOT EXISTS actions_status ON actions (status) WHERE status != 'ok';
CREATE INDEX IF NOT EXISTS actions_nonascii ON actions (idx) WHERE nonascii;
CREATE VIRTUAL TABLE IF NOT EXISTS texts USING fts5(command, reason, tokenize='trigram');
CREATE TABLE IF NOT EXISTS targets (
    host TEXT NOT NULL, idx INTEGER NOT NULL, host_key TEXT, PRIMARY KEY (host, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS principals (
    principal TEXT NOT NULL, signer_fp TEXT NOT NULL, PRIMARY KEY (principal, signer_fp)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL, n INTEGER NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (level, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY, note BLOB NOT NULL, added INTEGER NOT NULL
);
"""

_COLUMNS = (
    "idx, status, error, kind, account, command, hosts, signer_fp, principals, reason, not_before, not_after"
)


@dataclass(frozen=True)
class Row:
    """One indexed entry as searches return it (the entry bytes via :meth:`AuditIndex.entry`)."""

    index: int
    status: str
    error: str
    kind: str | None
    account: str | None
    command: str | None  # UTF-8 text, undecodable bytes as \\xNN
    hosts: tuple[str, ...]
    signer: str | None  # SHA256:... fingerprint
    principals: tuple[str, ...]
    reason: str | None
    not_before: int | None
    not_after: int | None
    verified: bool = False  # under a checkpoint whose root the rebuild matched

    def to_json(self) -> dict[str, Any]:
        from gatekeeper.action import format_time

        return {
            "index": self.index,
            "status": self.status,
            "error": self.error,
            "verified": self.verified,
            "kind": self.kind,
            "hosts": list(self.hosts),
            "account": self.account,
            "command": self.command,
            "signer": self.signer,
            "principals": list(self.principals),
            "reason": self.reason,
            "not_before": format_time(self.not_before) if self.not_before is not None else None,
            "not_after": format_time(self.not_after) if self.not_after is not None else None,
        }


@dataclass
class Query:
    """Search filters; every given filter must hold (AND), items inside one list are OR.

    ``hosts``/``accounts`` are exact names or shell globs (``web-*``); ``signers`` are
    ``SHA256:`` fingerprints, OpenSSH public keys or principals; ``since``/``until`` bound
    ``not_before`` (Unix seconds, ``until`` exclusive); ``command``/``reason`` are Python regexes
    (searched); ``first``/``last`` bound the index (inclusive); ``status`` e.g. ``["bad-signature"]``.
    """

    hosts: Sequence[str] = ()
    accounts: Sequence[str] = ()
    signers: Sequence[str] = ()
    since: int | None = None
    until: int | None = None
    command: str | None = None
    reason: str | None = None
    first: int | None = None
    last: int | None = None
    status: Sequence[str] = ()
    kinds: Sequence[str] = ()
    limit: int | None = None
    newest_first: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _is_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


MAX_ALTERNATIVES = 16
FTS_PROBE = 20_000  # more candidates than this: scan with instr() rather than materialise them
_SCOPED_I = re.compile(r"\(\?[a-zA-Z]*i")


def literal_hint(pattern: str) -> tuple[tuple[str, ...], bool] | None:
    """``(alternatives, ignore_case)``: substrings (each at least 3 characters) one of which every
    match of ``pattern`` contains, or None when there is no such set.

    Lets SQLite find candidate rows in a trigram full-text index before Python runs the regex
    on them. Derived from the parsed pattern: literal runs, groups, alternatives (``(curl|wget)``)
    and repeats of at least one; optional parts and character classes give nothing.
    ``ignore_case`` says the pattern (or part of it) ignores case.
    """
    try:
        import re._parser as sre

        parsed = sre.parse(pattern)
    except Exception:  # noqa: BLE001 - any surprise: no hint, the regex still decides
        return None
    ignore_case = bool(parsed.state.flags & re.IGNORECASE) or bool(_SCOPED_I.search(pattern))
    alts = _required(sre, list(parsed))
    return (tuple(alts), ignore_case) if alts else None


def _required(sre: Any, seq: list[Any]) -> list[str] | None:
    best: list[str] | None = None

    def consider(cand: list[str] | None) -> None:
        nonlocal best
        if not cand or len(cand) > MAX_ALTERNATIVES:
            return
        key = (min(len(c) for c in cand), -len(cand))
        if best is None or key > (min(len(c) for c in best), -len(best)):
            best = cand

    run: list[str] = []
    for op, arg in seq:
        if op is sre.LITERAL:
            run.append(chr(arg))
            continue
        if len(run) >= 3:
            consider(["".join(run)])
        run = []
        if op is sre.SUBPATTERN:
            consider(_required(sre, list(arg[-1])))
        elif op is sre.BRANCH:
            parts = [_required(sre, list(a)) for a in arg[1]]
            if all(parts):
                consider(sorted({x for part in parts for x in part or ()}))
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT) and arg[0] >= 1:
            consider(_required(sre, list(arg[2])))
    if len(run) >= 3:
        consider(["".join(run)])
    return best


def _fts_query(column: str, alternatives: Sequence[str]) -> str:
    quoted = " OR ".join('"' + a.replace('"', '""') + '"' for a in alternatives)
    return f"{column} : ({quoted})"


class AuditIndex:
    """Open with :meth:`open`. Not thread-safe (one connection); several processes may read."""

    def __init__(self, conn: sqlite3.Connection, path: Path, origin: str) -> None:
        self.conn = conn
        self.path = path
        self.origin = origin
        self._regex: dict[str, re.Pattern[str]] = {}
        conn.create_function("gk_regexp", 2, self._regexp, deterministic=True)

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], origin: str | None = None, *, create: bool = True
    ) -> AuditIndex:
        """Open (or create, with ``origin``) the index at ``path``. An index belongs to one log:
        opening it with another origin raises ``ConfigError``."""
        p = Path(path)
        if not p.exists() and not create:
            raise ConfigError(f"no audit index at {p} (create it with 'gk audit sync')")
        try:
            conn = sqlite3.connect(p, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key='origin'").fetchone()
        except sqlite3.Error as exc:
            raise GatekeeperError(f"audit index {p}: {exc}") from None
        stored = row[0] if row else None
        if stored is None:
            if origin is None:
                conn.close()
                raise ConfigError(f"audit index {p} is empty: sync it from a log first")
            conn.execute("INSERT INTO meta VALUES ('origin', ?), ('schema', ?)", (origin, SCHEMA_VERSION))
            stored = origin
        elif origin is not None and origin != stored:
            conn.close()
            raise ConfigError(f"audit index {p} belongs to log {stored!r}, not {origin!r}")
        return cls(conn, p, stored)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> AuditIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- progress (the ScanState of the pipeline that fills this index) ----------------------------

    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def load(self, origin: str) -> ScanState:
        """The scan progress recorded with the rows (empty state for a new index)."""
        self._check_origin(origin)
        raw = self._meta("progress")
        if raw is None:
            return ScanState.empty(origin)
        try:
            doc = json.loads(raw)
            psize = int(doc["processed_size"])
            pedge = tuple(base64.b64decode(h, validate=True) for h in doc["processed_edge"])
            cp = self.checkpoint_at(psize) if psize else None
            if psize and cp is None:
                raise ValueError(f"no checkpoint of size {psize}")
            processed = (
                ProcessedHead(cp.size, cp.root, cp.raw, pedge)
                if cp is not None
                else ScanState.empty(origin).processed
            )
            if merkle.CompactRange(processed.size, pedge).root() != processed.root:
                raise ValueError("the processed edge does not match the checkpoint")
            size = int(doc["pending_size"])
            edge = tuple(base64.b64decode(h, validate=True) for h in doc["pending_edge"])
            if size <= processed.size:
                return ScanState(origin, processed)
            merkle.CompactRange(size, edge)
            return ScanState(origin, processed, size, edge)
        except (ValueError, KeyError, TypeError) as exc:
            raise GatekeeperError(
                f"audit index {self.path}: damaged progress ({exc}); rebuild the index"
            ) from None

    def save(self, state: ScanState) -> None:
        """Record progress, with the processed checkpoint, in one transaction (the rows for it
        were written by :meth:`on_batch` before)."""
        self._check_origin(state.origin)
        doc = {
            "processed_size": state.processed.size,
            "processed_edge": [base64.b64encode(h).decode() for h in state.processed.edge],
            "pending_size": state.pending_size,
            "pending_edge": [base64.b64encode(h).decode() for h in state.pending_edge],
        }
        with self._tx() as c:
            if state.processed.size:
                c.execute(
                    "INSERT OR IGNORE INTO checkpoints VALUES (?, ?, ?)",
                    (state.processed.size, state.processed.checkpoint, int(time.time())),
                )
            c.execute("INSERT OR REPLACE INTO meta VALUES ('progress', ?)", (json.dumps(doc),))

    def _check_origin(self, origin: str) -> None:
        if origin != self.origin:
            raise ConfigError(f"audit index {self.path} belongs to log {self.origin!r}, not {origin!r}")

    # -- filling (BatchObserver) --------------------------------------------------------------

    def _tx(self) -> _Tx:
        return _Tx(self.conn, self.path)

    def on_batch(self, origin: str, batch: Batch) -> None:
        self._check_origin(origin)
        if len(batch.results) != len(batch.entries):
            raise ConfigError("the audit index needs checked actions (not an opaque log)")
        rows = []
        targets = []
        principals: set[tuple[str, str]] = set()
        for r, leaf in zip(batch.results, batch.leaf_hashes, strict=True):
            rows.append(_row_values(r, leaf))
            if r.signed is not None:
                for t in r.signed.action.targets:
                    targets.append((t.name, r.index, t.host_key))
                for p in r.principals:
                    principals.add((p, r.fingerprint))
        with self._tx() as c:
            c.executemany(
                "INSERT OR REPLACE INTO actions (idx, leaf_hash, status, error, kind, account, command, "
                "hosts, signer_fp, principals, reason, not_before, not_after, nonascii) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            c.execute("DELETE FROM texts WHERE rowid >= ? AND rowid < ?", (batch.start, batch.end))
            c.executemany(
                "INSERT INTO texts (rowid, command, reason) VALUES (?, ?, ?)",
                [(r[0], r[6], r[10]) for r in rows if r[6] is not None or r[10] is not None],
            )
            c.executemany(
                "INSERT OR REPLACE INTO entries VALUES (?, ?)",
                zip(range(batch.start, batch.end), batch.entries, strict=True),
            )
            c.executemany("INSERT OR REPLACE INTO targets VALUES (?, ?, ?)", targets)
            c.executemany("INSERT OR IGNORE INTO principals VALUES (?, ?)", sorted(principals))
            c.executemany("INSERT OR REPLACE INTO nodes VALUES (?, ?, ?)", batch.nodes)

    def on_processed(self, origin: str, checkpoint: SignedCheckpoint) -> None:
        self._check_origin(origin)
        with self._tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO checkpoints VALUES (?, ?, ?)",
                (checkpoint.size, checkpoint.raw, int(time.time())),
            )

    def on_discard(self, origin: str, size: int) -> None:
        """Forget rows at and beyond ``size`` (their root did not match a signed checkpoint)."""
        self._check_origin(origin)
        with self._tx() as c:
            c.execute("DELETE FROM actions WHERE idx >= ?", (size,))
            c.execute("DELETE FROM entries WHERE idx >= ?", (size,))
            c.execute("DELETE FROM texts WHERE rowid >= ?", (size,))
            c.execute("DELETE FROM targets WHERE idx >= ?", (size,))
            for level in range(TILE_HEIGHT, 64, TILE_HEIGHT):
                c.execute("DELETE FROM nodes WHERE level = ? AND n >= ?", (level, size >> level))

    # -- reading ------------------------------------------------------------------------------

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        """The newest verified checkpoint (its signature was checked when it was recorded; callers
        that hand it to someone else re-open it with the log key)."""
        row = self.conn.execute("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        return parse_signed_checkpoint(bytes(row[0])) if row else None

    def checkpoints(self) -> list[SignedCheckpoint]:
        rows = self.conn.execute("SELECT note FROM checkpoints ORDER BY size").fetchall()
        return [parse_signed_checkpoint(bytes(r[0])) for r in rows]

    def checkpoint_at(self, size: int) -> SignedCheckpoint | None:
        row = self.conn.execute("SELECT note FROM checkpoints WHERE size = ?", (size,)).fetchone()
        return parse_signed_checkpoint(bytes(row[0])) if row else None

    @property
    def size(self) -> int:
        """Number of rows (entries checked; the last ones may not be under a verified checkpoint)."""
        row = self.conn.execute("SELECT max(idx) FROM actions").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    @property
    def verified_size(self) -> int:
        cp = self.latest_checkpoint()
        return cp.size if cp else 0

    def entry(self, index: int) -> bytes:
        row = self.conn.execute("SELECT entry FROM entries WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise NotFoundError(f"entry {index} is not in the audit index (size {self.size})")
        return bytes(row[0])

    def get(self, index: int) -> Row:
        rows = list(self.search(Query(first=index, last=index)))
        if not rows:
            raise NotFoundError(f"entry {index} is not in the audit index (size {self.size})")
        return rows[0]

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        rows = self.conn.execute(
            "SELECT idx, leaf_hash FROM actions WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
        ).fetchall()
        if len(rows) != end - start:
            raise NotFoundError(f"leaf hashes [{start}, {end}) are not all in the audit index")
        return [bytes(r[1]) for r in rows]

    def _read_tile(self, tp: TilePath) -> bytes:
        first = tp.index * TILE_WIDTH
        if tp.level == 0:
            return b"".join(self.leaf_hashes(first, first + tp.width))
        assert tp.level is not None
        rows = self.conn.execute(
            "SELECT n, hash FROM nodes WHERE level = ? AND n >= ? AND n < ? ORDER BY n",
            (tp.level * TILE_HEIGHT, first, first + tp.width),
        ).fetchall()
        if len(rows) != tp.width:
            raise NotFoundError(f"hash tile {tp} is not complete in the audit index")
        return b"".join(bytes(r[1]) for r in rows)

    def hash_getter(self, size: int) -> merkle.HashGetter:
        """Hashes of the tree of ``size`` leaves, from the index alone (``size`` ≤ :attr:`size`)."""
        return tile_hash_getter(size, self._read_tile)

    # -- search -------------------------------------------------------------------------------

    def _regexp(self, pattern: str, value: str | None) -> bool:
        if value is None:
            return False
        rx = self._regex.get(pattern)
        if rx is None:
            rx = self._regex[pattern] = re.compile(pattern)
        return rx.search(value) is not None

    def _fingerprints(self, signers: Sequence[str]) -> list[str]:
        from gatekeeper import sshsig

        fps: list[str] = []
        for s in signers:
            if s.startswith("SHA256:"):
                fps.append(s)
            elif s.startswith(("ssh-", "ecdsa-")):
                fps.append(sshsig.fingerprint(s))
            else:
                rows = self.conn.execute("SELECT signer_fp FROM principals WHERE principal = ?", (s,))
                fps.extend(r[0] for r in rows)
        return fps

    def _where(self, q: Query) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if q.hosts:
            parts = []
            for h in q.hosts:
                parts.append("host GLOB ?" if _is_glob(h) else "host = ?")
                args.append(h)
            clauses.append(f"idx IN (SELECT idx FROM targets WHERE {' OR '.join(parts)})")
        for col, values in (("account", q.accounts), ("kind", q.kinds), ("status", q.status)):
            if values:
                parts = []
                for v in values:
                    parts.append(f"{col} GLOB ?" if _is_glob(v) else f"{col} = ?")
                    args.append(v)
                clauses.append("(" + " OR ".join(parts) + ")")
        if q.signers:
            fps = self._fingerprints(q.signers)
            if not fps:
                clauses.append("0")
            else:
                clauses.append(f"signer_fp IN ({','.join('?' * len(fps))})")
                args.extend(fps)
        if q.since is not None:
            clauses.append("not_before >= ?")
            args.append(q.since)
        if q.until is not None:
            clauses.append("not_before < ?")
            args.append(q.until)
        if q.first is not None:
            clauses.append("idx >= ?")
            args.append(q.first)
        if q.last is not None:
            clauses.append("idx <= ?")
            args.append(q.last)
        for col, pattern in (("command", q.command), ("reason", q.reason)):
            if pattern is None:
                continue
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"--{col}: not a valid regular expression: {exc}") from None
            hint = literal_hint(pattern)
            if hint is not None:
                clause, more = self._prefilter(col, *hint)
                clauses.append(clause)
                args.extend(more)
            clauses.append(f"gk_regexp(?, {col})")
            args.append(pattern)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def _prefilter(self, col: str, alternatives: tuple[str, ...], ignore_case: bool) -> tuple[str, list[Any]]:
        """SQL that keeps every row a regex with these required substrings can match.

        Rare substrings: candidates from the trigram index (queried with at most 12 characters of
        each: fewer trigram lists to intersect), then checked exactly with ``instr``. Frequent ones
        (more than :data:`FTS_PROBE` candidates): ``instr`` alone, so that a first page stops
        after a few rows instead of materialising every candidate. For case-insensitive patterns
        the check is on ASCII-lowered text, and rows with non-ASCII text stay candidates.
        """
        if ignore_case:
            exact = " OR ".join(f"instr(lower({col}), ?) > 0" for _ in alternatives)
            exact_args = [a.lower() for a in alternatives]
        else:
            exact = " OR ".join(f"instr({col}, ?) > 0" for _ in alternatives)
            exact_args = list(alternatives)
        fts = _fts_query(col, [a[:12] for a in alternatives])
        probe = self.conn.execute(
            "SELECT count(*) FROM (SELECT rowid FROM texts WHERE texts MATCH ? LIMIT ?)", (fts, FTS_PROBE + 1)
        ).fetchone()[0]
        if probe <= FTS_PROBE:
            clause = f"idx IN (SELECT rowid FROM texts WHERE texts MATCH ?) AND ({exact})"
            args: list[Any] = [fts, *exact_args]
        else:
            clause, args = f"({exact})", exact_args
        if ignore_case:
            clause = f"(({clause}) OR nonascii)"
        return clause, args

    def search(self, q: Query) -> Iterator[Row]:
        """Matching rows in index order (or newest first), at most ``q.limit``."""
        for row, _, _ in self._select(q, full=False):
            yield row

    def search_full(self, q: Query) -> Iterator[tuple[Row, bytes, bytes]]:
        """Like :meth:`search`, with each row's leaf hash and entry bytes."""
        yield from self._select(q, full=True)

    def _select(self, q: Query, full: bool) -> Iterator[tuple[Row, bytes, bytes]]:
        where, args = self._where(q)
        cols = _COLUMNS + (
            ", leaf_hash, (SELECT entry FROM entries e WHERE e.idx = actions.idx)" if full else ""
        )
        sql = f"SELECT {cols} FROM actions{where} ORDER BY idx{' DESC' if q.newest_first else ''}"
        if q.limit is not None:
            sql += " LIMIT ?"
            args.append(q.limit)
        verified = self.verified_size
        for r in self.conn.execute(sql, args):
            row = Row(
                index=r[0],
                status=r[1],
                error=r[2],
                kind=r[3],
                account=r[4],
                command=r[5],
                hosts=tuple(r[6].split(" ")) if r[6] else (),
                signer=r[7],
                principals=tuple(r[8].split(" ")) if r[8] else (),
                reason=r[9],
                not_before=r[10],
                not_after=r[11],
                verified=r[0] < verified,
            )
            yield row, (bytes(r[12]) if full else b""), (bytes(r[13]) if full else b"")

    def count(self, q: Query) -> int:
        where, args = self._where(q)
        return int(self.conn.execute(f"SELECT count(*) FROM actions{where}", args).fetchone()[0])

    def analyze(self, force: bool = False) -> bool:
        """Refresh the query planner's statistics (``ANALYZE``) when the index grew by a tenth
        since the last time (or ``force``); without them SQLite may scan an account's every row
        for a one-day search. Returns whether it ran (about a second per million rows)."""
        size = self.size
        done = int(self._meta("analyzed_size") or 0)
        if not force and size < done * 1.1 + 1000:
            return False
        try:
            self.conn.execute("ANALYZE")
        except sqlite3.Error as exc:
            raise GatekeeperError(f"audit index {self.path}: {exc}") from None
        self.set_meta("analyzed_size", str(size))
        return True

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def meta(self, key: str) -> str | None:
        return self._meta(key)

    def hosts(self) -> list[tuple[str, int]]:
        return [
            (r[0], r[1])
            for r in self.conn.execute("SELECT host, count(*) FROM targets GROUP BY host ORDER BY host")
        ]


def _row_values(r: Checked, leaf: bytes) -> tuple[Any, ...]:
    if r.signed is None:
        fp = r.fingerprint or None
        return (r.index, leaf, r.status, r.error, None, None, None, None, fp, None, None, None, None, 0)
    a = r.signed.action
    command = command_text(a.command)
    return (
        r.index,
        leaf,
        r.status,
        r.error,
        a.kind,
        a.account,
        command,
        " ".join(t.name for t in a.targets),
        r.fingerprint,
        " ".join(r.principals) or None,
        a.reason,
        a.not_before,
        a.not_after,
        int(not (command.isascii() and a.reason.isascii())),
    )


class _Tx:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error), SQLite errors as GatekeeperError."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise GatekeeperError(f"audit index {self.path}: {exc}") from None
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
                return
            except sqlite3.Error as e:
                self.conn.execute("ROLLBACK")
                raise GatekeeperError(f"audit index {self.path}: {e}") from None
        self.conn.execute("ROLLBACK")
