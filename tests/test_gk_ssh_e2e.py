"""gk ssh end to end: the real agent (``gk agent serve`` subprocesses) and the real log (``gk log
serve``, allowing any entry), all on 127.0.0.1.

Checks: a logged command runs and its exit status comes back; stdin is piped and EOF propagated;
binary output is intact; one action runs on two hosts with prefixed output; the refusals the host
sends (unlogged, replayed, wrong host) come back as their own exit statuses with the host's line.
"""

from __future__ import annotations

import getpass
import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import paramiko
import pytest
from agent_fixtures import wait_until
from conftest import LogServer, init_log

from gatekeeper import sshsig
from gatekeeper.client import identity as ident
from gatekeeper.client import sshclient
from gatekeeper.client.run import run_on_hosts
from gatekeeper.client.submit import LogSettings
from gatekeeper.gate import Reason
from gatekeeper.journal import read_journal

ROOT = Path(__file__).resolve().parents[1]
GK = [sys.executable, "-m", "gatekeeper"]
USER = getpass.getuser()


@dataclass
class Agent:
    name: str
    port: int
    proc: subprocess.Popen[str]


@dataclass
class Fleet:
    log_url: str
    log_vkey: str
    key: Path
    public: str
    ssh_config: Path
    agents: dict[str, Agent]
    tmp: Path

    def settings(self) -> LogSettings:
        return LogSettings.from_strings(self.log_url, self.log_vkey, None, self.tmp / "state", timeout=5)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "GK_CONFIG")}


