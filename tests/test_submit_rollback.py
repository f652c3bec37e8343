"""A log that went back in time: ``gk log serve`` restored from a copy of its directory taken when
it was smaller than the checkpoint the client stored. ``gk submit`` and ``gk ssh`` must call it a
fork (exit 76, ``LOG FORK DETECTED``), keep both checkpoints as evidence and keep the stored one."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import LogServer
from test_submit_reallog import gk

from personality.tlog.checkpoint import open_checkpoint
from personality.tlog.note import parse_vkey
from tests.keys import keygen


@dataclass
class RolledBack:
    log: LogServer
    key: Path
    state: Path
    stored: bytes  # the state file's content before the rollback


def _submit(log: LogServer, key: Path, state: Path, command: str):  # type: ignore[no-untyped-def]
    return gk("submit", "--log", log.url, "--log-key", log.vkey, "--state", str(state), "--key", str(key),
              "--host", "web-01", "--account", "deploy", "--", command)


@pytest.fixture
def rolled_back(tmp_path: Path, log_server: LogServer) -> Iterator[RolledBack]:
    """The client verified size 4; the log is then restored from a copy of size 1."""
    key = keygen(tmp_path, "ed25519").path
    state = tmp_path / "state"
    assert _submit(log_server, key, state, "echo 0").returncode == 0
    log_server.stop()
    backup = tmp_path / "backup"
    shutil.copytree(log_server.directory, backup)
    log_server.start()
    for n in range(1, 4):
        p = _submit(log_server, key, state, f"echo {n}")
        assert p.returncode == 0, p.stderr
    log_server.stop()
    shutil.rmtree(log_server.directory)
    shutil.copytree(backup, log_server.directory)
    log_server.start()
    yield RolledBack(log_server, key, state, state.read_bytes())


def _check_fork(r: RolledBack, returncode: int, stderr: bytes) -> None:
    lines = stderr.decode().strip().splitlines()
    assert returncode == 76, stderr
    assert len(lines) == 1, lines
    # The restored log (size 1) appended our entry: it serves size 2; the client verified 4.
    assert lines[0].startswith(
        f"gk: LOG FORK DETECTED: log {r.log.origin} went back in time: it serves size 2, this client "
        "verified size 4; both checkpoints kept in "
    ), lines[0]
    assert "HTTP 404" not in lines[0]
    [evidence] = r.state.parent.glob("state.fork-*")
    assert lines[0].endswith(str(evidence))
    text = evidence.read_bytes()
    assert text.startswith(b"stored:\n" + r.stored + b"\nreceived:\n")
    verifiers = [parse_vkey(r.log.vkey)]
    received = open_checkpoint(text.split(b"\nreceived:\n", 1)[1], r.log.origin, verifiers)
    assert received.size == 2
    # the stored view is kept: the next run is refused the same way, never silently re-based
    assert r.state.read_bytes() == r.stored
    assert open_checkpoint(r.stored, r.log.origin, verifiers).size == 4


def test_gk_submit_calls_a_rolled_back_log_a_fork(rolled_back: RolledBack) -> None:
    p = _submit(rolled_back.log, rolled_back.key, rolled_back.state, "echo other")
    assert p.stdout == b""  # no bundle
    _check_fork(rolled_back, p.returncode, p.stderr)


def test_gk_ssh_calls_a_rolled_back_log_a_fork(rolled_back: RolledBack) -> None:
    # Several hosts: the action is logged before any connection, so none is needed here.
    r = rolled_back
    p = gk("ssh", "--log", r.log.url, "--log-key", r.log.vkey, "--state", str(r.state), "--key", str(r.key),
           "-F", "/dev/null", "-H", "web-01,web-02", "--", "echo", "other")
    assert p.stdout == b""
    _check_fork(r, p.returncode, p.stderr)
