"""A client for our log and for any C2SP tlog-tiles log, and a verifier that keeps its view honest.

Layers, from the wire up:

``Transport``
    Moves bytes: ``get(path, params)`` and ``post(path, body, params)``. :class:`HTTPTransport`
    (a ``requests.Session`` with bounded timeouts and response sizes) talks to a log over HTTP;
    :class:`StaticTransport` reads a tlog-tiles directory; :class:`FetchTransport` wraps any
    ``fetch(path) -> bytes`` callable. ``dynamic`` says whether the JSON API
    (``/add``, ``/proof/...``) exists; a static log (files, CDN, object store) has only
    ``checkpoint`` and ``tile/...``. Transports raise ``NotFoundError`` (404; ``ConfigError`` for a
    404 to ``POST add``, which only a URL with no log behind it answers),
    ``UnavailableError`` (connection refused, timeout, 5xx) and the error the log's JSON error
    names for other statuses.

:class:`LogClient`
    Typed calls: checkpoint, tiles, entries, add, proofs. Proofs come from the JSON API when the
    log has one and are computed locally from tiles otherwise. It verifies nothing.

:class:`LogVerifier`
    Keeps the newest verified checkpoint of one log and refuses to go back: every checkpoint it
    accepts is signed by a trusted key and consistent with the one it holds, or it raises
    ``ForkError`` carrying both. No HTTP here: it calls the client.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import requests

from personality.errors import (
    ConfigError,
    ConflictError,
    ForkError,
    FormatError,
    NotFoundError,
    OverloadedError,
    PersonalityError,
    ProofError,
    RefusedError,
    UnavailableError,
    VerificationError,
)
from personality.tlog._strict import b64decode
from personality.tlog.checkpoint import SignedCheckpoint, open_checkpoint
from personality.tlog.merkle import (
    HASH_SIZE,
    HashGetter,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from personality.tlog.note import NoteVerifier
from personality.tlog.proof import TlogProof, verify_tlog_proof
from personality.tlog.tiles import (
    MAX_ENTRY_SIZE,
    TILE_WIDTH,
    TilePath,
    format_tile_path,
    pack_entry_bundle,
    parse_entry_bundle,
    parse_tile_path,
    tile_hash_getter,
)

__all__ = [
    "Transport",
    "HTTPTransport",
    "StaticTransport",
    "FetchTransport",
    "AddResponse",
    "LogClient",
    "LogVerifier",
]

DEFAULT_TIMEOUT = (5.0, 30.0)
MAX_RESPONSE_SIZE = 32 * 1024 * 1024
MAX_JSON_SIZE = 1024 * 1024

Params = Mapping[str, str | int]


class Transport(Protocol):
    """Moves bytes to and from one log. ``path`` is relative (``checkpoint``, ``tile/0/000``)."""

    @property
    def dynamic(self) -> bool:
        """True if the log serves the JSON API (add, proofs) besides checkpoint and tiles."""
        ...

    def get(self, path: str, params: Params | None = None) -> bytes: ...

    def post(self, path: str, body: bytes, params: Params | None = None) -> bytes: ...


_STATUS_ERRORS: dict[int, type[PersonalityError]] = {
    400: FormatError,
    403: RefusedError,
    404: NotFoundError,
    409: ConflictError,
    413: FormatError,
    422: VerificationError,
}

#: Requests every log answers; a 404 to one means there is no log at the URL. POST /add raises
#: ConfigError (a wrong URL is a configuration mistake); GET /checkpoint keeps NotFoundError, the
#: class callers already handle for a static log's missing files, with the same clear message.
_LOG_ENDPOINTS: dict[tuple[str, str], type[PersonalityError]] = {
    ("POST", "add"): ConfigError,
    ("GET", "checkpoint"): NotFoundError,
}


def _os_reason(exc: BaseException) -> str:
    """For an error message: the operating system's reason buried in a requests/urllib3 exception
    chain ("Connection refused", "Name or service not known", "timed out"), else the innermost
    exception's class name. Follows ``reason`` (urllib3), exception arguments and ``__cause__`` /
    ``__context__``; bounded, never raises."""
    stack: list[BaseException] = [exc]
    seen: set[int] = set()
    innermost = type(exc).__name__
    while stack and len(seen) < 32:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and not isinstance(e, requests.RequestException):
            if e.strerror:
                return " ".join(str(e.strerror).split())[:200]
            if isinstance(e, TimeoutError):
                return "timed out"
        innermost = type(e).__name__
        nested = [getattr(e, "reason", None), *e.args, e.__cause__, e.__context__]
        stack.extend(reversed([n for n in nested if isinstance(n, BaseException)]))
    return innermost


class HTTPTransport:
    """HTTP(S) to a log at ``base_url``; every call bounded by ``timeout`` (connect, read) seconds.

    ``headers`` are sent with every request (e.g. ``{"Authorization": "Bearer ..."}`` for a read
    path behind authentication). Set ``dynamic=False`` for a static tiles-only log (CDN, object
    store, plain web server). Responses larger than ``max_response`` bytes raise ``FormatError``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        dynamic: bool = True,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        session: requests.Session | None = None,
        max_response: int = MAX_RESPONSE_SIZE,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"log URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/") + "/"
        self._dynamic = dynamic
        self.timeout = timeout
        self.max_response = max_response
        self.session = session or requests.Session()
        self.session.headers.update({"User-Agent": "gatekeeper-log-client/1"})
        if headers:
            self.session.headers.update(headers)

    @property
    def dynamic(self) -> bool:
        return self._dynamic

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HTTPTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str, params: Params | None = None) -> bytes:
        return self._request("GET", path, params, None)

    def post(self, path: str, body: bytes, params: Params | None = None) -> bytes:
        return self._request("POST", path, params, body)

    def _request(self, method: str, path: str, params: Params | None, body: bytes | None) -> bytes:
        url = self.base_url + path.lstrip("/")
        headers = {"Content-Type": "application/octet-stream"} if body is not None else None
        try:
            resp = self.session.request(
                method, url, params=params, data=body, headers=headers, timeout=self.timeout, stream=True
            )
        except requests.Timeout as e:
            raise UnavailableError(
                f"log at {self.base_url} did not answer {method} {path} in time ({_os_reason(e)})"
            ) from None
        except requests.RequestException as e:
            raise UnavailableError(f"log at {self.base_url} is unreachable: {_os_reason(e)}") from None
        try:
            data = self._read(resp, path)
        finally:
            resp.close()
        if resp.status_code == 200:
            return data
        raise self._error(resp, data, method, path)

    def _read(self, resp: requests.Response, path: str) -> bytes:
        length = resp.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > self.max_response:
            raise FormatError(f"response for {path} is {length} bytes, more than {self.max_response}")
        chunks: list[bytes] = []
        total = 0
        try:
            for chunk in resp.iter_content(64 * 1024):
                total += len(chunk)
                if total > self.max_response:
                    raise FormatError(f"response for {path} is larger than {self.max_response} bytes")
                chunks.append(chunk)
        except requests.RequestException as e:
            msg = f"reading {path} from {self.base_url} failed: {_os_reason(e)}"
            raise UnavailableError(msg) from None
        return b"".join(chunks)

    def _error(self, resp: requests.Response, data: bytes, method: str, path: str) -> PersonalityError:
        message = data[:300].decode("utf-8", "replace").strip()
        try:
            obj = json.loads(data) if data.startswith(b"{") else None
            if isinstance(obj, dict) and isinstance(obj.get("message"), str):
                message = obj["message"]
        except (ValueError, RecursionError):
            pass  # not the JSON error contract: the raw text above serves as the message
        status = resp.status_code
        if status == 404 and (method, path) in _LOG_ENDPOINTS:
            # Every log has these: a 404 means the URL points at something else (a web server,
            # a wrong path prefix), not that a resource is missing from a log.
            text = (
                f"no Gatekeeper log at {self.base_url.rstrip('/')} (HTTP 404 for {method} /{path}): "
                "check --log / the log URL"
            )
            return _LOG_ENDPOINTS[method, path](text)
        where = f"{method} {path}: HTTP {status}" + (f": {message}" if message else "")
        if status in (429, 503) and resp.headers.get("Retry-After", "").isdigit():
            return OverloadedError(f"log is overloaded ({where})", int(resp.headers["Retry-After"]))
        cls = _STATUS_ERRORS.get(status)
        if cls is not None:
            return cls(where)
        return UnavailableError(f"log at {self.base_url} failed ({where})")


