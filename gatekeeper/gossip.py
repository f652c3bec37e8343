"""Checkpoint gossip: publish the newest checkpoint you verified; compare with what others saw.

A log that shows one history to some hosts and another to others (a *split view*) passes every
check a single client can make on its own. Gossip catches it: every monitor and agent publishes
the newest checkpoint it verified, and anyone can compare the published checkpoints of one log.

Published layout (a directory that any web server, object store or shared file system can serve)::

    DIR/index                      one file name per line
    DIR/<log slug>.checkpoint      the signed checkpoint note, verbatim (with any cosignatures)

Comparison (:func:`compare`): checkpoints whose signature does not verify with the log's key are
set aside (a forged checkpoint proves nothing about the log). Among the verified ones, two with the
same size and different roots are a *fork*, proven by the two signed notes alone. Two of different
sizes are checked with a consistency proof when a ``consistency`` callable can provide one (from
the log's tiles, or from a local audit index); a proof that fails is an *inconsistent* pair, also
proof of a fork. Pairs that could not be checked are reported as such.

Witnesses slot in later without a new format: a witness is one more publisher whose checkpoints
carry its cosignature (C2SP tlog-cosignature) in the same note; :class:`Observation` keeps notes
verbatim, so a policy requiring k cosignatures can be applied to the same observations.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from gatekeeper.errors import ConfigError, LogUnavailable
from personality.errors import FormatError, VerificationError
from personality.tlog.checkpoint import SignedCheckpoint, open_checkpoint, parse_signed_checkpoint
from personality.tlog.note import MAX_NOTE_SIZE, NoteVerifier

__all__ = [
    "INDEX",
    "Observation",
    "Conflict",
    "Comparison",
    "slug",
    "publish",
    "read_published",
    "observe",
    "compare",
    "make_server",
]

INDEX = "index"
SUFFIX = ".checkpoint"
MAX_FILES = 10_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}\.checkpoint")

#: consistency(older, newer) -> True (proven consistent), False (proven inconsistent), None (unknown)
Consistency = Callable[[SignedCheckpoint, SignedCheckpoint], "bool | None"]


def slug(origin: str) -> str:
    """The file name stem for a log origin: readable, collision-resistant, safe in URLs."""
    import hashlib

    base = re.sub(r"[^A-Za-z0-9._-]+", "_", origin).strip("._-")[:60] or "log"
    return f"{base}-{hashlib.sha256(origin.encode('utf-8')).hexdigest()[:8]}"


def publish(directory: str | os.PathLike[str], origin: str, note: bytes) -> Path:
    """Atomically write ``note`` as the published checkpoint of ``origin`` and list it in the
    index. Readers always see a whole file (old or new)."""
    from gatekeeper.monitor.state import atomic_write

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    name = slug(origin) + SUFFIX
    atomic_write(d / name, note, 0o644)
    index = d / INDEX
    try:
        names = set(index.read_text(encoding="utf-8").split())
    except FileNotFoundError:
        names = set()
    if name not in names:
        names.add(name)
        atomic_write(index, ("".join(f"{n}\n" for n in sorted(names))).encode("utf-8"), 0o644)
    return d / name


def _get(url: str, timeout: float) -> bytes:
    try:
        resp = requests.get(url, timeout=timeout, stream=True)
        data = resp.raw.read(MAX_NOTE_SIZE + 1, decode_content=True)
    except (requests.RequestException, OSError) as exc:
        raise LogUnavailable(f"cannot fetch {url}: {exc}") from None
    if resp.status_code != 200:
        raise LogUnavailable(f"{url}: HTTP {resp.status_code}")
    if len(data) > MAX_NOTE_SIZE:
        raise LogUnavailable(f"{url}: larger than any checkpoint")
    return bytes(data)


def read_published(location: str, timeout: float = 10.0) -> list[tuple[str, bytes]]:
    """The published checkpoints at a directory or an ``http(s)://`` URL, as (label, bytes).

    Reads the ``index`` (file names not matching ``<slug>.checkpoint`` are ignored). Raises
    ``ConfigError`` for a directory without index, ``LogUnavailable`` for an unreachable URL.
    """
    remote = location.startswith(("http://", "https://"))
    base = location.rstrip("/")
    if remote:
        names_text = _get(f"{base}/{INDEX}", timeout).decode("utf-8", "replace")
    else:
        try:
            names_text = (Path(location) / INDEX).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{location}: no published checkpoints ({exc})") from None
    names = [n for n in names_text.split() if _NAME.fullmatch(n)][:MAX_FILES]
    out = []
    for n in names:
        if remote:
            try:
                data = _get(f"{base}/{n}", timeout)
            except LogUnavailable:
                continue
        else:
            try:
                with open(Path(location) / n, "rb") as fh:
                    data = fh.read(MAX_NOTE_SIZE + 1)
            except OSError:
                continue
        out.append((f"{base}/{n}", data))
    return out


@dataclass(frozen=True)
class Observation:
    """One published checkpoint. ``checkpoint`` is None when it did not parse; ``verified`` is
    True when the log's key signed it (``problem`` says why not otherwise)."""

    source: str
    raw: bytes
    checkpoint: SignedCheckpoint | None
    verified: bool
    problem: str = ""

    @property
    def origin(self) -> str:
        return self.checkpoint.origin if self.checkpoint is not None else ""


