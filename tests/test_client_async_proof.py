"""``personality.client.fetch_consistency_proof`` and ``ConsistencyFetcher`` (the agent's on-loop
consistency fetch, keep-alive): proofs
from a real ``gk log serve`` verify, and every bad answer from a hostile in-test server is a
``PersonalityError`` subclass, never a traceback or a raw ValueError."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from conftest import LogServer, free_port

from personality.client import ConsistencyFetcher, LogClient, fetch_consistency_proof
from personality.errors import FormatError, NotFoundError, OverloadedError, UnavailableError
from personality.tlog import merkle
from personality.tlog.checkpoint import open_checkpoint
from personality.tlog.note import parse_vkey


def test_proofs_from_the_real_log_verify(log_server: LogServer) -> None:
    client = LogClient.http(log_server.url)
    first = client.add(b"entry 0")
    for i in range(1, 6):
        last = client.add(b"entry %d" % i)
    keys = [parse_vkey(log_server.vkey)]
    assert first.checkpoint is not None and last.checkpoint is not None
    old = open_checkpoint(first.checkpoint, log_server.origin, keys)
    new = open_checkpoint(last.checkpoint, log_server.origin, keys)
    proof = asyncio.run(fetch_consistency_proof(log_server.url, old.size, new.size, timeout=5))
    assert proof == client.consistency_proof(old.size, new.size)
    merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
    with pytest.raises(NotFoundError):  # beyond the tree: the log's 404
        asyncio.run(fetch_consistency_proof(log_server.url, 1, 7, timeout=5))
    with pytest.raises(NotFoundError):  # refused before asking
        asyncio.run(fetch_consistency_proof(log_server.url, 3, 2, timeout=5))


def _serve(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], call: Callable[[str], Awaitable[None]]
) -> None:
    async def main() -> None:
        app = web.Application()
        app.router.add_get("/proof/consistency", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            await call(f"http://127.0.0.1:{port}")
        finally:
            await runner.cleanup()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "needle"),
    [
        (200, b"not json", {}, FormatError, "not JSON"),
        (200, b'{"from": 1, "to": 3, "proof": ["!!"]}', {}, FormatError, "not valid base64"),
        (200, b'{"from": 1, "to": 4, "proof": []}', {}, FormatError, "other sizes"),
        (200, b'{"from": 1, "to": 3, "proof": []}' + b" " * 70_000, {}, FormatError, "larger than"),
        (500, b"{}", {}, UnavailableError, "HTTP 500"),
        (503, b"{}", {"Retry-After": "2"}, OverloadedError, "overloaded"),
        (404, b"{}", {}, NotFoundError, "HTTP 404"),
    ],
)
def test_bad_answers_are_clear_errors(
    status: int, body: bytes, headers: dict[str, str], error: type[Exception], needle: str
) -> None:
    async def handler(request: web.Request) -> web.Response:
        assert dict(request.query) == {"from": "1", "to": "3"}
        return web.Response(status=status, body=body, headers=headers)

    async def call(url: str) -> None:
        with pytest.raises(error, match=needle):
            await fetch_consistency_proof(url, 1, 3, timeout=5, max_response=65_536)

    _serve(handler, call)


def test_slow_and_absent_logs_are_unavailable() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.Response(body=b"{}")

    async def call(url: str) -> None:
        with pytest.raises(UnavailableError, match="in time"):
            await fetch_consistency_proof(url, 1, 3, timeout=0.2)

    _serve(slow, call)
    with pytest.raises(UnavailableError, match="unreachable"):
        asyncio.run(fetch_consistency_proof(f"http://127.0.0.1:{free_port()}", 1, 3, timeout=2))


def test_fetcher_keeps_one_connection_and_survives_a_log_restart(log_server: LogServer) -> None:
    client = LogClient.http(log_server.url)
    for i in range(4):
        client.add(b"entry %d" % i)
    fetcher = ConsistencyFetcher(log_server.url, timeout=5)
    sessions: set[int] = set()

    async def run() -> None:
        for _ in range(3):
            assert await fetcher(1, 4) == client.consistency_proof(1, 4)
            sessions.add(id(fetcher._session))  # noqa: SLF001
        # the log restarts on the same port: the kept-alive connection is gone, a new one is made
        log_server.stop()
        log_server.listen = "127.0.0.1:" + log_server.url.rsplit(":", 1)[1]
        log_server.start()
        assert await fetcher(2, 4) == LogClient.http(log_server.url).consistency_proof(2, 4)
        sessions.add(id(fetcher._session))  # noqa: SLF001
        await fetcher.aclose()
        assert fetcher._session.closed  # noqa: SLF001
        assert await fetcher(1, 4) == client.consistency_proof(1, 4)  # closed: a short connection

    asyncio.run(run())
    assert len(sessions) == 1  # one session (its connection kept alive) for every call
