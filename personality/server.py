"""The log's HTTP API (aiohttp): the C2SP tlog-tiles read path at the root, and our JSON API.

Read path (C2SP tlog-tiles; what any standard verifier, witness or monitor fetches)::

    GET /checkpoint                       the latest signed checkpoint (Cache-Control: no-cache)
    GET /tile/<L>/<N>[.p/<W>]             hash tiles
    GET /tile/entries/<N>[.p/<W>]         entry bundles
                                          full tiles: public, max-age=31536000, immutable

JSON API (documented in docs/log-service.md)::

    POST /add[?wait=0|?from=N]            body = the entry bytes; from=N: also the consistency
                                          proof from size N to the returned checkpoint
    GET  /proof/inclusion?index=I[&size=N]   or   ?leaf_hash=<base64url>[&size=N]
    GET  /proof/consistency?from=M[&to=N]
    GET  /healthz                         {"status": "ok", "size": N}
    GET  /metrics                         Prometheus text format

Every error is JSON ``{"error": "<code>", "message": "<for a person>"}`` with the status the
exception carries (``http_status``); 503 carries ``Retry-After``. Bodies are bounded by
``client_max_size``; paths and queries are parsed strictly; no input makes a handler raise
anything but a JSON error, and an unexpected bug is a 500 that leaves the server serving.

aiohttp answers some requests itself, before the error middleware: those its HTTP parser refuses
(unknown method, request line or header over 8190 bytes, duplicated ``Content-Type``, bad
chunking...), which go through ``RequestHandler.handle_error``, and an ``Expect:`` other than
``100-continue``. :func:`serve` answers the first with a protocol subclass (:class:`_Protocol`,
one INFO line per refusal, no traceback: any client can send them at will) and the second with an
expect handler on every route, plus a catch-all route so that 404/405 get it too. What is left
outside the contract is in docs/log-service.md ("The JSON error contract").

Slow clients are bounded (slowloris): a connection that is idle, or still sending its request line
and headers, :data:`IDLE_TIMEOUT` seconds after it opened or after its last answer is closed
(aiohttp's ``keepalive_timeout``, which also covers a half-sent header block); a ``POST /add`` body
that has not fully arrived :data:`BODY_TIMEOUT` seconds after the handler starts reading it gets a
JSON 408 ``timeout`` and the connection is closed. A body no handler reads (a GET with a body) is
drained for at most aiohttp's ``lingering_time`` (10 s) after the answer, then the connection closes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import socket
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.http import HttpProcessingError
from aiohttp.http_exceptions import BadHttpMethod

from personality.errors import (
    ConflictError,
    FormatError,
    NotFoundError,
    OverloadedError,
    PersonalityError,
    RefusedError,
    StorageError,
    VerificationError,
)
from personality.log import Log
from personality.tlog.tiles import MAX_ENTRY_SIZE, TILE_WIDTH, parse_tile_path

__all__ = ["make_app", "serve", "LOG", "IDLE_TIMEOUT", "BODY_TIMEOUT"]

logger = logging.getLogger("personality.server")

LOG = web.AppKey("log", Log)
_BODY_TIMEOUT = web.AppKey("body_timeout", float)

# Seconds. Defaults for serve()/make_app(), read when they are called. IDLE_TIMEOUT sits above
# the usual reverse-proxy upstream keep-alive (nginx: 60 s), so the proxy, not the log, closes
# idle pooled connections; BODY_TIMEOUT leaves ~1 KiB/s for the largest entry.
IDLE_TIMEOUT = 75.0
BODY_TIMEOUT = 30.0

_IMMUTABLE = "public, max-age=31536000, immutable"
_PARTIAL = "public, max-age=60"
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_B64URL_HASH = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048](=)?")
_ENDPOINTS = (
    "GET /checkpoint, GET /tile/..., POST /add, GET /proof/inclusion, GET /proof/consistency, "
    "GET /healthz, GET /metrics"
)


def _code(exc: PersonalityError) -> str:
    for cls, code in (
        (FormatError, "malformed"),
        (NotFoundError, "not_found"),
        (RefusedError, "refused"),
        (OverloadedError, "overloaded"),
        (ConflictError, "conflict"),
        (VerificationError, "unverifiable"),
        (StorageError, "storage"),
    ):
        if isinstance(exc, cls):
            return code
    return "internal"


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


def _one_line(text: str, limit: int = 200) -> str:
    """``text`` from a client, safe for one log line or message: whitespace runs collapsed,
    other non-printable characters escaped, at most ``limit`` characters."""
    flat = " ".join(text.split())
    flat = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in flat)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class _Protocol(web.RequestHandler):
    """aiohttp's connection handler with the JSON error contract for the answers aiohttp makes
    itself (``handle_error``): a request its HTTP parser refuses is a JSON 400 and one INFO line
    (DEBUG for an unknown method, mostly TLS or other protocols on the HTTP port), not an ERROR
    with a traceback; anything else that reaches here is a bug outside the application (a JSON
    500, logged at ERROR with its traceback, like the middleware's "unhandled error").

    A parser error can also surface after the answer, while aiohttp drains a body the handler did
    not read (a ``Content-Encoding: gzip`` body that is not gzip): aiohttp logs it through
    ``log_exception`` as an "Unhandled exception"; here it is one INFO line too."""

    __slots__ = ()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError | web.RequestPayloadError):
            transport = self.transport
            peer = transport.get_extra_info("peername") if transport is not None else None
            host = peer[0] if isinstance(peer, tuple) and peer else "?"
            text = _one_line(str(exc))
            logger.info("bad HTTP request body from %s: %s: %s", host, type(exc).__name__, text)
            return
        super().log_exception(*args, **kw)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # part of an answer is out: only closing is left
            raise ConnectionError("an answer was already being sent; cannot send an error")
        if isinstance(exc, HttpProcessingError) and status < 500:
            text = _one_line(message or exc.message or type(exc).__name__)
            level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.INFO
            logger.log(level, "bad HTTP request from %s: %s: %s", request.remote, type(exc).__name__, text)
            response = _error(status, "malformed", f"malformed HTTP request: {text}")
        else:
            logger.error("unhandled error in aiohttp for a request from %s", request.remote, exc_info=exc)
            response = _error(
                status, "internal", "internal error in the log server; the operator's log has details"
            )
        response.force_close()
        return response


async def _expect(request: web.Request) -> web.StreamResponse | None:
    """Every route's ``Expect:`` handler: ``100-continue`` is answered as aiohttp does; another
    expectation is a JSON 417 (aiohttp's own handler answers it in text/plain)."""
    if request.version != HttpVersion11:
        return None
    expect = request.headers.get(hdrs.EXPECT, "")
    if expect.lower() != "100-continue":
        return _error(
            417, "expectation_failed", f"unsupported Expect: {_one_line(expect, 100)!r} (only 100-continue)"
        )
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the 100 is not the answer
    return None


async def _no_route(request: web.Request) -> web.StreamResponse:
    """The catch-all route (so that a 404 or 405 gets :func:`_expect` too): 405 if another route
    has this path, 404 otherwise; the error middleware makes them JSON."""
    allowed: set[str] = set()
    this = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is not this:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except PersonalityError as exc:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, OverloadedError) else None
        if exc.http_status >= 500 and not isinstance(exc, OverloadedError):
            logger.error("%s %s: %s", request.method, request.path, exc.diagnostics())
        return _error(exc.http_status, _code(exc), str(exc), headers)
    except web.HTTPException as exc:
        if exc.status == 404:
            msg = f"no such endpoint: {request.method} {request.path}; the log serves {_ENDPOINTS}"
            return _error(404, "not_found", msg)
        if exc.status == 405:
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return _error(
                405, "method_not_allowed", f"{request.method} is not allowed on {request.path}", allow
            )
        if exc.status == 413:
            msg = (
                f"the request body is larger than the {request.app._client_max_size} bytes an entry may have"
            )
            return _error(413, "too_large", msg)
        return _error(exc.status, "http_error", exc.reason)
    except asyncio.CancelledError:
        raise
    except ConnectionError:
        # The client went away (e.g. in the middle of its body): nobody will read an answer, and
        # it is not the server's fault, so no ERROR record an attacker could flood the log with.
        logger.debug("client gone during %s %s", request.method, request.path)
        return _error(400, "client_gone", "the connection closed before the request was complete")
    except web.RequestPayloadError as exc:
        # aiohttp could not decode the body (a Content-Encoding it does not match, bad chunking):
        # the client's fault. DEBUG here: _Protocol logs it at INFO when aiohttp drains the body.
        reason = _one_line(str(exc.__cause__ or exc))
        logger.debug("bad request body in %s %s: %s", request.method, request.path, reason)
        return _error(400, "malformed", f"the request body could not be read: {reason}")
    except Exception:
        logger.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, "internal", "internal error in the log server; the operator's log has details")


