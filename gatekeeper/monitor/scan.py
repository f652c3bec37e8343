"""Reading a log through the tile API and rebuilding its tree from the entries.

Shared by ``gk monitor`` and ``gk audit``. A :class:`TileSource` reads the C2SP tlog-tiles
resources (``checkpoint``, hash tiles, entry bundles) from wherever they are: the log over HTTP,
or a static mirror directory. Nothing read from a source is trusted: checkpoints are opened with
the log's verifier keys, consistency proofs are recomputed from tiles and verified against both
roots, and entries are hashed here and must rebuild the signed root exactly.

:func:`scan_entries` is the rebuild: from a :class:`~personality.tlog.merkle.CompactRange` at
``start`` (the right edge of entries already checked) it downloads the entry bundles up to a
checkpoint's size, hashes every entry, checks it (:class:`~gatekeeper.monitor.check.CheckPool`)
and hands each batch, in log order, to a callback *after* it was checked, together with the
compact range at the end of that batch. A caller persists progress from the callback only; so a
crash can never mark an unchecked entry as checked. The final root is compared by the caller.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

from gatekeeper.errors import LogMisbehaved
from gatekeeper.monitor.check import Checked, CheckPool
from personality.client import HTTPTransport, LogClient, Params, StaticTransport
from personality.errors import FormatError, NotFoundError, PersonalityError, ProofError
from personality.tlog import merkle
from personality.tlog.checkpoint import SignedCheckpoint
from personality.tlog.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    TilePath,
    parse_entry_bundle,
)

__all__ = [
    "TileSource",
    "DirectorySource",
    "ClientSource",
    "Batch",
    "TruncatedLog",
    "prove_consistency",
    "read_entries",
    "scan_entries",
]


class TileSource(Protocol):
    """Where a log is read from. Methods raise ``NotFoundError`` for a missing resource,
    ``UnavailableError``/``LogUnavailable`` when the log cannot be reached, ``FormatError`` for
    an oversized or malformed answer."""

    name: str
    remote: bool  # reads wait on a network: worth prefetching on a thread

    def read_checkpoint(self) -> bytes: ...

    def read_tile(self, tp: TilePath) -> bytes:
        """A hash tile or entry bundle (falling back to the full tile for a missing partial one)."""
        ...

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]: ...


class ClientSource:
    """A :class:`TileSource` over :class:`personality.client.LogClient` (HTTP, a static
    directory, or any fetch callable)."""

    def __init__(self, client: LogClient, name: str, remote: bool = True) -> None:
        self.client = client
        self.name = name
        self.remote = remote

    @classmethod
    def at(cls, location: str, headers: Mapping[str, str] | None = None) -> ClientSource:
        """``http(s)://…`` (the log service, or any web server holding a static mirror: without
        the JSON API, proofs are computed from tiles) or a directory holding a static mirror.
        ``headers`` go with every HTTP request (``Authorization`` for a protected read path)."""
        if location.startswith(("http://", "https://")):
            return cls(LogClient(_ProbingTransport(HTTPTransport(location, headers=headers))), location)
        return cls(LogClient(StaticTransport(location)), location, remote=False)

    def read_checkpoint(self) -> bytes:
        return self.client.checkpoint()

    def read_tile(self, tp: TilePath) -> bytes:
        return self.client.tile(tp)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        return self.client.consistency_proof(size1, size2)


class _ProbingTransport:
    """An HTTP transport that finds out whether the JSON API exists: a static mirror served by a
    plain web server answers 404 to ``proof/…``, and proofs are then computed from tiles."""

    def __init__(self, inner: HTTPTransport) -> None:
        self.inner = inner
        self._dynamic: bool | None = None

    @property
    def dynamic(self) -> bool:
        if self._dynamic is None:
            try:
                self.inner.get("healthz")
                self._dynamic = True
            except NotFoundError:
                self._dynamic = False
            except PersonalityError:
                return True  # unknown yet (unreachable): the next call will tell
        return self._dynamic

    def get(self, path: str, params: Params | None = None) -> bytes:
        return self.inner.get(path, params)

    def post(self, path: str, body: bytes, params: Params | None = None) -> bytes:
        return self.inner.post(path, body, params)


class DirectorySource(ClientSource):
    """A static mirror: the tile API written as plain files under ``root``."""

    def __init__(self, root: str | Path) -> None:
        super().__init__(LogClient(StaticTransport(root)), str(root), remote=False)


class TruncatedLog(LogMisbehaved):
    """Entries covered by a signed checkpoint are missing or short (``start`` is the first)."""

    def __init__(self, message: str, start: int) -> None:
        super().__init__(message)
        self.start = start


def prove_consistency(source: TileSource, old_size: int, old_root: bytes, new: SignedCheckpoint) -> None:
    """Check that ``new`` extends ``(old_size, old_root)``, with a proof recomputed from the log's
    tiles at ``new.size``. Raises ``ProofError`` when it does not (a fork, if both checkpoints are
    validly signed), ``LogMisbehaved`` for malformed tiles, ``NotFoundError``/``LogUnavailable``
    when tiles are missing or unreachable."""
    if old_size > new.size:
        raise ProofError(f"the log shrank from {old_size} to {new.size} entries")
    if old_size == new.size or old_size == 0:
        merkle.verify_consistency(old_size, new.size, old_root, new.root, [])
        return
    try:
        proof = source.consistency_proof(old_size, new.size)
    except FormatError as exc:
        raise LogMisbehaved(f"malformed hash tile or proof: {exc}") from None
    merkle.verify_consistency(old_size, new.size, old_root, new.root, proof)


def _read_bundle(source: TileSource, n: int, width: int) -> list[bytes]:
    return parse_entry_bundle(source.read_tile(TilePath(None, n, width)), width)


def read_entries(source: TileSource, start: int, end: int, size: int) -> Iterator[tuple[int, list[bytes]]]:
    """Entries ``[start, end)`` of a log of ``size`` entries, as tile-aligned ``(first, entries)``
    batches. Raises :class:`TruncatedLog` when a bundle is missing or holds too few entries."""
    if not 0 <= start <= end <= size:
        raise ValueError(f"bad entry range [{start}, {end}) of {size}")
    n = start // TILE_WIDTH
    while n * TILE_WIDTH < end:
        first = n * TILE_WIDTH
        width = min(TILE_WIDTH, size - first)
        try:
            entries = _read_bundle(source, n, width)
        except NotFoundError as exc:
            raise TruncatedLog(f"entry bundle {n} is missing: {exc}", max(first, start)) from None
        except FormatError as exc:
            raise TruncatedLog(
                f"entry bundle {n} is truncated or malformed: {exc}", max(first, start)
            ) from None
        lo, hi = max(first, start), min(first + width, end)
        yield lo, entries[lo - first : hi - first]
        n += 1


@dataclass
class Batch:
    """One checked batch, in log order: entries ``[start, start + len(entries))``.

    ``edge`` is the compact range after the last entry of the batch; ``nodes`` the perfect
    subtrees that completed in the batch (level, index, hash), for a local index that serves
    proofs. Entries and results line up one to one.
    """

    start: int
    entries: list[bytes]
    leaf_hashes: list[bytes]
    results: list[Checked]
    edge: merkle.CompactRange
    nodes: list[tuple[int, int, bytes]]

    @property
    def end(self) -> int:
        return self.start + len(self.entries)


class TreeBuilder:
    """The right edge of the tree while entries stream in, fast for whole tiles.

    A tree whose size is a multiple of 256 is, above level 8, the tree of its tile roots; so
    whole tiles are hashed as perfect subtrees (255 node hashes, no per-leaf bookkeeping) and
    their roots appended to a :class:`~personality.tlog.merkle.CompactRange` of tile roots; a
    partial tile goes leaf by leaf through a second one. :meth:`compact` joins both into the
    compact range of all leaves (tile-level hashes, then the partial tile's). Completed nodes at
    tile levels (8, 16, …) are reported, for an index that serves proofs.
    """

    __slots__ = ("tiles", "tail")

    def __init__(self, edge: merkle.CompactRange) -> None:
        whole, rest = divmod(edge.size, TILE_WIDTH)
        hashes = edge.hashes
        upper = whole.bit_count()
        self.tiles = merkle.CompactRange(whole, hashes[:upper])
        self.tail = merkle.CompactRange(rest, hashes[upper:])

    @property
    def size(self) -> int:
        return self.tiles.size * TILE_WIDTH + self.tail.size

    def compact(self) -> merkle.CompactRange:
        return merkle.CompactRange(self.size, self.tiles.hashes + self.tail.hashes)

    def _tile_done(self, root: bytes, nodes: list[tuple[int, int, bytes]] | None) -> None:
        done = self.tiles.append(root)
        if nodes is not None:
            nodes.extend((level + TILE_HEIGHT, n, h) for level, n, h in done if level % TILE_HEIGHT == 0)

    def extend(self, leaves: Sequence[bytes], nodes: list[tuple[int, int, bytes]] | None = None) -> None:
        """Append leaf hashes; completed tile-level nodes go to ``nodes`` when given."""
        i, n = 0, len(leaves)
        sha = hashlib.sha256
        if self.tail.size:
            take = min(n, TILE_WIDTH - self.tail.size)
            self.tail.extend(leaves[:take])
            i = take
            if self.tail.size == TILE_WIDTH:
                root = self.tail.root()
                self.tail = merkle.CompactRange()
                self._tile_done(root, nodes)
        while n - i >= TILE_WIDTH:
            level = leaves[i : i + TILE_WIDTH]
            while len(level) > 1:  # a perfect subtree: RFC 6962 node hashes, pairwise
                it = iter(level)
                level = [sha(b"\x01" + a + b).digest() for a, b in zip(it, it, strict=True)]
            self._tile_done(level[0], nodes)
            i += TILE_WIDTH
        if i < n:
            self.tail.extend(leaves[i:])


def scan_entries(
    source: TileSource,
    edge: merkle.CompactRange,
    size: int,
    pool: CheckPool,
    on_batch: Callable[[Batch], None],
    *,
    keep_nodes: bool = False,
    prefetch: int = 4,  # bundles read ahead on a thread, for remote sources
    parallel_above: int = 4096,
) -> merkle.CompactRange:
    """Download, hash and check entries ``[edge.size, size)``; return the final edge.

    ``on_batch`` is called for every batch in order, after its entries were checked. The caller
    compares ``result.root()`` with the signed root of ``size``: a difference means the entries
    served are not the ones the checkpoint signs (a rewrite). ``edge`` itself is not modified.
    With ``keep_nodes``, the perfect subtrees completed at tile levels (8, 16, …) are passed in
    :attr:`Batch.nodes`. Raises :class:`TruncatedLog`, ``LogUnavailable``; whatever ``on_batch``
    raises stops the scan.
    """
    tree = TreeBuilder(edge)
    if size < tree.size:
        raise ValueError("the target size is smaller than what was already scanned")
    total = size - tree.size
    side: dict[int, tuple[list[bytes], merkle.CompactRange, list[tuple[int, int, bytes]]]] = {}
    sha = hashlib.sha256

    def hashed() -> Iterator[tuple[int, list[bytes]]]:
        depth = prefetch if getattr(source, "remote", True) else 1  # local files: a thread only costs
        for start, entries in _prefetched(source, tree.size, size, depth):
            if start != tree.size:  # pragma: no cover - read_entries yields contiguous ranges
                raise LogMisbehaved("entry batches are not contiguous")
            leaves = [sha(b"\x00" + e).digest() for e in entries]  # RFC 6962 leaf hashes
            nodes: list[tuple[int, int, bytes]] = []
            tree.extend(leaves, nodes if keep_nodes else None)
            side[start] = (leaves, tree.compact(), nodes)
            yield start, entries

    parallel = total > parallel_above and not pool.checker.opaque  # opaque: nothing to check
    for start, entries, results in pool.map(hashed(), parallel=parallel):
        leaves, snapshot, nodes = side.pop(start)
        on_batch(Batch(start, entries, leaves, results, snapshot, nodes))
    return tree.compact()


def _prefetched(source: TileSource, start: int, end: int, depth: int) -> Iterator[tuple[int, list[bytes]]]:
    """:func:`read_entries` with up to ``depth`` bundles downloaded ahead on a thread."""
    if depth <= 1 or end - start <= TILE_WIDTH:
        yield from read_entries(source, start, end, end)
        return
    firsts = list(range(start - start % TILE_WIDTH, end, TILE_WIDTH))

    def one(first: int) -> list[tuple[int, list[bytes]]]:
        return list(read_entries(source, max(first, start), min(first + TILE_WIDTH, end), end))

    with ThreadPoolExecutor(max_workers=2) as ex:
        futures: list[Future[list[tuple[int, list[bytes]]]]] = []
        it = iter(firsts)
        for first in it:
            futures.append(ex.submit(one, first))
            if len(futures) >= depth:
                break
        while futures:
            fut = futures.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                futures.append(ex.submit(one, nxt))
            try:
                yield from fut.result()
            except BaseException:
                for f in futures:
                    f.cancel()
                raise


class Progress:
    """Rate and ETA for a long scan, drawn on a TTY (stderr) at most 5 times a second."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, enabled: bool = True) -> None:

        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        isatty = getattr(self._stream, "isatty", None)
        self.enabled = enabled and total > 0 and bool(isatty and isatty())
        self._t0 = time.monotonic()
        self._last = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.2 or self.done >= self.total):
            self._last = now
            rate = self.done / max(now - self._t0, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            pct = 100.0 * self.done / self.total
            width = 30
            fill = int(width * self.done / self.total)
            bar = "#" * fill + "-" * (width - fill)
            line = (
                f"\r{self.label} [{bar}] {pct:5.1f}% {self.done:,}/{self.total:,} "
                f"{rate:,.0f}/s ETA {eta:,.0f}s"
            )
            self._stream.write(line)
            self._stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self._stream.write("\n")
            self._stream.flush()
