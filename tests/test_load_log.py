"""Load: 1,000 concurrent adds against a real ``gk log serve`` on 127.0.0.1 (loopback only).

Two rounds of 1,000 distinct entries, each round on 1,000 simultaneous connections, plus 200
concurrent resubmissions of entries already logged. Checked:

- every add is acknowledged (a 503 would carry ``Retry-After`` and be retried: none is lost);
- every acknowledged entry has its own index, its inclusion proof verifies against the signed
  checkpoint in the same answer, and a resubmission returns the first index with
  ``duplicate: true``;
- afterwards the whole log is read back through the tlog-tiles read path: every acknowledged index
  holds exactly the acknowledged bytes, the tree rebuilt from all entries has the checkpoint's root,
  and every checkpoint seen in an answer is consistent with the final one;
- memory stays bounded: the server's RSS after the second round is within a fixed margin of its
  RSS after the first (a leak per request would show as growth proportional to the requests).

The numbers (RSS before / after each round, time per round) are printed for the report.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from conftest import LogServer

from personality.client import LogClient, LogVerifier
from personality.tlog import merkle
from personality.tlog.checkpoint import open_checkpoint
from personality.tlog.note import parse_vkey

CONCURRENCY = 1000
DUPLICATES = 200
#: RSS growth allowed between the end of round 1 and the end of round 2 (same load): generous, since
#: the allocator keeps freed arenas; a per-request leak of the answer size alone would exceed it.
RSS_MARGIN_KIB = 64 * 1024

pytestmark = pytest.mark.slow


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _add(session: aiohttp.ClientSession, url: str, entry: bytes) -> dict[str, object]:
    for _ in range(50):
        async with session.post(f"{url}/add", data=entry,
                                headers={"Content-Type": "application/octet-stream"}) as resp:
            body = await resp.read()
            if resp.status == 503:
                assert "Retry-After" in resp.headers
                await asyncio.sleep(float(resp.headers["Retry-After"]))
                continue
            assert resp.status == 200, (resp.status, body[:300])
            return json.loads(body)  # type: ignore[no-any-return]
    raise AssertionError("still overloaded after 50 retries")


async def _round(url: str, entries: list[bytes]) -> list[dict[str, object]]:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = asyncio.Event()

        async def one(e: bytes) -> dict[str, object]:
            await start.wait()  # all 1,000 requests leave together
            return await _add(session, url, e)

        tasks = [asyncio.create_task(one(e)) for e in entries]
        await asyncio.sleep(0)
        start.set()
        return await asyncio.gather(*tasks)


def _check_answer(entry: bytes, ans: dict[str, object], vkey: str, origin: str) -> bytes:
    verifier = parse_vkey(vkey)
    index, size = ans["index"], ans["size"]
    assert isinstance(index, int) and isinstance(size, int)
    assert base64.b64decode(ans["leaf_hash"]) == merkle.leaf_hash(entry)  # type: ignore[arg-type]
    checkpoint = str(ans["checkpoint"]).encode()
    sc = open_checkpoint(checkpoint, origin, [verifier])
    assert sc.size == size
    proof = [base64.b64decode(h) for h in ans["inclusion_proof"]]  # type: ignore[union-attr]
    merkle.verify_inclusion(index, size, merkle.leaf_hash(entry), proof, sc.root)
    return checkpoint


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LogServer]:
    s = LogServer.create(tmp_path / "log", "--accept-any", origin="load.example/log")
    yield s
    s.stop()


def test_thousand_concurrent_adds(server: LogServer) -> None:
    url, pid = server.url, server.pid
    rss = {"start": rss_kib(pid)}
    acknowledged: dict[int, bytes] = {}
    checkpoints: set[bytes] = set()
    timings = {}
    for rnd in (1, 2):
        entries = [b"load round %d entry %04d " % (rnd, i) + b"x" * 150 for i in range(CONCURRENCY)]
        t0 = time.perf_counter()
        answers = asyncio.run(_round(url, entries))
        timings[f"round{rnd}_s"] = round(time.perf_counter() - t0, 2)
        rss[f"after_round{rnd}"] = rss_kib(pid)
        for e, ans in zip(entries, answers, strict=True):
            checkpoints.add(_check_answer(e, ans, server.vkey, server.origin))
            assert ans["duplicate"] is False
            index = ans["index"]
            assert isinstance(index, int) and index not in acknowledged, f"index {index} given twice"
            acknowledged[index] = e

    # Resubmissions: the first index, marked duplicate, and no new leaf.
    dup_entries = list(acknowledged.items())[:: CONCURRENCY * 2 // DUPLICATES][:DUPLICATES]
    answers = asyncio.run(_round(url, [e for _, e in dup_entries]))
    for (index, e), ans in zip(dup_entries, answers, strict=True):
        assert ans["index"] == index and ans["duplicate"] is True
        checkpoints.add(_check_answer(e, ans, server.vkey, server.origin))

    # Read everything back through the tiles and check it against the final checkpoint.
    client = LogClient.http(url)
    verifier = LogVerifier(server.origin, [parse_vkey(server.vkey)], client)
    final = verifier.update()
    assert final.size == 2 * CONCURRENCY, "resubmissions must not add leaves"
    logged = client.entries(0, final.size, final.size)
    for index, e in acknowledged.items():
        assert logged[index] == e, f"index {index} does not hold the acknowledged entry"
    assert merkle.root_from_leaf_hashes([merkle.leaf_hash(e) for e in logged]) == final.root
    # Every checkpoint handed out is a prefix of the final tree: same root at its size.
    for raw in checkpoints:
        sc = open_checkpoint(raw, server.origin, [parse_vkey(server.vkey)])
        prefix = merkle.root_from_leaf_hashes([merkle.leaf_hash(e) for e in logged[: sc.size]])
        assert prefix == sc.root

    rss["end"] = rss_kib(pid)
    print("\nload: " + json.dumps({"adds": 2 * CONCURRENCY, "duplicates": DUPLICATES, "checkpoints_seen":
                                   len(checkpoints), **timings, "rss_kib": rss}))
    assert rss["after_round2"] - rss["after_round1"] < RSS_MARGIN_KIB, rss
    # healthz still answers after the load
    status = asyncio.run(_healthz(url))
    assert status == 200


async def _healthz(url: str) -> int:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/healthz") as r:
        return r.status