def _start_agent(directory: Path, name: str, log: LogServer, user_pub: str) -> Agent:
    subprocess.run(
        [
            *GK,
            "agent",
            "init",
            str(directory),
            "--name",
            name,
            "--log",
            log.url,
            "--log-key",
            log.vkey,
            "--listen",
            "127.0.0.1:0",
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
        env=_env(),
        timeout=60,
    )
    (directory / "authorized_keys").write_text(user_pub)
    proc = subprocess.Popen(
        [*GK, "agent", "serve", "--config", str(directory / "agent.toml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        proc.wait()
        pytest.fail(f"agent {name} did not start: {line!r}")
    return Agent(name, int(line.strip().rsplit(":", 1)[1]), proc)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    user = asyncssh.generate_private_key("ssh-ed25519")
    key = tmp / "id_ed25519"
    user.write_private_key(str(key))
    key.chmod(0o600)
    pub = user.export_public_key("openssh").decode()
    init_log(tmp / "log", "e2e.example/log")
    log = LogServer(tmp / "log", "e2e.example/log", ("--accept-any",), "127.0.0.1:0").start()
    agents: dict[str, Agent] = {}
    try:
        for name in ("web-01", "web-02"):
            agents[name] = _start_agent(tmp / name, name, log, pub)
        kh = tmp / "known_hosts"
        cfg = tmp / "ssh_config"
        with kh.open("w") as k, cfg.open("w") as c:
            for name, a in agents.items():
                kind, b64 = (tmp / name / "host_key.pub").read_text().split()[:2]
                k.write(f"{name} {kind} {b64}\n")
                c.write(f"Host {name}\n  HostName 127.0.0.1\n  Port {a.port}\n  HostKeyAlias {name}\n")
            c.write("Host dead\n  HostName 127.0.0.1\n  Port 1\n  HostKeyAlias dead\n")
            c.write(f"Host *\n  User {USER}\n  UserKnownHostsFile {kh}\n  GlobalKnownHostsFile /dev/null\n")
        yield Fleet(log.url, log.vkey, key, pub, cfg, agents, tmp)
    finally:
        for a in agents.values():
            os.kill(a.proc.pid, signal.SIGTERM)
            a.proc.wait(10)
            if a.proc.stdout:
                a.proc.stdout.close()
        log.stop()


def run(  # type: ignore[no-untyped-def]
    fleet: Fleet,
    hosts: list[str],
    command: bytes,
    stdin: bytes | None = None,
    parallel: int = 1,
    identity: ident.Identity | None = None,
    pin: bool = False,
):
    r = sshclient.Resolver([fleet.ssh_config])
    out, err = io.BytesIO(), io.BytesIO()
    report = run_on_hosts(
        specs=[r.resolve(h) for h in hosts],
        identity=identity or ident.from_file(fleet.key),
        pin_host_keys=pin,
        log=fleet.settings(),
        command=command,
        window=300,
        reason="e2e test",
        resolver=r,
        stdin=None if stdin is None else io.BytesIO(stdin),
        stdout=out,
        stderr=err,
        parallel=parallel,
    )
    return report, out.getvalue(), err.getvalue()


def test_logged_command_runs_with_its_exit_status(fleet: Fleet) -> None:
    report, out, err = run(fleet, ["web-01"], b"echo hello; echo oops >&2; exit 7")
    assert (report.exit_status, out, err) == (7, b"hello\n", b"oops\n")
    assert report.submit.index >= 0


def test_stdin_piped_and_eof_propagated(fleet: Fleet) -> None:
    data = b"line one\nline two\n" * 1000
    report, out, _ = run(fleet, ["web-01"], b"cat; echo done", stdin=data)
    assert report.exit_status == 0
    assert out == data + b"done\n"


def test_binary_output_intact(fleet: Fleet) -> None:
    data = bytes(range(256)) * 300
    report, out, _ = run(fleet, ["web-01"], b"cat", stdin=data)
    assert report.exit_status == 0 and out == data
    report, out, _ = run(fleet, ["web-01"], b"printf '\\000\\377\\001'")
    assert out == b"\x00\xff\x01"


def test_one_action_on_two_hosts_with_prefixes(fleet: Fleet) -> None:
    report, out, err = run(fleet, ["web-01", "web-02"], b"echo $USER ran; exit 0", parallel=2)
    assert report.exit_status == 0
    assert sorted(out.splitlines()) == [f"[web-01] {USER} ran".encode(), f"[web-02] {USER} ran".encode()]
    names = [t.name for t in report.submit.action.targets]
    assert names == ["web-01", "web-02"]


def test_signing_and_login_through_ssh_agent(fleet: Fleet) -> None:
    from tests.keys import Key, ssh_agent

    with ssh_agent(fleet.tmp, Key(fleet.key, fleet.public)) as sock:
        me = ident.from_agent(agent_path=sock)
        assert me.key_file is None
        report, out, _ = run(fleet, ["web-01"], b"echo via-agent", identity=me)
    assert (report.exit_status, out) == (0, b"via-agent\n")


def test_pinned_host_keys(fleet: Fleet) -> None:
    report, out, _ = run(fleet, ["web-01", "web-02"], b"echo pinned", pin=True)
    assert report.exit_status == 0
    pins = {t.name: t.host_key for t in report.submit.action.targets}
    for name in ("web-01", "web-02"):
        kind, b64 = (fleet.tmp / name / "host_key.pub").read_text().split()[:2]
        assert pins[name] == sshsig.fingerprint(f"{kind} {b64}")
    assert sorted(out.splitlines()) == [b"[web-01] pinned", b"[web-02] pinned"]


def test_multi_host_one_unreachable_host(fleet: Fleet) -> None:
    report, out, _ = run(fleet, ["dead", "web-01"], b"echo ok")
    assert [(r.label, r.status) for r in report.results] == [("dead", 255), ("web-01", 0)]
    assert "cannot connect" in report.results[0].error
    assert out == b"[web-01] ok\n"
    assert report.exit_status == 255


def _exit_record(fleet: Fleet, host: str, index: int) -> dict[str, object] | None:
    journal = fleet.tmp / host / "state" / "journal.jsonl"
    for record in read_journal(journal) if journal.exists() else ():
        if record["event"] == "exit" and record["index"] == index:
            return record
    return None


def test_exit_status_and_killing_signal_are_journaled(fleet: Fleet) -> None:
    report, _, _ = run(fleet, ["web-01"], b"exit 3")
    assert report.exit_status == 3
    assert wait_until(lambda: _exit_record(fleet, "web-01", report.submit.index))  # after the client
    exited = _exit_record(fleet, "web-01", report.submit.index)
    assert exited is not None and exited["exit_status"] == 3 and "signal" not in exited

    report, out, _ = run(fleet, ["web-01"], b"echo before; kill -TERM $$")
    assert out == b"before\n"
    assert report.exit_status != 0
    assert wait_until(lambda: _exit_record(fleet, "web-01", report.submit.index))
    killed = _exit_record(fleet, "web-01", report.submit.index)
    assert killed is not None
    assert (killed["exit_status"], killed["signal"], killed["frontend"]) == (None, "TERM", "agent")
    assert set(killed) == set(exited) | {"signal"}


def test_report_exit_status_is_first_non_zero() -> None:
    from gatekeeper.client.run import HostResult, RunReport

    report = RunReport(submit=None, results=[HostResult("a", 0), HostResult("b", 3), HostResult("c", 5)])  # type: ignore[arg-type]
    assert report.exit_status == 3


def _raw_exec(fleet: Fleet, host: str, command: bytes, bundle: str | None) -> tuple[int, bytes, bytes]:
    spec = sshclient.Resolver([fleet.ssh_config]).resolve(host)
    out, err = io.BytesIO(), io.BytesIO()
    with sshclient.connect(spec, paramiko.PKey.from_path(str(fleet.key))) as conn:
        env = {} if bundle is None else {"GK_BUNDLE": bundle}
        rc = conn.run(command, env, None, out.write, err.write)
    return rc, out.getvalue(), err.getvalue()


def test_unlogged_command_is_refused_with_the_hosts_line(fleet: Fleet, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    rc, out, err = _raw_exec(fleet, "web-01", f"touch {marker}".encode(), None)
    assert rc == Reason.NO_BUNDLE.exit_status
    assert err.startswith(b"gk: refused")
    assert not marker.exists()


def test_replayed_bundle_and_wrong_host_are_refused(fleet: Fleet, tmp_path: Path) -> None:
    marker = tmp_path / "count"
    cmd = f"echo x >> {marker}".encode()
    report, _, _ = run(fleet, ["web-01"], cmd)
    assert report.exit_status == 0
    bundle = report.submit.bundle
    rc, _, err = _raw_exec(fleet, "web-01", cmd, bundle)
    assert rc == Reason.REPLAY.exit_status and err.startswith(b"gk: refused")
    rc, _, err = _raw_exec(fleet, "web-02", cmd, bundle)
    assert rc == Reason.WRONG_HOST.exit_status and err.startswith(b"gk: refused")
    rc, _, err = _raw_exec(fleet, "web-01", cmd + b" ", bundle)
    assert rc == Reason.COMMAND_MISMATCH.exit_status
    assert marker.read_text() == "x\n"


def test_cli_echo_pipe_and_index_line(fleet: Fleet) -> None:
    p = subprocess.run(
        [
            *GK,
            "ssh",
            "-F",
            str(fleet.ssh_config),
            "--log",
            fleet.log_url,
            "--log-key",
            fleet.log_vkey,
            "--state",
            str(fleet.tmp / "cli-state"),
            "-i",
            str(fleet.key),
            "web-01",
            "--",
            "cat",
        ],
        input=b"hi\n",
        capture_output=True,
        cwd=ROOT,
        env=_env(),
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"hi\n"
    assert p.stderr.decode().startswith("gk: logged as index ")


def test_cli_multi_host_summary_and_status(fleet: Fleet) -> None:
    p = subprocess.run(
        [
            *GK,
            "ssh",
            "-F",
            str(fleet.ssh_config),
            "--log",
            fleet.log_url,
            "--log-key",
            fleet.log_vkey,
            "--state",
            str(fleet.tmp / "cli-state"),
            "-i",
            str(fleet.key),
            "-H",
            "web-01,web-02",
            "--reason",
            "deploy",
            "--",
            "exit",
            "4",
        ],
        capture_output=True,
        cwd=ROOT,
        env=_env(),
        timeout=60,
    )
    assert p.returncode == 4
    lines = p.stderr.decode().splitlines()
    assert "gk: 2 hosts, 2 failed" in lines[1]
    assert lines[2:] == ["gk:   [web-01] exit 4", "gk:   [web-02] exit 4"]


def test_cli_refusal_status_passes_through(fleet: Fleet) -> None:
    # an account that does not exist on the host: logged, then refused by the host's gate
    p = subprocess.run(
        [
            *GK,
            "ssh",
            "-F",
            str(fleet.ssh_config),
            "--log",
            fleet.log_url,
            "--log-key",
            fleet.log_vkey,
            "--state",
            str(fleet.tmp / "cli-state"),
            "-i",
            str(fleet.key),
            "-l",
            "no-such-user-x",
            "web-01",
            "--",
            "true",
        ],
        capture_output=True,
        cwd=ROOT,
        env=_env(),
        timeout=60,
    )
    assert p.returncode == Reason.UNKNOWN_ACCOUNT.exit_status
    lines = p.stderr.decode().splitlines()
    assert lines[0].startswith("gk: logged as index ")
    assert lines[1:] == ["gk: refused: no account 'no-such-user-x' on this host"]


def test_cli_output_closed_early(fleet: Fleet) -> None:
    gk = " ".join(
        [
            *GK,
            "ssh",
            "-F",
            str(fleet.ssh_config),
            "--log",
            fleet.log_url,
            "--log-key",
            fleet.log_vkey,
            "--state",
            str(fleet.tmp / "cli-state"),
            "-i",
            str(fleet.key),
            "-n",
            "web-01",
            "--",
            "yes",
        ]
    )
    p = subprocess.run(
        ["bash", "-c", f"{gk} | head -2; echo status ${{PIPESTATUS[0]}} >&2"],
        capture_output=True,
        cwd=ROOT,
        env=_env(),
        timeout=60,
    )
    assert p.stdout == b"y\ny\n"
    assert p.stderr.decode().splitlines()[-1] == "status 141"
    assert b"Traceback" not in p.stderr and b"Exception ignored" not in p.stderr


def test_single_unreachable_host_logs_nothing(fleet: Fleet) -> None:
    from personality.client import LogClient

    before = LogClient.http(fleet.log_url).checkpoint()
    with pytest.raises(sshclient.SSHError, match="cannot connect") as exc:
        run(fleet, ["dead"], b"echo never")
    assert exc.value.exit_code == 255
    assert LogClient.http(fleet.log_url).checkpoint() == before
