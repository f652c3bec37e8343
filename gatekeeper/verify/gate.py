"""``VerifyingGate``: the one decision path of both front ends (agent and ``gk exec``).

Order of a decision (docs/verification.md has the full table):

1. the store is halted → HALTED (nothing else is looked at);
2. :func:`~gatekeeper.verify.core.check_static` (signature, keys, host, account, bytes, window,
   checkpoint signature, witnesses, inclusion);
3. the nonce was already spent here → REPLAY (checked again atomically at commit);
4. the bundle's checkpoint against the stored heads:
   - a checkpoint of the same size is stored: same root → nothing to fetch (the fast path);
     another root → FORK;
   - nothing stored yet → the checkpoint becomes the first head (trust on first use of a
     checkpoint signed by the configured log key);
   - newer than the newest head H → fetch the consistency proof H → checkpoint; invalid → FORK;
   - older than H → fetch the consistency proof checkpoint → H; invalid → FORK; the log no longer
     knowing H's size and serving a smaller latest checkpoint → FORK (rollback);
   - the log unreachable, slow or unhelpful for a needed fetch → LOG_UNAVAILABLE (fail closed);
5. commit atomically: new head (if any) + spent nonce, fsynced → ALLOWED.

A FORK records both signed checkpoints verbatim in the head store, halts the host persistently and
raises the alarm. After a decision whose checkpoint was not newer than H, the log's latest checkpoint
is fetched in the background (bounded, coalesced) so the host's view of the log moves forward
without putting a network round trip on the fast path. Every decision is journalled; ``decide``
never raises.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from gatekeeper.errors import GatekeeperError, LogMisbehaved, LogUnavailable
from gatekeeper.gate import Decision, ExecRequest, Reason
from gatekeeper.journal import decision_record
from gatekeeper.verify.alarm import Alarm
from gatekeeper.verify.core import CheckpointCache, Verified, check_static, one_line, refusal
from gatekeeper.verify.headstore import CommitStatus, HaltRecord, HeadStore, Spend, StoredHead
from gatekeeper.verify.policy import HostPolicy
from personality.errors import OverloadedError, PersonalityError, ProofError, UnavailableError
from personality.tlog.checkpoint import SignedCheckpoint, open_checkpoint
from personality.tlog.merkle import verify_consistency

__all__ = ["DEFAULT_FETCH_TIMEOUT", "LogSource", "JournalSink", "VerifyingGate", "halted_message"]

DEFAULT_FETCH_TIMEOUT = 2.0
_COMMIT_ATTEMPTS = 4
#: Decisions allowed to wait for the log at once; more are refused (log-unavailable) at once.
MAX_WAITING = 256
_T = TypeVar("_T")


class _LogRefused(Exception):
    """The log answered, but not with what was asked (no tree of that size, a malformed answer)."""


class LogSource(Protocol):
    """What the gate needs from the log (``personality.client.LogClient`` provides it).

    Both methods are blocking and bounded by their own timeouts. They raise
    :class:`~personality.errors.UnavailableError` (or :class:`~gatekeeper.errors.LogUnavailable`,
    or an ``OSError``) when the log cannot be reached or answers with a server error, and another
    :class:`~personality.errors.PersonalityError` (``NotFoundError`` for a size the log does not
    have) when it answers without what was asked.
    """

    def checkpoint(self) -> bytes:
        """The log's latest signed checkpoint, verbatim."""
        ...

    def consistency_proof(self, size1: int, size2: int) -> Sequence[bytes]:
        """The RFC 9162 consistency proof between the trees of ``size1`` and ``size2``."""
        ...


class JournalSink(Protocol):
    """``gatekeeper.journal.Journal``: durable when ``append`` returns; raises when it cannot be."""

    def append(self, record: Mapping[str, Any]) -> None: ...


