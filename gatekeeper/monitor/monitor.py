"""``gk monitor`` for one log: verify checkpoints, rebuild the tree, check every action.

One :meth:`LogMonitor.poll` is a round:

1. Read the checkpoint and open it with the log's keys (``checkpoint-signature`` alert if it
   does not verify).
2. Compare it with the newest verified head in the head store: smaller → ``rollback``; same size
   and another root, or a consistency proof (recomputed from the log's tiles) that fails →
   ``fork``. Both are critical, carry both checkpoints, and are recorded in the head store as
   halt evidence; a halted log is not processed until an operator clears it
   (``gk monitor unhalt``). A rollback to a checkpoint already in the history is a stale view
   (``rollback``, high) and halts nothing.
3. Store the checkpoint as the newest head (it verified), publish it for gossip.
4. Download the entries after the processed checkpoint via entry bundles, hash them into the
   tree, check each action (SSHSIG, signer, rules) and emit alerts, batch by batch. Progress is
   saved only after a batch was checked (see :mod:`gatekeeper.monitor.state`).
5. When the rebuilt root equals the checkpoint's root, that checkpoint becomes *processed*.
   Otherwise: ``rewrite`` (critical), progress beyond the processed checkpoint is discarded.
   Missing or short entry bundles: ``truncated`` (critical).

Nothing here exits the process; :meth:`poll` returns a :class:`PollResult`.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gatekeeper.errors import LogMisbehaved, LogUnavailable
from gatekeeper.monitor import check as _check
from gatekeeper.monitor.alerts import Alert, AlertSink
from gatekeeper.monitor.rules import RuleSet
from gatekeeper.monitor.scan import Batch, Progress, TileSource, TruncatedLog, prove_consistency, scan_entries
from gatekeeper.monitor.state import (
    ORIGIN_FILE,
    ProcessedHead,
    ScanState,
    atomic_write,
    load_scan_state,
    log_state_dir,
    save_scan_state,
)
from gatekeeper.verify.headstore import CommitStatus, HeadStore, StoredHead
from personality.errors import (
    FormatError,
    NotFoundError,
    PersonalityError,
    ProofError,
    UnavailableError,
    VerificationError,
)
from personality.tlog.checkpoint import SignedCheckpoint, open_checkpoint
from personality.tlog.note import NoteVerifier

__all__ = [
    "LogTarget",
    "PollResult",
    "LogMonitor",
    "BatchObserver",
    "StateStore",
    "FileStateStore",
    "action_summary",
]


@dataclass
class LogTarget:
    """A log to watch: where to read it, its origin line and the keys that sign its checkpoints."""

    name: str
    source: TileSource
    origin: str
    verifiers: Sequence[NoteVerifier]


class StateStore(Protocol):
    """Where scan progress lives (:class:`~gatekeeper.monitor.state.ScanState`): a JSON file per
    log by default, or the audit index itself. ``save`` must be atomic and durable enough that a
    loaded state never claims entries that were not checked."""

    def load(self, origin: str) -> ScanState: ...

    def save(self, state: ScanState) -> None: ...


class FileStateStore:
    """The default :class:`StateStore`: ``progress.json`` in the log's state directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def load(self, origin: str) -> ScanState:
        return load_scan_state(self.directory, origin)

    def save(self, state: ScanState) -> None:
        save_scan_state(self.directory, state)


class BatchObserver(Protocol):
    """Something that follows the checked entries (e.g. the audit index). Called after alerts
    were emitted for a batch, before progress is saved."""

    def on_batch(self, origin: str, batch: Batch) -> None: ...

    def on_processed(self, origin: str, checkpoint: SignedCheckpoint) -> None: ...

    def on_discard(self, origin: str, size: int) -> None: ...


