"""Journal rotation on a real ``gk agent serve`` process: logrotate renames the journal, then sends
SIGHUP; the agent writes the next records to a new file at the configured path and keeps serving.
When the path cannot be opened, it says so in one line and keeps appending to the old file."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
from agent_fixtures import wait_until

from gatekeeper.agent.wiring import init_agent_dir
from gatekeeper.gate import Reason
from gatekeeper.journal import read_journal
from personality.tlog.note import generate_signer

REPO = Path(__file__).resolve().parents[1]
VKEY = generate_signer("log.example/gk").verifier().vkey()


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    user: asyncssh.SSHKey
    host_pub: list[str]
    journal: Path
    stderr: Path

    def refused_exec(self, command: str) -> int | None:
        """Run ``command`` without a bundle (refused and journaled before any log access)."""

        async def go() -> int | None:
            known = asyncssh.import_known_hosts(
                f"[127.0.0.1]:{self.port} {self.host_pub[0]} {self.host_pub[1]}\n"
            )
            async with asyncssh.connect("127.0.0.1", self.port, username="root", client_keys=[self.user],
                                        known_hosts=known, agent_path=None, config=None) as conn:
                result = await conn.run(command, encoding=None)
                return result.exit_status

        return asyncio.run(go())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    init_agent_dir(tmp_path, name="web-01", log_url="http://127.0.0.1:9", log_keys=[VKEY],
                   listen="127.0.0.1:0")
    user = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "authorized_keys").write_text(user.export_public_key("openssh").decode())
    stderr_path = tmp_path / "agent.stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gatekeeper", "agent", "serve", "--config", str(tmp_path / "agent.toml")],
            stdout=subprocess.PIPE, stderr=stderr, cwd=REPO,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("listening on 127.0.0.1:"), stderr_path.read_text()
        yield Served(proc, int(line.rsplit(":", 1)[1]), user, (tmp_path / "host_key.pub").read_text().split(),
                     tmp_path / "state" / "journal.jsonl", stderr_path)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        proc.wait(20)
        if proc.stdout is not None:
            proc.stdout.close()


def _commands(path: Path) -> list[str]:
    return [str(r["command"]) for r in read_journal(path)]


def test_sighup_reopens_a_rotated_journal(served: Served) -> None:
    assert served.refused_exec("echo one") == Reason.NO_BUNDLE.exit_status
    assert _commands(served.journal) == ["echo one"]
    rotated = served.journal.with_name("journal.jsonl.1")
    served.journal.rename(rotated)

    assert served.refused_exec("echo two") == Reason.NO_BUNDLE.exit_status  # before the signal
    os.kill(served.proc.pid, signal.SIGHUP)
    assert wait_until(served.journal.exists)  # reopen creates the new file
    assert served.refused_exec("echo three") == Reason.NO_BUNDLE.exit_status

    assert _commands(rotated) == ["echo one", "echo two"]
    assert _commands(served.journal) == ["echo three"]
    assert served.journal.stat().st_mode & 0o777 == 0o600
    assert served.proc.poll() is None
    assert wait_until(lambda: "journal reopened" in served.stderr.read_text())


def test_sighup_when_the_path_cannot_be_opened_keeps_the_old_file(served: Served) -> None:
    assert served.refused_exec("echo one") == Reason.NO_BUNDLE.exit_status
    rotated = served.journal.with_name("journal.jsonl.1")
    served.journal.rename(rotated)
    served.journal.mkdir()  # opening a directory for writing fails: EISDIR

    os.kill(served.proc.pid, signal.SIGHUP)
    assert wait_until(lambda: "cannot reopen the journal" in served.stderr.read_text())
    assert served.refused_exec("echo two") == Reason.NO_BUNDLE.exit_status
    assert served.proc.poll() is None
    assert _commands(rotated) == ["echo one", "echo two"]
    [line] = [x for x in served.stderr.read_text().splitlines() if "cannot reopen" in x]
    assert "Is a directory" in line and "still appending to the old file" in line

    served.journal.rmdir()  # the operator fixes it and signals again
    os.kill(served.proc.pid, signal.SIGHUP)
    assert wait_until(served.journal.exists)
    assert served.refused_exec("echo three") == Reason.NO_BUNDLE.exit_status
    assert _commands(served.journal) == ["echo three"]