def _when(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def halted_message(halt: HaltRecord) -> str:
    return one_line(
        f"gk: refused ({Reason.HALTED.code}): this host is halted since {_when(halt.at)} "
        f"({halt.kind}: {halt.detail}); nothing runs until an operator reviews the evidence and runs "
        "'gk agent unhalt --evidence-reviewed'"
    )


@dataclass(frozen=True)
class _Plan:
    """How to commit a verified request: the checkpoint to store (None: already stored) and the
    newest head seq it was verified against (None: no requirement)."""

    checkpoint: SignedCheckpoint | None
    newest_seq: int | None
    refresh: bool  # the bundle brought nothing newer: move the view forward in the background


class VerifyingGate:
    """Implements :class:`gatekeeper.gate.Gate` with the verification core, a head store, the log
    and a journal. ``clock`` returns Unix seconds. ``fetch_timeout`` bounds every log request made
    on the decision path (seconds). ``background_refresh`` enables the post-decision refresh.
    ``proof_fetcher(size1, size2)``, if given, fetches consistency proofs on the event loop instead
    of ``log_client.consistency_proof`` in a thread (no thread hop; e.g.
    :func:`personality.client.fetch_consistency_proof`); it raises what ``LogSource`` methods
    raise, is bounded by ``fetch_timeout`` here, and its answer is verified exactly the same."""

    def __init__(
        self,
        policy: HostPolicy,
        store: HeadStore,
        log_client: LogSource,
        journal: JournalSink,
        alarm: Alarm,
        clock: Callable[[], float] = time.time,
        *,
        fetch_timeout: float = DEFAULT_FETCH_TIMEOUT,
        background_refresh: bool = True,
        proof_fetcher: Callable[[int, int], Awaitable[Sequence[bytes]]] | None = None,
    ) -> None:
        self.policy = policy
        self.store = store
        self.log = log_client
        self.journal = journal
        self.alarm = alarm
        self.clock = clock
        self.fetch_timeout = fetch_timeout
        self.background_refresh = background_refresh
        self.proof_fetcher = proof_fetcher
        self._refresh_task: asyncio.Task[None] | None = None
        self._log_lock = threading.Lock()
        self._advance = asyncio.Lock()
        self._waiting = 0
        self._known = CheckpointCache(policy)
        self.last_refresh_error: str | None = None

    # -- the Gate protocol -------------------------------------------------------------------------

    async def decide(self, request: ExecRequest) -> Decision:
        """Decide run / refuse; never raises. An allowed decision's head and spent nonce are durable,
        and the decision is journalled, before this returns."""
        try:
            decision = await self._decide(request)
        except Exception as exc:  # noqa: BLE001 - the contract: any unexpected error is a refusal
            self.alarm.error(
                f"internal error deciding a request from {request.peer or '?'}: {type(exc).__name__}: {exc}"
            )
            decision = refusal(Reason.INTERNAL, "internal error in the verifier; nothing was run")
        return self._journal_decision(request, decision)

    def record_exit(
        self, request: ExecRequest, decision: Decision, exit_status: int | None, *, signal: str | None = None
    ) -> None:
        """Journal the outcome of an allowed command (``exit_status``, or the ``signal`` that killed
        it); never raises (failures go to the alarm log)."""
        try:
            self.journal.append(
                decision_record(request, decision, event="exit", exit_status=exit_status, signal=signal)
            )
        except Exception as exc:  # noqa: BLE001 - the command already ran; report, do not raise
            self.alarm.error(f"cannot journal the exit status of log index {decision.index}: {exc}")

    # -- decision path ------------------------------------------------------------------------------

    def _journal_decision(self, request: ExecRequest, decision: Decision) -> Decision:
        try:
            self.journal.append(
                decision_record(request, decision, event="allowed" if decision.allowed else "refused")
            )
        except Exception as exc:  # noqa: BLE001
            self.alarm.error(f"cannot journal a decision ({decision.reason.code}): {exc}")
            if decision.allowed:  # every command that runs is journalled first: fail closed
                return refusal(
                    Reason.INTERNAL,
                    "the local journal cannot be written; nothing was run",
                    index=decision.index,
                    fingerprint=decision.key_fingerprint,
                )
        return decision

    async def _decide(self, request: ExecRequest) -> Decision:
        halt = self.store.halted()
        if halt is not None:
            return Decision(Reason.HALTED, halted_message(halt))
        now = int(self.clock())
        checked = check_static(request, self.policy, now, self._known)
        if isinstance(checked, Decision):
            return checked
        v = checked
        for _ in range(_COMMIT_ATTEMPTS):
            stored = self._plan_stored(v)
            if stored is not None:  # the fast path (or a fork): no log request, no lock
                outcome = stored if isinstance(stored, Decision) else self._commit(v, stored)
            else:
                if self._waiting >= MAX_WAITING:
                    return refusal(
                        Reason.LOG_UNAVAILABLE,
                        "too many commands are waiting for the log; try again",
                        index=v.index,
                        fingerprint=v.fingerprint,
                    )
                self._waiting += 1
                try:
                    async with self._advance:  # one head advancement at a time in this process
                        plan = self._plan_stored(v) or await self._plan(v)
                        outcome = plan if isinstance(plan, Decision) else self._commit(v, plan)
                finally:
                    self._waiting -= 1
            if outcome is not None:
                return outcome
            # None: another process stored a newer head meanwhile; verify against it.
        return refusal(
            Reason.LOG_UNAVAILABLE,
            "the log's head kept moving while verifying; try again",
            index=v.index,
            fingerprint=v.fingerprint,
        )

    def _commit(self, v: Verified, plan: _Plan) -> Decision | None:
        """Store the plan's checkpoint and spend the nonce atomically. None: the head moved."""
        cp = plan.checkpoint
        result = self.store.commit(
            self.policy.log_origin,
            None if cp is None else (cp.size, cp.root, cp.raw),
            newest_seq=plan.newest_seq,
            spend=Spend(v.nonce, v.fingerprint, v.index, v.expires_at),
            now=int(self.clock()),
        )
        status = result.status
        if status is CommitStatus.OK:
            if plan.refresh:
                self._schedule_refresh()
            return Decision(
                Reason.ALLOWED,
                f"gk: allowed: log index {v.index} (checkpoint size {v.checkpoint.size})",
                v.index,
                v.fingerprint,
            )
        if status is CommitStatus.REPLAY and result.spent is not None:
            return self._replay(v, result.spent)
        if status is CommitStatus.HALTED:
            halt = self.store.halted()
            return Decision(Reason.HALTED, halted_message(halt) if halt else "gk: refused (halted)")
        if status is CommitStatus.CONFLICT and result.stored is not None:
            return self._fork(
                "fork",
                result.stored.note,
                v.checkpoint.raw,
                f"two checkpoints of size {v.checkpoint.size} with different roots",
                v,
            )
        return None

    def _replay(self, v: Verified, earlier: tuple[int, int]) -> Decision:
        return refusal(
            Reason.REPLAY,
            f"this action (nonce {v.nonce.hex()[:16]}...) already ran on this host at {_when(earlier[1])}",
            index=v.index,
            fingerprint=v.fingerprint,
        )

    def _plan_stored(self, v: Verified) -> _Plan | Decision | None:
        """The bundle's checkpoint against one of the same size stored here: the fast path (same
        root), a fork (another root), or None (nothing stored of that size)."""
        cp = v.checkpoint
        same = self.store.head_at_size(self.policy.log_origin, cp.size)
        if same is None:
            return None
        if same.root != cp.root:
            return self._fork(
                "fork", same.note, cp.raw, f"two checkpoints of size {cp.size} with different roots", v
            )
        return _Plan(None, None, refresh=True)

    async def _plan(self, v: Verified) -> _Plan | Decision:
        """Establish that the bundle's checkpoint (of a size not stored here) is consistent with the
        newest stored head, asking the log for a proof. Called with ``self._advance`` held."""
        origin = self.policy.log_origin
        cp = v.checkpoint
        head = self.store.newest_head(origin)
        if head is None:  # trust on first use; the background refresh checks it against the log's latest
            return _Plan(cp, 0, refresh=True)
        earlier = self.store.spent(v.nonce, v.fingerprint)
        if earlier is not None:  # a replay: refuse before asking the log anything
            return self._replay(v, earlier)
        try:
            if cp.size > head.size:
                proof = await self._fetch_proof(head.size, cp.size)
                verify_consistency(head.size, cp.size, head.root, cp.root, proof)
                return _Plan(cp, head.seq, refresh=False)
            try:
                proof = await self._fetch_proof(cp.size, head.size)
            except _LogRefused:
                return await self._log_lost_head(head, v)
            verify_consistency(cp.size, head.size, cp.root, head.root, proof)
            return _Plan(cp, None, refresh=True)
        except ProofError as exc:
            small, big = sorted((head.size, cp.size))
            return self._fork(
                "fork",
                head.note,
                cp.raw,
                f"the log cannot prove that size {big} extends size {small}: {exc}",
                v,
            )
        except _LogRefused as exc:
            return refusal(
                Reason.LOG_UNAVAILABLE,
                f"no consistency proof for the bundle's checkpoint: {exc}",
                index=v.index,
                fingerprint=v.fingerprint,
            )
        except LogUnavailable as exc:
            return refusal(Reason.LOG_UNAVAILABLE, f"{exc}", index=v.index, fingerprint=v.fingerprint)

    async def _log_lost_head(self, head: StoredHead, v: Verified) -> Decision:
        """The log says it has no tree of our newest head's size: if its latest checkpoint is smaller
        than that head, the log rolled back (a fork); otherwise it is just not answering usefully."""
        try:
            latest = await self._fetch_checkpoint()
        except (LogUnavailable, LogMisbehaved, _LogRefused) as exc:
            return refusal(
                Reason.LOG_UNAVAILABLE,
                f"the log cannot prove consistency with this host's head (size {head.size}): {exc}",
                index=v.index,
                fingerprint=v.fingerprint,
            )
        if latest.size < head.size:
            return self._fork(
                "rollback",
                head.note,
                latest.raw,
                f"the log's latest checkpoint (size {latest.size}) is smaller than the "
                f"stored head (size {head.size})",
                v,
            )
        return refusal(
            Reason.LOG_UNAVAILABLE,
            f"the log refused a consistency proof to size {head.size}",
            index=v.index,
            fingerprint=v.fingerprint,
        )

    def _fork(self, kind: str, known: bytes, conflicting: bytes, detail: str, v: Verified | None) -> Decision:
        """Record the evidence, halt, alarm, refuse."""
        halt = self.store.record_halt(
            kind=kind,
            origin=self.policy.log_origin,
            detail=detail,
            known=known,
            conflicting=conflicting,
            now=int(self.clock()),
        )
        message = (
            f"host {self.policy.host_name}: log {self.policy.log_origin} showed two histories "
            f"({kind}: {detail}); halted, evidence in {self.store.path} (halt #{halt.id})"
        )
        self.alarm.alert(
            kind,
            message,
            {
                "host": self.policy.host_name,
                "origin": self.policy.log_origin,
                "halt_id": halt.id,
                "detail": detail,
                "known_checkpoint": known.decode("utf-8", "replace"),
                "conflicting_checkpoint": conflicting.decode("utf-8", "replace"),
                "store": str(self.store.path),
            },
        )
        try:
            self.journal.append(
                {
                    "event": "halt",
                    "kind": kind,
                    "detail": detail,
                    "halt_id": halt.id,
                    "known_checkpoint": known.decode("utf-8", "replace"),
                    "conflicting_checkpoint": conflicting.decode("utf-8", "replace"),
                }
            )
        except Exception as exc:  # noqa: BLE001 - the evidence is in the head store already
            self.alarm.error(f"cannot journal halt #{halt.id}: {exc}")
        return refusal(
            Reason.FORK,
            f"the log showed this host two different histories ({detail}); this host "
            "is now halted and keeps both checkpoints as evidence",
            index=None if v is None else v.index,
            fingerprint="" if v is None else v.fingerprint,
        )

    # -- talking to the log ---------------------------------------------------------------------------

    async def _call(self, fn: Callable[[], _T], what: str) -> _T:
        """Run one blocking log request in a thread, bounded by ``fetch_timeout``. Raises
        :class:`LogUnavailable` (unreachable, slow, server error) or :class:`_LogRefused` (the log
        answered, but not with what was asked: no such size, a malformed answer)."""

        def locked() -> _T:
            with self._log_lock:  # LogClient is not thread-safe
                return fn()

        return await self._bounded(asyncio.to_thread(locked), what)

    async def _bounded(self, call: Awaitable[_T], what: str) -> _T:
        """Await one log request bounded by ``fetch_timeout``, mapping failures as :meth:`_call`."""
        try:
            return await asyncio.wait_for(call, self.fetch_timeout)
        except TimeoutError:
            raise LogUnavailable(f"the log did not answer {what} within {self.fetch_timeout:g}s") from None
        except LogUnavailable:
            raise
        except (UnavailableError, OverloadedError) as exc:
            raise LogUnavailable(f"the log is unavailable for {what}: {exc}") from None
        except (GatekeeperError, PersonalityError) as exc:
            raise _LogRefused(f"the log gave no usable answer to {what}: {exc}") from None
        except OSError as exc:
            raise LogUnavailable(f"cannot reach the log for {what}: {exc}") from None

    async def _fetch_proof(self, size1: int, size2: int) -> list[bytes]:
        if size1 == 0:
            return []
        what = f"a consistency proof {size1} -> {size2}"
        if self.proof_fetcher is not None:
            return list(await self._bounded(self.proof_fetcher(size1, size2), what))
        proof = await self._call(lambda: self.log.consistency_proof(size1, size2), what)
        return list(proof)

    async def _fetch_checkpoint(self) -> SignedCheckpoint:
        try:
            raw = await self._call(self.log.checkpoint, "a checkpoint request")
        except _LogRefused as exc:
            raise LogMisbehaved(str(exc)) from None
        try:
            return open_checkpoint(raw, self.policy.log_origin, self.policy.log_verifiers)
        except PersonalityError as exc:
            raise LogMisbehaved(f"the log's latest checkpoint does not verify: {exc}") from None

    # -- moving the view forward ------------------------------------------------------------------------

    def _schedule_refresh(self) -> None:
        if not self.background_refresh:
            return
        if self._refresh_task is not None and not self._refresh_task.done():
            return  # coalesce: one refresh in flight serves every command that wanted one
        self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
            self.last_refresh_error = None
        except (LogUnavailable, LogMisbehaved) as exc:
            self.last_refresh_error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a background task must not die silently
            self.last_refresh_error = str(exc)
            self.alarm.error(f"background checkpoint refresh failed: {type(exc).__name__}: {exc}")

    async def wait_refresh(self) -> None:
        """Wait for a background refresh in flight, if any (tests, shutdown)."""
        task = self._refresh_task
        if task is not None:
            await asyncio.shield(task)

    async def refresh(self) -> StoredHead | None:
        """Fetch the log's latest checkpoint, verify it against the stored heads and store it.

        Returns the newest stored head afterwards. A checkpoint inconsistent with a stored head, or
        smaller than the newest head held before asking (a rollback), halts the host (evidence,
        alarm) and raises :class:`LogMisbehaved`; an unreachable log raises :class:`LogUnavailable`.
        A halted host does not refresh.
        """
        async with self._advance:
            return await self._refresh_locked()

    async def _refresh_locked(self) -> StoredHead | None:
        origin = self.policy.log_origin
        if self.store.halted() is not None:
            return self.store.newest_head(origin)
        before = self.store.newest_head(origin)  # the log signed this before we asked
        latest = await self._fetch_checkpoint()
        if before is not None and latest.size < before.size:
            self._fork(
                "rollback",
                before.note,
                latest.raw,
                f"the log's latest checkpoint (size {latest.size}) is smaller than the stored "
                f"head (size {before.size})",
                None,
            )
            raise LogMisbehaved("the log's latest checkpoint is smaller than the stored head")
        for _ in range(_COMMIT_ATTEMPTS):
            same = self.store.head_at_size(origin, latest.size)
            if same is not None:
                if same.root != latest.root:
                    self._fork(
                        "fork",
                        same.note,
                        latest.raw,
                        f"two checkpoints of size {latest.size} with different roots",
                        None,
                    )
                    raise LogMisbehaved("the log's latest checkpoint conflicts with a stored head")
                return self.store.newest_head(origin)
            head = self.store.newest_head(origin)
            if head is not None:
                (m, root_m), (n, root_n) = sorted([(head.size, head.root), (latest.size, latest.root)])
                try:
                    proof = await self._fetch_proof(m, n)
                except _LogRefused as exc:
                    raise LogMisbehaved(str(exc)) from None
                try:
                    verify_consistency(m, n, root_m, root_n, proof)
                except ProofError as exc:
                    detail = f"the log cannot prove that size {n} extends size {m}: {exc}"
                    self._fork("fork", head.note, latest.raw, detail, None)
                    raise LogMisbehaved(
                        "the log's latest checkpoint is inconsistent with the stored head"
                    ) from None
            # a newer head must still extend the one just proven; an older one only joins the history
            newest_seq = None if head is not None and latest.size < head.size else (head.seq if head else 0)
            result = self.store.commit(
                origin,
                (latest.size, latest.root, latest.raw),
                newest_seq=newest_seq,
                spend=None,
                now=int(self.clock()),
            )
            if result.status is CommitStatus.CONFLICT and result.stored is not None:
                self._fork(
                    "fork",
                    result.stored.note,
                    latest.raw,
                    f"two checkpoints of size {latest.size} with different roots",
                    None,
                )
                raise LogMisbehaved("the log's latest checkpoint conflicts with a stored head")
            if result.status is not CommitStatus.HEAD_MOVED:
                return self.store.newest_head(origin)
        return self.store.newest_head(origin)
