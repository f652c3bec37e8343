"""Checking log entries: parse each action, verify its SSHSIG, evaluate the rules.

:class:`EntryChecker` turns one entry into a :class:`Checked` result. It is pure apart from CPU:
no I/O, no clock. :class:`CheckPool` runs it on every core for large batches (Ed25519 verification
dominates: ~55–80 µs per entry), and inline for small ones.

Signature verification has the same verdict as :func:`gatekeeper.action.verify_entry` (the agent's
check): the SSHSIG must be valid in ``action@gatekeeper`` and made by the key named in the
action's ``signer`` field. For Ed25519 signatures the hot path reuses the parsers of
:mod:`gatekeeper.sshsig` and verifies with a cached public key (libsodium when PyNaCl is present,
otherwise ``cryptography``); anything that fails the hot path, and every other key type, is decided
by :func:`gatekeeper.sshsig.verify` itself, so a rejection always carries its canonical message.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gatekeeper import action as _action
from gatekeeper import sshsig
from gatekeeper.allowed_signers import AllowedSigners
from gatekeeper.allowed_signers import Signer as AllowedSigner
from gatekeeper.errors import ActionFormatError, SignatureInvalid
from gatekeeper.monitor.rules import RuleSet

try:  # libsodium's Ed25519 verify is ~1.5x faster than OpenSSL's here; PyNaCl comes with paramiko
    import nacl.exceptions
    import nacl.signing

    _HAVE_NACL = True
    _BadSignature: type[Exception] = nacl.exceptions.BadSignatureError
except ImportError:  # pragma: no cover - PyNaCl is a paramiko dependency
    _HAVE_NACL = False
    _BadSignature = InvalidSignature

__all__ = [
    "OK",
    "BAD_SIGNATURE",
    "MALFORMED",
    "UNKNOWN_SIGNER",
    "Checked",
    "EntryChecker",
    "CheckPool",
    "SignerPrincipals",
    "summarize",
]

OK = "ok"
BAD_SIGNATURE = "bad-signature"
MALFORMED = "malformed"
UNKNOWN_SIGNER = "unknown-signer"

#: principals_for(public_key, at) -> names; empty means the key was not allowed at that time
PrincipalLookup = Callable[[str, int], Sequence[str]]


@dataclass(frozen=True, slots=True)
class Checked:
    """The verdict on one entry.

    ``signed`` is the parsed entry when it parsed and the checker keeps actions (the audit index);
    ``summary`` (:func:`summarize`) is there whenever something is to be reported about a parsed
    entry; ``fired`` names the rules that fired, in rule order.
    """

    index: int
    status: str
    error: str = ""
    signed: _action.SignedAction | None = None
    fingerprint: str = ""
    principals: tuple[str, ...] = ()
    fired: tuple[str, ...] = ()
    summary: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK

    def __reduce__(self) -> tuple[Any, ...]:
        # results cross process boundaries by the thousand: a plain tuple pickles ~4x faster
        fields = (self.index, self.status, self.error, self.signed, self.fingerprint, self.principals)
        return (Checked, (*fields, self.fired, self.summary))


def summarize(
    signed: _action.SignedAction, fingerprint: str, principals: Sequence[str] = ()
) -> dict[str, Any]:
    """The decoded action for alerts and reports (terminal-safe command)."""
    a = signed.action
    return {
        "kind": a.kind,
        "hosts": [t.name for t in a.targets],
        "account": a.account,
        "command": _action.escape_command(a.command),
        "signer": fingerprint,
        "principals": list(principals),
        "reason": a.reason,
        "not_before": _action.format_time(a.not_before),
        "not_after": _action.format_time(a.not_after),
    }


class _KeyCache:
    """What was learned from entries that verified the slow, canonical way.

    Per signer key (the action's ``signer`` string): the SSHSIG blob up to the raw Ed25519
    signature (magic, version, key, namespace, reserved, ``sha512``, algorithm, length), the
    decoded public key and the key's fingerprint. A later blob that starts with exactly those bytes
    and ends with 64 more is structurally identical to one :func:`gatekeeper.sshsig.parse_signature`
    accepted for this signer, so only the 64 signature bytes remain to be verified. A fleet has
    few signers.
    """

    def __init__(self, limit: int = 4096) -> None:
        self._known: dict[str, tuple[bytes, Any]] = {}
        self._fps: dict[str, str] = {}
        self._limit = limit

    def fingerprint(self, signer: str) -> str:
        fp = self._fps.get(signer)
        if fp is None:
            try:
                fp = sshsig.fingerprint(signer)
            except ActionFormatError:  # pragma: no cover - parse_action checked the key
                fp = ""
            if len(self._fps) >= self._limit:
                self._fps.clear()
            self._fps[signer] = fp
        return fp

    def fast_check(self, entry: bytes) -> _action.SignedAction | None:
        """The parsed entry if it parses and verifies by the fast path, else None (then the
        caller decides with :func:`gatekeeper.action.parse_entry` / ``verify_entry``).

        Same split as ``parse_entry`` (body up to the first blank line, then the armored
        signature), the same ``parse_action`` and ``dearmor``; the signature structure is
        checked by byte equality with a blob ``parse_signature`` accepted for this signer.
        """
        if len(entry) > _action.MAX_ENTRY:
            return None
        cut = entry.find(b"\n\n")
        if cut < 0:
            return None
        body, armored = entry[: cut + 1], entry[cut + 2 :]
        try:
            action = _action.parse_action(body)
        except ActionFormatError:
            return None
        known = self._known.get(action.signer)
        if known is None:
            return None
        try:
            blob = sshsig.dearmor(armored)
        except ActionFormatError:
            return None
        prefix, key = known
        if len(blob) != len(prefix) + 64 or not blob.startswith(prefix):
            return None
        data = sshsig.signed_data(body, _action.NAMESPACE, "sha512")
        try:
            if _HAVE_NACL:
                key.verify(data, blob[-64:])
            else:
                key.verify(blob[-64:], data)
        except (_BadSignature, ValueError):
            return None
        return _action.SignedAction(action, body, armored)

    def learn(self, signed: _action.SignedAction) -> None:
        """Remember the signature layout of an entry that ``verify_entry`` accepted."""
        blob = sshsig.dearmor(signed.signature)
        sig = sshsig.parse_signature(blob)
        signer = signed.action.signer
        if not (
            sig.public_key.key_type == "ssh-ed25519"
            and sig.hash_alg == "sha512"
            and sig.namespace == _action.NAMESPACE
            and len(sig.signature) == 4 + 11 + 4 + 64
            and sig.public_key.openssh() == signer
        ):
            return
        raw = sig.public_key.blob[-32:]
        key = nacl.signing.VerifyKey(raw) if _HAVE_NACL else Ed25519PublicKey.from_public_bytes(raw)
        if len(self._known) >= self._limit:
            self._known.clear()
        self._known[signer] = (blob[:-64], key)


class EntryChecker:
    """Check entries one by one. Picklable; a worker process gets its own copy.

    ``keep_actions``: keep the parsed entry in every result (the audit index needs it); otherwise
    only in results that have something to report (a rule fired, a bad signature).
    ``opaque``: the log holds something other than actions (e.g. a test log): only the tree is
    checked and every entry is reported as OK.
    """

    def __init__(
        self,
        rules: RuleSet | None = None,
        principals: PrincipalLookup | None = None,
        *,
        keep_actions: bool = False,
        opaque: bool = False,
    ) -> None:
        self.rules = rules or RuleSet()
        self.principals = principals
        self.keep_actions = keep_actions
        self.opaque = opaque
        self._keys = _KeyCache()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_keys"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._keys = _KeyCache()

    def check(self, index: int, entry: bytes) -> Checked:
        if self.opaque:
            return Checked(index, OK)
        signed = self._keys.fast_check(entry)
        if signed is None:
            try:
                signed = _action.parse_entry(entry)
            except ActionFormatError as exc:
                return Checked(index, MALFORMED, str(exc))
            try:
                _action.verify_entry(signed)  # the canonical verdict, with its message
            except (SignatureInvalid, ActionFormatError) as exc:
                fp = self._keys.fingerprint(signed.action.signer)
                kept = signed if self.keep_actions else None
                return Checked(index, BAD_SIGNATURE, str(exc), kept, fp, summary=summarize(signed, fp))
            self._keys.learn(signed)
        a = signed.action
        fp = self._keys.fingerprint(a.signer)
        names: tuple[str, ...] = ()
        status, error = OK, ""
        if self.principals is not None:
            names = tuple(self.principals(a.signer, a.not_before))
            if not names:
                status, error = UNKNOWN_SIGNER, f"signer {fp} is not in the allowed signers"
        fired = tuple(r.name for r in self.rules.evaluate(a, names, fp)) if self.rules.rules else ()
        summary = summarize(signed, fp, names) if fired or status != OK else None
        return Checked(index, status, error, signed if self.keep_actions else None, fp, names, fired, summary)

    def check_batch(self, start: int, entries: Sequence[bytes]) -> list[Checked]:
        """One result per entry, in order; none at all in opaque mode (nothing to report)."""
        if self.opaque:
            return []
        return [self.check(start + i, e) for i, e in enumerate(entries)]


class SignerPrincipals:
    """A picklable :data:`PrincipalLookup` over an allowed_signers file: the same answer as
    ``AllowedSigners.principals_for(key, "action@gatekeeper", at)``, with lines indexed by key."""

    def __init__(self, allowed: AllowedSigners) -> None:
        self.by_openssh: dict[str, list[AllowedSigner]] = {}
        for line in allowed.signers:
            self.by_openssh.setdefault(line.key.openssh(), []).append(line)

    def __call__(self, public_key: str, at: int) -> list[str]:
        out: list[str] = []
        for line in self.by_openssh.get(public_key, ()):
            if line.allows_namespace(_action.NAMESPACE) and line.valid_at(at):
                out.extend(p for p in line.principals if p not in out)
        return out


_WORKER: EntryChecker | None = None


def _init_worker(checker: EntryChecker) -> None:
    global _WORKER
    _WORKER = checker


def _run_batch(start: int, entries: Sequence[bytes]) -> list[Checked | str]:
    """A worker's results for the parent: an OK result with nothing else to say travels as its
    fingerprint alone (:func:`_expand` rebuilds it), the rest as they are."""
    assert _WORKER is not None
    return [
        r.fingerprint
        if r.status == OK and r.signed is None and not r.principals and not r.fired and r.summary is None
        else r
        for r in _WORKER.check_batch(start, entries)
    ]


def _expand(start: int, compact: list[Checked | str]) -> list[Checked]:
    return [Checked(start + i, OK, "", None, r) if isinstance(r, str) else r for i, r in enumerate(compact)]


class CheckPool:
    """Check batches of entries in order, on ``workers`` processes (default: every core).

    :meth:`map` takes an iterator of ``(start, entries)`` batches and yields ``(start, entries,
    results)`` in the same order, keeping at most ``depth`` batches in flight. With one worker, or
    for a total of fewer than ``inline_below`` entries, everything runs in this process. Worker
    processes start lazily and are stopped by :meth:`close` (also a context manager).
    """

    def __init__(self, checker: EntryChecker, workers: int | None = None, depth: int = 16) -> None:
        self.checker = checker
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        self.depth = max(2, depth)
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # forkserver: no fork of a process that may hold locks in other threads (HTTP clients)
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["gatekeeper.monitor.check"])
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=ctx, initializer=_init_worker, initargs=(self.checker,)
            )
        return self._executor

    def map(
        self, batches: Iterator[tuple[int, list[bytes]]], parallel: bool = True
    ) -> Iterator[tuple[int, list[bytes], list[Checked]]]:
        if not parallel or self.workers <= 1:
            for start, entries in batches:
                yield start, entries, self.checker.check_batch(start, entries)
            return
        pool = self._pool()
        pending: list[tuple[int, list[bytes], Future[list[Checked | str]]]] = []
        for start, entries in batches:
            pending.append((start, entries, pool.submit(_run_batch, start, entries)))
            if len(pending) >= self.depth:
                s, e, fut = pending.pop(0)
                yield s, e, _expand(s, self._result(fut, pending))
        while pending:
            s, e, fut = pending.pop(0)
            yield s, e, _expand(s, self._result(fut, pending))

    def _result(
        self,
        fut: Future[list[Checked | str]],
        pending: list[tuple[int, list[bytes], Future[list[Checked | str]]]],
    ) -> list[Checked | str]:
        """``fut``'s results; while it is not done, this process checks queued batches itself
        (newest first, only those no worker has taken: a cancelled future is never run), so the
        waiting parent is a checker too — while the workers start, and whenever it is ahead."""
        while not fut.done():
            for i in range(len(pending) - 1, -1, -1):
                s, e, other = pending[i]
                if other.cancel():
                    done: Future[list[Checked | str]] = Future()
                    done.set_result(list(self.checker.check_batch(s, e)))
                    pending[i] = (s, e, done)
                    break
            else:
                break  # every queued batch is taken: wait
        return fut.result()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> CheckPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
