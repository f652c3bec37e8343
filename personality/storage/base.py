"""The two storage contracts of the log, split by the consistency each one needs.

A log needs two very different kinds of storage (the split follows Sunlight's ``ctlog.go`` and the
lesson Tessera learned when it dropped its database-only driver):

``SequencingStore``
    Small, strongly consistent state: the latest signed checkpoint, replaced only by
    compare-and-swap, and the dedupe index ``leaf_hash -> index``. This is where "who is the
    sequencer" is decided. Embedded: SQLite. Scaled out: PostgreSQL, where one sequencer holds a
    database lock and every front end reads through the same table.

``TileStore``
    Large, write-once data: hash tiles and entry bundles (C2SP tlog-tiles). It needs no
    transactions: the sequencer writes a batch's tiles *before* it commits the checkpoint that refers
    to them, so readers that follow a committed checkpoint always find its tiles. Embedded: the same
    SQLite file. Scaled out: a filesystem or object store any web server or CDN can serve.

How one batch goes through them (``personality.log`` does this; the stores only keep promises):

1. ``TileStore.put_tiles(tiles)`` -- every tile the new tree touches. A crash here leaves tiles
   *beyond* the committed tree; no reader has seen them and the next batch overwrites them.
2. ``SequencingStore.commit(old, new, leaves)`` -- compare-and-swap the checkpoint and add the
   dedupe rows, atomically and durably. This is the single commit point: a batch either happened
   (checkpoint + dedupe + tiles all durable) or did not (checkpoint and dedupe untouched).
3. Only then is the batch acknowledged.

Both Protocols are synchronous: the log calls them from one worker thread (the integrator) and
from request handlers for reads. A driver must be safe to call from several threads at once.
Every driver failure is raised as :class:`~personality.errors.StorageError` (or a subclass); a
missing item is :class:`~personality.errors.NotFoundError`; a lost compare-and-swap is
:class:`~personality.errors.ConflictError`. No other exception may escape a driver.

The same conformance suite (``tests/test_storage_conformance.py``) runs against every driver.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from personality.tlog.tiles import TilePath

__all__ = ["SequencingStore", "TileStore", "TileKey"]

# A tile's identity without its width: (level, index); level None is an entry bundle.
TileKey = tuple[int | None, int]


@runtime_checkable
class SequencingStore(Protocol):
    """The strongly consistent part: the signed checkpoint and the dedupe index.

    Contract for every driver:

    * **Durability.** When :meth:`commit` returns, its effects survive a process crash and a power
      loss (SQLite: WAL with ``synchronous=FULL``; PostgreSQL: ``synchronous_commit=on``).
    * **Atomicity.** :meth:`commit` is all or nothing: after a crash, or after it raised, the store
      holds either the old checkpoint and none of the batch's dedupe rows, or the new checkpoint
      and all of them. It may raise :class:`StorageError` *after* the commit became durable ("fail
      but persist": the connection dropped while acknowledging); callers resolve that by reading
      :meth:`checkpoint` again.
    * **Compare-and-swap.** :meth:`commit` replaces the checkpoint only if the stored one is, byte
      for byte, ``old``. Otherwise it raises :class:`ConflictError` and changes nothing. This is what
      makes "never two different checkpoints for the same size" hold even when two sequencers run
      by mistake: the loser never publishes what it signed.
    * **One sequencer.** The sequencer calls :meth:`lock_sequencer` before anything else and holds
      the lock until :meth:`close` (or its process dies). This matters beyond the CAS: tiles are
      written *before* the commit, so a second sequencer could overwrite committed tiles even
      though its commit would then fail. SQLite: an exclusive ``flock`` on a file beside the
      database; PostgreSQL: a session advisory lock. Readers (stateless front ends) never lock;
      they only call :meth:`checkpoint` and :meth:`lookup`.
    * **Concurrency.** Reads may run concurrently with a commit and see either the state before or
      after it, never a mix.
    """

    def lock_sequencer(self) -> None:
        """Become the only sequencer of this store until :meth:`close`.

        Raises :class:`ConflictError` at once if another sequencer (process or object) holds it.
        """
        ...

    def checkpoint(self) -> bytes | None:
        """The latest committed signed checkpoint (note text), or ``None`` for a new store."""
        ...

    def lookup(self, leaf_hashes: Iterable[bytes]) -> dict[bytes, int]:
        """The indexes of those leaf hashes that are in the committed log.

        Hashes that are not there are simply absent from the result (never an error). Only rows
        committed together with a checkpoint are visible.
        """
        ...

    def commit(self, old: bytes | None, new: bytes, leaves: Sequence[tuple[bytes, int]]) -> None:
        """Atomically: check the stored checkpoint is ``old``, store ``new``, add ``leaves``.

        ``leaves`` are ``(leaf_hash, index)`` dedupe rows for the entries this checkpoint adds, in
        index order. The caller (the one sequencer, holding the lock) guarantees they are new: it
        looked them up first. An index that is already taken raises :class:`StorageError` and
        changes nothing; a driver may also refuse a leaf hash that is already stored, but need
        not pay for checking. Raises :class:`ConflictError` if the checkpoint is not ``old``.
        """
        ...

    def close(self) -> None:
        """Release connections and locks. Idempotent."""
        ...


@runtime_checkable
class TileStore(Protocol):
    """The write-once part: hash tiles and entry bundles, addressed by C2SP tile paths.

    Contract for every driver:

    * **Keys.** A tile is stored under ``(level, index)`` (level ``None`` = entry bundle); its width
      is part of the value. A later :meth:`put_tiles` of the same key *replaces* the stored value:
      partial tiles grow into longer ones, and tiles beyond the committed tree that a crash left
      behind are overwritten by the next batch. The log never rewrites a tile inside the committed
      tree with different content, so readers see full tiles as immutable.
    * **Reads.** :meth:`get_tile` returns exactly ``width`` items: the first ``width`` hashes (or
      entries) of the stored value. The prefix of a longer version of a tile is the same data, so
      this is always correct for a width the committed tree has reached. If the stored value is
      narrower than asked, or the key is absent, it raises :class:`NotFoundError`.
    * **Durability.** Every tile written by :meth:`put_tiles` is durable no later than the next
      successful :meth:`SequencingStore.commit` of the same log returns. A filesystem or object
      store driver makes each write durable before returning; the SQLite driver, which shares its
      connections with the sequencing store, writes the tiles into the transaction that the
      checkpoint commit then completes (one transaction, one fsync). Either way a committed
      checkpoint never refers to a tile that a crash can lose. Writes that never reach a
      successful commit may be dropped: they were beyond the committed tree.
    * **Crash consistency.** A crash during :meth:`put_tiles` may leave any subset of the batch
      written, each tile whole or absent (never torn).
    * **Concurrency.** Reads may run concurrently with writes; a read sees a whole old or whole new
      value.
    """

    def put_tiles(self, tiles: Mapping[TilePath, bytes]) -> None:
        """Store every tile (hash tile bytes or entry bundle bytes) under its path's key.

        The caller guarantees each value holds exactly ``path.width`` hashes or entries. Drivers
        refuse a hash tile of the wrong length (``StorageError``); they need not parse bundles.
        """
        ...

    def get_tile(self, path: TilePath) -> bytes:
        """The first ``path.width`` hashes / entries of the tile; :class:`NotFoundError` if absent."""
        ...

    def close(self) -> None:
        """Release connections. Idempotent."""
        ...
