"""Crash consistency: SIGKILL the log server at random moments while clients add entries.

After every restart and at the end: every acknowledged index still holds the same bytes, the tree
rebuilt from the entry bundles alone has the checkpoint's root, every checkpoint ever seen is a
prefix of the final tree (so no two checkpoints of the same size differ), and no entry was logged
twice (acknowledgements lost in a crash are retried and deduplicated).
"""

from __future__ import annotations

import base64
import random
import threading
import time

import pytest
import requests
from conftest import LogServer

from personality.tlog import merkle
from personality.tlog.checkpoint import SignedCheckpoint, open_checkpoint
from personality.tlog.note import parse_vkey
from personality.tlog.tiles import TilePath, parse_entry_bundle

KILLS = 6
CLIENTS = 6


class _Record:
    """What the clients saw: acknowledged indexes and every checkpoint, by size."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked: dict[int, bytes] = {}
        self.checkpoints: dict[int, bytes] = {}
        self.problems: list[str] = []
        self.duplicates = 0  # retries after a lost acknowledgement that found their entry logged

    def checkpoint(self, size: int, raw: bytes) -> None:
        with self.lock:
            seen = self.checkpoints.setdefault(size, raw)
            if seen != raw:
                self.problems.append(f"two different checkpoints for size {size}")

    def ack(self, index: int, entry: bytes) -> None:
        with self.lock:
            seen = self.acked.setdefault(index, entry)
            if seen != entry:
                self.problems.append(f"index {index} acknowledged for two different entries")


def _open(server: LogServer, raw: bytes) -> SignedCheckpoint:
    return open_checkpoint(raw, server.origin, [parse_vkey(server.vkey)])


def _client(server: LogServer, record: _Record, n: int, stop: threading.Event) -> None:
    session = requests.Session()
    i = 0
    while not stop.is_set():
        entry = f"client {n} entry {i}".encode()
        try:
            r = session.post(f"{server.url}/add", data=entry, timeout=10)
        except requests.RequestException:
            session.close()
            session = requests.Session()
            time.sleep(0.02)
            continue  # not acknowledged: retry the same entry (it may be logged already)
        if r.status_code != 200:
            time.sleep(0.02)
            continue
        body = r.json()
        raw = body["checkpoint"].encode()
        cp = _open(server, raw)
        merkle.verify_inclusion(
            body["index"],
            cp.size,
            merkle.leaf_hash(entry),
            [base64.b64decode(p, validate=True) for p in body["inclusion_proof"]],
            cp.root,
        )
        record.checkpoint(cp.size, raw)
        record.ack(body["index"], entry)
        if body["duplicate"]:
            with record.lock:
                record.duplicates += 1
        i += 1
    session.close()


def _poller(server: LogServer, record: _Record, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            raw = requests.get(f"{server.url}/checkpoint", timeout=5).content
            record.checkpoint(_open(server, raw).size, raw)
        except requests.RequestException:
            pass
        time.sleep(0.01)


def _verify(server: LogServer, record: _Record, acked: dict[int, bytes]) -> int:
    """Check the log against ``acked`` (acknowledgements received before the last crash) and every
    checkpoint seen so far."""
    raw = requests.get(f"{server.url}/checkpoint", timeout=10).content
    cp = _open(server, raw)
    record.checkpoint(cp.size, raw)
    entries: list[bytes] = []
    for n in range(0, cp.size, 256):
        width = min(256, cp.size - n)
        tp = TilePath(None, n // 256, width)
        path = f"tile/entries/{n // 256:03d}" + ("" if width == 256 else f".p/{width}")
        assert cp.size < 256 * 1000 and tp.width == width
        r = requests.get(f"{server.url}/{path}", timeout=10)
        assert r.status_code == 200, path
        entries += parse_entry_bundle(r.content, width)
    hashes = [merkle.leaf_hash(e) for e in entries]
    # The tree rebuilt from the entries alone is the checkpoint's tree.
    assert merkle.root_from_leaf_hashes(hashes) == cp.root
    assert len(set(entries)) == len(entries), "an entry was logged twice"
    for index, entry in acked.items():
        assert index < cp.size, f"acknowledged index {index} lost (size {cp.size})"
        assert entries[index] == entry, f"index {index} changed"
    with record.lock:
        for index, entry in record.acked.items():
            assert index >= cp.size or entries[index] == entry, f"index {index} changed"
        for size, seen in list(record.checkpoints.items()):
            if size > cp.size:
                continue  # seen after this check's checkpoint was fetched; checked next time
            assert _open(server, seen).root == merkle.root_from_leaf_hashes(hashes[:size])
        assert not record.problems, record.problems
    return cp.size


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_acknowledged(log_server: LogServer) -> None:
    rng = random.Random()
    record = _Record()
    stop = threading.Event()
    threads = [threading.Thread(target=_client, args=(log_server, record, n, stop)) for n in range(CLIENTS)]
    threads.append(threading.Thread(target=_poller, args=(log_server, record, stop)))
    for t in threads:
        t.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.05, 0.6))
            log_server.kill()
            with record.lock:
                acked = dict(record.acked)
            log_server.start()
            _verify(log_server, record, acked)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    log_server.kill()
    log_server.start()
    size = _verify(log_server, record, record.acked)
    # Nothing seen was ever bigger than the log after its last crash: no rollback.
    assert max(record.checkpoints) == size
    assert len(record.acked) > KILLS  # the clients did get work done between the crashes
    assert size >= len(record.acked)
    print(
        f"crash test: {KILLS} kills, {size} entries, {len(record.acked)} acknowledged, "
        f"{record.duplicates} retries found their entry already logged"
    )
