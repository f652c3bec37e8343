"""The deployment docs/openssh.md describes, end to end: a real sshd with the documented snippet,
``gk exec``, and the agent started the documented way — ``gk agent serve --config agent.toml`` as a
process, with a ``[local]`` section — in front of a real log.

The same agent process also listens for SSH, with the same gate: an action that ran through sshd is
a replay on the agent's own SSH listener (one head store, one spent-nonce set per host).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
from conftest import LogServer, init_log
from sshd_fixture import ACCOUNT, Sshd, SshdEnv, main_config, render_snippet, sshd_env_fixture  # noqa: F401

from gatekeeper.agent.wiring import init_agent_dir
from gatekeeper.bundle import parse_bundle
from gatekeeper.client import identity as ident
from gatekeeper.client.submit import LogSettings, build_action, submit_action
from gatekeeper.gate import Reason
from gatekeeper.journal import read_journal

pytestmark = pytest.mark.sshd
REPO = Path(__file__).resolve().parents[1]
HOST = "served-host"
ORIGIN = "agent-serve.example/log"


@dataclass
class Served:
    """sshd (snippet → this socket) + ``gk agent serve`` (SSH listener and local mode) + a log."""

    env: SshdEnv  # the session's accounts, keys and runtime, with this module's sshd
    log: LogServer
    agent: subprocess.Popen[str]
    agent_dir: Path
    agent_stderr: Path
    socket_path: Path
    ssh_port: int  # the agent's own SSH listener
    tmp: Path

    def bundle(self, command: str) -> str:
        me = ident.from_file(self.env.keys["a"].path)
        settings = LogSettings.from_strings(self.log.url, self.log.vkey, None, self.tmp / "client-state")
        action = build_action(me, [HOST], self.env.account, command.encode(), window=300, reason="serve e2e")
        return submit_action(settings, me, action, warn=lambda _line: None).bundle

    def journal(self) -> list[dict[str, object]]:
        return list(read_journal(self.agent_dir / "state" / "journal.jsonl"))

    def via_agent_listener(self, command: str, bundle: str | None) -> asyncssh.SSHCompletedProcess:
        """The agent's asyncssh front end, with key a, for the gated account."""
        host_pub = (self.env.workdir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        key = asyncssh.read_private_key(str(self.env.keys["a"].path))

        async def go() -> asyncssh.SSHCompletedProcess:
            known = asyncssh.import_known_hosts(f"[127.0.0.1]:{self.ssh_port} {' '.join(host_pub)}\n")
            async with asyncssh.connect(
                "127.0.0.1", self.ssh_port, username=self.env.account, client_keys=[key], known_hosts=known,
                agent_path=None, config=None, env={"GK_BUNDLE": bundle} if bundle else {},
            ) as conn:
                return await conn.run(command, encoding=None)

        return asyncio.run(go())


def _start_agent(config: Path, stderr: Path) -> tuple[subprocess.Popen[str], int, str]:
    """``gk agent serve --config``; waits for both readiness lines (the SSH port, then the socket)."""
    with open(stderr, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gatekeeper", "agent", "serve", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO, text=True,
        )
    assert proc.stdout is not None
    first, second = proc.stdout.readline(), proc.stdout.readline()
    if not first.startswith("listening on 127.0.0.1:") or not second.startswith("local mode listening on "):
        _stop(proc)
        pytest.fail(f"gk agent serve did not start: {first!r} {second!r}\n{stderr.read_text()}")
    return proc, int(first.rsplit(":", 1)[1]), second.removeprefix("local mode listening on ").rstrip("\n")


def _stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait()
    finally:
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(scope="module")
def served(sshd_env: SshdEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("agent-serve")
    public = sshd_env.workdir / "agent-serve"  # the gated account must reach the socket
    public.mkdir(mode=0o755)
    socket_path = public / "run" / "local.sock"
    init_log(tmp / "log", ORIGIN)
    log = LogServer(tmp / "log", ORIGIN, ("--accept-any",), "127.0.0.1:0").start()
    agent: subprocess.Popen[str] | None = None
    sshd: Sshd | None = None
    try:
        agent_dir = tmp / "host"
        init_agent_dir(agent_dir, name=HOST, log_url=log.url, log_keys=[log.vkey], listen="127.0.0.1:0",
                       local_socket=str(socket_path))
        config = agent_dir / "agent.toml"
        # One host identity for both front ends: sshd's host key, the one clients pin.
        sshd_key = sshd_env.workdir / "ssh_host_ed25519_key"
        config.write_text(config.read_text().replace('host_key = "host_key"', f'host_key = "{sshd_key}"', 1))
        (agent_dir / "authorized_keys").write_text(sshd_env.keys["a"].public + "\n")
        stderr = tmp / "agent.stderr"
        agent, ssh_port, printed = _start_agent(config, stderr)
        assert printed == str(socket_path)

        snippets = public / "sshd_config.d"
        snippets.mkdir()
        (snippets / "00-gatekeeper.conf").write_text(
            render_snippet(sshd_env.python, socket_path, match=f"Match User {ACCOUNT}")
        )
        sshd = Sshd(public, lambda port: main_config(sshd_env.workdir, snippets, port))
        sshd.start()
        host_key = (sshd_env.workdir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        known_hosts = public / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(host_key)}\n")
        env = dataclasses.replace(sshd_env, sshd=sshd, known_hosts=known_hosts, socket_path=socket_path)
        yield Served(env, log, agent, agent_dir, stderr, socket_path, ssh_port, tmp)
    finally:
        if sshd is not None:
            sshd.stop()
        if agent is not None:
            _stop(agent)
        log.stop()
        shutil.rmtree(public, ignore_errors=True)


@pytest.fixture(autouse=True)
def clean_markers(sshd_env: SshdEnv) -> None:
    for path in sshd_env.markers.iterdir():
        path.unlink()


def test_logged_command_runs_through_sshd_and_the_served_agent(served: Served) -> None:
    marker = served.env.marker("ran")
    command = f"touch {marker}; echo out; exit 5"
    bundle = served.bundle(command)
    proc = served.env.ssh(command, bundle=bundle)
    assert (proc.returncode, proc.stdout) == (5, b"out\n"), proc.stderr
    assert marker.exists()
    index = parse_bundle(bundle).index
    records = [r for r in served.journal() if r.get("index") == index]
    assert [(r["event"], r["frontend"]) for r in records] == [("allowed", "exec"), ("exit", "exec")]
    assert records[1]["exit_status"] == 5


def test_no_bundle_is_refused_by_the_served_agent(served: Served) -> None:
    marker = served.env.marker("x")
    proc = served.env.ssh(f"touch {marker}")
    assert proc.returncode == Reason.NO_BUNDLE.exit_status, proc.stderr
    assert proc.stderr.startswith(b"gk: refused")
    assert not marker.exists()
    last = served.journal()[-1]
    assert (last["event"], last["reason"], last["frontend"]) == ("refused", "no-bundle", "exec")


def test_one_spent_set_for_both_front_ends(served: Served) -> None:
    """Spent through sshd + gk exec, the same action is a replay on the agent's SSH listener, and
    the other way round: the two front ends share one gate and one head store."""
    marker = served.env.marker("once")
    command = f"echo once >> {marker}"
    bundle = served.bundle(command)
    assert served.env.ssh(command, bundle=bundle).returncode == 0
    again = served.via_agent_listener(command, bundle)
    assert again.exit_status == Reason.REPLAY.exit_status, again.stderr
    assert marker.read_text() == "once\n"

    marker2 = served.env.marker("twice")
    command2 = f"echo once >> {marker2}"
    bundle2 = served.bundle(command2)
    first = served.via_agent_listener(command2, bundle2)
    assert first.exit_status == 0, first.stderr
    proc = served.env.ssh(command2, bundle=bundle2)
    assert proc.returncode == Reason.REPLAY.exit_status, proc.stderr
    assert marker2.read_text() == "once\n"
    frontends = {(r["frontend"], r["reason"]) for r in served.journal()}
    assert {("agent", "replay"), ("exec", "replay"), ("agent", "allowed"), ("exec", "allowed")} <= frontends


def test_gk_ssh_cli_through_sshd_to_the_served_agent(served: Served) -> None:
    """The user's one command (``gk ssh``, as a process) against this deployment."""
    marker = served.env.marker("cli")
    kind, b64 = (served.env.workdir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    known = served.tmp / "cli_known_hosts"
    known.write_text(f"{HOST} {kind} {b64}\n")
    ssh_config = served.tmp / "cli_ssh_config"
    ssh_config.write_text(
        f"Host {HOST}\n  HostName 127.0.0.1\n  Port {served.env.sshd.port}\n  HostKeyAlias {HOST}\n"
        f"  User {served.env.account}\n  UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "ssh", "--log", served.log.url, "--log-key", served.log.vkey,
         "--state", str(served.tmp / "cli-state"), "-i", str(served.env.keys["a"].path),
         "-F", str(ssh_config), HOST, "--", "touch", str(marker)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
        env={k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "GK_CONFIG")},
    )
    assert proc.returncode == 0, proc.stderr
    assert "logged as index" in proc.stderr
    assert marker.exists()