class StaticTransport:
    """A tlog-tiles log in a local directory (``checkpoint``, ``tile/...``); read-only.

    Only ``checkpoint`` and well-formed tile paths are read (nothing else under the directory is
    reachable). Missing files raise ``NotFoundError``, other I/O errors ``UnavailableError``.
    """

    def __init__(self, root: str | os.PathLike[str], *, max_response: int = MAX_RESPONSE_SIZE) -> None:
        self.root = Path(root)
        self.max_response = max_response

    @property
    def dynamic(self) -> bool:
        return False

    def get(self, path: str, params: Params | None = None) -> bytes:
        if params or not (path == "checkpoint" or _is_tile_path(path)):
            raise NotFoundError(f"a static log has no {path!r}")
        try:
            with open(self.root / path, "rb") as f:
                data = f.read(self.max_response + 1)
        except FileNotFoundError:
            raise NotFoundError(f"{path} not found in {self.root}") from None
        except OSError as e:
            raise UnavailableError(f"reading {path} from {self.root} failed: {e.strerror}") from None
        if len(data) > self.max_response:
            raise FormatError(f"{path} is larger than {self.max_response} bytes")
        return data

    def post(self, path: str, body: bytes, params: Params | None = None) -> bytes:
        raise ConfigError(f"the static log in {self.root} is read-only")


