"""A tiny in-test log for gk submit tests, with switchable misbehaviour (a hostile log fixture).

It speaks the JSON API of docs/design/modules.md (``POST /add``, ``GET /proof/consistency``,
``GET /checkpoint``) using the project's own tlog functions for hashes and checkpoint signatures,
then lies on purpose when ``mode`` says so. Runs aiohttp on 127.0.0.1:0 in a background thread.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web

from personality.tlog import merkle
from personality.tlog.checkpoint import Checkpoint, sign_checkpoint
from personality.tlog.note import Signer, generate_signer

ORIGIN = "fake.example/log"


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


@dataclass
class FakeLog:
    signer: Signer = field(default_factory=lambda: generate_signer(ORIGIN))
    entries: list[bytes] = field(default_factory=list)
    #: honest | wrong-proof | forged-checkpoint | fork | refuse | unavailable | not-json | no-proof
    #: | rollback (forgets every entry but the first, then answers consistency requests with 500)
    mode: str = "honest"
    date_offset: float = 0.0  # seconds added to the Date header
    url: str = ""
    requests: list[str] = field(default_factory=list)

    @property
    def vkey(self) -> str:
        return self.signer.verifier().vkey()

    def _leaves(self) -> list[bytes]:
        leaves = [merkle.leaf_hash(e) for e in self.entries]
        if self.mode == "fork" and leaves:
            leaves[0] = merkle.leaf_hash(b"rewritten history")
        return leaves

    def _getter(self, leaves: list[bytes]):  # type: ignore[no-untyped-def]
        def get(level: int, index: int) -> bytes:
            return merkle.root_from_leaf_hashes(leaves[index << level : (index + 1) << level])

        return get

    def _checkpoint(self, size: int, leaves: list[bytes]) -> bytes:
        root = merkle.root_from_leaf_hashes(leaves[:size])
        signer = generate_signer(ORIGIN) if self.mode == "forged-checkpoint" else self.signer
        return sign_checkpoint(Checkpoint(ORIGIN, size, root), [signer])

    def _headers(self) -> dict[str, str]:
        return {"Date": email.utils.formatdate(time.time() + self.date_offset, usegmt=True)}

    async def add(self, request: web.Request) -> web.Response:
        self.requests.append("add")
        body = await request.read()
        if self.mode == "refuse":
            return web.json_response(
                {"error": "refused", "message": "signer SHA256:xyz is not in allowed_signers"},
                status=403,
                headers=self._headers(),
            )
        if self.mode == "unavailable":
            return web.json_response(
                {"error": "overloaded", "message": "queue full"}, status=503, headers={"Retry-After": "60"}
            )
        if self.mode == "not-json":
            return web.Response(body=b"<html>proxy error</html>", headers=self._headers())
        if self.mode == "rollback":
            del self.entries[1:]
        self.entries.append(body)
        index = len(self.entries) - 1
        leaves = self._leaves()
        size = len(leaves)
        proof = merkle.inclusion_proof(index, size, self._getter(leaves))
        if self.mode == "wrong-proof":
            proof = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]] if proof else [b"\0" * 32]
        doc = {
            "index": index,
            "leaf_hash": _b64(merkle.leaf_hash(body)),
            "duplicate": False,
            "size": size,
            "checkpoint": self._checkpoint(size, leaves).decode(),
            "inclusion_proof": [_b64(h) for h in proof],
        }
        if self.mode == "no-proof":
            del doc["checkpoint"], doc["inclusion_proof"]
        return web.json_response(doc, headers=self._headers())

    async def consistency(self, request: web.Request) -> web.Response:
        self.requests.append("consistency")
        if self.mode == "rollback":
            return web.json_response({"error": "internal", "message": "database is locked"}, status=500)
        m, n = int(request.query["from"]), int(request.query["to"])
        leaves = self._leaves()
        proof = merkle.consistency_proof(m, n, self._getter(leaves))
        return web.json_response({"from": m, "to": n, "proof": [_b64(h) for h in proof]})

    async def checkpoint(self, request: web.Request) -> web.Response:
        leaves = self._leaves()
        return web.Response(body=self._checkpoint(len(leaves), leaves))


@contextmanager
def running(log: FakeLog) -> Iterator[FakeLog]:
    app = web.Application()
    app.router.add_post("/add", log.add)
    app.router.add_get("/proof/consistency", log.consistency)
    app.router.add_get("/checkpoint", log.checkpoint)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        log.url = f"http://127.0.0.1:{port}"
        yield log
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
