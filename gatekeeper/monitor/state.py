"""The monitor's durable state for one log: verified heads and how far entries were checked.

Per log, one directory (0700) holding:

- ``heads.sqlite3`` — the :class:`~gatekeeper.verify.headstore.HeadStore` the agents use: every
  checkpoint whose signature and consistency with the previous newest head were verified, and
  fork/rollback evidence (both checkpoints verbatim) with the halted flag.
- ``progress.json`` — :class:`ScanState`: the *processed* checkpoint (every entry under it was
  downloaded, hashed into a tree whose root equals the signed root, and checked: signature and
  rules) with the compact range at its size; and optionally *pending* progress beyond it (entries
  ``[processed.size, pending.size)`` checked, compact range at ``pending.size``, root not yet
  confirmed by a signed checkpoint).

Crash safety: ``progress.json`` is replaced atomically (write a temporary file, fsync, rename,
fsync the directory), and the monitor writes it only after the entries it covers were checked
and their alerts emitted. So after a crash the monitor resumes at or before the first unchecked
entry and never skips one; it may check (and alert on) up to one batch again. Pending progress
is only trusted because the rebuild continues from it and must still reach the signed root; on a
mismatch the monitor discards it and restarts from the processed checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatekeeper.errors import ConfigError, GatekeeperError
from personality.tlog import merkle

__all__ = [
    "ProcessedHead",
    "ScanState",
    "load_scan_state",
    "save_scan_state",
    "log_state_dir",
    "atomic_write",
]

PROGRESS_FILE = "progress.json"
ORIGIN_FILE = "origin"  # the log origin, for people and `gk monitor status`
_VERSION = 1


@dataclass(frozen=True)
class ProcessedHead:
    size: int
    root: bytes
    checkpoint: bytes  # the signed note, verbatim ("" for the empty start state)
    edge: tuple[bytes, ...]


@dataclass(frozen=True)
class ScanState:
    origin: str
    processed: ProcessedHead
    pending_size: int = 0
    pending_edge: tuple[bytes, ...] = ()

    @property
    def resume_edge(self) -> merkle.CompactRange:
        """Where the next scan starts: the pending progress if any, else the processed head."""
        if self.pending_size > self.processed.size:
            return merkle.CompactRange(self.pending_size, self.pending_edge)
        return merkle.CompactRange(self.processed.size, self.processed.edge)

    @staticmethod
    def empty(origin: str) -> ScanState:
        return ScanState(origin, ProcessedHead(0, merkle.EMPTY_ROOT, b"", ()))


def log_state_dir(state_root: str | os.PathLike[str], origin: str) -> Path:
    """``<state_root>/<slug>``: a readable, collision-free directory name for a log origin."""
    import hashlib

    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", origin).strip("._")[:60] or "log"
    digest = hashlib.sha256(origin.encode("utf-8")).hexdigest()[:8]
    return Path(state_root) / f"{slug}-{digest}"


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, both whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode("ascii")


def _unb64(s: Any, what: str) -> bytes:
    if not isinstance(s, str):
        raise ValueError(f"{what} is not a string")
    raw = base64.b64decode(s.encode("ascii"), validate=True)
    if len(raw) != merkle.HASH_SIZE:
        raise ValueError(f"{what} is not a 32-byte hash")
    return raw


def save_scan_state(directory: Path, state: ScanState) -> None:
    """Durably replace the progress file (see the module docstring for the crash contract)."""
    doc = {
        "version": _VERSION,
        "origin": state.origin,
        "processed": {
            "size": state.processed.size,
            "root": _b64(state.processed.root),
            "checkpoint": state.processed.checkpoint.decode("utf-8"),
            "edge": [_b64(h) for h in state.processed.edge],
        },
        "pending": (
            {"size": state.pending_size, "edge": [_b64(h) for h in state.pending_edge]}
            if state.pending_size > state.processed.size
            else None
        ),
    }
    atomic_write(directory / PROGRESS_FILE, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))


def load_scan_state(directory: Path, origin: str) -> ScanState:
    """The saved progress, or the empty state when there is none. A file that does not parse or
    contradicts itself (edge root ≠ processed root) raises ``GatekeeperError``: the operator must
    look, since silently starting over would re-alert on the whole log."""
    path = directory / PROGRESS_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return ScanState.empty(origin)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    try:
        doc = json.loads(raw)
        if doc.get("version") != _VERSION or doc.get("origin") != origin:
            raise ValueError("wrong version or origin")
        p = doc["processed"]
        size = p["size"]
        if not isinstance(size, int) or size < 0:
            raise ValueError("bad processed size")
        edge = tuple(_unb64(h, "edge hash") for h in p["edge"])
        processed = ProcessedHead(size, _unb64(p["root"], "root"), p["checkpoint"].encode("utf-8"), edge)
        if merkle.CompactRange(size, edge).root() != processed.root:
            raise ValueError("the processed edge does not hash to the processed root")
        pend = doc.get("pending")
        if pend is None:
            return ScanState(origin, processed)
        psize = pend["size"]
        if not isinstance(psize, int) or psize <= size:
            raise ValueError("bad pending size")
        pedge = tuple(_unb64(h, "pending edge hash") for h in pend["edge"])
        merkle.CompactRange(psize, pedge)  # shape check
        return ScanState(origin, processed, psize, pedge)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, UnicodeError) as exc:
        raise GatekeeperError(
            f"{path} is damaged ({exc}); move it away to re-check the log from the start"
        ) from None
    except RecursionError:  # json.loads recurses once per nesting level ("[[[[...")
        raise GatekeeperError(
            f"{path} is damaged (JSON nested too deeply); move it away to re-check the log from the start"
        ) from None
