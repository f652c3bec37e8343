"""Checkpoint gossip: publish, read back (directory and HTTP), compare, and catch a split view."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gatekeeper import gossip
from gatekeeper.cli import main
from gatekeeper.monitor.alerts import ListSink
from gatekeeper.monitor.config import AlertSpec, MonitorConfig, log_spec
from gatekeeper.monitor.runner import MonitorRunner, source_consistency
from gatekeeper.monitor.scan import DirectorySource
from gatekeeper.monitor.testing import synthetic_entries, write_static_log
from personality.tlog.note import Signer, generate_signer

ORIGIN = "example.com/gossip-test"


@pytest.fixture
def key() -> Signer:
    return generate_signer(ORIGIN)


@pytest.fixture(scope="module")
def entries() -> list[bytes]:
    return synthetic_entries(400, workers=1)[0]


def test_publish_and_read_back(tmp_path: Path, key: Signer, entries: list[bytes]) -> None:
    cp = write_static_log(tmp_path / "log", entries[:10], key)
    path = gossip.publish(tmp_path / "pub", ORIGIN, cp)
    assert path.read_bytes() == cp
    gossip.publish(tmp_path / "pub", "other.example/log", b"x\n")
    gossip.publish(tmp_path / "pub", ORIGIN, cp)  # idempotent
    listed = (tmp_path / "pub" / gossip.INDEX).read_text().split()
    assert len(listed) == 2 and path.name in listed
    got = dict(gossip.read_published(str(tmp_path / "pub")))
    assert got[f"{tmp_path / 'pub'}/{path.name}"] == cp


def test_compare_consistent_sizes_with_a_log(tmp_path: Path, key: Signer, entries: list[bytes]) -> None:
    small = write_static_log(tmp_path / "log", entries[:100], key)
    big = write_static_log(tmp_path / "log", entries, key)
    keys = {ORIGIN: [key.verifier()]}
    obs = [gossip.observe("a", small, keys), gossip.observe("b", big, keys), gossip.observe("c", big, keys)]
    assert all(o.verified for o in obs)
    unknown = gossip.compare(obs)
    assert unknown.ok and len(unknown.unchecked_pairs) == 1
    proven = gossip.compare(obs, source_consistency(DirectorySource(tmp_path / "log")))
    assert proven.ok and proven.consistent_pairs == 1 and not proven.unchecked_pairs
    assert proven.logs == {ORIGIN: 3}


def test_compare_finds_same_size_fork_from_notes_alone(
    tmp_path: Path, key: Signer, entries: list[bytes]
) -> None:
    a = write_static_log(tmp_path / "a", entries[:50], key)
    b = write_static_log(tmp_path / "b", entries[50:100], key)
    keys = {ORIGIN: [key.verifier()]}
    result = gossip.compare([gossip.observe("a", a, keys), gossip.observe("b", b, keys)])
    [conflict] = result.conflicts
    assert conflict.kind == "fork" and {conflict.a.raw, conflict.b.raw} == {a, b}


def test_compare_finds_inconsistent_sizes(tmp_path: Path, key: Signer, entries: list[bytes]) -> None:
    small = write_static_log(tmp_path / "other", entries[200:300], key)  # another history
    big = write_static_log(tmp_path / "log", entries, key)
    keys = {ORIGIN: [key.verifier()]}
    result = gossip.compare(
        [gossip.observe("a", small, keys), gossip.observe("b", big, keys)],
        source_consistency(DirectorySource(tmp_path / "log")),
    )
    [conflict] = result.conflicts
    assert conflict.kind == "inconsistent"


def test_unverified_checkpoints_are_set_aside(tmp_path: Path, key: Signer, entries: list[bytes]) -> None:
    forged = write_static_log(tmp_path / "x", entries[:5], generate_signer(ORIGIN))
    real = write_static_log(tmp_path / "y", entries[5:10], key)
    keys = {ORIGIN: [key.verifier()]}
    obs = [
        gossip.observe("forged", forged, keys),
        gossip.observe("real", real, keys),
        gossip.observe("junk", b"not a note", keys),
        gossip.observe(
            "unknown", write_static_log(tmp_path / "z", entries[:3], generate_signer("other.log")), keys
        ),
    ]
    result = gossip.compare(obs)
    assert result.ok  # a checkpoint the log did not sign proves nothing
    assert sorted(o.source for o in result.unverified) == ["forged", "junk", "unknown"]
    assert "no key" in next(o for o in obs if o.source == "unknown").problem


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_read_published_over_http(http_dir: tuple[Path, str], key: Signer, entries: list[bytes]) -> None:
    root, url = http_dir
    cp = write_static_log(root / "log", entries[:7], key)
    gossip.publish(root / "gossip", ORIGIN, cp)
    [(label, raw)] = gossip.read_published(url + "/gossip")
    assert raw == cp and label.startswith(url)


def _run_monitor(
    tmp_path: Path, name: str, log_dir: Path, key: Signer, peers: tuple[str, ...] = ()
) -> ListSink:
    sink = ListSink()
    cfg = MonitorConfig(
        logs=(log_spec(str(log_dir), [key.verifier().vkey()]),),
        state=tmp_path / f"state-{name}",
        publish=tmp_path / f"pub-{name}",
        peers=peers,
        workers=1,
        alerts=AlertSpec(stdout=False),
    )
    with MonitorRunner(cfg, sink, progress=False) as runner:
        runner.round()
    return sink


def test_fork_served_to_one_client_is_caught_by_gossip(
    tmp_path: Path, key: Signer, entries: list[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    """The log shows client A one history and client B another, each consistent on its own."""
    write_static_log(tmp_path / "view-a", entries[:300], key)
    write_static_log(tmp_path / "view-b", entries[:250] + entries[350:400], key)
    assert _run_monitor(tmp_path, "a", tmp_path / "view-a", key).alerts == []
    assert _run_monitor(tmp_path, "b", tmp_path / "view-b", key).alerts == []  # alone, B sees nothing wrong
    # B compares with A's published checkpoint: split view
    sink = _run_monitor(tmp_path, "b", tmp_path / "view-b", key, peers=(str(tmp_path / "pub-a"),))
    [alert] = sink.alerts
    assert alert.kind == "gossip-conflict" and alert.severity == "critical"
    assert alert.evidence["own_checkpoint"] != alert.evidence["peer_checkpoint"]
    # and anyone can compare the two published directories from the command line
    rc = main(
        [
            "monitor",
            "gossip",
            "compare",
            "--log-key",
            key.verifier().vkey(),
            str(tmp_path / "pub-a"),
            str(tmp_path / "pub-b"),
        ]
    )
    out = capsys.readouterr()
    assert rc == 76
    [line] = out.out.splitlines()
    assert json.loads(line)["kind"] == "gossip-conflict"
    assert "CONFLICT" in out.err


def test_cli_compare_consistent(
    tmp_path: Path, key: Signer, entries: list[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    small = write_static_log(tmp_path / "log", entries[:100], key)
    gossip.publish(tmp_path / "p1", ORIGIN, small)
    big = write_static_log(tmp_path / "log", entries, key)
    gossip.publish(tmp_path / "p2", ORIGIN, big)
    vkey = key.verifier().vkey()
    rc = main(["monitor", "gossip", "compare", "--log-key", vkey, str(tmp_path / "p1"), str(tmp_path / "p2")])
    assert rc == 0 and "could not check" in capsys.readouterr().err
    rc = main(
        [
            "monitor",
            "gossip",
            "compare",
            "--log-key",
            vkey,
            "--log",
            str(tmp_path / "log"),
            str(tmp_path / "p1"),
            str(tmp_path / "p2"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0 and "1 pairs proven consistent" in err


def test_cli_publish_refuses_unverified(tmp_path: Path, key: Signer, entries: list[bytes]) -> None:
    cp = write_static_log(tmp_path / "log", entries[:3], key)
    (tmp_path / "cp").write_bytes(cp)
    vkey = key.verifier().vkey()
    assert (
        main(
            [
                "monitor",
                "gossip",
                "publish",
                "--log-key",
                vkey,
                "--dir",
                str(tmp_path / "pub"),
                str(tmp_path / "cp"),
            ]
        )
        == 0
    )
    assert gossip.read_published(str(tmp_path / "pub"))[0][1] == cp
    other = generate_signer(ORIGIN).verifier().vkey()
    rc = main(
        [
            "monitor",
            "gossip",
            "publish",
            "--log-key",
            other,
            "--dir",
            str(tmp_path / "pub2"),
            str(tmp_path / "cp"),
        ]
    )
    assert rc == 78


def test_gossip_serve_endpoint(tmp_path: Path, key: Signer, entries: list[bytes]) -> None:
    """``gk monitor gossip serve`` in a subprocess: compare reads it by URL; nothing else is served."""
    import os
    import signal
    import subprocess
    import sys

    import requests

    cp = write_static_log(tmp_path / "log", entries[:20], key)
    gossip.publish(tmp_path / "pub", ORIGIN, cp)
    (tmp_path / "pub" / "secret").write_text("not for you")
    root = Path(__file__).parents[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gatekeeper",
            "monitor",
            "gossip",
            "serve",
            str(tmp_path / "pub"),
            "--listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        url = line.split(" on ", 1)[1].strip()
        [(label, raw)] = gossip.read_published(url)
        assert raw == cp and label.startswith(url)
        for path in ("secret", "../log/checkpoint", "", "index/../secret"):
            assert requests.get(f"{url}/{path}", timeout=5).status_code == 404
        assert requests.post(f"{url}/index", timeout=5).status_code == 501
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == 0
