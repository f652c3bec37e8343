"""gk submit and gk ssh's submit step against the real log (``gk log serve`` in a subprocess, from
the ``log_server_factory`` fixture): with admission by allowed_signers, and with --accept-any."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import LogServer

from gatekeeper.action import verify_entry
from gatekeeper.bundle import parse_bundle
from gatekeeper.client import identity as ident
from gatekeeper.client.submit import LogSettings, build_action, submit_action
from gatekeeper.errors import LogUnavailable, Refused
from personality.client import AddResponse, HTTPTransport, LogClient
from personality.tlog import merkle
from personality.tlog.checkpoint import open_checkpoint
from personality.tlog.note import parse_vkey
from tests.keys import keygen

ROOT = Path(__file__).resolve().parents[1]


def settings(server: LogServer, tmp_path: Path) -> LogSettings:
    return LogSettings.from_strings(server.url, server.vkey, None, tmp_path / "state", timeout=5)


def gk(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "GK_CONFIG")}
    return subprocess.run(
        [sys.executable, "-m", "gatekeeper", *args], capture_output=True, env=env, cwd=ROOT, timeout=60
    )


@pytest.fixture
def allowed_log(
    tmp_path: Path, log_server_factory: Callable[..., LogServer]
) -> tuple[LogServer, ident.Identity, ident.Identity]:
    alice = keygen(tmp_path, "ed25519", name="alice")
    mallory = keygen(tmp_path, "ed25519", name="mallory")
    signers = tmp_path / "allowed_signers"
    signers.write_text(f'alice@example.org namespaces="action@gatekeeper" {alice.public}\n')
    server = log_server_factory("--allowed-signers", str(signers))
    return server, ident.from_file(alice.path), ident.from_file(mallory.path)


def test_bundle_from_the_real_log_verifies(allowed_log, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, alice, _ = allowed_log
    for i in range(3):
        action = build_action(alice, ["web-01"], "deploy", b"echo %d" % i, window=300, reason="real log")
        res = submit_action(settings(server, tmp_path), alice, action)
        assert res.index == i
    b = parse_bundle(res.bundle)
    assert verify_entry(b.entry).action.command == b"echo 2"
    sc = open_checkpoint(b.checkpoint, server.origin, [parse_vkey(server.vkey)])
    merkle.verify_inclusion(b.index, sc.size, merkle.leaf_hash(b.entry), b.proof, sc.root)
    stored = open_checkpoint((tmp_path / "state").read_bytes(), server.origin, [parse_vkey(server.vkey)])
    assert stored.size == 3


def test_refused_signer_gets_the_logs_reason(allowed_log, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, _, mallory = allowed_log
    action = build_action(mallory, ["web-01"], "deploy", b"id", window=300)
    with pytest.raises(Refused) as exc:
        submit_action(settings(server, tmp_path), mallory, action)
    assert exc.value.exit_code == 77
    assert "refused" in str(exc.value)
    assert not (tmp_path / "state").exists()


def test_cli_refused_signer_is_one_line(allowed_log, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, _, mallory = allowed_log
    p = gk(
        "submit",
        "--log",
        server.url,
        "--log-key",
        server.vkey,
        "--state",
        str(tmp_path / "s"),
        "--key",
        str(mallory.key_file),
        "--host",
        "web-01",
        "--account",
        "deploy",
        "--",
        "id",
    )
    assert p.returncode == 77
    lines = p.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gk: the log refused the action")


def test_log_down_is_exit_69(tmp_path: Path, log_server: LogServer) -> None:
    key = keygen(tmp_path, "ed25519")
    me = ident.from_file(key.path)
    s = settings(log_server, tmp_path)
    log_server.stop()
    with pytest.raises(LogUnavailable):
        submit_action(s, me, build_action(me, ["h"], "a", b"true", window=60))
    p = gk(
        "submit",
        "--log",
        log_server.url,
        "--log-key",
        log_server.vkey,
        "--state",
        str(tmp_path / "s"),
        "--key",
        str(key.path),
        "--host",
        "h",
        "--account",
        "a",
        "--",
        "true",
    )
    assert p.returncode == 69
    lines = p.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "unreachable" in lines[0]


def test_restored_backup_is_a_fork(tmp_path: Path, log_server: LogServer) -> None:
    """The log is restored from a copy taken earlier and grows differently: the client, which saw
    the newer history, refuses the rewritten one."""
    import shutil

    key = keygen(tmp_path, "ed25519")
    me = ident.from_file(key.path)
    s = settings(log_server, tmp_path)
    submit_action(s, me, build_action(me, ["h"], "a", b"one", window=60))
    log_server.stop()
    backup = tmp_path / "backup"
    shutil.copytree(log_server.directory, backup)
    log_server.start()
    s = settings(log_server, tmp_path)
    submit_action(s, me, build_action(me, ["h"], "a", b"two", window=60))
    submit_action(s, me, build_action(me, ["h"], "a", b"three", window=60))
    log_server.stop()
    shutil.rmtree(log_server.directory)
    shutil.copytree(backup, log_server.directory)
    log_server.start()
    s = settings(log_server, tmp_path)
    from gatekeeper.client.submit import LogFork

    with pytest.raises(LogFork, match="went back in time: it serves size 2, this client verified size 3"):
        submit_action(s, me, build_action(me, ["h"], "a", b"other two", window=60))
    assert list(tmp_path.glob("state.fork-*"))
    # and once the rewritten log has grown past the stored size, the proof fails: still a fork
    submit_action(
        LogSettings.from_strings(log_server.url, log_server.vkey, None, tmp_path / "fresh", 5),
        me,
        build_action(me, ["h"], "a", b"other three", window=60),
    )
    with pytest.raises(LogFork, match="not consistent|different roots"):
        submit_action(s, me, build_action(me, ["h"], "a", b"other four", window=60))


class _NoConsistencyFetch(LogClient):
    """A client that fails the test if asked for a consistency proof, and can corrupt the one the
    log sends with its POST /add answer."""

    def __init__(self, url: str, corrupt: bool = False) -> None:
        super().__init__(HTTPTransport(url))
        self.corrupt = corrupt
        self.froms: list[int | None] = []

    def add(self, entry: bytes, wait: bool = True, consistency_from: int | None = None) -> AddResponse:
        self.froms.append(consistency_from)
        answer = super().add(entry, wait, consistency_from)
        if self.corrupt and answer.consistency_proof:
            bad = (bytes(32),) + answer.consistency_proof[1:]
            answer = dataclasses.replace(answer, consistency_proof=bad)
        return answer

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        raise AssertionError(f"fetched a consistency proof {size1} -> {size2}")


def test_consistency_comes_with_the_add_answer(tmp_path: Path, log_server: LogServer) -> None:
    me = ident.from_file(keygen(tmp_path, "ed25519").path)
    s = settings(log_server, tmp_path)
    client = _NoConsistencyFetch(log_server.url)
    for i in range(3):
        submit_action(s, me, build_action(me, ["h"], "a", b"n%d" % i, window=60), client=client)
    assert client.froms == [None, 1, 2]  # the stored checkpoint's size, once there is one
    stored = (tmp_path / "state").read_bytes()
    assert open_checkpoint(stored, log_server.origin, [parse_vkey(log_server.vkey)]).size == 3


def test_a_bad_consistency_proof_with_the_add_answer_is_a_fork(tmp_path: Path, log_server: LogServer) -> None:
    from gatekeeper.client.submit import LogFork

    me = ident.from_file(keygen(tmp_path, "ed25519").path)
    s = settings(log_server, tmp_path)
    for i in range(2):
        submit_action(s, me, build_action(me, ["h"], "a", b"n%d" % i, window=60))
    before = (tmp_path / "state").read_bytes()
    with pytest.raises(LogFork, match="not consistent"):
        bad = _NoConsistencyFetch(log_server.url, corrupt=True)
        submit_action(s, me, build_action(me, ["h"], "a", b"n2", window=60), client=bad)
    assert (tmp_path / "state").read_bytes() == before and list(tmp_path.glob("state.fork-*"))
