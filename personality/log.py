"""The log: admission, dedupe, a bounded queue, batched integration, one checkpoint per batch, proofs.

Two layers:

:class:`Sequencer` (synchronous, runs on one worker thread)
    Owns the committed :class:`~personality.storage.tree.TreeState`. :meth:`Sequencer.integrate`
    takes a batch, drops what the log already holds, appends the rest, writes the tiles, signs one
    checkpoint and commits it with compare-and-swap -- once.

:class:`Log` (asyncio)
    What the HTTP server calls. :meth:`Log.add` admits an entry and puts it in a bounded queue;
    a single integrator task hands *everything pending* to the sequencer as soon as the previous
    batch is durable (no timer: under light load a batch is one entry, under heavy load batches
    grow by themselves), and resolves the waiting requests only after the commit. The blocking
    storage work runs on the worker thread, so the event loop keeps accepting requests meanwhile.

Crash consistency of one batch (storage contracts in :mod:`personality.storage.base`)::

    1 dedupe lookup, assign indexes, extend a *copy* of the tree   memory only
    2 sign the checkpoint for the new size                        memory only; never published
    3 TileStore.put_tiles(...)                                     tiles beyond the committed tree
    4 SequencingStore.commit(old, new, dedupe rows)                THE commit point (CAS, durable)
    5 publish the new state in memory, answer the requests

A crash before 4 loses only unacknowledged entries; the checkpoint signed in 2 never left the
process, the tiles from 3 are overwritten by the next batch. A crash after 4 loses nothing: the
checkpoint, dedupe rows and (by the TileStore durability contract) every tile it refers to are
durable, and on restart :meth:`Sequencer.load` rebuilds the state from exactly those. An add is
acknowledged only in 5, so an acknowledged add is never lost.

"Never two different checkpoints for the same size": every published checkpoint went through the
compare-and-swap in 4 from the checkpoint before it, so the published checkpoints form one chain
in which each size appears once. A second sequencer on the same store loses the CAS
(:class:`ConflictError`) and never publishes. If 4 raises with an unknown outcome, the sequencer
reads the checkpoint back before doing anything else (see :meth:`Sequencer.integrate`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from personality.errors import (
    ConflictError,
    FormatError,
    NotFoundError,
    OverloadedError,
    PersonalityError,
    StorageError,
    VerificationError,
)
from personality.metrics import Registry
from personality.storage.base import SequencingStore, TileStore
from personality.storage.tree import FullTileCache, TreeState
from personality.tlog import merkle
from personality.tlog.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from personality.tlog.merkle import EMPTY_ROOT, leaf_hash
from personality.tlog.note import Signer, format_signature_line
from personality.tlog.tiles import MAX_ENTRY_SIZE, TilePath

__all__ = ["Admission", "AcceptAny", "AddResult", "Sequencer", "Log"]

logger = logging.getLogger("personality.log")


class Admission(Protocol):
    """Decides whether an entry may enter the log. ``check`` raises ``RefusedError`` (with a reason a
    person can act on) or returns ``None``. Called on the event loop thread: keep it fast."""

    def check(self, entry: bytes) -> None: ...


class AcceptAny:
    """Admits every entry: the explicit generic mode (``gk log serve --accept-any``)."""

    def check(self, entry: bytes) -> None:
        return None


@dataclass(frozen=True)
class AddResult:
    """The answer to an add. ``checkpoint``/``proof`` are for ``size`` and present when waited for."""

    index: int
    leaf_hash: bytes
    duplicate: bool
    size: int | None = None
    checkpoint: bytes | None = None
    proof: tuple[bytes, ...] | None = None
    #: The consistency proof from ``consistency_from`` to ``size`` (when asked for and waited).
    consistency: tuple[bytes, ...] | None = None


class Sequencer:
    """The single writer. Not thread-safe: call :meth:`load` and :meth:`integrate` from one thread.

    Readers use :attr:`state` (immutable once published) and :attr:`cache` from any thread.
    """

    def __init__(
        self,
        sequencing: SequencingStore,
        tiles: TileStore,
        signer: Signer,
        *,
        origin: str | None = None,
        tile_cache: int = 4096,
    ) -> None:
        self.sequencing = sequencing
        self.tiles = tiles
        self.signer = signer
        self.origin = origin if origin is not None else signer.name
        self.cache = FullTileCache(tiles, tile_cache)
        self._state: TreeState | None = None
        self._reload = True
        self._locked = False
        self._signed_once = False

    @property
    def state(self) -> TreeState:
        if self._state is None:
            raise StorageError("the log is not loaded yet")
        return self._state

    def _sign(self, size: int, root: bytes) -> bytes:
        """The signed checkpoint note. The first one goes through the strict formatters (which
        check that origin and key make a well-formed note); later ones take the fast path, which
        differs only in size and root."""
        if not self._signed_once:
            note = sign_checkpoint(Checkpoint(self.origin, size, root), [self.signer])
            self._signed_once = True
            return note
        body = f"{self.origin}\n{size}\n{base64.b64encode(root).decode()}\n".encode()
        return body + b"\n" + format_signature_line(self.signer.sign(body))

    def load(self) -> TreeState:
        """Read the committed checkpoint (creating the empty tree's on a new store) and rebuild the
        in-memory state from the tiles it refers to.

        Takes the store's sequencer lock first (``ConflictError`` if another sequencer runs).
        Raises ``VerificationError`` if the stored checkpoint is not signed by this log's key or
        names another origin, ``StorageError`` if tiles are missing or do not match its root.
        """
        if not self._locked:
            self.sequencing.lock_sequencer()
            self._locked = True
        raw = self.sequencing.checkpoint()
        if raw is None:
            first = self._sign(0, EMPTY_ROOT)
            try:
                self.sequencing.commit(None, first, [])
            except ConflictError:
                pass  # someone else created it first; read theirs
            raw = self.sequencing.checkpoint()
            if raw is None:
                raise StorageError("the store did not keep the first checkpoint")
        try:
            signed = open_checkpoint(raw, self.origin, [self.signer.verifier()])
        except (FormatError, VerificationError) as exc:
            raise VerificationError(
                f"the stored checkpoint does not belong to this log (origin {self.origin!r}, key "
                f"{self.signer.verifier().vkey()}): {exc}. Is the key file the one created with this log?"
            ) from exc
        try:
            state = TreeState.load(signed.size, raw, self.tiles, self.cache)
        except NotFoundError as exc:
            raise StorageError(
                f"a tile of the committed tree of size {signed.size} is missing: {exc}"
            ) from exc
        if state.root != signed.root:
            raise StorageError(
                f"the stored tiles do not hash to the checkpoint's root at size {signed.size}: the "
                "store is damaged"
            )
        self._state = state
        self._reload = False
        return state

    def integrate(
        self, entries: Sequence[bytes], leaf_hashes: Sequence[bytes]
    ) -> tuple[list[tuple[int, bool]], TreeState]:
        """Sequence and integrate one batch; return ``(index, was_already_logged)`` per input and
        the new committed state. Durable when it returns.

        Entries already in the log (or earlier in the same batch) get their existing index and add
        no leaf. Raises ``StorageError`` if nothing was committed or the outcome is unknown (then
        the next call reloads from storage first; resubmitting is safe because of dedupe), and
        ``ConflictError`` if another sequencer owns the store.
        """
        if self._reload:
            self.load()
        old = self.state
        assigned = self.sequencing.lookup(dict.fromkeys(leaf_hashes))
        results: list[tuple[int, bool]] = []
        new_entries: list[bytes] = []
        new_hashes: list[bytes] = []
        size = old.size
        for entry, h in zip(entries, leaf_hashes, strict=True):
            i = assigned.get(h)
            if i is None:
                i = assigned[h] = size + len(new_hashes)
                new_entries.append(entry)
                new_hashes.append(h)
                results.append((i, False))
            else:
                results.append((i, True))
        if not new_hashes:
            return results, old

        new = old.copy()
        tiles, completed = new.extend(new_entries, new_hashes)
        new.root = new.compact.root()
        new.checkpoint = self._sign(new.size, new.root)
        # (3) Tiles first: a failure or crash here leaves only tiles beyond the committed tree.
        self.tiles.put_tiles(tiles)
        # (4) The commit point.
        try:
            self.sequencing.commit(
                old.checkpoint, new.checkpoint, list(zip(new_hashes, range(size, new.size), strict=True))
            )
        except ConflictError:
            self._reload = True
            raise
        except StorageError as exc:
            self._resolve_unknown_commit(old, new, exc)
        for level, index, exp in completed:
            self.cache.put(level, index, exp)
        self._state = new
        return results, new

    def _resolve_unknown_commit(self, old: TreeState, new: TreeState, exc: StorageError) -> None:
        """The commit raised: find out whether it happened. Returns only if it did."""
        try:
            current = self.sequencing.checkpoint()
        except StorageError:
            self._reload = True
            raise StorageError(
                f"the commit failed and its outcome is unknown ({exc}); the entries may or may not "
                "be logged -- resubmit them: duplicates get their existing index"
            ) from exc
        if current == new.checkpoint:
            logger.warning("commit reported %s but did persist; continuing", exc)
            return
        if current == old.checkpoint:
            raise exc
        self._reload = True
        raise ConflictError(
            "the stored checkpoint changed under this sequencer: another sequencer is running"
        )

    # -- proofs (any thread) -------------------------------------------------------------------------

    def inclusion_proof(self, index: int, size: int, state: TreeState | None = None) -> list[bytes]:
        st = state or self.state
        if not 0 < size <= st.size:
            raise NotFoundError(f"tree size {size} is not in 1..{st.size} (the current size)")
        if not 0 <= index < size:
            raise NotFoundError(f"index {index} is not in the tree of size {size}")
        return merkle.inclusion_proof(index, size, st.getter(self.cache))

    def consistency_proof(self, size1: int, size2: int, state: TreeState | None = None) -> list[bytes]:
        st = state or self.state
        if not 0 <= size1 <= size2 <= st.size:
            raise NotFoundError(
                f"no consistency proof from size {size1} to {size2}: need 0 <= from <= to <= {st.size}"
            )
        return merkle.consistency_proof(size1, size2, st.getter(self.cache))


@dataclass(slots=True)
class _Pending:
    """One distinct entry waiting for integration, and every request waiting for it. Each request
    has its own future, so a request that is cancelled (client gone) affects no other."""

    entry: bytes
    leaf_hash: bytes
    waiters: list[asyncio.Future[tuple[int, bool]]]


class Log:
    """The asyncio face of the log. Create, ``await start()``, serve, ``await close()``.

    :param max_pending: entries waiting for integration before :meth:`add` raises
        ``OverloadedError`` (HTTP 503 with ``Retry-After``).
    :param max_pending_bytes: the same bound in bytes.
    :param max_batch: the most entries integrated in one commit.
    """

    def __init__(
        self,
        sequencing: SequencingStore,
        tiles: TileStore,
        signer: Signer,
        *,
        origin: str | None = None,
        admission: Admission | None = None,
        max_pending: int = 65536,
        max_pending_bytes: int = 64 << 20,
        max_batch: int = 4096,
        tile_cache: int = 4096,
    ) -> None:
        self.sequencer = Sequencer(sequencing, tiles, signer, origin=origin, tile_cache=tile_cache)
        self.admission: Admission = admission if admission is not None else AcceptAny()
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.max_batch = max_batch
        self._state: TreeState | None = None
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        self._inflight: dict[bytes, _Pending] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        m = self.metrics = Registry()
        self._m_adds = m.counter(
            "gk_log_adds_total", "Entries submitted and acknowledged (duplicates included)."
        )
        self._m_dups = m.counter(
            "gk_log_duplicates_total", "Acknowledged adds whose entry was already logged."
        )
        self._m_refused = m.counter("gk_log_refused_total", "Adds refused by the admission policy.")
        self._m_overload = m.counter("gk_log_overloaded_total", "Adds refused because the queue was full.")
        self._m_failed = m.counter("gk_log_batch_failures_total", "Batches that failed to commit.")
        self._m_batches = m.counter("gk_log_batches_total", "Batches committed (one checkpoint each).")
        self._m_batch_size = m.histogram(
            "gk_log_batch_size", "Entries per integrated batch.", [1, 4, 16, 64, 256, 1024, 4096, 16384]
        )
        self._m_batch_seconds = m.histogram(
            "gk_log_batch_seconds",
            "Time to integrate and commit one batch.",
            [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0],
        )
        m.gauge("gk_log_queue_depth", "Entries waiting for integration.", lambda: len(self._pending))
        m.gauge("gk_log_tree_size", "Size of the latest published checkpoint.", lambda: self.size)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the committed tree (in the worker thread) and start the integrator."""
        loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="gk-integrator")
        self._state = await loop.run_in_executor(self._executor, self.sequencer.load)
        self._task = asyncio.create_task(self._integrator(), name="gk-integrator")
        self._task.add_done_callback(self._integrator_died)

    def _integrator_died(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        logger.critical("the integrator stopped: %r; refusing adds from now on", exc)
        self._closing = True
        batch, self._pending = self._pending, []
        self._fail(batch, exc if isinstance(exc, Exception) else StorageError("the integrator stopped"))

    async def close(self) -> None:
        """Refuse new adds, let queued ones finish, stop the integrator, close the stores."""
        self._closing = True
        if self._task is not None:
            self._wake.set()
            await self._idle.wait()
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.sequencer.sequencing.close()
        self.sequencer.tiles.close()

    # -- state ---------------------------------------------------------------------------------------

    @property
    def state(self) -> TreeState:
        if self._state is None:
            raise StorageError("the log is not started")
        return self._state

    @property
    def size(self) -> int:
        return self._state.size if self._state is not None else 0

    @property
    def checkpoint(self) -> bytes:
        """The latest published signed checkpoint (note text)."""
        return self.state.checkpoint

    @property
    def origin(self) -> str:
        return self.sequencer.origin

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    # -- writes --------------------------------------------------------------------------------------

    async def add(
        self, entry: bytes, *, wait: bool = True, consistency_from: int | None = None
    ) -> AddResult:
        """Log ``entry``; return once it is durably integrated (also with ``wait=False``: the index is
        only assigned at the commit). With ``wait`` the result carries the checkpoint and an
        inclusion proof for it; with ``consistency_from=N`` also the consistency proof from size
        ``N`` to that checkpoint's size (saves the client a second request). ``N`` must satisfy
        ``0 < N <= size`` before the entry is added (the tree only grows, so it still holds for the
        returned checkpoint), else ``FormatError`` and nothing is logged; it needs ``wait``.

        Raises ``FormatError`` (too large), ``RefusedError`` (admission), ``OverloadedError``
        (queue full or shutting down), ``StorageError``/``ConflictError`` (batch failed: nothing
        of it was acknowledged).
        """
        if len(entry) > MAX_ENTRY_SIZE:
            raise FormatError(f"entry is {len(entry)} bytes; the log accepts at most {MAX_ENTRY_SIZE}")
        if consistency_from is not None:
            if not wait:
                raise FormatError("from=N needs wait=1: a consistency proof goes with a checkpoint")
            if not 0 < consistency_from <= self.size:
                raise FormatError(
                    f"from must be in 1..{self.size} (the current tree size), got {consistency_from}"
                )
        try:
            self.admission.check(entry)
        except PersonalityError:
            self._m_refused.inc()
            raise
        h = leaf_hash(entry)
        fut: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()
        p = self._inflight.get(h)
        joined = p is not None
        if p is None:
            if self._closing:
                raise OverloadedError("the log is shutting down; retry against its replacement", 5)
            if (
                len(self._pending) >= self.max_pending
                or self._pending_bytes + len(entry) > self.max_pending_bytes
            ):
                self._m_overload.inc()
                raise OverloadedError(
                    f"the log has {len(self._pending)} entries waiting to be integrated; retry shortly", 1
                )
            p = self._inflight[h] = _Pending(entry, h, [fut])
            self._pending.append(p)
            self._pending_bytes += len(entry)
            self._idle.clear()
            self._wake.set()
        else:
            p.waiters.append(fut)
        index, logged = await fut
        duplicate = logged or joined
        self._m_adds.inc()
        if duplicate:
            self._m_dups.inc()
        if not wait:
            return AddResult(index, h, duplicate)
        st = self.state
        proof = self.sequencer.inclusion_proof(index, st.size, st)
        consistency = None
        if consistency_from is not None:
            consistency = tuple(self.sequencer.consistency_proof(consistency_from, st.size, st))
        return AddResult(index, h, duplicate, st.size, st.checkpoint, tuple(proof), consistency)

    async def _integrator(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: len(batch)]
                self._pending_bytes -= sum(len(p.entry) for p in batch)
                t0 = time.perf_counter()
                try:
                    results, state = await loop.run_in_executor(
                        self._executor,
                        self.sequencer.integrate,
                        [p.entry for p in batch],
                        [p.leaf_hash for p in batch],
                    )
                except Exception as exc:  # every failure goes back to the waiting requests
                    self._fail(batch, exc)
                    continue
                self._m_batch_seconds.observe(time.perf_counter() - t0)
                if state is not self._state:
                    self._m_batches.inc()
                    self._m_batch_size.observe(state.size - self.size)
                self._state = state
                for p, r in zip(batch, results, strict=True):
                    self._inflight.pop(p.leaf_hash, None)
                    for w in p.waiters:
                        if not w.done():
                            w.set_result(r)
            self._idle.set()

    def _fail(self, batch: list[_Pending], exc: Exception) -> None:
        self._m_failed.inc()
        if isinstance(exc, PersonalityError):
            err: PersonalityError = exc
            logger.error("batch of %d entries failed: %s", len(batch), exc)
        else:
            logger.exception("batch of %d entries failed with an internal error", len(batch), exc_info=exc)
            err = StorageError(f"internal error while integrating; nothing was logged: {exc}")
        for p in batch:
            self._inflight.pop(p.leaf_hash, None)
            for w in p.waiters:
                if not w.done():
                    w.set_exception(err)
                    w.exception()  # marked retrieved: requests that went away do not warn

    # -- reads ---------------------------------------------------------------------------------------

    def inclusion_proof(self, index: int, size: int | None = None) -> tuple[int, list[bytes]]:
        """``(size, proof)`` for leaf ``index`` at ``size`` (default: the current checkpoint's)."""
        st = self.state
        n = st.size if size is None else size
        return n, self.sequencer.inclusion_proof(index, n, st)

    def index_of(self, leaf_hash: bytes) -> int:
        """The index of a leaf hash in the published tree; ``NotFoundError`` if absent."""
        found = self.sequencer.sequencing.lookup([leaf_hash]).get(leaf_hash)
        if found is None or found >= self.size:
            raise NotFoundError("no entry with this leaf hash is in the log")
        return found

    def leaf_hash_at(self, index: int) -> bytes:
        """The leaf hash at ``index`` of the published tree; ``NotFoundError`` beyond it."""
        st = self.state
        if not 0 <= index < st.size:
            raise NotFoundError(f"index {index} is not in the tree of size {st.size}")
        return st.getter(self.sequencer.cache)(0, index)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        st = self.state
        return self.sequencer.consistency_proof(size1, st.size if size2 is None else size2, st)

    def read_tile(self, path: TilePath) -> bytes:
        """A hash tile or entry bundle of the published tree; ``NotFoundError`` beyond it."""
        return self.state.read_tile(path, self.sequencer.tiles, self.sequencer.cache)
