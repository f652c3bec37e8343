"""Slow clients against a real ``gk log serve`` (slowloris): a connection that stalls in its
headers, in its body, or never sends anything is closed after the bound, and the server keeps
serving everyone else meanwhile.

The server runs ``gk log serve`` unchanged, in a child interpreter that first lowers
``personality.server.IDLE_TIMEOUT`` and ``BODY_TIMEOUT`` (the defaults are 75 s and 30 s), so the
test takes about a second.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import conftest
import pytest
import requests
from conftest import LogServer

IDLE = 1.0
BODY = 1.0
WAIT = 15.0  # socket timeout: far above the bounds, only so that a regression fails instead of hanging

_RUN_GK = (
    "import sys, personality.server as s; "
    f"s.IDLE_TIMEOUT = {IDLE}; s.BODY_TIMEOUT = {BODY}; "
    "from gatekeeper.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LogServer]:
    monkeypatch.setattr(conftest, "gk_command", lambda *args: [sys.executable, "-c", _RUN_GK, *args])
    srv = LogServer.create(tmp_path / "log", "--accept-any")
    yield srv
    srv.stop()


def _connect(server: LogServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=WAIT)


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (raises socket.timeout if it never does)."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_stalled_clients_are_closed_and_others_served(server: LogServer) -> None:
    half_body = _connect(server)
    half_body.sendall(b"POST /add HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b")
    half_headers = _connect(server)
    half_headers.sendall(b"POST /add HTTP/1.1\r\nHost: x\r\nContent-Len")
    silent = _connect(server)

    # While the three hang, the server answers others.
    with requests.Session() as session:
        health = session.get(server.url + "/healthz", timeout=WAIT)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        added = session.post(server.url + "/add", data=b"entry while others stall", timeout=WAIT)
        assert added.status_code == 200, added.text
        assert added.json()["index"] == 0

    with half_body:
        answer = _read_all(half_body)  # closed after the 408, without waiting for the rest
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert b"Connection: close" in head
    assert json.loads(body) == {
        "error": "timeout",
        "message": f"the request body did not arrive within {BODY:g} s",
    }
    with half_headers:
        assert _read_all(half_headers) == b""  # no complete request: closed without an answer
    with silent:
        assert _read_all(silent) == b""

    health = requests.get(server.url + "/healthz", timeout=WAIT)
    assert health.status_code == 200 and health.json()["size"] == 1
    err = server.stderr()
    assert "Traceback" not in err and "unhandled" not in err.lower(), err[-3000:]
    assert "the body did not arrive within" in err


def test_idle_keepalive_connection_is_closed(server: LogServer) -> None:
    """After an answer, a kept-alive connection that sends nothing more is closed too."""
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.count(b"HTTP/1.1") == 1


def test_slow_body_within_the_bound_is_accepted(server: LogServer) -> None:
    """The bound is for the whole body, not per byte: a body sent in two parts arrives."""
    import time

    with _connect(server) as sock:
        sock.sendall(b"POST /add HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10\r\n\r\nhalf ")
        time.sleep(BODY / 5)
        sock.sendall(b"body!")
        answer = _read_all(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), answer
    assert json.loads(body)["index"] == 0
