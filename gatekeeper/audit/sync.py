"""Filling the audit index, and the full-log audit.

:func:`sync` runs the monitor's pipeline (:class:`~gatekeeper.monitor.monitor.LogMonitor`) with the
index as its observer and progress store: checkpoints are verified and kept in a head store next
to the index (``<index>.heads/``), forks and rollbacks halt the sync with evidence, entries are
rebuilt into the tree and every action's signature checked before a checkpoint is recorded as
verified in the index.

:func:`full_verify` is ``gk audit verify``: it trusts nothing stored. It reads the log's current
checkpoint, rebuilds the whole tree from entry 0, checks every signature, compares the root with
the signed one, and — when an index is given — checks that every entry still hashes to the leaf
hash recorded when it was indexed and that the index's checkpoints are on the same history.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gatekeeper.audit.index import AuditIndex
from gatekeeper.monitor import check as _check
from gatekeeper.monitor.alerts import AlertSink
from gatekeeper.monitor.monitor import LogMonitor, LogTarget, PollResult
from gatekeeper.monitor.scan import Batch, Progress, TileSource, TruncatedLog, scan_entries
from personality.tlog import merkle
from personality.tlog.checkpoint import open_checkpoint
from personality.tlog.note import NoteVerifier

__all__ = ["heads_dir", "sync", "FullReport", "full_verify"]


def heads_dir(index: AuditIndex) -> Path:
    return Path(str(index.path) + ".heads")


def sync(
    index: AuditIndex,
    source: TileSource,
    verifiers: Sequence[NoteVerifier],
    sink: AlertSink,
    *,
    principals: _check.PrincipalLookup | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> PollResult:
    """One sync round (see the module docstring). Integrity problems are alerts on ``sink`` and
    the result's status; nothing beyond the last verified checkpoint is marked verified."""
    target = LogTarget(source.name, source, index.origin, verifiers)
    with LogMonitor(
        target,
        heads_dir(index),
        sink,
        principals=principals,
        workers=workers,
        observer=index,
        state_store=index,
        progress=progress,
    ) as mon:
        result = mon.poll()
    index.analyze()
    return result


@dataclass
class FullReport:
    size: int = 0
    root_ok: bool = False
    checked: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    bad_entries: list[tuple[int, str, str]] = field(default_factory=list)  # (index, status, error), first 100
    index_mismatches: list[int] = field(default_factory=list)  # entries that changed since indexed
    index_checkpoints_ok: bool | None = None  # None: no index given
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.root_ok
            and not self.index_mismatches
            and self.index_checkpoints_ok is not False
            and not self.problems
        )


def full_verify(
    source: TileSource,
    origin: str,
    verifiers: Sequence[NoteVerifier],
    *,
    index: AuditIndex | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> FullReport:
    """Rebuild the whole log from its entries (see the module docstring). Raises for an
    unreachable log or a checkpoint that does not verify; everything else is in the report."""
    t0 = time.monotonic()
    report = FullReport()
    cp = open_checkpoint(source.read_checkpoint(), origin, verifiers)
    report.size = cp.size
    # the index's verified checkpoints are checked against the rebuilt tree as it passes them
    wanted = {}
    if index is not None:
        wanted = {c.size: c for c in index.checkpoints() if c.size <= cp.size}
        report.index_checkpoints_ok = True
        if index.verified_size > cp.size:
            report.index_checkpoints_ok = False
            report.problems.append(
                f"the index verified size {index.verified_size} but the log now shows only {cp.size} entries"
            )
    bar = Progress("verify", cp.size, enabled=progress)
    checker = _check.EntryChecker()
    pool = _check.CheckPool(checker, workers)

    def on_batch(batch: Batch) -> None:
        report.checked += len(batch.entries)
        bar.advance(len(batch.entries))
        for r in batch.results:
            report.status_counts[r.status] = report.status_counts.get(r.status, 0) + 1
            if r.status != _check.OK and len(report.bad_entries) < 100:
                report.bad_entries.append((r.index, r.status, r.error))
        if index is not None and batch.start < index.size:
            end = min(batch.end, index.size)
            stored = index.leaf_hashes(batch.start, end)
            for i, (a, b) in enumerate(zip(stored, batch.leaf_hashes, strict=False)):
                if a != b:
                    report.index_mismatches.append(batch.start + i)

    # stop at every size the index holds a checkpoint for, to compare roots there
    stops = sorted(s for s in wanted if s > 0) + [cp.size]
    edge = merkle.CompactRange()
    try:
        with pool:
            for stop in stops:
                if stop < edge.size:
                    continue
                if stop > edge.size:
                    edge = scan_entries(source, edge, stop, pool, on_batch)
                if stop in wanted and stop != 0 and edge.root() != wanted[stop].root:
                    report.index_checkpoints_ok = False
                    report.problems.append(
                        f"the index's checkpoint of size {stop} is not on the log's history"
                    )
    except TruncatedLog as exc:
        report.problems.append(f"entries missing: {exc}")
        bar.finish()
        report.seconds = time.monotonic() - t0
        return report
    bar.finish()
    report.root_ok = edge.size == cp.size and edge.root() == cp.root
    if not report.root_ok:
        report.problems.append(f"the entries do not hash to the signed root of size {cp.size}")
    report.seconds = time.monotonic() - t0
    return report