class FetchTransport:
    """A read-only transport around any ``fetch(path) -> bytes`` callable (tests, object stores,
    fault injection). ``fetch`` raises ``NotFoundError`` for a missing path; anything it raises
    that is not a ``PersonalityError`` is reported as ``UnavailableError``."""

    def __init__(self, fetch: Callable[[str], bytes]) -> None:
        self._fetch = fetch

    @property
    def dynamic(self) -> bool:
        return False

    def get(self, path: str, params: Params | None = None) -> bytes:
        if params:
            raise NotFoundError(f"a static log has no {path!r} with parameters")
        try:
            return self._fetch(path)
        except PersonalityError:
            raise
        except Exception as e:
            raise UnavailableError(f"fetching {path} failed: {type(e).__name__}: {e}") from None

    def post(self, path: str, body: bytes, params: Params | None = None) -> bytes:
        raise ConfigError("a fetch-only log is read-only")


def _is_tile_path(path: str) -> bool:
    try:
        parse_tile_path(path)
    except FormatError:
        return False
    return True


# --- JSON helpers -------------------------------------------------------------------------------


def _json(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_JSON_SIZE:
        raise FormatError(f"{what} response is larger than {MAX_JSON_SIZE} bytes")
    try:
        obj = json.loads(data)
    except ValueError:
        raise FormatError(f"{what} response is not JSON") from None
    except RecursionError:  # json.loads recurses once per nesting level ("[[[[...")
        raise FormatError(f"{what} response is JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise FormatError(f"{what} response is not a JSON object")
    return obj


def _field(obj: Mapping[str, Any], key: str, kind: type, what: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise FormatError(f"{what} response has no {kind.__name__} field {key!r}")
    return value


def _b64_hash(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise FormatError(f"{what} is not a base64 string")
    raw = b64decode(value, what)
    if len(raw) != HASH_SIZE:
        raise FormatError(f"{what} is {len(raw)} bytes, not {HASH_SIZE}")
    return raw


def _proof_field(obj: Mapping[str, Any], what: str) -> list[bytes]:
    proof = _field(obj, "proof", list, what)
    if len(proof) > 128:
        raise FormatError(f"{what} proof is too long")
    return [_b64_hash(p, f"{what} proof hash {i}") for i, p in enumerate(proof)]


@dataclass(frozen=True)
class AddResponse:
    """The log's answer to ``POST /add``. ``checkpoint``/``inclusion_proof`` only when waited.

    Nothing here is verified: pass it to :meth:`LogVerifier.verify_inclusion`.
    """

    index: int
    leaf_hash: bytes
    duplicate: bool
    size: int | None = None
    checkpoint: bytes | None = None
    inclusion_proof: tuple[bytes, ...] | None = None
    #: With ``consistency_from=N``: the log's consistency proof from size ``N`` to ``size`` (None if
    #: the log did not send one; the caller then fetches it).
    consistency_proof: tuple[bytes, ...] | None = None


class LogClient:
    """Typed access to one log through a :class:`Transport`. Verifies nothing; not thread-safe.

    Hash tiles are immutable (C2SP tlog-tiles), so the last ``tile_cache`` of them (8 KiB each at
    most) are kept in memory; entry bundles are not cached.
    """

    def __init__(self, transport: Transport, *, tile_cache: int = 1024) -> None:
        self.transport = transport
        self._tile_cache: OrderedDict[TilePath, bytes] = OrderedDict()
        self._tile_cache_size = tile_cache

    @classmethod
    def http(cls, base_url: str, **kwargs: Any) -> LogClient:
        """A client over :class:`HTTPTransport` (keyword arguments are passed through)."""
        return cls(HTTPTransport(base_url, **kwargs))

    def checkpoint(self) -> bytes:
        """The log's current signed checkpoint, unverified."""
        return self.transport.get("checkpoint")

    def tile(self, tp: TilePath) -> bytes:
        """A hash tile or entry bundle. A missing partial tile falls back to the full tile, cut to
        the partial width (the spec lets logs delete partial tiles once the full tile exists).
        Unverified: a wrong tile shows up as a proof that does not verify."""
        if tp.level is None:
            return self._fetch_tile(tp)
        data = self._tile_cache.get(tp)
        if data is not None:
            self._tile_cache.move_to_end(tp)
            return data
        data = self._fetch_tile(tp)
        if len(data) == tp.width * HASH_SIZE and self._tile_cache_size > 0:
            self._tile_cache[tp] = data
            if len(self._tile_cache) > self._tile_cache_size:
                self._tile_cache.popitem(last=False)
        return data

    def _fetch_tile(self, tp: TilePath) -> bytes:
        try:
            return self.transport.get(format_tile_path(tp))
        except NotFoundError:
            if tp.is_full:
                raise
        full = self.transport.get(format_tile_path(tp.full()))
        if tp.level is None:
            return pack_entry_bundle(parse_entry_bundle(full, TILE_WIDTH)[: tp.width])
        if len(full) != TILE_WIDTH * HASH_SIZE:
            raise FormatError(f"full tile {format_tile_path(tp.full())} is {len(full)} bytes")
        return full[: tp.width * HASH_SIZE]

    def iter_entries(self, start: int, end: int, size: int) -> Iterator[bytes]:
        """Entries ``[start, end)`` of the tree of ``size`` leaves, fetched bundle by bundle."""
        if not 0 <= start <= end <= size:
            raise ValueError(f"entries [{start}, {end}) are not in a tree of size {size}")
        pos = start
        while pos < end:
            n = pos // TILE_WIDTH
            width = min(TILE_WIDTH, size - n * TILE_WIDTH)
            bundle = parse_entry_bundle(self.tile(TilePath(None, n, width)), width)
            stop = min(end, n * TILE_WIDTH + width)
            yield from bundle[pos - n * TILE_WIDTH : stop - n * TILE_WIDTH]
            pos = stop

    def entries(self, start: int, end: int, size: int) -> list[bytes]:
        """Entries ``[start, end)`` of the tree of ``size`` leaves (unverified)."""
        return list(self.iter_entries(start, end, size))

    def add(self, entry: bytes, wait: bool = True, consistency_from: int | None = None) -> AddResponse:
        """``POST /add``. With ``consistency_from=N`` (``N > 0``, needs ``wait``) the log also returns
        the consistency proof from size ``N`` to the checkpoint it answers with (``POST /add?from=N``),
        unverified like the rest. Raises ``RefusedError``, ``OverloadedError``, ``UnavailableError``,
        ``FormatError`` (also for a malformed proof), ..."""
        if not self.transport.dynamic:
            raise ConfigError("this log is static (tiles only) and accepts no entries")
        if len(entry) > MAX_ENTRY_SIZE:
            raise FormatError(f"entry is {len(entry)} bytes, more than {MAX_ENTRY_SIZE}")
        params: dict[str, int] = {"wait": int(wait)}
        if consistency_from is not None:
            if not wait or consistency_from <= 0:
                raise ValueError("consistency_from needs wait=True and a size > 0")
            params["from"] = consistency_from
        obj = _json(self.transport.post("add", entry, params), "add")
        index = _field(obj, "index", int, "add")
        lh = _b64_hash(obj.get("leaf_hash"), "add leaf_hash")
        if lh != leaf_hash(entry):
            raise FormatError("the log answered with the leaf hash of another entry")
        duplicate = _field(obj, "duplicate", bool, "add")
        if not wait and obj.get("checkpoint") is None:
            size = obj.get("size")
            if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
                raise FormatError("add response size is not an integer")
            return AddResponse(index, lh, duplicate, size)
        size = _field(obj, "size", int, "add")
        cp = _field(obj, "checkpoint", str, "add").encode("utf-8")
        proof = tuple(_proof_field({"proof": obj.get("inclusion_proof")}, "add inclusion"))
        consistency = None
        if consistency_from is not None and "consistency_proof" in obj:
            consistency = tuple(_proof_field({"proof": obj["consistency_proof"]}, "add consistency"))
        return AddResponse(index, lh, duplicate, size, cp, proof, consistency)

    def _getter_for(self, size: int) -> HashGetter:
        return tile_hash_getter(size, self.tile)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Audit path of ``index`` in the tree of ``size`` (JSON API, or computed from tiles)."""
        if not 0 <= index < size:
            raise NotFoundError(f"index {index} is not in a tree of size {size}")
        if not self.transport.dynamic:
            return inclusion_proof(index, size, self._getter_for(size))
        obj = _json(self.transport.get("proof/inclusion", {"index": index, "size": size}), "inclusion proof")
        what = "inclusion proof"
        if _field(obj, "index", int, what) != index or _field(obj, "size", int, what) != size:
            raise FormatError("the log answered with a proof for another index or size")
        return _proof_field(obj, "inclusion proof")

    def inclusion_proof_by_hash(self, leaf_hash: bytes, size: int) -> tuple[int, list[bytes]]:
        """``(index, audit path)`` of the entry with ``leaf_hash`` in the tree of ``size``.

        Needs the JSON API (a static log cannot be searched by hash): ``ConfigError`` otherwise;
        ``NotFoundError`` if the log does not hold the hash at that size.
        """
        if not self.transport.dynamic:
            raise ConfigError("a static log cannot look up entries by hash; fetch entries instead")
        b64 = base64.urlsafe_b64encode(leaf_hash).decode("ascii")
        obj = _json(
            self.transport.get("proof/inclusion", {"leaf_hash": b64, "size": size}), "inclusion proof"
        )
        index = _field(obj, "index", int, "inclusion proof")
        if _field(obj, "size", int, "inclusion proof") != size:
            raise FormatError("the log answered with a proof for another size")
        if _b64_hash(obj.get("leaf_hash"), "inclusion proof leaf_hash") != leaf_hash:
            raise FormatError("the log answered with a proof for another leaf hash")
        return index, _proof_field(obj, "inclusion proof")

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """Consistency proof from ``size1`` to ``size2`` (JSON API, or computed from tiles)."""
        if not 0 <= size1 <= size2:
            raise NotFoundError(f"no consistency proof from size {size1} to {size2}")
        if not self.transport.dynamic:
            return consistency_proof(size1, size2, self._getter_for(size2))
        data = self.transport.get("proof/consistency", {"from": size1, "to": size2})
        return _consistency_answer(data, size1, size2)


def _consistency_answer(data: bytes, size1: int, size2: int) -> list[bytes]:
    obj = _json(data, "consistency")
    if _field(obj, "from", int, "consistency") != size1 or _field(obj, "to", int, "consistency") != size2:
        raise FormatError("the log answered with a consistency proof for other sizes")
    return _proof_field(obj, "consistency proof")


async def fetch_consistency_proof(
    base_url: str,
    size1: int,
    size2: int,
    *,
    timeout: float,
    max_response: int = MAX_RESPONSE_SIZE,
    session: Any = None,
) -> list[bytes]:
    """``GET /proof/consistency?from=size1&to=size2`` on the running event loop (aiohttp, no thread,
    ``TCP_NODELAY``), bounded by ``timeout`` seconds in all and by ``max_response`` bytes; the
    answer is parsed as strictly as :meth:`LogClient.consistency_proof` (unverified). Uses
    ``session`` (an ``aiohttp.ClientSession``, left open) if given, else one short connection
    closed before this returns. Raises ``UnavailableError`` (unreachable, slow, 5xx),
    ``OverloadedError``, ``NotFoundError`` (the log has no such sizes), ``FormatError``.
    """
    import aiohttp  # the async read path only: gk's commands never import it for this

    if not 0 <= size1 <= size2:
        raise NotFoundError(f"no consistency proof from size {size1} to {size2}")
    url = base_url.rstrip("/") + "/proof/consistency"
    params = {"from": str(size1), "to": str(size2)}
    try:
        async with contextlib.AsyncExitStack() as stack:
            if session is None:
                session = await stack.enter_async_context(_client_session(timeout))
            resp = await stack.enter_async_context(
                session.get(url, params=params, timeout=aiohttp.ClientTimeout(total=timeout))
            )
            chunks: list[bytes] = []
            total = 0
            while chunk := await resp.content.read(64 * 1024):
                total += len(chunk)
                if total > max_response:
                    raise FormatError(f"response for proof/consistency is larger than {max_response} bytes")
                chunks.append(chunk)
            data = b"".join(chunks)
            status = resp.status
            retry_after = resp.headers.get("Retry-After", "")
    except TimeoutError:
        raise UnavailableError(f"log at {base_url} did not answer GET proof/consistency in time") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UnavailableError(f"log at {base_url} is unreachable: {type(exc).__name__}: {exc}") from None
    if status == 200:
        return _consistency_answer(data, size1, size2)
    where = f"GET proof/consistency: HTTP {status}"
    if status in (429, 503) and retry_after.isdigit():
        raise OverloadedError(f"log is overloaded ({where})", int(retry_after))
    cls = _STATUS_ERRORS.get(status)
    if cls is not None:
        raise cls(where)
    raise UnavailableError(f"log at {base_url} failed ({where})")


def _client_session(timeout: float) -> Any:
    import aiohttp

    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout), headers={"User-Agent": "gatekeeper-log-client/1"}
    )


class ConsistencyFetcher:
    """``await fetcher(size1, size2)``: :func:`fetch_consistency_proof` over one keep-alive
    connection (no TCP handshake per proof), on the event loop that first uses it.

    The owner must ``await fetcher.aclose()`` on that loop before the loop closes (the agent does,
    in :func:`gatekeeper.agent.wiring.run_agent`); after it, calls fall back to one short
    connection each. A connection the log closed (idle timeout, restart) is noticed by aiohttp and
    replaced; one lost in a race with a request fails that request (``UnavailableError``: the gate
    refuses, log-unavailable) and the next one reconnects. Using it from another loop than the
    first also falls back to short connections.
    """

    def __init__(self, base_url: str, *, timeout: float, max_response: int = MAX_RESPONSE_SIZE) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.max_response = max_response
        self._session: Any = None
        self._loop: Any = None
        self._closed = False

    async def __call__(self, size1: int, size2: int) -> list[bytes]:
        import asyncio

        loop = asyncio.get_running_loop()
        if self._session is None and not self._closed:
            self._session = _client_session(self.timeout)
            self._loop = loop
        session = self._session if self._loop is loop and not self._closed else None
        return await fetch_consistency_proof(
            self.base_url, size1, size2, timeout=self.timeout, max_response=self.max_response, session=session
        )

    async def aclose(self) -> None:
        """Close the kept-alive connection (idempotent)."""
        self._closed = True
        if self._session is not None:
            await self._session.close()


class LogVerifier:
    """Holds the newest verified checkpoint of the log ``origin`` and only moves forward.

    ``latest`` (persisted by the caller, e.g. a host's head store) is the starting point; ``None``
    trusts the first valid checkpoint seen. Every accepted checkpoint is signed by one of
    ``verifiers`` and consistent with ``latest``; otherwise ``ForkError`` (with both checkpoints)
    is raised and ``latest`` is unchanged. Network failures surface as ``UnavailableError`` and
    never change ``latest``. Not thread-safe.
    """

    def __init__(
        self,
        origin: str,
        verifiers: Sequence[NoteVerifier],
        client: LogClient,
        latest: SignedCheckpoint | None = None,
    ) -> None:
        if not verifiers:
            raise ConfigError("a log verifier needs at least one trusted log key")
        self.origin = origin
        self.verifiers = tuple(verifiers)
        self.client = client
        self._latest = latest

    @property
    def latest(self) -> SignedCheckpoint | None:
        return self._latest

    def open(self, data: bytes) -> SignedCheckpoint:
        """Check signature and origin only (no consistency); raises ``FormatError``/``SignatureError``."""
        return open_checkpoint(data, self.origin, self.verifiers)

    def update(self) -> SignedCheckpoint:
        """Fetch the log's checkpoint, verify it and its consistency with ``latest``; return it.

        A checkpoint smaller than ``latest`` is a rollback: ``ForkError``.
        """
        sc = self.open(self.client.checkpoint())
        old = self._latest
        if old is not None and sc.size < old.size:
            raise ForkError(f"log {self.origin} went back from size {old.size} to {sc.size}", old, sc)
        return self.verify_checkpoint(sc)

    def verify_checkpoint(
        self, checkpoint: bytes | SignedCheckpoint, *, consistency_proof: Sequence[bytes] | None = None
    ) -> SignedCheckpoint:
        """Verify a checkpoint from anywhere (a bundle, a witness) against ``latest``.

        The signature is (re)checked from the raw bytes. An older checkpoint must be consistent
        with ``latest`` (which is kept); a newer one must extend it (and becomes ``latest``).
        ``consistency_proof``, if given, is the (unverified) proof from ``latest``'s size to the
        checkpoint's (e.g. from ``POST /add?from=N``): it is used, and checked exactly like a
        fetched one, instead of asking the log; it is ignored when ``latest`` is None or not smaller.
        Raises ``ForkError``, ``SignatureError``, ``FormatError``, ``UnavailableError``.
        """
        raw = checkpoint.raw if isinstance(checkpoint, SignedCheckpoint) else checkpoint
        sc = self.open(raw)
        old = self._latest
        if old is None:
            self._latest = sc
            return sc
        if sc.size <= old.size:
            self._prove(sc, old, old_is_held=False)
        else:
            self._prove(old, sc, old_is_held=True, proof=consistency_proof)
            self._latest = sc
        return sc

    def _prove(
        self,
        smaller: SignedCheckpoint,
        larger: SignedCheckpoint,
        *,
        old_is_held: bool,
        proof: Sequence[bytes] | None = None,
    ) -> None:
        held, other = (smaller, larger) if old_is_held else (larger, smaller)
        if smaller.size == larger.size:
            if smaller.root != larger.root:
                raise ForkError(f"two different roots for size {smaller.size} of {self.origin}", held, other)
            return
        if smaller.size == 0:
            proof = []
        elif proof is None:
            proof = self.client.consistency_proof(smaller.size, larger.size)
        try:
            verify_consistency(smaller.size, larger.size, smaller.root, larger.root, proof)
        except ProofError as e:
            raise ForkError(
                f"checkpoints of sizes {smaller.size} and {larger.size} of {self.origin} are not "
                f"consistent: {e}",
                held,
                other,
            ) from None

    def verify_inclusion(
        self,
        entry: bytes,
        index: int,
        signed_checkpoint: SignedCheckpoint,
        proof: Sequence[bytes] | None = None,
        *,
        consistency_proof: Sequence[bytes] | None = None,
    ) -> None:
        """Check that ``entry`` is leaf ``index`` of ``signed_checkpoint``'s tree.

        The checkpoint goes through :meth:`verify_checkpoint` first (``consistency_proof`` is
        passed on). Without ``proof`` the audit path is fetched from the log. Raises
        ``ProofError`` (``ForkError``), ``SignatureError``, ...
        """
        sc = self.verify_checkpoint(signed_checkpoint, consistency_proof=consistency_proof)
        if not 0 <= index < sc.size:
            raise ProofError(f"index {index} is not in the checkpoint of size {sc.size}")
        if proof is None:
            proof = self.client.inclusion_proof(index, sc.size)
        verify_inclusion(index, sc.size, leaf_hash(entry), proof, sc.root)

    def verify_tlog_proof(self, p: TlogProof, entry: bytes) -> SignedCheckpoint:
        """Verify an offline ``c2sp.org/tlog-proof@v1`` for ``entry`` and its checkpoint against
        ``latest``; returns the proof's checkpoint."""
        sc = verify_tlog_proof(p, leaf_hash(entry), self.origin, self.verifiers)
        self.verify_checkpoint(sc)
        return sc