# -- query parsing --------------------------------------------------------------------------------


def _query(request: web.Request, allowed: set[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in request.query.items():
        if key not in allowed:
            raise FormatError(f"unknown query parameter {key!r}; allowed: {', '.join(sorted(allowed))}")
        if key in out:
            raise FormatError(f"query parameter {key!r} is given twice")
        out[key] = value
    return out


def _number(q: Mapping[str, str], key: str) -> int | None:
    text = q.get(key)
    if text is None:
        return None
    if not _DECIMAL.fullmatch(text) or int(text) >= 1 << 63:
        raise FormatError(f"{key} must be a decimal number without leading zeros, got {text[:40]!r}")
    return int(text)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _leaf_hash(text: str) -> bytes:
    if not _B64URL_HASH.fullmatch(text):
        raise FormatError(
            "leaf_hash must be the 32-byte leaf hash in base64url (RFC 4648 §5, 43 characters, "
            f"optionally one '=' of padding), got {text[:60]!r}"
        )
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=")
    except (binascii.Error, ValueError):  # pragma: no cover - the pattern already excludes these
        raise FormatError("leaf_hash is not valid base64url") from None


# -- handlers -------------------------------------------------------------------------------------


async def _checkpoint(request: web.Request) -> web.Response:
    log = request.app[LOG]
    return web.Response(
        body=log.checkpoint,
        content_type="text/plain",
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


async def _tile(request: web.Request) -> web.Response:
    raw = request.raw_path.split("?", 1)[0].lstrip("/")
    path = parse_tile_path(raw)
    data = request.app[LOG].read_tile(path)
    cache = _IMMUTABLE if path.width == TILE_WIDTH else _PARTIAL
    return web.Response(body=data, content_type="application/octet-stream", headers={"Cache-Control": cache})


async def _add(request: web.Request) -> web.Response:
    q = _query(request, {"wait", "from"})
    wait = q.get("wait", "1")
    if wait not in ("0", "1"):
        raise FormatError(f"wait must be 0 or 1, got {wait[:20]!r}")
    first = _number(q, "from")
    body = await _read_body(request)
    if body is None:
        return await _body_timeout(request)
    if not body:
        raise FormatError("the request body is empty: POST the entry bytes (application/octet-stream)")
    log = request.app[LOG]
    if first is None:
        result = await log.add(body, wait=wait == "1")
    else:
        result = await log.add(body, wait=wait == "1", consistency_from=first)
    out: dict[str, Any] = {
        "index": result.index,
        "leaf_hash": _b64(result.leaf_hash),
        "duplicate": result.duplicate,
    }
    if result.checkpoint is not None and result.proof is not None:
        out["size"] = result.size
        out["checkpoint"] = result.checkpoint.decode("utf-8")
        out["inclusion_proof"] = [_b64(h) for h in result.proof]
    if result.consistency is not None:
        out["consistency_proof"] = [_b64(h) for h in result.consistency]
    return _json(out)


async def _read_body(request: web.Request) -> bytes | None:
    """The whole request body, or None if it did not arrive within the app's body timeout."""
    try:
        async with asyncio.timeout(request.app[_BODY_TIMEOUT]):
            return await request.read()
    except TimeoutError:
        return None


async def _body_timeout(request: web.Request) -> web.Response:
    """Send a JSON 408 for a body that stalled, then close the connection: the rest of the body
    may never come, so neither keep-alive nor aiohttp's lingering drain (which would wait for it
    up to 10 s more) makes sense. Returns the response, already sent."""
    seconds = request.app[_BODY_TIMEOUT]
    logger.info(
        "%s %s from %s: the body did not arrive within %g s",
        request.method,
        request.path,
        request.remote,
        seconds,
    )
    response = _error(408, "timeout", f"the request body did not arrive within {seconds:g} s")
    response.force_close()
    try:
        await response.prepare(request)
        await response.write_eof()
    finally:
        request.protocol.force_close()  # the transport flushes the answer, then closes
    return response


async def _inclusion(request: web.Request) -> web.Response:
    q = _query(request, {"index", "leaf_hash", "size"})
    log = request.app[LOG]
    index = _number(q, "index")
    size = _number(q, "size")
    if ("leaf_hash" in q) == (index is not None):
        raise FormatError("give exactly one of index=I or leaf_hash=<base64url>")
    if index is None:
        h = _leaf_hash(q["leaf_hash"])
        index = log.index_of(h)
    n, proof = log.inclusion_proof(index, size)
    if "leaf_hash" not in q:
        h = log.leaf_hash_at(index)
    return _json({"index": index, "size": n, "leaf_hash": _b64(h), "proof": [_b64(p) for p in proof]})


async def _consistency(request: web.Request) -> web.Response:
    q = _query(request, {"from", "to"})
    first = _number(q, "from")
    if first is None:
        raise FormatError("from=M is required (and to=N, which defaults to the current size)")
    log = request.app[LOG]
    second = _number(q, "to")
    second = log.size if second is None else second
    proof = log.consistency_proof(first, second)
    return _json({"from": first, "to": second, "proof": [_b64(p) for p in proof]})


async def _healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok", "size": request.app[LOG].size})


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[LOG].metrics.render().encode(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


def _json(data: Mapping[str, Any]) -> web.Response:
    return web.Response(
        body=json.dumps(data, separators=(",", ":")).encode(),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def make_app(
    log: Log, *, max_body: int = MAX_ENTRY_SIZE, body_timeout: float | None = None
) -> web.Application:
    """The aiohttp application for a started :class:`~personality.log.Log`. A request body must
    arrive within ``body_timeout`` seconds (default :data:`BODY_TIMEOUT`), else a JSON 408."""
    app = web.Application(client_max_size=max_body, middlewares=[_errors])
    app[LOG] = log
    app[_BODY_TIMEOUT] = BODY_TIMEOUT if body_timeout is None else body_timeout
    route = app.router
    route.add_get("/checkpoint", _checkpoint, expect_handler=_expect)
    route.add_get("/tile/{tail:.+}", _tile, expect_handler=_expect)
    route.add_post("/add", _add, expect_handler=_expect)
    route.add_get("/proof/inclusion", _inclusion, expect_handler=_expect)
    route.add_get("/proof/consistency", _consistency, expect_handler=_expect)
    route.add_get("/healthz", _healthz, expect_handler=_expect)
    route.add_get("/metrics", _metrics, expect_handler=_expect)
    route.add_route("*", r"/{any:[\s\S]*}", _no_route, expect_handler=_expect)  # last: 404 and 405
    return app


async def serve(
    log: Log,
    host: str,
    port: int,
    *,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    idle_timeout: float | None = None,
    body_timeout: float | None = None,
) -> None:
    """Start ``log``, serve it on ``host:port`` (0 = any free port) until ``stop`` is set, then
    stop accepting, finish in-flight requests and close the log.

    ``ready(url)`` is called once the socket listens. TCP_NODELAY is set on the listening socket
    (accepted sockets inherit it; aiohttp also sets it per connection): without it, Nagle's
    algorithm and delayed ACKs add ~40 ms to small responses. Connections are served by
    :class:`_Protocol` (aiohttp's handler with JSON answers for what its parser refuses), on the
    runner's server, so that ``runner.cleanup()`` still drains them.

    ``idle_timeout`` (default :data:`IDLE_TIMEOUT`) closes a connection idle, or still sending its
    request line and headers, that long after it opened or after its last answer;
    ``body_timeout`` (default :data:`BODY_TIMEOUT`) bounds reading a request body (see
    :func:`make_app`).
    """
    idle = IDLE_TIMEOUT if idle_timeout is None else idle_timeout
    await log.start()
    app = make_app(log, body_timeout=body_timeout)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10.0)
    await runner.setup()
    listener: asyncio.Server | None = None
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=1024)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            manager = runner.server
            assert manager is not None  # set by setup()
            loop = asyncio.get_running_loop()
            listener = await loop.create_server(
                # access_log=None turns access logging off (AppRunner passes it the same way)
                lambda: _Protocol(manager, loop=loop, access_log=None, keepalive_timeout=idle),  # type: ignore[arg-type]
                sock=sock,
                backlog=1024,
            )
        except BaseException:
            sock.close()
            raise
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        if ready is not None:
            ready(f"http://{shown}:{bound}")
        await (stop or asyncio.Event()).wait()
    finally:
        if listener is not None:
            listener.close()  # stop accepting; cleanup() then drains the open connections
        await runner.cleanup()
        await log.close()
