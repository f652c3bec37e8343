"""``gk submit``: build an action, sign it, log it, verify what the log returned, make the bundle.

The steps, and what each one guarantees::

    1 build      new_action(): targets, account, exact command bytes, nonce, window, signer, reason
    2 sign       SSHSIG with the user's key (file or ssh-agent)                    -> the log entry
    3 POST /add  wait=1: the log answers once the entry is integrated and a checkpoint covers it
    4 verify     the checkpoint's signature (the configured log key, the configured origin) and the
               inclusion proof of *our* entry's leaf hash under that checkpoint's root
    5 consistent the new checkpoint and the newest one this client verified before (the state
               file) lie on one append-only history: a consistency proof is fetched and checked;
               a failure is a LOG FORK, reported loudly, with both checkpoints kept as evidence;
               so is a checkpoint smaller than the stored one (the log went back in time)
    6 store      the newer checkpoint replaces the stored one (file fsynced, atomic rename)
    7 bundle     GK_BUNDLE = entry + index + proof + checkpoint (gatekeeper.bundle)

Nothing is printed or returned unless 4 and 5 passed: a client never hands a host a bundle it has
not verified itself. Errors (one line each, exit codes from :mod:`gatekeeper.errors`):
:class:`LogUnavailable` (69) log unreachable / overloaded / 5xx; :class:`Refused` (77) the log's
admission refused the action (its 403 message is shown); :class:`LogMisbehaved` (76) anything the
log returned that does not verify, and forks; :class:`ClockSkew` (78) the local clock and the log's
``Date`` differ by more than the action's window (a smaller skew is only a warning). ``ClockSkew``
and ``LogFork`` live in :mod:`gatekeeper.errors` and are re-exported here.
"""

from __future__ import annotations

import email.utils
import fcntl
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from gatekeeper.action import Action, Target, encode_action, encode_entry, new_action
from gatekeeper.bundle import MAX_BUNDLED_ENTRY, Bundle, encode_bundle
from gatekeeper.client.identity import Identity
from gatekeeper.errors import (
    ActionFormatError,
    ClockSkew,
    ConfigError,
    GatekeeperError,
    LogFork,
    LogMisbehaved,
    LogUnavailable,
    Refused,
    SignatureInvalid,
)
from personality.client import AddResponse, LogClient, LogVerifier
from personality.errors import ConfigError as PersonalityConfigError
from personality.errors import (
    ForkError,
    FormatError,
    OverloadedError,
    PersonalityError,
    ProofError,
    RefusedError,
    UnavailableError,
    VerificationError,
)
from personality.tlog.checkpoint import SignedCheckpoint, open_checkpoint
from personality.tlog.note import Verifier, parse_vkey

__all__ = [
    "ClockSkew",
    "LogFork",
    "LogSettings",
    "SubmitResult",
    "build_action",
    "submit_action",
    "join_command",
]

#: Above this (or a tenth of the window, whichever is smaller) a skew is worth a warning.
SKEW_WARN = 30.0
_RETRIES_503 = 3


@dataclass(frozen=True)
class LogSettings:
    """Where the log is and how to recognise it. ``origin`` defaults to the verifier key's name."""

    url: str
    verifier: Verifier
    origin: str
    state_file: Path
    timeout: float = 10.0

    @classmethod
    def from_strings(
        cls, url: str, vkey: str, origin: str | None, state_file: Path | None, timeout: float = 10.0
    ) -> LogSettings:
        from gatekeeper.client.config import default_state_path

        try:
            verifier = parse_vkey(vkey)
        except PersonalityError as exc:
            raise ConfigError(f"bad log verifier key: {exc}") from None
        org = origin or verifier.name
        return cls(url.rstrip("/"), verifier, org, state_file or default_state_path(org), timeout)


@dataclass
class SubmitResult:
    bundle: str  # the GK_BUNDLE value
    index: int
    entry: bytes
    action: Action
    checkpoint: SignedCheckpoint
    skew: float | None  # local clock minus the log's Date header, seconds (None: no Date)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: sign, log, verify, store


def join_command(argv: Sequence[str]) -> bytes:
    """The command string exactly as OpenSSH's ``ssh host ARG...`` sends it: the arguments joined
    with single spaces, no quoting (``ssh host ls -l "/tmp/my dir"`` runs ``ls -l /tmp/my dir``).
    Arguments are encoded as the OS gave them (UTF-8, undecodable bytes preserved)."""
    return b" ".join(os.fsencode(a) for a in argv)


