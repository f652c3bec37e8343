"""Interop: a real C2SP tlog-tiles log written by Trillian Tessera, served by `python -m http.server`.

Every checkpoint verifies with Tessera's key, every entry is proved included in every checkpoint
that contains it (proofs computed from the served tiles), every pair of checkpoints is proved
consistent, and the entries are the expected words.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from personality.client import HTTPTransport, LogClient, LogVerifier
from personality.errors import ProofError
from personality.tlog.checkpoint import SignedCheckpoint
from personality.tlog.merkle import EMPTY_ROOT, leaf_hash, verify_consistency, verify_inclusion
from personality.tlog.note import parse_vkey
from personality.tlog.tiles import TilePath, parse_entry_bundle

TESSERA = Path(__file__).parents[1].parent / "shared" / "testvectors" / "tessera-log"
ORIGIN = "example.com/log/testdata"
VKEY = "example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx"
WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eit", "nain", "ten", "ileven", "twelf",
         "threeten", "fourten", "fivten"]


@pytest.fixture(scope="module")
def log_url() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(TESSERA)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"port (\d+)", line)
        assert m, f"http.server did not start: {line!r}"
        yield f"http://127.0.0.1:{m.group(1)}/"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture(scope="module")
def client(log_url: str) -> Iterator[LogClient]:
    transport = HTTPTransport(log_url, dynamic=False, timeout=(5.0, 10.0))
    yield LogClient(transport)
    transport.close()


@pytest.fixture(scope="module")
def checkpoints(client: LogClient) -> dict[int, SignedCheckpoint]:
    lv = LogVerifier(ORIGIN, [parse_vkey(VKEY)], client)
    out = {n: lv.open(client.transport.get(f"checkpoint.{n}")) for n in range(16)}
    for n, sc in out.items():
        assert sc.size == n and sc.origin == ORIGIN
    return out


def test_checkpoints_verify(client: LogClient, checkpoints: dict[int, SignedCheckpoint]) -> None:
    assert checkpoints[0].root == EMPTY_ROOT
    lv = LogVerifier(ORIGIN, [parse_vkey(VKEY)], client)
    latest = lv.update()
    assert latest.size == 15 and latest.raw == checkpoints[15].raw


def test_entries(client: LogClient) -> None:
    assert client.entries(0, 15, 15) == [w.encode() for w in WORDS]
    assert client.entries(3, 5, 15) == [b"four", b"five"]
    for n in range(1, 16):
        bundle = parse_entry_bundle(client.tile(TilePath(None, 0, n)), n)
        assert bundle == [w.encode() for w in WORDS[:n]]


def test_every_inclusion(client: LogClient, checkpoints: dict[int, SignedCheckpoint]) -> None:
    proved = 0
    for n in range(1, 16):
        sc = checkpoints[n]
        lv = LogVerifier(ORIGIN, [parse_vkey(VKEY)], client, sc)
        for i in range(n):
            entry = WORDS[i].encode()
            proof = client.inclusion_proof(i, n)
            verify_inclusion(i, n, leaf_hash(entry), proof, sc.root)
            lv.verify_inclusion(entry, i, sc, proof)
            with pytest.raises(ProofError):
                verify_inclusion(i, n, leaf_hash(entry + b"!"), proof, sc.root)
            proved += 1
    assert proved == 15 * 16 // 2


def test_every_consistency(client: LogClient, checkpoints: dict[int, SignedCheckpoint]) -> None:
    pairs = 0
    for m in range(16):
        for n in range(m, 16):
            a, b = checkpoints[m], checkpoints[n]
            verify_consistency(m, n, a.root, b.root, client.consistency_proof(m, n))
            lv = LogVerifier(ORIGIN, [parse_vkey(VKEY)], client, a)
            assert lv.verify_checkpoint(b.raw).size == n
            assert lv.latest is not None and lv.latest.size == n
            pairs += 1
    assert pairs == 16 * 17 // 2


def test_older_checkpoints_are_checked_not_adopted(
    client: LogClient, checkpoints: dict[int, SignedCheckpoint]
) -> None:
    lv = LogVerifier(ORIGIN, [parse_vkey(VKEY)], client, checkpoints[15])
    assert lv.update().size == 15
    for n in range(15):
        assert lv.verify_checkpoint(checkpoints[n].raw).size == n
        assert lv.latest == checkpoints[15]