@dataclass
class PollResult:
    log: str
    status: str  # ok | integrity | halted | unavailable
    size: int = 0  # the checkpoint's size this round (0 if none verified)
    processed: int = 0  # entries under the processed checkpoint
    checked: int = 0  # entries checked this round
    alerts: dict[str, int] = field(default_factory=dict)  # kind -> count
    message: str = ""


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _note_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def action_summary(result: _check.Checked) -> dict[str, Any] | None:
    """The decoded action of a result, for alerts and reports (None when it did not parse)."""
    if result.summary is not None:
        return result.summary
    if result.signed is None:
        return None
    return _check.summarize(result.signed, result.fingerprint, result.principals)


class LogMonitor:
    """Watches one log. Not thread-safe; one instance per log per process.

    ``state_root`` holds a directory per log (:func:`~gatekeeper.monitor.state.log_state_dir`).
    ``publish`` is called with each newly verified head (gossip). ``save_every`` bounds how many
    checked entries may be re-checked after a crash (progress is saved at least that often).
    """

    def __init__(
        self,
        target: LogTarget,
        state_root: str | Path,
        sink: AlertSink,
        *,
        rules: RuleSet | None = None,
        principals: _check.PrincipalLookup | None = None,
        opaque: bool = False,
        workers: int | None = None,
        observer: BatchObserver | None = None,
        state_store: StateStore | None = None,
        publish: Callable[[str, bytes], None] | None = None,
        save_every: int = 65536,
        progress: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.target = target
        self.sink = sink
        self.rules = rules or RuleSet()
        self.dir = log_state_dir(state_root, target.origin)
        self.store = HeadStore.open(self.dir)
        if not (self.dir / ORIGIN_FILE).exists():
            atomic_write(self.dir / ORIGIN_FILE, target.origin.encode("utf-8") + b"\n")
        checker = _check.EntryChecker(
            self.rules, principals, keep_actions=observer is not None, opaque=opaque
        )
        self.pool = _check.CheckPool(checker, workers)
        self.observer = observer
        self.state = state_store or FileStateStore(self.dir)
        self.publish = publish
        self.save_every = save_every
        self.progress = progress
        self.clock = clock
        self._counts: dict[str, int] = {}
        self._reported: set[tuple[str, int]] = set()

    def close(self) -> None:
        self.pool.close()
        self.store.close()

    def __enter__(self) -> LogMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- alerts -------------------------------------------------------------------------------

    def _alert(self, severity: str, kind: str, message: str, **kw: Any) -> None:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        self.sink.emit(Alert(severity, kind, self.target.origin, message, time=self.clock(), **kw))

    def _once(self, kind: str, size: int) -> bool:
        """True the first time (per process) an integrity problem is seen for this size."""
        key = (kind, size)
        if key in self._reported:
            return False
        self._reported.add(key)
        return True

    def _result(self, status: str, **kw: Any) -> PollResult:
        out = PollResult(self.target.name, status, alerts=dict(self._counts), **kw)
        self._counts = {}
        return out

    def _halt(self, kind: str, detail: str, known: StoredHead, conflicting: bytes) -> None:
        self.store.record_halt(
            kind=kind,
            origin=self.target.origin,
            detail=detail,
            known=known.note,
            conflicting=conflicting,
            now=int(self.clock()),
        )
        self._alert(
            "critical",
            kind,
            detail,
            evidence={"stored_checkpoint": _note_text(known.note), "new_checkpoint": _note_text(conflicting)},
        )

    # -- one round ----------------------------------------------------------------------------

    def poll(self) -> PollResult:
        """One round (see the module docstring). Never raises for log misbehaviour: that is an
        alert and a result; raises only for local problems (state directory, damaged state)."""
        origin = self.target.origin
        halt = self.store.halted()
        if halt is not None:
            if self._once("halted", halt.id):
                self._alert(
                    "critical",
                    "halted",
                    f"log is halted since {halt.kind} evidence #{halt.id} was recorded: {halt.detail}; "
                    "clear it with 'gk monitor unhalt' once investigated",
                    evidence={
                        "stored_checkpoint": _note_text(halt.known),
                        "new_checkpoint": _note_text(halt.conflicting),
                    },
                )
            return self._result("halted", message=halt.detail)
        try:
            raw = self.target.source.read_checkpoint()
        except (LogUnavailable, UnavailableError, NotFoundError, LogMisbehaved, FormatError) as exc:
            self._alert("medium", "unavailable", f"cannot read the checkpoint: {exc}")
            return self._result("unavailable", message=str(exc))
        try:
            cp = open_checkpoint(raw, origin, self.target.verifiers)
        except (FormatError, VerificationError) as exc:
            self._alert(
                "critical",
                "checkpoint-signature",
                f"checkpoint rejected: {exc}",
                evidence={"new_checkpoint": _note_text(raw)},
            )
            return self._result("integrity", message=str(exc))
        head = self.store.newest_head(origin)
        problem = self._check_head(head, cp)
        if problem is not None:
            return problem
        if head is None or cp.size > head.size:
            res = self.store.commit(
                origin,
                (cp.size, cp.root, cp.raw),
                newest_seq=head.seq if head else 0,
                spend=None,
                now=int(self.clock()),
            )
            if res.status is CommitStatus.CONFLICT and res.stored is not None:
                self._halt(
                    "fork", f"two checkpoints of size {cp.size} with different roots", res.stored, cp.raw
                )
                return self._result("integrity", size=cp.size, message="fork")
            if res.status is CommitStatus.HALTED:
                return self._result("halted", message="halted meanwhile")
            if res.status is CommitStatus.HEAD_MOVED:
                return self._result(
                    "unavailable", message="another process moved the head; retrying next round"
                )
        if self.publish is not None:
            newest = self.store.newest_head(origin)
            if newest is not None:
                self.publish(origin, newest.note)
        return self._process(cp)

    def _check_head(self, head: StoredHead | None, cp: SignedCheckpoint) -> PollResult | None:
        if head is None:
            return None
        if cp.size < head.size:
            seen = self.store.head_at_size(self.target.origin, cp.size)
            if seen is not None and seen.root == cp.root:
                if self._once("rollback", cp.size):
                    self._alert(
                        "high",
                        "rollback",
                        f"the log serves an older checkpoint (size {cp.size}) than one it already "
                        f"showed (size {head.size}): a stale or rolled-back view",
                        evidence={
                            "stored_checkpoint": _note_text(head.note),
                            "new_checkpoint": _note_text(cp.raw),
                        },
                    )
                return self._result("integrity", size=cp.size, message="rollback")
            self._halt(
                "rollback",
                f"the log shrank from {head.size} to {cp.size} entries with a checkpoint never seen before",
                head,
                cp.raw,
            )
            return self._result("integrity", size=cp.size, message="rollback")
        if cp.size == head.size:
            if cp.root != head.root:
                self._halt("fork", f"two checkpoints of size {cp.size} with different roots", head, cp.raw)
                return self._result("integrity", size=cp.size, message="fork")
            return None
        try:
            prove_consistency(self.target.source, head.size, head.root, cp)
        except ProofError as exc:
            self._halt(
                "fork",
                f"checkpoint of size {cp.size} is not an extension of the one of size {head.size}: {exc}",
                head,
                cp.raw,
            )
            return self._result("integrity", size=cp.size, message="fork")
        except (NotFoundError, LogMisbehaved, FormatError) as exc:
            if self._once("truncated", cp.size):
                self._alert(
                    "critical",
                    "truncated",
                    f"cannot prove checkpoint {cp.size} consistent with {head.size}: hash tiles missing "
                    f"or malformed ({exc})",
                    evidence={
                        "stored_checkpoint": _note_text(head.note),
                        "new_checkpoint": _note_text(cp.raw),
                    },
                )
            return self._result("integrity", size=cp.size, message=str(exc))
        except (LogUnavailable, UnavailableError) as exc:
            self._alert("medium", "unavailable", f"cannot read tiles: {exc}")
            return self._result("unavailable", message=str(exc))
        return None

    # -- entries ------------------------------------------------------------------------------

    def _emit_results(self, batch: Batch) -> None:
        for r in batch.results:
            if r.status != _check.OK:
                kind = "unknown-signer" if r.status == _check.UNKNOWN_SIGNER else "bad-action"
                self._alert(
                    "high",
                    kind,
                    f"entry {r.index}: {r.status}: {r.error}",
                    index=r.index,
                    action=action_summary(r),
                    evidence={"leaf_hash": _b64(batch.leaf_hashes[r.index - batch.start])},
                )
            for name in r.fired:
                rule = next(x for x in self.rules.rules if x.name == name)
                self._alert(
                    rule.severity,
                    "rule",
                    rule.message or f"rule {name!r} matched entry {r.index}",
                    index=r.index,
                    rule=name,
                    action=action_summary(r),
                )

    def _process(self, cp: SignedCheckpoint) -> PollResult:
        origin = self.target.origin
        state = self.state.load(origin)
        if state.processed.size == cp.size:
            return self._result("ok", size=cp.size, processed=cp.size)
        edge = state.resume_edge
        if edge.size > cp.size:  # pending progress from a longer view that was not confirmed
            state = ScanState(origin, state.processed)
            edge = state.resume_edge
        bar = Progress(f"{self.target.name}", cp.size - edge.size, enabled=self.progress)
        checked = 0
        last_save = edge.size
        current = state

        def on_batch(batch: Batch) -> None:
            nonlocal checked, last_save, current
            self._emit_results(batch)
            if self.observer is not None:
                self.observer.on_batch(origin, batch)
            checked += len(batch.entries)
            bar.advance(len(batch.entries))
            if batch.end - last_save >= self.save_every and batch.end < cp.size:
                current = ScanState(origin, current.processed, batch.end, batch.edge.hashes)
                self.state.save(current)
                last_save = batch.end

        try:
            final = scan_entries(
                self.target.source,
                edge,
                cp.size,
                self.pool,
                on_batch,
                keep_nodes=self.observer is not None,
            )
        except TruncatedLog as exc:
            bar.finish()
            if self._once("truncated", cp.size):
                self._alert(
                    "critical",
                    "truncated",
                    f"entries under the signed checkpoint of size {cp.size} are missing from index "
                    f"{exc.start}: {exc}",
                    index=exc.start,
                    evidence={"new_checkpoint": _note_text(cp.raw)},
                )
            return self._result("integrity", size=cp.size, processed=state.processed.size, checked=checked)
        except (LogUnavailable, LogMisbehaved, PersonalityError) as exc:
            bar.finish()
            self._alert("medium", "unavailable", f"cannot read entries: {exc}")
            return self._result("unavailable", size=cp.size, processed=state.processed.size, checked=checked)
        bar.finish()
        root = final.root()
        if root != cp.root:
            self.state.save(ScanState(origin, state.processed))
            if self.observer is not None:
                self.observer.on_discard(origin, state.processed.size)
            if self._once("rewrite", cp.size):
                self._alert(
                    "critical",
                    "rewrite",
                    f"the entries the log serves up to {cp.size} do not hash to its signed root",
                    evidence={
                        "processed_checkpoint": _note_text(state.processed.checkpoint),
                        "new_checkpoint": _note_text(cp.raw),
                        "computed_root": _b64(root),
                    },
                )
            return self._result("integrity", size=cp.size, processed=state.processed.size, checked=checked)
        self.state.save(ScanState(origin, ProcessedHead(cp.size, cp.root, cp.raw, final.hashes)))
        if self.observer is not None:
            self.observer.on_processed(origin, cp)
        return self._result("ok", size=cp.size, processed=cp.size, checked=checked)
