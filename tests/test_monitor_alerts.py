"""Alert sinks: JSON lines, syslog (UDP), webhook with retries against a real local HTTP server."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gatekeeper.monitor.alerts import Alert, ListSink, MultiSink, StreamSink, SyslogSink, WebhookSink


def sample(kind: str = "rule", severity: str = "high") -> Alert:
    return Alert(
        severity,
        kind,
        "example.com/log",
        "rule 'x' matched entry 7 — ünïcode",
        index=7,
        rule="x",
        action={"command": "rm -rf /"},
        evidence={"new_checkpoint": "a\nb\n"},
        time=1_780_000_000.5,
    )


def test_stream_sink_writes_one_json_object_per_line() -> None:
    out = io.StringIO()
    sink = StreamSink(out)
    sink.emit(sample())
    sink.emit(sample("fork", "critical"))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["time"] == "2026-05-28T20:26:40Z"
    assert first["kind"] == "rule" and first["index"] == 7 and first["rule"] == "x"
    assert first["message"].endswith("ünïcode")
    assert first["evidence"] == {"new_checkpoint": "a\nb\n"}
    assert json.loads(lines[1])["severity"] == "critical"


def test_syslog_sink_over_udp() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    try:
        sink = SyslogSink(address=rx.getsockname())
        sink.emit(sample("fork", "critical"))
        data, _ = rx.recvfrom(65536)
        sink.close()
    finally:
        rx.close()
    text = data.decode("utf-8")
    # <PRI>: facility auth (4) * 8 + critical (2) = 34
    assert text.startswith("<34>gk-monitor: ")
    assert json.loads(text.split(": ", 1)[1].rstrip("\x00"))["kind"] == "fork"


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        srv = self.server
        srv.calls += 1  # type: ignore[attr-defined]
        status = srv.plan.pop(0) if srv.plan else 200  # type: ignore[attr-defined]
        if status == 200:
            srv.received.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    srv.calls = 0  # type: ignore[attr-defined]
    srv.plan = []  # type: ignore[attr-defined]
    srv.received = []  # type: ignore[attr-defined]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_webhook_retries_server_errors_then_delivers(hook: ThreadingHTTPServer) -> None:
    hook.plan = [500, 503]  # type: ignore[attr-defined]
    waits: list[float] = []
    sink = WebhookSink(
        f"http://127.0.0.1:{hook.server_address[1]}/alerts", retries=3, backoff=0.1, sleep=waits.append
    )
    sink.emit(sample())
    sink.close()
    assert hook.calls == 3  # type: ignore[attr-defined]
    assert [a["kind"] for a in hook.received] == ["rule"]  # type: ignore[attr-defined]
    assert waits == [0.1, 0.2]
    assert sink.delivered == 1 and sink.failed == 0


def test_webhook_gives_up_on_client_error_without_retrying(
    hook: ThreadingHTTPServer, capsys: pytest.CaptureFixture[str]
) -> None:
    hook.plan = [404]  # type: ignore[attr-defined]
    sink = WebhookSink(f"http://127.0.0.1:{hook.server_address[1]}/", retries=3, sleep=lambda s: None)
    sink.emit(sample())
    sink.close()
    assert hook.calls == 1  # type: ignore[attr-defined]
    assert sink.failed == 1
    assert "HTTP 404" in capsys.readouterr().err


def test_webhook_unreachable_is_reported_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    waits: list[float] = []
    sink = WebhookSink(f"http://127.0.0.1:{port}/", retries=2, backoff=1.0, timeout=2, sleep=waits.append)
    sink.emit(sample())
    assert sink.failed == 1 and waits == [1.0, 2.0]
    assert "ConnectionError" in capsys.readouterr().err


def test_multi_and_list_sinks() -> None:
    a, b = ListSink(), ListSink()
    MultiSink([a, b]).emit(sample("rewrite", "critical"))
    assert a.kinds() == b.kinds() == ["rewrite"]
