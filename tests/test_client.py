"""LogClient and LogVerifier against a small model log served over real HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from personality.client import FetchTransport, HTTPTransport, LogClient, LogVerifier, Params, StaticTransport
from personality.errors import (
    ConfigError,
    ForkError,
    FormatError,
    NotFoundError,
    OverloadedError,
    ProofError,
    RefusedError,
    SignatureError,
    UnavailableError,
)
from personality.tlog.checkpoint import Checkpoint, parse_signed_checkpoint, sign_checkpoint
from personality.tlog.merkle import (
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
)
from personality.tlog.note import Signer
from personality.tlog.proof import TlogProof
from personality.tlog.tiles import (
    TILE_WIDTH,
    TilePath,
    build_hash_tile,
    entry_bundles_for_size,
    format_tile_path,
    pack_entry_bundle,
    parse_tile_path,
    tiles_for_size,
)

ORIGIN = "gk.example/test-log"
SIGNER = Signer(ORIGIN, Ed25519PrivateKey.from_private_bytes(b"\x05" * 32))
B64 = base64.b64encode


class ModelLog:
    """An in-memory log with the JSON API and tiles; every size it reached has a checkpoint."""

    def __init__(self, entries: list[bytes] | None = None) -> None:
        self.entries: list[bytes] = []
        self.hashes: dict[tuple[int, int], bytes] = {}
        self.index: dict[bytes, int] = {}
        self.cr = CompactRange()
        self.checkpoints = {0: sign_checkpoint(Checkpoint(ORIGIN, 0, self.cr.root()), [SIGNER])}
        self.override: bytes | None = None
        for e in entries or []:
            self.add(e)

    def add(self, entry: bytes) -> tuple[int, bool]:
        lh = leaf_hash(entry)
        if lh in self.index:
            return self.index[lh], True
        for level, idx, h in self.cr.append(lh):
            self.hashes[(level, idx)] = h
        self.index[lh] = len(self.entries)
        self.entries.append(entry)
        self.checkpoints[self.size] = sign_checkpoint(Checkpoint(ORIGIN, self.size, self.cr.root()), [SIGNER])
        return self.size - 1, False

    @property
    def size(self) -> int:
        return len(self.entries)

    def get(self, level: int, index: int) -> bytes:
        try:
            return self.hashes[(level, index)]
        except KeyError:
            raise NotFoundError("no hash") from None

    def tile(self, tp: TilePath) -> bytes:
        if tp.level is None:
            start = tp.index * TILE_WIDTH
            if start + tp.width > self.size:
                raise NotFoundError("no bundle")
            return pack_entry_bundle(self.entries[start : start + tp.width])
        return build_hash_tile(tp, self.get)


class Handler(BaseHTTPRequestHandler):
    server: Server
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: object, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        log = self.server.log
        if url.path != "/add":
            return self._send(404, b"")
        if body == b"refuse me":
            return self._json({"error": "refused", "message": "signer not allowed"}, 403)
        index, dup = log.add(body)
        wait = parse_qs(url.query).get("wait", ["1"])[0] == "1"
        out: dict[str, Any] = {"index": index, "leaf_hash": B64(leaf_hash(body)).decode(), "duplicate": dup}
        if wait:
            out |= {"size": log.size, "checkpoint": log.checkpoints[log.size].decode(),
                    "inclusion_proof": [B64(h).decode() for h in inclusion_proof(index, log.size, log.get)]}
        self._json(out)

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        log = self.server.log
        path = url.path.lstrip("/")
        hook = self.server.hooks.get(path)
        if hook:
            hook(self)
            return
        if path == "checkpoint":
            return self._send(200, log.override or log.checkpoints[log.size])
        if path.startswith("tile/"):
            tp = parse_tile_path(path)
            if self.server.no_partial and not tp.is_full:
                return self._send(404, b"gone")
            try:
                return self._send(200, log.tile(tp))
            except NotFoundError:
                return self._send(404, b"")
        if path == "proof/inclusion":
            size = int(q.get("size", log.size))
            if "leaf_hash" in q:
                lh = base64.urlsafe_b64decode(q["leaf_hash"])
                if lh not in log.index or log.index[lh] >= size:
                    return self._json({"error": "not_found", "message": "no such leaf"}, 404)
                index = log.index[lh]
            else:
                index = int(q["index"])
            proof = inclusion_proof(index, size, log.get)
            return self._json({"index": index + self.server.skew, "size": size,
                               "leaf_hash": B64(log.get(0, index)).decode(),
                               "proof": [B64(h).decode() for h in proof]})
        if path == "proof/consistency":
            m, n = int(q["from"]), int(q["to"])
            proof = consistency_proof(m, n, log.get)
            return self._json({"from": m, "to": n, "proof": [B64(h).decode() for h in proof]})
        self._send(404, b"")


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, log: ModelLog) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.log = log
        self.hooks: dict[str, Any] = {}
        self.no_partial = False
        self.skew = 0

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the slow hook writes to a client that already gave up

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server(ModelLog())
    t = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


def _verifier(client: LogClient, latest: Any = None) -> LogVerifier:
    return LogVerifier(ORIGIN, [SIGNER.verifier()], client, latest)


def test_dynamic_round_trip(server: Server) -> None:
    client = LogClient(HTTPTransport(server.url))
    lv = _verifier(client)
    assert lv.update().size == 0
    results = [client.add(b"entry %d" % i) for i in range(300)]
    assert [r.index for r in results] == list(range(300))
    dup = client.add(b"entry 7")
    assert dup.duplicate and dup.index == 7
    for r, i in [(results[0], 0), (results[299], 299), (dup, 7)]:
        assert r.checkpoint is not None and r.inclusion_proof is not None
        sc = lv.open(r.checkpoint)
        lv.verify_inclusion(b"entry %d" % i, r.index, sc, r.inclusion_proof)
        lv.verify_inclusion(b"entry %d" % i, r.index, sc)  # proof fetched from the log
    with pytest.raises(ProofError):
        lv.verify_inclusion(b"entry 8", 7, lv.open(dup.checkpoint or b""))
    assert lv.update().size == 300
    assert client.entries(250, 300, 300) == [b"entry %d" % i for i in range(250, 300)]
    idx, proof = client.inclusion_proof_by_hash(leaf_hash(b"entry 42"), 300)
    assert idx == 42 and proof == client.inclusion_proof(42, 300)
    with pytest.raises(NotFoundError):
        client.inclusion_proof_by_hash(leaf_hash(b"nope"), 300)
    nowait = client.add(b"late", wait=False)
    assert nowait.index == 300 and nowait.checkpoint is None
    with pytest.raises(RefusedError, match="signer not allowed"):
        client.add(b"refuse me")


def test_static_http_and_directory_match_json_proofs(server: Server, tmp_path: Path) -> None:
    log = server.log
    for i in range(600):
        log.add(b"e%d" % i)
    dynamic = LogClient(HTTPTransport(server.url))
    static = LogClient(HTTPTransport(server.url, dynamic=False))
    # Write the log out as static files for StaticTransport.
    for tp in tiles_for_size(600) + entry_bundles_for_size(600):
        f = tmp_path / format_tile_path(tp)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(log.tile(tp))
    (tmp_path / "checkpoint").write_bytes(log.checkpoints[600])
    directory = LogClient(StaticTransport(tmp_path))
    assert directory.checkpoint() == dynamic.checkpoint()
    for i in [0, 255, 256, 511, 599]:
        p = dynamic.inclusion_proof(i, 600)
        assert static.inclusion_proof(i, 600) == p == directory.inclusion_proof(i, 600)
    for m in [1, 255, 256, 300]:
        p = dynamic.consistency_proof(m, 600)
        assert static.consistency_proof(m, 600) == p
    assert directory.entries(590, 600, 600) == [b"e%d" % i for i in range(590, 600)]
    lv = _verifier(directory)
    assert lv.update().size == 600
    with pytest.raises(ConfigError):
        directory.add(b"x")
    with pytest.raises(ConfigError):
        static.inclusion_proof_by_hash(leaf_hash(b"e1"), 600)
    for bad in ["../checkpoint", "tile/0/../../x", "/etc/passwd", "proof/inclusion"]:
        with pytest.raises(NotFoundError):
            directory.transport.get(bad)


def test_partial_tile_falls_back_to_full(server: Server) -> None:
    for i in range(300):
        server.log.add(b"p%d" % i)
    server.no_partial = True
    client = LogClient(HTTPTransport(server.url, dynamic=False))
    assert client.tile(TilePath(0, 0, 10)) == server.log.tile(TilePath(0, 0, 10))
    assert client.entries(0, 3, 10) == [b"p0", b"p1", b"p2"]
    with pytest.raises(NotFoundError):
        client.tile(TilePath(0, 1, 44))  # no full tile 1 yet


def test_fork_detection(server: Server) -> None:
    log = server.log
    for i in range(20):
        log.add(b"a%d" % i)
    client = LogClient(HTTPTransport(server.url))
    lv = _verifier(client)
    held = lv.update()
    # Rollback to a smaller (validly signed) checkpoint.
    log.override = log.checkpoints[10]
    with pytest.raises(ForkError) as e:
        lv.update()
    assert e.value.old == held and e.value.new.size == 10
    assert lv.latest == held
    # An older checkpoint offered in a bundle is fine if it is consistent.
    assert lv.verify_checkpoint(log.checkpoints[10]).size == 10
    assert lv.latest == held
    # A fork: same signer, different history from index 5; same size and larger size.
    forked = ModelLog([b"a%d" % i for i in range(5)] + [b"b%d" % i for i in range(30)])
    with pytest.raises(ForkError, match="different roots"):
        lv.verify_checkpoint(forked.checkpoints[20])
    server.log = forked
    with pytest.raises(ForkError, match="not consistent") as e:
        lv.update()
    assert e.value.old.raw == held.raw and e.value.new.size == 35
    assert lv.latest == held
    with pytest.raises(ForkError):
        lv.verify_checkpoint(forked.checkpoints[12])


def test_signature_and_origin_failures(server: Server) -> None:
    client = LogClient(HTTPTransport(server.url))
    other = Signer(ORIGIN, Ed25519PrivateKey.from_private_bytes(b"\x06" * 32))
    server.log.override = sign_checkpoint(Checkpoint(ORIGIN, 0, server.log.cr.root()), [other])
    lv = _verifier(client)
    with pytest.raises(SignatureError):
        lv.update()
    assert lv.latest is None
    with pytest.raises(ConfigError):
        LogVerifier(ORIGIN, [], client)


def test_tlog_proof_verification(server: Server) -> None:
    for i in range(9):
        server.log.add(b"t%d" % i)
    client = LogClient(HTTPTransport(server.url))
    lv = _verifier(client)
    lv.update()
    p = TlogProof(3, tuple(client.inclusion_proof(3, 9)), server.log.checkpoints[9])
    assert lv.verify_tlog_proof(p, b"t3").size == 9
    with pytest.raises(ProofError):
        lv.verify_tlog_proof(p, b"t4")
    sc = parse_signed_checkpoint(server.log.checkpoints[9])
    with pytest.raises(ProofError, match="not in the checkpoint"):
        lv.verify_inclusion(b"t3", 9, sc)


def test_http_error_mapping(server: Server) -> None:
    def status(code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
        return lambda h: h._send(code, body, headers)

    def slow(h: Handler) -> None:
        time.sleep(1.0)
        h._send(200, b"late")

    server.hooks.update({
        "busy": status(503, b'{"error":"overloaded","message":"queue full"}', {"Retry-After": "7"}),
        "boom": status(500, b"internal"),
        "bad": status(400, b'{"error":"format","message":"bad request body"}'),
        "big": status(200, b"x" * 5000),
        "slow": slow,
    })
    t = HTTPTransport(server.url, timeout=(1.0, 0.2), max_response=4096)
    with pytest.raises(OverloadedError) as e:
        t.get("busy")
    assert e.value.retry_after == 7 and "queue full" in str(e.value)
    with pytest.raises(UnavailableError, match="HTTP 500"):
        t.get("boom")
    with pytest.raises(FormatError, match="bad request body"):
        t.get("bad")
    with pytest.raises(FormatError, match="than 4096"):
        t.get("big")
    with pytest.raises(NotFoundError):
        t.get("nothing-here")
    with pytest.raises(UnavailableError, match="in time"):
        t.get("slow")
    with pytest.raises(ConfigError):
        HTTPTransport("ftp://example")


def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = LogClient(HTTPTransport(f"http://127.0.0.1:{port}", timeout=(1.0, 1.0)))
    with pytest.raises(UnavailableError, match="unreachable"):
        client.checkpoint()


class FakeTransport:
    """Answers JSON API calls with canned bodies, to check response validation."""

    dynamic = True

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = json.dumps(body).encode()

    def get(self, path: str, params: Params | None = None) -> bytes:
        return self.body

    def post(self, path: str, body: bytes, params: Params | None = None) -> bytes:
        return self.body


H = B64(b"\x01" * 32).decode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"index": 4, "size": 9, "proof": [H]}, "another index"),
        ({"index": 3, "size": 9, "proof": [H[:-4] + "AA=="]}, "not 32"),
        ({"index": 3, "size": 9, "proof": ["%%%"]}, "base64"),
        ({"index": 3, "size": 9, "proof": H}, "list field 'proof'"),
        ({"index": "3", "size": 9, "proof": []}, "int field 'index'"),
        ({"index": True, "size": 9, "proof": []}, "int field 'index'"),
    ],
)
def test_malformed_json_responses(body: dict[str, Any], message: str) -> None:
    with pytest.raises(FormatError, match=message):
        LogClient(FakeTransport(body)).inclusion_proof(3, 9)


def test_malformed_add_response() -> None:
    body = {"index": 0, "leaf_hash": B64(leaf_hash(b"other")).decode(), "duplicate": False}
    with pytest.raises(FormatError, match="another entry"):
        LogClient(FakeTransport(body)).add(b"mine", wait=False)
    body["leaf_hash"] = B64(leaf_hash(b"mine")).decode()
    with pytest.raises(FormatError, match="size"):
        LogClient(FakeTransport(body)).add(b"mine", wait=True)
    html = FakeTransport({})
    html.body = b"<html>"
    with pytest.raises(FormatError, match="not JSON"):
        LogClient(html).add(b"mine")


class CountingTransport(StaticTransport):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.paths: list[str] = []

    def get(self, path: str, params: Params | None = None) -> bytes:
        self.paths.append(path)
        return super().get(path, params)


def test_hash_tiles_are_cached(tmp_path: Path) -> None:
    log = ModelLog([b"c%d" % i for i in range(70)])
    for tp in tiles_for_size(70) + entry_bundles_for_size(70):
        f = tmp_path / format_tile_path(tp)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(log.tile(tp))
    t = CountingTransport(tmp_path)
    client = LogClient(t)
    for i in range(70):
        client.inclusion_proof(i, 70)
    assert t.paths == ["tile/0/000.p/70"]
    client.entries(0, 70, 70)
    client.entries(0, 70, 70)
    assert t.paths.count("tile/entries/000.p/70") == 2
    uncached = CountingTransport(tmp_path)
    LogClient(uncached, tile_cache=0).consistency_proof(3, 70)
    LogClient(uncached, tile_cache=0).consistency_proof(3, 70)
    assert len(uncached.paths) == 2


def test_fetch_transport(tmp_path: Path) -> None:
    log = ModelLog([b"f%d" % i for i in range(5)])

    def fetch(path: str) -> bytes:
        if path == "checkpoint":
            return log.checkpoints[5]
        if path == "tile/0/000.p/5":
            raise OSError("disk on fire")
        return log.tile(parse_tile_path(path))

    client = LogClient(FetchTransport(fetch))
    lv = _verifier(client)
    assert lv.update().size == 5
    assert client.entries(0, 5, 5)[4] == b"f4"
    with pytest.raises(UnavailableError, match="disk on fire"):
        client.inclusion_proof(1, 5)
    with pytest.raises(ConfigError):
        client.add(b"x")