def build_action(
    identity: Identity,
    hosts: Sequence[str | Target],
    account: str,
    command: bytes,
    *,
    window: int,
    reason: str = "",
    now: float | None = None,
) -> Action:
    """A new exec action signed-by-to-be ``identity``. Raises ActionFormatError."""
    return new_action(
        targets=list(hosts),
        account=account,
        command=command,
        signer=identity.public_key,
        now=time.time() if now is None else now,
        window=window,
        reason=reason,
    )


# -- talking to the log ------------------------------------------------------------------------


class _DateRecorder:
    """A ``requests`` response hook that remembers the last ``Date`` header and when it arrived
    (the log client exposes bodies only; the skew check needs the header)."""

    def __init__(self) -> None:
        self.date: str | None = None
        self.received = 0.0

    def __call__(self, resp: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        self.date = resp.headers.get("Date")
        self.received = time.time()
        return resp

    def skew(self) -> float | None:
        """Local clock minus the log's, in seconds (``Date`` has 1 s resolution); None if absent."""
        if not self.date:
            return None
        try:
            server = email.utils.parsedate_to_datetime(self.date).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        return self.received - server


def _log_error(exc: PersonalityError, url: str, what: str) -> GatekeeperError:
    """The one-line gatekeeper error for a failure of the log client."""
    msg = str(exc)
    if isinstance(exc, UnavailableError | OverloadedError):
        return LogUnavailable(msg if url in msg else f"log {url}: {msg}")
    if isinstance(exc, RefusedError):
        return Refused(f"the log refused the action: {msg}")
    if isinstance(exc, FormatError) and "HTTP 4" in msg:
        return ActionFormatError(f"the log rejected the action as malformed: {msg}")
    if isinstance(exc, VerificationError) and "HTTP 422" in msg:
        return SignatureInvalid(f"the log rejected the action's signature: {msg}")
    if isinstance(exc, PersonalityConfigError):
        return ConfigError(msg)
    return LogMisbehaved(f"the log's answer to {what} does not verify: {msg}")


def _add(client: LogClient, entry: bytes, url: str, consistency_from: int | None) -> AddResponse:
    attempt = 0
    while True:
        try:
            return client.add(entry, wait=True, consistency_from=consistency_from)
        except FormatError as exc:
            if consistency_from is None or "HTTP 400" not in str(exc):
                raise _log_error(exc, url, "add") from None
            # A log without from=N, or one smaller than the stored checkpoint (it went back in
            # time: the checks below must see its answer to report the fork): ask plainly.
            consistency_from = None
        except OverloadedError as exc:
            if attempt == _RETRIES_503 or exc.retry_after > 5:
                raise _log_error(exc, url, "add") from None
            attempt += 1
            time.sleep(max(exc.retry_after, 0.1))
        except PersonalityError as exc:
            raise _log_error(exc, url, "add") from None


def submit_action(
    log: LogSettings,
    identity: Identity,
    action: Action,
    *,
    client: LogClient | None = None,
    warn: Callable[[str], None] | None = None,
    before_post: Callable[[], None] | None = None,
) -> SubmitResult:
    """Sign ``action``, log it, verify the answer, update the state file, return the bundle.

    ``client`` defaults to an HTTP client for ``log.url``. ``warn`` receives one-line warnings
    (default: stderr). ``before_post`` is called after signing, just before the entry is sent; an
    exception it raises aborts the submission with nothing logged (``gk ssh`` uses it to stop when
    the SSH connection it opened meanwhile has already failed). Raises LogUnavailable, Refused,
    LogMisbehaved (LogFork), ClockSkew, ConfigError, ActionFormatError -- see the module docstring.
    Nothing is returned, and the state file is not changed, unless the checkpoint and inclusion
    proof verified.
    """
    warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    body = encode_action(action)
    entry = encode_entry(body, identity.sign(body))
    if len(entry) > MAX_BUNDLED_ENTRY:
        raise ActionFormatError(
            f"the signed action is {len(entry)} bytes; at most {MAX_BUNDLED_ENTRY} fit in a bundle "
            "(shorten the command or the reason)"
        )
    t1 = time.perf_counter()
    timings["sign"] = t1 - t0

    dates = _DateRecorder()
    if client is None:
        session = requests.Session()
        session.hooks["response"].append(dates)
        client = LogClient.http(log.url, timeout=(min(log.timeout, 5.0), log.timeout), session=session)
    # The stored checkpoint's size, read without the lock: the log then sends the consistency proof
    # from it with its answer (POST /add?from=N), saving a round trip. Only a hint: the state is
    # read again under the lock below, and a proof for another size is simply not used.
    hint = _state_size_hint(log)
    if before_post is not None:
        before_post()
    answer = _add(client, entry, log.url, hint)
    t2 = time.perf_counter()
    timings["log"] = t2 - t1

    skew = dates.skew()
    window = action.not_after - action.not_before
    if skew is not None and abs(skew) >= window:
        raise ClockSkew(
            f"local clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the log's, more than "
            f"the action's {window} s window: hosts would refuse it (entry {answer.index} is logged "
            "but unusable); fix the clock (NTP) and retry"
        )
    if skew is not None and abs(skew) > min(SKEW_WARN, window / 10):
        warn(
            f"gk: warning: local clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the log's"
        )

    if answer.checkpoint is None or answer.inclusion_proof is None or answer.size is None:
        raise LogMisbehaved("the log did not return a checkpoint and inclusion proof for the entry")
    with _StateLock(log.state_file):
        stored = _read_state(log)
        verifier = LogVerifier(log.origin, [log.verifier], client, stored)
        try:
            sc = verifier.open(answer.checkpoint)
            if sc.size != answer.size:
                raise ProofError(f"the answer says size {answer.size} but its checkpoint has {sc.size}")
            if stored is not None and sc.size < stored.size:
                # A new entry goes after every entry already sequenced, so the checkpoint covering
                # it is at least as large as any the log signed before: a smaller one means the
                # log went back in time (restored from a backup, or a split view). A fork, decided
                # without asking the log for a proof it must not be able to give.
                evidence = _keep_evidence(log, stored, sc)
                raise LogFork(
                    f"log {log.origin} went back in time: it serves size {sc.size}, this client "
                    f"verified size {stored.size}; both checkpoints kept in {evidence}"
                )
            given = answer.consistency_proof if stored is not None and stored.size == hint else None
            verifier.verify_inclusion(
                entry, answer.index, sc, answer.inclusion_proof, consistency_proof=given
            )
        except ForkError as exc:
            evidence = _keep_evidence(log, exc.old, exc.new)
            raise LogFork(f"{exc}; both checkpoints kept in {evidence}") from None
        except PersonalityError as exc:
            raise _log_error(exc, log.url, "add / the consistency proof") from None
        t3 = time.perf_counter()
        timings["verify"] = t3 - t2
        latest = verifier.latest
        if latest is not None and (stored is None or latest.size > stored.size):
            # No directory fsync: if a crash loses the rename, the older checkpoint stays, which is
            # still a verified point of the same history; the next run proves consistency from it.
            _write_atomic(log.state_file, latest.raw, sync_dir=False)
        timings["store"] = time.perf_counter() - t3

    bundle = encode_bundle(Bundle(entry, answer.index, tuple(answer.inclusion_proof), sc.raw))
    return SubmitResult(bundle, answer.index, entry, action, sc, skew, timings)


# -- state file ---------------------------------------------------------------------------------


class _StateLock:
    """An exclusive ``flock`` on ``<state>.lock`` so concurrent ``gk submit`` runs never store an
    older checkpoint over a newer one."""

    def __init__(self, state_file: Path) -> None:
        self._path = state_file.with_name(state_file.name + ".lock")
        self._fd = -1

    def __enter__(self) -> _StateLock:
        try:
            self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise ConfigError(f"cannot lock checkpoint state {self._path}: {exc.strerror}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _state_size_hint(settings: LogSettings) -> int | None:
    """The size in the stored checkpoint, unverified (None: no usable state). A hint only."""
    try:
        data = settings.state_file.read_bytes()
        size = int(data.split(b"\n", 2)[1])
    except (OSError, IndexError, ValueError):
        return None
    return size if 0 < size < 1 << 63 else None


def _read_state(settings: LogSettings) -> SignedCheckpoint | None:
    try:
        data = settings.state_file.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read checkpoint state {settings.state_file}: {exc.strerror}") from None
    try:
        return open_checkpoint(data, settings.origin, [settings.verifier])
    except PersonalityError as exc:
        raise ConfigError(
            f"stored checkpoint {settings.state_file} does not verify for log {settings.origin!r} "
            f"with the configured key ({exc}); move it away only if you changed logs on purpose"
        ) from None


def _write_atomic(path: Path, data: bytes, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, then (``sync_dir``) fsync the
    directory. A crash leaves either the old or the new file, never a mix or an empty file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    if not sync_dir:
        return
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _keep_evidence(settings: LogSettings, old: SignedCheckpoint, new: SignedCheckpoint) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = settings.state_file.with_name(settings.state_file.name + f".fork-{stamp}")
    _write_atomic(path, b"stored:\n" + old.raw + b"\nreceived:\n" + new.raw)
    return path
