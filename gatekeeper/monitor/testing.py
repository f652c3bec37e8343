"""Helpers for tests, benchmarks and demos of the monitor and audit tools (not used in production).

- :class:`FastSigner`: signs actions with an in-memory Ed25519 key, ~30 µs per entry, producing
  exactly the entries ``gk`` would (``ssh-keygen -Y verify`` accepts them).
- :func:`synthetic_entries`: many valid, varied signed actions (hosts, accounts, commands,
  reasons, times) from a seed, in parallel on every core.
- :func:`write_static_log`: a complete C2SP tlog-tiles log (checkpoint, hash tiles, entry
  bundles) written as static files for a list of entries, using the shared pure format code. Tests
  tamper with these files to play a misbehaving log.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatekeeper import sshsig
from gatekeeper.action import NAMESPACE, Action, SignedAction, Target, encode_action
from personality.tlog import merkle
from personality.tlog.checkpoint import Checkpoint, sign_checkpoint
from personality.tlog.note import NoteSigner, Signer
from personality.tlog.tiles import (
    build_hash_tile,
    entry_bundles_for_size,
    format_tile_path,
    pack_entry_bundle,
    tiles_for_size,
)

if TYPE_CHECKING:
    from gatekeeper.audit.index import AuditIndex

__all__ = [
    "FastSigner",
    "synthetic_entries",
    "synthetic_chunks",
    "synthetic_signers",
    "write_static_log",
    "build_index_directly",
    "HOSTS",
    "ACCOUNTS",
]

HOSTS = (
    [f"web-{i:02d}" for i in range(1, 21)] + [f"db-{i:02d}" for i in range(1, 6)] + ["bastion", "ci-runner"]
)
ACCOUNTS = ["root", "deploy", "postgres", "www-data", "backup"]
_COMMANDS = [
    "systemctl restart nginx",
    "systemctl status postgresql",
    "journalctl -u nginx --since -1h",
    "df -h /var",
    "apt-get upgrade -y",
    "rm -rf /tmp/cache-{n}",
    "tar czf /backup/db-{n}.tgz /var/lib/postgresql",
    "curl -fsS https://deploy.example.com/release/{n} | sh",
    "useradd temp{n}",
    "cat /etc/shadow",
    "kubectl rollout restart deploy/api-{n}",
    "psql -c 'VACUUM ANALYZE'",
]
_REASONS = ["", "OPS-{n}: routine", "incident INC-{n}", "deploy release {n}", "on-call check"]


class FastSigner:
    """An Ed25519 SSH key in memory that signs action bodies as SSHSIG (namespace
    ``action@gatekeeper``)."""

    def __init__(self, private_key: Ed25519PrivateKey | None = None) -> None:
        self.key = private_key or Ed25519PrivateKey.generate()
        self.public = (
            self.key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode("ascii")
        )
        self._blob = sshsig.parse_public_key(self.public).blob

    def sign_body(self, body: bytes) -> bytes:
        raw = self.key.sign(sshsig.signed_data(body, NAMESPACE))
        wire = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x40" + raw
        return sshsig.armor(sshsig._assemble(self._blob, NAMESPACE, wire))

    def entry(self, action: Action) -> bytes:
        """The log entry: canonical body, blank line, armored signature."""
        body = encode_action(action)
        return body + b"\n" + self.sign_body(body)


def _synth_chunk(
    seed: int, start: int, count: int, keys: Sequence[bytes], t0: int
) -> tuple[list[bytes], list[Action]]:
    signers = [FastSigner(Ed25519PrivateKey.from_private_bytes(k)) for k in keys]
    rnd = random.Random(seed * 1_000_003 + start)
    out: list[bytes] = []
    actions: list[Action] = []
    for i in range(start, start + count):
        signer = signers[i % len(signers)]
        n = rnd.randrange(100_000)
        nhosts = 1 if rnd.random() < 0.9 else 2
        hosts = sorted(set(rnd.sample(HOSTS, nhosts)))
        t = t0 + i * 30 + rnd.randrange(30)
        a = Action(
            kind="exec",
            targets=tuple(Target(h) for h in hosts),
            account=rnd.choice(ACCOUNTS),
            command=rnd.choice(_COMMANDS).format(n=n).encode(),
            nonce=rnd.randbytes(16),
            not_before=t,
            not_after=t + 300,
            signer=signer.public,
            reason=rnd.choice(_REASONS).format(n=n),
        )
        out.append(signer.entry(a))
        actions.append(a)
    return out, actions


def synthetic_chunks(
    count: int, *, seed: int = 1, signers: int = 5, t0: int = 1_780_000_000, workers: int | None = None
) -> Iterator[tuple[int, list[bytes], list[Action]]]:
    """The entries of :func:`synthetic_entries` as they are made, in order: ``(first index,
    entries, the actions they carry)``, 4096 at a time, on every core."""
    rnd = random.Random(seed)
    keys = [rnd.randbytes(32) for _ in range(signers)]
    chunk = 4096
    starts = list(range(0, count, chunk))
    workers = workers or os.cpu_count() or 1
    if count <= chunk or workers == 1:
        for s in starts:
            yield (s, *_synth_chunk(seed, s, min(chunk, count - s), keys, t0))
        return
    with ProcessPoolExecutor(workers) as ex:
        futs = [(s, ex.submit(_synth_chunk, seed, s, min(chunk, count - s), keys, t0)) for s in starts]
        for s, f in futs:
            yield (s, *f.result())


def synthetic_signers(seed: int = 1, signers: int = 5) -> list[FastSigner]:
    """The signers :func:`synthetic_chunks` uses for ``seed``."""
    rnd = random.Random(seed)
    return [FastSigner(Ed25519PrivateKey.from_private_bytes(rnd.randbytes(32))) for _ in range(signers)]


def synthetic_entries(
    count: int, *, seed: int = 1, signers: int = 5, t0: int = 1_780_000_000, workers: int | None = None
) -> tuple[list[bytes], list[FastSigner]]:
    """``count`` valid signed actions (deterministic for a seed), every ``i``-th signed by
    ``signers[i % len(signers)]``; action ``i`` has ``not_before`` in ``[t0 + 30 i, t0 + 30 i + 30)``.
    Returns the entries and the signers."""
    entries = [
        e
        for _, chunk, _ in synthetic_chunks(count, seed=seed, signers=signers, t0=t0, workers=workers)
        for e in chunk
    ]
    return entries, synthetic_signers(seed, signers)


def write_static_log(
    directory: str | Path, entries: Sequence[bytes], signer: NoteSigner, origin: str | None = None
) -> bytes:
    """Write the whole tile tree of ``entries`` under ``directory`` and a checkpoint signed by
    ``signer`` (origin defaults to its name). Returns the checkpoint. Existing files are replaced."""
    root = Path(directory)
    size = len(entries)
    cr = merkle.CompactRange()
    nodes: dict[tuple[int, int], bytes] = {}
    for level, index, h in cr.extend(merkle.leaf_hash(e) for e in entries):
        nodes[(level, index)] = h

    def get(level: int, index: int) -> bytes:
        return nodes[(level, index)]

    def put(path: str, data: bytes) -> None:
        p = root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    for tp in tiles_for_size(size):
        put(format_tile_path(tp), build_hash_tile(tp, get))
    for tp in entry_bundles_for_size(size):
        first = tp.index * 256
        put(format_tile_path(tp), pack_entry_bundle(entries[first : first + tp.width]))
    cp = sign_checkpoint(Checkpoint(origin or signer.name, size, cr.root()), [signer])
    put("checkpoint", cp)
    return cp


def build_index_directly(
    path: str | Path, log_key: Signer, chunks: Iterable[tuple[int, list[bytes], list[Action]]]
) -> tuple[AuditIndex, list[bytes]]:
    """An audit index built straight from freshly signed entries, for tests and benchmarks of
    the index itself: rows, tree nodes and a checkpoint signed by ``log_key`` over the rebuilt
    root, stored exactly as a sync would, but without re-verifying signatures this process just
    made (the pipeline that verifies is tested through the real log). Returns the index (open)
    and the entries."""
    from gatekeeper.audit.index import AuditIndex
    from gatekeeper.monitor.check import OK, Checked
    from gatekeeper.monitor.scan import Batch, TreeBuilder
    from gatekeeper.monitor.state import ProcessedHead, ScanState

    origin = log_key.name
    idx = AuditIndex.open(path, origin)
    idx.set_meta("vkey", log_key.verifier().vkey())
    tree = TreeBuilder(merkle.CompactRange())
    fps: dict[str, str] = {}
    entries: list[bytes] = []
    for start, chunk, actions in chunks:
        leaves = [merkle.leaf_hash(e) for e in chunk]
        nodes: list[tuple[int, int, bytes]] = []
        tree.extend(leaves, nodes)
        results = []
        for j, (e, a) in enumerate(zip(chunk, actions, strict=True)):
            cut = e.index(b"\n\n")
            fp = fps.get(a.signer) or fps.setdefault(a.signer, sshsig.fingerprint(a.signer))
            results.append(Checked(start + j, OK, "", SignedAction(a, e[: cut + 1], e[cut + 2 :]), fp))
        idx.on_batch(origin, Batch(start, chunk, leaves, results, tree.compact(), nodes))
        entries.extend(chunk)
    cr = tree.compact()
    cp = sign_checkpoint(Checkpoint(origin, cr.size, cr.root()), [log_key])
    idx.save(ScanState(origin, ProcessedHead(cr.size, cr.root(), cp, cr.hashes)))
    idx.analyze(force=True)
    return idx, entries
