"""The agent with the stock OpenSSH client (``ssh -T``, ``sftp``, ``ssh-agent``, ``ssh-keygen``
certificates), which behaves differently from asyncssh: it continues after a refused PTY or X11
request, sends agent-forwarding requests without asking for a reply, and sends env with SetEnv."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
from agent_fixtures import (
    AgentThread,
    OneCommandGate,
    openssh_public,
    pid_exists,
    wait_until,
    write_private_key,
)

from gatekeeper.agent.child import CHILD_PATH
from gatekeeper.gate import Reason
from gatekeeper.journal import read_journal

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH client not installed")

ME = pwd.getpwuid(os.geteuid()).pw_name
NOT_EXEC = Reason.NOT_EXEC.exit_status


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID", "DISPLAY", "LD_PRELOAD", "BASH_ENV")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def client_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "marker"


@pytest.fixture
def gate() -> OneCommandGate:
    return OneCommandGate()


@pytest.fixture
def agent(tmp_path: Path, gate: OneCommandGate, client_key: asyncssh.SSHKey) -> Iterator[AgentThread]:
    with AgentThread(tmp_path, gate, authorized=[client_key]) as a:
        yield a


@pytest.fixture
def identity(tmp_path: Path, client_key: asyncssh.SSHKey) -> Path:
    return write_private_key(client_key, tmp_path / "id_ed25519")


def ssh_argv(agent: AgentThread, identity: Path, *options: str, tty: str = "-T") -> list[str]:
    return [
        "ssh", tty, "-F", "/dev/null",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={agent.known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "IdentitiesOnly=yes",
        "-o", f"IdentityFile={identity}",
        "-o", "KexAlgorithms=curve25519-sha256",
        "-o", "LogLevel=ERROR",
        "-p", str(agent.port), "-l", ME,
        *options,
        "127.0.0.1",
    ]


def ssh(agent: AgentThread, identity: Path, command: str | None, *options: str, tty: str = "-T",
        input: bytes = b"", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    argv = ssh_argv(agent, identity, *options, tty=tty) + ([command] if command is not None else [])
    return subprocess.run(argv, input=input, capture_output=True, timeout=60, env=env or clean_env())


def test_allowed_command_output_and_status(agent, gate, client_key, identity, tmp_path) -> None:
    blob = tmp_path / "blob"
    data = os.urandom(1 << 20)
    blob.write_bytes(data)
    cmd = f"cat {blob}; echo to-stderr >&2; exit 4"
    gate.allow(client_key, ME, cmd, bundle="BUNDLE")
    proc = ssh(agent, identity, cmd, "-o", "SetEnv=GK_BUNDLE=BUNDLE")
    assert proc.returncode == 4
    assert proc.stdout == data
    assert proc.stderr == b"to-stderr\n"
    assert gate.requests[0].auth_key == openssh_public(client_key)
    assert gate.requests[0].bundle == "BUNDLE"


def test_stdin_is_piped(agent, gate, client_key, identity) -> None:
    data = os.urandom(200_000)
    gate.allow(client_key, ME, "cat")
    proc = ssh(agent, identity, "cat", input=data)
    assert (proc.returncode, proc.stdout) == (0, data)


def test_refused_command(agent, gate, client_key, identity, marker) -> None:
    gate.allow(client_key, ME, "true")
    proc = ssh(agent, identity, f"touch {marker}")
    assert proc.returncode == Reason.COMMAND_MISMATCH.exit_status
    assert proc.stderr == b"gk: refused: the command differs from the logged one\n"
    assert not marker.exists()


def test_env_injection_never_reaches_the_child(agent, gate, client_key, identity) -> None:
    gate.allow(client_key, ME, "env", bundle="B")
    setenv = "SetEnv=GK_BUNDLE=B LD_PRELOAD=/tmp/evil.so BASH_ENV=/tmp/evil.sh PATH=/evil ENV=/tmp/evil"
    proc = ssh(agent, identity, "env", "-o", setenv, "-o", "SendEnv=LANG LC_*",
               env=clean_env(LC_EVIL="1", LANG="xx_XX"))
    assert proc.returncode == 0, proc.stderr
    child = dict(line.split("=", 1) for line in proc.stdout.decode().splitlines())
    for name in ("LD_PRELOAD", "BASH_ENV", "ENV", "LC_EVIL", "GK_BUNDLE"):
        assert name not in child
    assert child["PATH"] == CHILD_PATH
    assert child["LANG"] == "C.UTF-8"
    assert gate.requests[0].bundle == "B"


def test_pty_then_exec_is_refused(agent, gate, client_key, identity, marker) -> None:
    """``ssh -tt`` pipelines pty-req and exec; it gives up when the PTY is refused, but the exec it
    already sent must not run either."""
    gate.allow(client_key, ME, f"touch {marker}")
    proc = ssh(agent, identity, f"touch {marker}", tty="-tt")
    assert proc.returncode == 255
    assert b"PTY allocation request failed" in proc.stderr
    assert wait_until(lambda: agent.journal_path.exists() and len(list(read_journal(agent.journal_path))))
    [record] = list(read_journal(agent.journal_path))
    assert (record["reason"], record["command"]) == ("not-exec", f"touch {marker}")
    assert record["message"].startswith("gk: refused: a PTY requested;")
    assert gate.requests == []
    assert not marker.exists()


def test_shell_is_refused(agent, gate, client_key, identity, marker) -> None:
    gate.allow(client_key, ME, f"touch {marker}")
    proc = ssh(agent, identity, None, input=f"touch {marker}\n".encode())
    assert proc.returncode == NOT_EXEC
    assert proc.stderr.startswith(b"gk: refused: an interactive shell requested;")
    assert gate.requests == []
    assert not marker.exists()


def test_sftp_is_refused(agent, gate, client_key, identity, marker, tmp_path) -> None:
    gate.allow(client_key, ME, f"touch {marker}")
    proc = ssh(agent, identity, "sftp", "-s")
    assert proc.returncode == NOT_EXEC
    assert proc.stderr.startswith(b"gk: refused: the 'sftp' subsystem requested;")
    if shutil.which("sftp"):
        batch = tmp_path / "batch"
        batch.write_text(f"put {__file__} {marker}\n")
        argv = ["sftp", "-b", str(batch), "-F", "/dev/null", "-P", str(agent.port),
                "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={agent.known_hosts}",
                "-o", "IdentitiesOnly=yes", "-o", f"IdentityFile={identity}", f"{ME}@127.0.0.1"]
        sftp = subprocess.run(argv, capture_output=True, timeout=60, env=clean_env())
        assert sftp.returncode != 0
    assert gate.requests == []
    assert not marker.exists()


def test_agent_forwarding_is_refused(agent, gate, client_key, identity, marker, tmp_path) -> None:
    if shutil.which("ssh-agent") is None:
        pytest.skip("ssh-agent not installed")
    sock = tmp_path / "agent.sock"
    agent_proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                                  env=clean_env())
    try:
        assert wait_until(sock.exists)
        gate.allow(client_key, ME, f"touch {marker}")
        proc = ssh(agent, identity, f"touch {marker}", "-A", env=clean_env(SSH_AUTH_SOCK=str(sock)))
    finally:
        os.kill(agent_proc.pid, signal.SIGTERM)
        agent_proc.wait(10)
    assert proc.returncode == NOT_EXEC
    assert proc.stderr.startswith(b"gk: refused: agent forwarding requested;")
    assert gate.requests == []
    assert not marker.exists()


def test_x11_forwarding_is_refused(agent, gate, client_key, identity, marker) -> None:
    gate.allow(client_key, ME, f"touch {marker}")
    proc = ssh(agent, identity, f"touch {marker}", "-X", "-o", "XAuthLocation=/nonexistent",
               env=clean_env(DISPLAY="127.0.0.1:9"))
    assert proc.returncode == NOT_EXEC
    assert b"gk: refused: X11 forwarding requested;" in proc.stderr
    assert gate.requests == []
    assert not marker.exists()


def test_remote_port_forwarding_is_refused(agent, gate, client_key, identity, marker) -> None:
    gate.allow(client_key, ME, f"touch {marker}")
    proc = ssh(agent, identity, f"touch {marker}", "-R", "127.0.0.1:0:127.0.0.1:9",
               "-o", "ExitOnForwardFailure=yes")
    assert proc.returncode == 255
    assert b"remote port forwarding failed" in proc.stderr.lower()
    assert not marker.exists()


def test_certificate_made_by_ssh_keygen(gate, tmp_path) -> None:
    ca_path, user_path = tmp_path / "ca", tmp_path / "user"
    for path in (ca_path, user_path):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True,
                       env=clean_env())
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca_path), "-I", "alice", "-n", ME, "-V", "-5m:+1h",
                    f"{user_path}.pub"], check=True, capture_output=True, env=clean_env())
    user_public = " ".join(Path(f"{user_path}.pub").read_text().split()[:2])
    gate.allow(user_public, ME, "echo cert-ok")
    ca = asyncssh.read_public_key(f"{ca_path}.pub")
    with AgentThread(tmp_path, gate, cas=[ca]) as agent:  # no authorized_keys: only the CA
        proc = ssh(agent, user_path, "echo cert-ok", "-o", f"CertificateFile={user_path}-cert.pub")
        plain = ssh(agent, user_path, "echo cert-ok", "-o", "CertificateFile=/dev/null")
    assert (proc.returncode, proc.stdout) == (0, b"cert-ok\n"), proc.stderr
    assert gate.requests[0].auth_key == user_public
    assert plain.returncode == 255  # the bare key is not authorized
    assert len(gate.requests) == 1


def test_exit_signal(agent, gate, client_key, identity) -> None:
    gate.allow(client_key, ME, "kill -TERM $$")
    proc = ssh(agent, identity, "kill -TERM $$")
    assert proc.returncode == 255  # OpenSSH's way to report a remote signal
    assert wait_until(lambda: gate.exits)
    assert gate.exits[0][1] is None


def test_killing_the_client_kills_the_child(agent, gate, client_key, identity) -> None:
    cmd = "echo $$; while :; do sleep 0.05; done"
    gate.allow(client_key, ME, cmd)
    client = subprocess.Popen(ssh_argv(agent, identity) + [cmd], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=clean_env())
    try:
        assert client.stdout is not None
        pid = int(client.stdout.readline())
        assert pid_exists(pid)
    finally:
        os.kill(client.pid, signal.SIGKILL)
        client.wait(10)
        if client.stdout is not None:
            client.stdout.close()
    assert wait_until(lambda: not pid_exists(pid)), f"child {pid} survived its client"
