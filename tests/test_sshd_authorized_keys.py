"""The authorized_keys variant (``command="...",restrict`` on every key, no Match block), under a
second real sshd that shares the session's local agent, with a scripted gate."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sshd_fixture import (
    REPO,
    SNIPPET_PYTHON,
    SNIPPET_SOCKET,
    ScriptedGate,
    Sshd,
    SshdEnv,
    sshd_env_fixture,  # noqa: F401
)

from gatekeeper.gate import Reason

pytestmark = pytest.mark.sshd
EXAMPLE = REPO / "examples" / "authorized_keys.example"


def render_authorized_keys(env: SshdEnv) -> str:
    """The example's key line, with this deployment's interpreter and socket, for each test key."""
    (line,) = [ln for ln in EXAMPLE.read_text().splitlines() if ln and not ln.startswith("#")]
    options, _, _example_key = line.partition(",restrict ")
    assert options.count(SNIPPET_PYTHON) == 1 and options.count(SNIPPET_SOCKET) == 1
    options = options.replace(SNIPPET_PYTHON, str(env.python)).replace(SNIPPET_SOCKET, str(env.socket_path))
    return "".join(f"{options},restrict {key.public} test\n" for key in env.keys.values())


@pytest.fixture(scope="module")
def ak_env(sshd_env: SshdEnv) -> Iterator[SshdEnv]:
    workdir = sshd_env.workdir / "authorized-keys-variant"
    workdir.mkdir()
    keys_dir = workdir / "authorized_keys"
    keys_dir.mkdir(mode=0o755)
    (keys_dir / sshd_env.account).write_text(render_authorized_keys(sshd_env))

    def config(port: int) -> str:
        return f"""\
ListenAddress 127.0.0.1
Port {port}
HostKey {sshd_env.workdir}/ssh_host_ed25519_key
PidFile none
StrictModes no
UsePAM no
LogLevel VERBOSE
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile {keys_dir}/%u
ExposeAuthInfo yes
PermitUserEnvironment no
AcceptEnv LANG LC_* GK_BUNDLE
X11Forwarding yes
AllowTcpForwarding yes
Subsystem sftp /usr/lib/openssh/sftp-server
"""

    sshd = Sshd(workdir, config)
    sshd.start()
    known_hosts = workdir / "known_hosts"
    host_key = (sshd_env.workdir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(host_key)}\n")
    try:
        yield dataclasses.replace(sshd_env, sshd=sshd, known_hosts=known_hosts)
    finally:
        sshd.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def gate(ak_env: SshdEnv) -> Iterator[ScriptedGate]:
    g = ScriptedGate()
    ak_env.gate.target = g
    for path in ak_env.markers.iterdir():
        path.unlink()
    yield g
    ak_env.gate.target = None


def test_logged_command_runs(ak_env: SshdEnv, gate: ScriptedGate) -> None:
    marker = ak_env.marker("ran")
    command = f"touch {marker}; exit 4"
    proc = ak_env.ssh(command, bundle=gate.permit(command, ak_env.keys["b"].public, ak_env.account), key="b")
    assert proc.returncode == 4, proc.stderr
    assert marker.exists()
    assert gate.requests[-1].auth_key == ak_env.keys["b"].public


@pytest.mark.parametrize(
    ("args", "options", "stdin", "status"),
    [
        (("touch {m}",), (), b"", Reason.NO_BUNDLE.exit_status),
        ((), ("-T",), b"touch {m}\n", Reason.NOT_EXEC.exit_status),  # shell login
        ((), ("-tt",), b"touch {m}\nexit\n", 255),  # PTY refused by restrict; ssh gives up
        (
            ("touch {m}",),
            ("-o", "SetEnv=LD_PRELOAD=/nonexistent/x.so BASH_ENV=/nonexistent"),
            b"",
            Reason.NO_BUNDLE.exit_status,
        ),
    ],
    ids=["no-bundle", "shell", "pty", "env-injection"],
)
def test_refused(
    ak_env: SshdEnv,
    gate: ScriptedGate,
    args: tuple[str, ...],
    options: tuple[str, ...],
    stdin: bytes,
    status: int,
) -> None:
    marker = ak_env.marker("x")
    proc = ak_env.ssh(
        *(a.format(m=marker) for a in args),
        options=options,
        input=stdin.replace(b"{m}", str(marker).encode()),
    )
    assert proc.returncode == status, proc.stderr
    assert b"ld.so" not in proc.stderr
    assert not marker.exists()


def test_forwarding_is_restricted(ak_env: SshdEnv, gate: ScriptedGate) -> None:
    proc = ak_env.ssh(options=["-W", "127.0.0.1:9"])
    assert proc.returncode == 255
    assert b"stdio forwarding failed" in proc.stderr
    assert "refused local port forward" in ak_env.sshd.log()


def test_sftp_is_refused_by_gk_exec(ak_env: SshdEnv, gate: ScriptedGate) -> None:
    marker = ak_env.marker("sftp")
    argv = ak_env.ssh_argv()[1:-1]
    options = [a for a in argv if a not in ("-p", str(ak_env.sshd.port))]
    proc = subprocess.run(
        ["sftp", "-b", "-", "-P", str(ak_env.sshd.port), *options, f"{ak_env.account}@127.0.0.1"],
        input=f"put /etc/hostname {marker}\n".encode(),
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert not marker.exists()
    assert gate.requests == []


def test_user_cannot_edit_the_keys_file(ak_env: SshdEnv, gate: ScriptedGate) -> None:
    keys_file = Path(ak_env.sshd.workdir) / "authorized_keys" / ak_env.account
    before = keys_file.read_text()
    command = f"echo {ak_env.keys['a'].public} > {keys_file}; rm -f {keys_file}; echo done"
    proc = ak_env.ssh(command, bundle=gate.permit(command, ak_env.keys["a"].public, ak_env.account))
    assert proc.stdout == b"done\n"
    assert proc.stderr.count(b"Permission denied") == 2, proc.stderr
    assert keys_file.read_text() == before
