"""The HTTP API against a real `gk log serve` on loopback: every answer checked, every bad input a
clear JSON error, and the server still serving afterwards."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from aiohttp import ClientSession, ClientTimeout, web
from conftest import LogServer

from personality.log import Log
from personality.server import make_app
from personality.storage.memory import MemorySequencingStore, MemoryTileStore
from personality.tlog import merkle
from personality.tlog.checkpoint import open_checkpoint
from personality.tlog.note import generate_signer, parse_vkey
from personality.tlog.tiles import TilePath, parse_entry_bundle, parse_hash_tile


def _b64(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


def _add(session: requests.Session, url: str, entry: bytes, **params: str) -> dict[str, object]:
    r = session.post(f"{url}/add", data=entry, params=params, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, dict)
    return body


def _root(server: LogServer, checkpoint: bytes) -> tuple[int, bytes]:
    cp = open_checkpoint(checkpoint, server.origin, [parse_vkey(server.vkey)])
    return cp.size, cp.root


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LogServer, list[bytes]]]:
    """One server for the module holding 300 entries (more than one tile), added by 8 concurrent
    clients. Tests using it must not add entries."""
    server = LogServer.create(tmp_path_factory.mktemp("filled") / "log", "--accept-any")
    entries = [f"entry number {i}".encode() for i in range(300)]
    try:
        with ThreadPoolExecutor(8) as pool, requests.Session() as s:
            list(pool.map(lambda e: _add(s, server.url, e, wait="0"), entries))
        yield server, entries
    finally:
        server.stop()


def test_add_returns_a_verifiable_inclusion_proof(log_server: LogServer) -> None:
    with requests.Session() as s:
        body = _add(s, log_server.url, b"hello log")
        assert body["index"] == 0 and body["duplicate"] is False
        assert _b64(str(body["leaf_hash"])) == merkle.leaf_hash(b"hello log")
        size, root = _root(log_server, str(body["checkpoint"]).encode())
        assert size == body["size"] == 1
        proof = [_b64(p) for p in body["inclusion_proof"]]  # type: ignore[attr-defined]
        merkle.verify_inclusion(0, size, merkle.leaf_hash(b"hello log"), proof, root)
        r = s.get(f"{log_server.url}/checkpoint", timeout=10)
        assert r.status_code == 200 and r.headers["Cache-Control"] == "no-cache"
        assert r.content == str(body["checkpoint"]).encode()


def test_duplicate_add_returns_the_existing_index(log_server: LogServer) -> None:
    with requests.Session() as s:
        first = _add(s, log_server.url, b"once")
        _add(s, log_server.url, b"other")
        again = _add(s, log_server.url, b"once")
        assert (again["index"], again["duplicate"]) == (first["index"], True)
        assert s.get(f"{log_server.url}/healthz", timeout=10).json() == {"status": "ok", "size": 2}


def test_wait_zero_returns_the_index_only(log_server: LogServer) -> None:
    with requests.Session() as s:
        body = _add(s, log_server.url, b"quick", wait="0")
    assert body["index"] == 0
    assert "checkpoint" not in body and "inclusion_proof" not in body


def test_tiles_and_entry_bundles_match_the_entries(filled: tuple[LogServer, list[bytes]]) -> None:
    server, entries = filled
    with requests.Session() as s:
        size, root = _root(server, s.get(f"{server.url}/checkpoint", timeout=10).content)
        assert size == 300
        full = s.get(f"{server.url}/tile/0/000", timeout=10)
        assert full.status_code == 200
        assert full.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        level0 = parse_hash_tile(full.content, 256)
        partial = s.get(f"{server.url}/tile/0/001.p/44", timeout=10)
        assert partial.status_code == 200 and "immutable" not in partial.headers["Cache-Control"]
        level0 += parse_hash_tile(partial.content, 44)
        bundles = parse_entry_bundle(s.get(f"{server.url}/tile/entries/000", timeout=10).content, 256)
        bundles += parse_entry_bundle(s.get(f"{server.url}/tile/entries/001.p/44", timeout=10).content, 44)
        # An older, narrower partial tile is the prefix of the current one.
        older = s.get(f"{server.url}/tile/entries/001.p/3", timeout=10).content
        assert parse_entry_bundle(older, 3) == bundles[256:259]
        assert sorted(bundles) == sorted(entries)
        assert level0 == [merkle.leaf_hash(e) for e in bundles]
        assert merkle.root_from_leaf_hashes(level0) == root
        level1 = s.get(f"{server.url}/tile/1/000.p/1", timeout=10).content
        assert level1 == merkle.root_from_leaf_hashes(level0[:256])
        for beyond in (
            "tile/0/001",
            "tile/0/001.p/45",
            "tile/entries/002.p/1",
            "tile/1/000.p/2",
            "tile/2/000.p/1",
        ):
            r = s.get(f"{server.url}/{beyond}", timeout=10)
            assert r.status_code == 404, beyond
            assert r.json()["error"] == "not_found"


def test_proofs_by_index_leaf_hash_and_consistency(filled: tuple[LogServer, list[bytes]]) -> None:
    server, _ = filled
    with requests.Session() as s:
        size, root = _root(server, s.get(f"{server.url}/checkpoint", timeout=10).content)
        bundle = parse_entry_bundle(s.get(f"{server.url}/tile/entries/000", timeout=10).content, 256)
        hashes = [merkle.leaf_hash(e) for e in bundle]
        body = s.get(f"{server.url}/proof/inclusion", params={"index": "17"}, timeout=10).json()
        assert (body["index"], body["size"]) == (17, size)
        assert _b64(body["leaf_hash"]) == hashes[17]
        merkle.verify_inclusion(17, size, hashes[17], [_b64(p) for p in body["proof"]], root)
        for padded in (True, False):
            h = base64.urlsafe_b64encode(hashes[99]).decode()
            h = h if padded else h.rstrip("=")
            body = s.get(f"{server.url}/proof/inclusion", params={"leaf_hash": h}, timeout=10).json()
            assert body["index"] == 99
            merkle.verify_inclusion(99, size, hashes[99], [_b64(p) for p in body["proof"]], root)
        small_root = merkle.root_from_leaf_hashes(hashes[:200])
        body = s.get(f"{server.url}/proof/inclusion", params={"index": "5", "size": "200"}, timeout=10).json()
        merkle.verify_inclusion(5, 200, hashes[5], [_b64(p) for p in body["proof"]], small_root)
        body = s.get(
            f"{server.url}/proof/consistency", params={"from": "200", "to": "300"}, timeout=10
        ).json()
        assert (body["from"], body["to"]) == (200, 300)
        merkle.verify_consistency(200, 300, small_root, root, [_b64(p) for p in body["proof"]])
        body = s.get(f"{server.url}/proof/consistency", params={"from": "0"}, timeout=10).json()
        assert body == {"from": 0, "to": 300, "proof": []}


BAD_REQUESTS: list[tuple[str, str, Mapping[str, str], bytes | None, int, str]] = [
    ("GET", "/proof/inclusion", {"index": "01"}, None, 400, "malformed"),
    ("GET", "/proof/inclusion", {"index": "-1"}, None, 400, "malformed"),
    ("GET", "/proof/inclusion", {"index": "1e3"}, None, 400, "malformed"),
    ("GET", "/proof/inclusion", {"index": "99999999999999999999"}, None, 400, "malformed"),
    ("GET", "/proof/inclusion", {}, None, 400, "malformed"),
    ("GET", "/proof/inclusion", {"index": "1", "leaf_hash": "A" * 43}, None, 400, "malformed"),
    ("GET", "/proof/inclusion", {"leaf_hash": "short"}, None, 400, "malformed"),
    ("GET", "/proof/inclusion", {"leaf_hash": "+" * 43}, None, 400, "malformed"),
    ("GET", "/proof/inclusion", {"leaf_hash": "A" * 43}, None, 404, "not_found"),
    ("GET", "/proof/inclusion", {"index": "0", "size": "301"}, None, 404, "not_found"),
    ("GET", "/proof/inclusion", {"index": "300"}, None, 404, "not_found"),
    ("GET", "/proof/inclusion", {"index": "0", "color": "red"}, None, 400, "malformed"),
    ("GET", "/proof/consistency", {"from": "5", "to": "4"}, None, 404, "not_found"),
    ("GET", "/proof/consistency", {"from": "5", "to": "999"}, None, 404, "not_found"),
    ("GET", "/proof/consistency", {"to": "4"}, None, 400, "malformed"),
    ("GET", "/proof/consistency", {"from": "x"}, None, 400, "malformed"),
    ("POST", "/add", {}, b"", 400, "malformed"),
    ("POST", "/add", {"wait": "yes"}, b"x", 400, "malformed"),
    ("POST", "/add", {}, b"x" * 65536, 413, "too_large"),
    ("POST", "/add", {}, b"x" * 1_000_000, 413, "too_large"),
    ("GET", "/add", {}, None, 405, "method_not_allowed"),
    ("POST", "/checkpoint", {}, b"x", 405, "method_not_allowed"),
    ("GET", "/no/such/thing", {}, None, 404, "not_found"),
    ("GET", "/tile/0/1", {}, None, 400, "malformed"),
    ("GET", "/tile/00/000", {}, None, 400, "malformed"),
    ("GET", "/tile/0/000.p/256", {}, None, 400, "malformed"),
    ("GET", "/tile/0/000.p/0", {}, None, 400, "malformed"),
    ("GET", "/tile/0/000.p/007", {}, None, 400, "malformed"),
    ("GET", "/tile/0/x000/001", {}, None, 400, "malformed"),
    ("GET", "/tile/64/000", {}, None, 400, "malformed"),
    ("GET", "/tile/entries/000.p/", {}, None, 400, "malformed"),
    ("GET", "/tile/entries/000.p/1/", {}, None, 400, "malformed"),
    ("GET", "/tile//0/000", {}, None, 400, "malformed"),
    ("GET", "/tile/entries/000/", {}, None, 400, "malformed"),
]


@pytest.mark.parametrize(("method", "path", "params", "body", "status", "code"), BAD_REQUESTS)
def test_bad_requests_get_clear_json_errors(
    filled: tuple[LogServer, list[bytes]],
    method: str,
    path: str,
    params: Mapping[str, str],
    body: bytes | None,
    status: int,
    code: str,
) -> None:
    server, _ = filled
    r = requests.request(method, server.url + path, params=params, data=body, timeout=30)
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    err = r.json()
    assert err["error"] == code
    assert isinstance(err["message"], str) and len(err["message"]) > 10
    assert "Traceback" not in r.text
    # ... and the server keeps serving.
    assert requests.get(f"{server.url}/healthz", timeout=10).json() == {"status": "ok", "size": 300}


def test_repeated_query_parameter_is_refused(filled: tuple[LogServer, list[bytes]]) -> None:
    server, _ = filled
    r = requests.get(f"{server.url}/proof/inclusion?index=1&index=2", timeout=10)
    assert r.status_code == 400 and "twice" in r.json()["message"]


def test_garbage_on_the_socket_does_not_kill_the_server(log_server: LogServer) -> None:
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(log_server.url)
    for junk in (
        b"\x00\xff garbage\r\n\r\n",
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
        b"POST /add HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    ):
        with socket.create_connection((u.hostname, u.port), timeout=5) as c:
            c.sendall(junk)
            c.recv(4096)
    assert requests.get(f"{log_server.url}/healthz", timeout=10).json()["status"] == "ok"


def test_client_gone_mid_body_is_not_an_internal_error(log_server: LogServer) -> None:
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(log_server.url)
    for _ in range(3):
        with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
            sock.sendall(b"POST /add HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b")
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
    assert requests.get(f"{log_server.url}/healthz", timeout=10).json() == {"status": "ok", "size": 0}
    assert "unhandled error" not in log_server.stderr() and "Traceback" not in log_server.stderr()


def test_metrics_count_adds_and_batches(filled: tuple[LogServer, list[bytes]]) -> None:
    server, _ = filled
    r = requests.get(f"{server.url}/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    lines = dict(line.rsplit(" ", 1) for line in r.text.splitlines() if not line.startswith("#"))
    assert lines["gk_log_adds_total"] == "300"
    assert lines["gk_log_tree_size"] == "300"
    assert lines["gk_log_queue_depth"] == "0"
    batches = int(lines["gk_log_batches_total"])
    assert 1 <= batches <= 300
    assert lines['gk_log_batch_size_bucket{le="+Inf"}'] == str(batches)
    assert lines["gk_log_batch_size_sum"] == "300"


# -- overload, in process (needs a deterministic full queue) --------------------------------------


class _GatedTiles(MemoryTileStore):
    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def put_tiles(self, tiles: Mapping[TilePath, bytes]) -> None:
        self.entered.set()
        self.gate.wait(10)
        super().put_tiles(tiles)


def test_overload_is_503_with_retry_after() -> None:
    async def main() -> None:
        tiles = _GatedTiles()
        log = Log(MemorySequencingStore(), tiles, generate_signer("test.example/overload"), max_pending=2)
        await log.start()
        runner = web.AppRunner(make_app(log))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}"
        async with ClientSession(timeout=ClientTimeout(total=20)) as http:

            async def post(data: bytes) -> tuple[int, dict[str, object], str | None]:
                async with http.post(f"{url}/add", data=data) as r:
                    return r.status, json.loads(await r.read()), r.headers.get("Retry-After")

            first = asyncio.create_task(post(b"in flight"))
            while not tiles.entered.is_set():  # the integrator is now held inside the first batch
                await asyncio.sleep(0.01)
            queued = [asyncio.create_task(post(f"queued {i}".encode())) for i in range(2)]
            while log.queue_depth < 2:
                await asyncio.sleep(0.01)
            status, body, retry = await post(b"one too many")
            assert status == 503 and body["error"] == "overloaded" and retry is not None and int(retry) >= 1
            tiles.gate.set()
            results = await asyncio.gather(first, *queued)
            assert sorted(int(b["index"]) for s, b, _ in results if s == 200) == [0, 1, 2]  # type: ignore[call-overload]
        await runner.cleanup()
        await log.close()

    asyncio.run(main())


def test_add_from_n_returns_the_consistency_proof(log_server: LogServer) -> None:
    with requests.Session() as s:
        first = _add(s, log_server.url, b"first")
        _add(s, log_server.url, b"second")
        old_size, old_root = _root(log_server, str(first["checkpoint"]).encode())
        body = _add(s, log_server.url, b"third", **{"from": str(old_size)})
        size, root = _root(log_server, str(body["checkpoint"]).encode())
        assert (old_size, size) == (1, 3)
        proof = [_b64(p) for p in body["consistency_proof"]]  # type: ignore[attr-defined]
        merkle.verify_consistency(old_size, size, old_root, root, proof)
        dup = _add(s, log_server.url, b"third", **{"from": "3"})  # a duplicate: N == the size
        assert (dup["duplicate"], dup["size"], dup["consistency_proof"]) == (True, 3, [])
        assert "consistency_proof" not in _add(s, log_server.url, b"fifth")


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"from": "0"}, "from must be in 1..1"),
        ({"from": "2"}, "from must be in 1..1"),
        ({"from": "01"}, "decimal number"),
        ({"from": "-1"}, "decimal number"),
        ({"from": "x"}, "decimal number"),
        ({"from": "1", "wait": "0"}, "needs wait=1"),
    ],
)
def test_add_from_n_is_parsed_strictly(log_server: LogServer, params: dict[str, str], needle: str) -> None:
    with requests.Session() as s:
        _add(s, log_server.url, b"only one")
        r = s.post(f"{log_server.url}/add", data=b"refused entry", params=params, timeout=30)
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "malformed" and needle in r.json()["message"]
        assert s.get(f"{log_server.url}/healthz", timeout=10).json()["size"] == 1  # nothing logged
