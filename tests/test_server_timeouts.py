"""Slow clients against a real ``gk log serve`` (slowloris): a connection that stalls in its
headers, in its body, or never sends anything is closed after the bound, and the server keeps
serving everyone else meanwhile.

The server runs ``gk log serve`` with ``[server] idle_timeout`` and ``body_timeout`` lowered in
its log.toml (the defaults are 75 s and 30 s), so the test takes about a second.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import LogServer, init_log

IDLE = 1.0
BODY = 1.0
WAIT = 15.0  # socket timeout: far above the bounds, only so that a regression fails instead of hanging


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LogServer]:
    directory = tmp_path / "log"
    init_log(directory, "test.example/log")
    config = directory / "log.toml"
    text = config.read_text()
    lowered = text.replace("\nidle_timeout = 75\n", f"\nidle_timeout = {IDLE}\n").replace(
        "\nbody_timeout = 30\n", f"\nbody_timeout = {BODY}\n"
    )
    assert f"\nidle_timeout = {IDLE}\n" in lowered and f"\nbody_timeout = {BODY}\n" in lowered, text
    config.write_text(lowered)
    srv = LogServer(directory, "test.example/log", ("--accept-any",), "127.0.0.1:0").start()
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
