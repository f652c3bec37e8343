"""The host's local decision journal: append-only JSON lines, one per decision or outcome.

Every front end (the asyncssh agent, ``gk exec``) and the verification gate append here. A record is
a flat JSON object; :func:`decision_record` builds the standard one (time, front end, peer, account,
key fingerprint, command, log index, reason code, exit status). The file is created ``0600``; each
line is written with a single ``write(2)`` on an ``O_APPEND`` descriptor and ``fsync``\\ ed before
:meth:`Journal.append` returns, so a record that was acknowledged survives a crash, and concurrent
writers (threads, or processes sharing the file) never interleave within a line. A crash can leave
at most one torn *last* line; :func:`read_journal` skips exactly that and nothing else.

This module depends only on the standard library (and ``gatekeeper.errors``), so any part of
``gatekeeper`` can use it.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatekeeper.errors import GatekeeperError

if TYPE_CHECKING:  # plain data only; imported for annotations
    from gatekeeper.gate import Decision, ExecRequest

__all__ = ["Journal", "decision_record", "command_fields", "read_journal", "utc_timestamp"]

MAX_RECORD_BYTES = 1 << 20  # one line; commands are bounded by the SSH packet size well below this


def utc_timestamp(now: float) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-11-03T09:14:07.123Z``."""
    whole = int(now)
    millis = int((now - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def command_fields(command: bytes) -> dict[str, str]:
    """``{"command": text}`` when the bytes are UTF-8 without control characters other than tab
    and newline; otherwise ``{"command_base64": ...}`` so the journal stays exact and readable."""
    try:
        text = command.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(ch.isprintable() or ch in "\t\n" for ch in text):
        return {"command": text}
    return {"command_base64": base64.b64encode(command).decode("ascii")}


def decision_record(
    request: ExecRequest,
    decision: Decision,
    *,
    event: str,
    exit_status: int | None = None,
    signal: str | None = None,
) -> dict[str, Any]:
    """The standard journal record for one request.

    ``event`` is ``"refused"``, ``"allowed"`` or ``"exit"`` (the outcome of an allowed command;
    ``exit_status`` None with ``signal`` set means killed by that signal, both None means it never
    completed, e.g. the client disconnected)."""
    record: dict[str, Any] = {
        "event": event,
        "frontend": request.frontend,
        "peer": request.peer,
        "account": request.account,
        "key": decision.key_fingerprint,
        **command_fields(request.command),
        "index": decision.index,
        "reason": decision.reason.code,
        "bundle": request.bundle is not None,
    }
    if event == "exit":
        record["exit_status"] = exit_status
        if signal is not None:
            record["signal"] = signal
    elif not decision.allowed:
        record["exit_status"] = decision.exit_status
        record["message"] = decision.message
    return record


class Journal:
    """Append-only JSON-lines file. ``Journal(path).append(record)``.

    The file (and missing parent directories, mode 0700) is created on first append with mode 0600;
    an existing file is tightened to 0600. Thread-safe. ``append`` raises ``OSError`` when the line
    cannot be made durable, and ``TypeError``/``ValueError`` for a record that is not a JSON object
    of at most ``MAX_RECORD_BYTES``; callers that must fail closed treat any exception as "not
    journalled".

    The file stays open between appends. A long-running writer (the agent) calls :meth:`reopen`
    on ``SIGHUP``, so that logrotate can move the file away and signal it (docs/verification.md,
    "Journal rotation")."""

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._fd: int | None = None

    def _open_path(self) -> int:
        """A new descriptor on ``path`` (created 0600, its directory entry fsynced, if missing)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            if created:  # make the new directory entry durable too
                dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open(self) -> int:
        if self._fd is None:
            self._fd = self._open_path()
        return self._fd

    def reopen(self) -> None:
        """Write to whatever file is at ``path`` from now on: the second half of log rotation.

        logrotate (without ``copytruncate``) renames the journal, then signals the agent, which
        calls this on ``SIGHUP``; records appended in between went to the renamed file, durably.
        The path is opened first (created 0600, its directory entry fsynced, when it was moved
        away) and only then is the old descriptor closed: if the path cannot be opened this
        raises ``OSError`` and appends keep going to the old file, so no record is lost. Also
        reopens a closed journal. Thread-safe: an append in progress finishes in the old file."""
        with self._lock:
            fd = self._open_path()
            old, self._fd = self._fd, fd
            if old is not None:
                os.close(old)

    def append(self, record: Mapping[str, Any]) -> None:
        """Write ``record`` (plus ``"time"`` if absent) as one line; durable when this returns."""
        if not isinstance(record, Mapping):
            raise TypeError("journal record must be a mapping")
        full = dict(record)
        full.setdefault("time", utc_timestamp(self._clock()))
        line = (json.dumps(full, sort_keys=True, ensure_ascii=True, separators=(",", ":")) + "\n").encode()
        if len(line) > MAX_RECORD_BYTES:
            raise ValueError(f"journal record too large ({len(line)} bytes)")
        with self._lock:
            fd = self._open()
            written = os.write(fd, line)
            if written != len(line):  # regular files do not short-write unless the disk is full
                raise OSError(f"short write to journal {self.path}: {written} of {len(line)} bytes")
            os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_journal(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the records in order. A final line without its newline (a crash mid-append) is
    skipped; any other line that is not a JSON object raises ``GatekeeperError``."""
    with open(path, "rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline, else a torn line
    del tail
    for number, raw in enumerate(lines, 1):
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise GatekeeperError(f"{path}: line {number} is not JSON") from None
        except RecursionError:  # json.loads recurses once per nesting level ("[[[[...")
            raise GatekeeperError(f"{path}: line {number} is JSON nested too deeply") from None
        if not isinstance(value, dict):
            raise GatekeeperError(f"{path}: line {number} is not a JSON object")
        yield value