def observe(source: str, raw: bytes, keys: Mapping[str, Sequence[NoteVerifier]]) -> Observation:
    """Parse and, when ``keys`` has the origin, verify one published checkpoint."""
    try:
        parsed = parse_signed_checkpoint(raw)
    except FormatError as exc:
        return Observation(source, raw, None, False, f"malformed: {exc}")
    verifiers = keys.get(parsed.origin)
    if not verifiers:
        return Observation(source, raw, parsed, False, "no key configured for this log")
    try:
        cp = open_checkpoint(raw, parsed.origin, verifiers)
    except (FormatError, VerificationError) as exc:
        return Observation(source, raw, parsed, False, f"signature: {exc}")
    return Observation(source, raw, cp, True)


@dataclass(frozen=True)
class Conflict:
    """Two validly signed checkpoints of one log that cannot both be true."""

    origin: str
    kind: str  # "fork": same size, different roots; "inconsistent": the consistency proof fails
    a: Observation
    b: Observation
    detail: str


@dataclass
class Comparison:
    conflicts: list[Conflict] = field(default_factory=list)
    consistent_pairs: int = 0
    unchecked_pairs: list[tuple[Observation, Observation]] = field(default_factory=list)
    unverified: list[Observation] = field(default_factory=list)
    logs: dict[str, int] = field(default_factory=dict)  # origin -> verified observations

    @property
    def ok(self) -> bool:
        return not self.conflicts


def compare(observations: Iterable[Observation], consistency: Consistency | None = None) -> Comparison:
    """Compare verified observations log by log (see the module docstring)."""
    out = Comparison()
    by_origin: dict[str, list[Observation]] = {}
    for o in observations:
        if not o.verified or o.checkpoint is None:
            out.unverified.append(o)
            continue
        by_origin.setdefault(o.origin, []).append(o)
    for origin, obs in sorted(by_origin.items()):
        out.logs[origin] = len(obs)
        # one representative per distinct (size, root); same size + other root = fork
        distinct: dict[tuple[int, bytes], Observation] = {}
        for o in sorted(obs, key=lambda x: (x.checkpoint.size if x.checkpoint else 0, x.source)):
            assert o.checkpoint is not None
            distinct.setdefault((o.checkpoint.size, o.checkpoint.root), o)
        reps = sorted(distinct.values(), key=lambda x: x.checkpoint.size if x.checkpoint else 0)
        by_size: dict[int, list[Observation]] = {}
        for o in reps:
            assert o.checkpoint is not None
            by_size.setdefault(o.checkpoint.size, []).append(o)
        for size, group in by_size.items():
            for other in group[1:]:
                out.conflicts.append(
                    Conflict(
                        origin,
                        "fork",
                        group[0],
                        other,
                        f"two checkpoints of size {size} with different roots",
                    )
                )
        # consistency between every pair of sizes, smaller first
        for i, a in enumerate(reps):
            for b in reps[i + 1 :]:
                assert a.checkpoint is not None and b.checkpoint is not None
                if a.checkpoint.size == b.checkpoint.size:
                    continue
                verdict = consistency(a.checkpoint, b.checkpoint) if consistency is not None else None
                if verdict is None:
                    out.unchecked_pairs.append((a, b))
                elif verdict:
                    out.consistent_pairs += 1
                else:
                    out.conflicts.append(
                        Conflict(
                            origin,
                            "inconsistent",
                            a,
                            b,
                            f"checkpoint of size {b.checkpoint.size} does not extend the one of size "
                            f"{a.checkpoint.size}",
                        )
                    )
    return out


def make_server(directory: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 0) -> Any:
    """A read-only HTTP server for a published directory: ``GET /index`` and
    ``GET /<slug>.checkpoint``, nothing else (no listing, no other file, no other method).
    Returns a ``ThreadingHTTPServer``; call ``serve_forever()`` and ``shutdown()``."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    root = Path(directory)

    class Handler(BaseHTTPRequestHandler):
        server_version = "gk-gossip/1"
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # FIELD-NOTES: 40 ms per keep-alive request otherwise

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            name = self.path.split("?", 1)[0].lstrip("/")
            if name != INDEX and not _NAME.fullmatch(name):
                self._send(404, b"not found\n", "text/plain")
                return
            try:
                with open(root / name, "rb") as fh:
                    body = fh.read(MAX_NOTE_SIZE + 1)
            except OSError:
                self._send(404, b"not found\n", "text/plain")
                return
            self._send(200, body[:MAX_NOTE_SIZE], "text/plain; charset=utf-8")

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

    return Server((host, port), Handler)
