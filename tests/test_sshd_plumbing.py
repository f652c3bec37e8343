"""Real sshd + the documented snippet + gk exec + the local agent, with a scripted gate.

The scripted gate stands in for ``VerifyingGate`` so that these tests exercise everything around
the verification (sshd settings, gk exec, the local protocol, the environment, the bypasses that
sshd or gk exec must stop) on their own; tests/test_sshd_e2e.py repeats the decisive cases with
the real verification core, real bundles and a real log.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sshd_fixture import SSHD, ScriptedGate, SshdEnv, free_port, sshd_env_fixture  # noqa: F401

from gatekeeper.gate import Reason

pytestmark = pytest.mark.sshd


def permit(env: SshdEnv, gate: ScriptedGate, command: str | bytes, key: str = "a") -> str:
    return gate.permit(command, env.keys[key].public, env.account)


@pytest.fixture
def gate(sshd_env: SshdEnv) -> Iterator[ScriptedGate]:
    g = ScriptedGate()
    sshd_env.gate.target = g
    for path in sshd_env.markers.iterdir():
        path.unlink()
    yield g
    sshd_env.gate.target = None


def test_permitted_command_runs_and_exit_status_is_journaled(sshd_env: SshdEnv, gate: ScriptedGate) -> None:
    marker = sshd_env.marker("ran")
    command = f"touch {marker}; echo out; echo err >&2; exit 7"
    proc = sshd_env.ssh(command, bundle=permit(sshd_env, gate, command))
    assert proc.returncode == 7, proc.stderr
    assert proc.stdout == b"out\n"
    assert proc.stderr == b"err\n"
    assert marker.exists()
    (request,) = gate.requests
    assert request.command == command.encode()
    assert request.frontend == "exec"
    assert request.account == sshd_env.account
    assert request.auth_key == sshd_env.keys["a"].public
    assert request.peer.startswith("127.0.0.1:")
    assert [status for _, _, status in gate.exits] == [7]


# -- the snippet, as sshd reads it -------------------------------------------------------------


def effective_config(env: SshdEnv, user: str) -> dict[str, list[str]]:
    """``sshd -T`` for a connection by ``user``: what sshd will apply after Match evaluation."""
    out = subprocess.run(
        [SSHD, "-T", "-f", str(env.workdir / "sshd_config"), "-C", f"user={user},host=h,addr=192.0.2.1"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    config: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        config.setdefault(key, []).append(value)
    return config


def test_snippet_applies_to_gated_accounts(sshd_env: SshdEnv) -> None:
    config = effective_config(sshd_env, sshd_env.account)
    assert config["forcecommand"] == [
        f"{sshd_env.python} -I -m gatekeeper.execgate --socket {sshd_env.socket_path}"
    ]
    assert config["exposeauthinfo"] == ["yes"]
    assert config["disableforwarding"] == ["yes"]
    assert config["allowtcpforwarding"] == ["no"]
    assert config["allowagentforwarding"] == ["no"]
    assert config["x11forwarding"] == ["no"]
    assert config["permittty"] == ["no"]
    assert config["permituserrc"] == ["no"]
    assert config["permituserenvironment"] == ["no"]
    assert config["permittunnel"] == ["no"]
    assert config["authenticationmethods"] == ["publickey"]
    # The Match block's AcceptEnv replaces Debian's global "AcceptEnv LANG LC_*".
    assert config["acceptenv"] == ["GK_BUNDLE"]


def test_snippet_does_not_leak_to_other_accounts(sshd_env: SshdEnv) -> None:
    """A Match block in an included file ends with that file: the global lines after the Include
    (Debian's X11Forwarding yes, AcceptEnv LANG LC_*) still apply to everyone else."""
    config = effective_config(sshd_env, "someone-else")
    assert config["forcecommand"] == ["none"]
    assert config["x11forwarding"] == ["yes"]
    assert config["acceptenv"] == ["LANG", "LC_*"]
    assert config["permittty"] == ["yes"]


def test_first_value_wins_so_the_snippet_must_come_first(sshd_env: SshdEnv, tmp_path: Path) -> None:
    """An earlier snippet that sets a keyword for the same users wins over ours: that is why the
    docs install ours as 00-gatekeeper.conf."""
    early = tmp_path / "conf.d"
    early.mkdir()
    (early / "00-earlier.conf").write_text(f"Match User {sshd_env.account}\n    PermitTTY yes\n")
    (early / "10-gatekeeper.conf").write_text(
        (sshd_env.workdir / "sshd_config.d" / "00-gatekeeper.conf").read_text()
    )
    main = (
        (sshd_env.workdir / "sshd_config")
        .read_text()
        .replace(f"Include {sshd_env.workdir / 'sshd_config.d'}/*.conf", f"Include {early}/*.conf")
    )
    (tmp_path / "sshd_config").write_text(main)
    out = subprocess.run(
        [
            SSHD,
            "-T",
            "-f",
            str(tmp_path / "sshd_config"),
            "-C",
            f"user={sshd_env.account},host=h,addr=192.0.2.1",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "permittty yes" in out.splitlines()


# -- what runs -----------------------------------------------------------------------------------


def test_stdin_binary_output_and_exit_status_through_sshd(sshd_env: SshdEnv, gate: ScriptedGate) -> None:
    data = bytes(range(256)) * 256
    proc = sshd_env.ssh("cat; exit 42", bundle=permit(sshd_env, gate, "cat; exit 42"), input=data)
    assert proc.returncode == 42, proc.stderr
    assert proc.stdout == data


def test_command_runs_as_the_account_in_its_home_with_a_fixed_environment(
    sshd_env: SshdEnv,
    gate: ScriptedGate,
) -> None:
    out = sshd_env.marker("env")
    command = f"(id -un; pwd; env | sort) > {out}"
    proc = sshd_env.ssh(
        command,
        bundle=permit(sshd_env, gate, command),
        options=["-o", "SetEnv=LC_ALL=C LANG=fr_FR.UTF-8 GK_OTHER=1"],
    )
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == sshd_env.account
    assert lines[1] == str(sshd_env.home)
    env = dict(line.split("=", 1) for line in lines[2:])
    env.pop("PWD", None)
    assert env == {
        "HOME": str(sshd_env.home),
        "LANG": "C.UTF-8",
        "LOGNAME": sshd_env.account,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "SHELL": "/bin/sh",
        "USER": sshd_env.account,
    }


def test_the_exact_string_is_what_was_permitted(sshd_env: SshdEnv, gate: ScriptedGate) -> None:
    """OpenSSH's client joins its arguments with spaces; the gate sees (and the shell runs) the
    joined string, so a client must sign and send one exact string."""
    target = sshd_env.marker("my dir")
    signed = f"touch '{target}'"
    proc = sshd_env.ssh("touch", f"'{target}'", bundle=permit(sshd_env, gate, signed))
    assert proc.returncode == 0, proc.stderr
    assert target.exists()
    assert gate.requests[-1].command == signed.encode()


# -- refused: nothing runs ----------------------------------------------------------------------


def test_no_bundle(sshd_env: SshdEnv, gate: ScriptedGate) -> None:
    marker = sshd_env.marker("x")
    proc = sshd_env.ssh(f"touch {marker}")
    assert proc.returncode == Reason.NO_BUNDLE.exit_status
    assert proc.stderr == b"gk: refused: no GK_BUNDLE\n"
    assert not marker.exists()


def test_another_key_is_seen_as_such(sshd_env: SshdEnv, gate: ScriptedGate) -> None:
    """gk exec reports the key that really authenticated (SSH_USER_AUTH), not the signer's."""
    marker = sshd_env.marker("x")
    command = f"touch {marker}"
    proc = sshd_env.ssh(command, key="b", bundle=permit(sshd_env, gate, command, key="a"))
    assert proc.returncode == Reason.KEY_MISMATCH.exit_status
    assert gate.requests[-1].auth_key == sshd_env.keys["b"].public
    assert not marker.exists()


def test_client_cannot_set_ssh_user_auth_or_the_command(sshd_env: SshdEnv, gate: ScriptedGate) -> None:
    marker = sshd_env.marker("x")
    command = f"touch {marker}"
    fake = sshd_env.workdir / "fake-auth"
    fake.write_text(f"publickey {sshd_env.keys['a'].public}\n")
    os.chmod(fake, 0o644)
    proc = sshd_env.ssh(
        "true",
        key="b",
        bundle=permit(sshd_env, gate, command, key="a"),
        options=["-o", f'SetEnv=SSH_USER_AUTH={fake} SSH_ORIGINAL_COMMAND="{command}"'],
    )
    assert proc.returncode in (Reason.KEY_MISMATCH.exit_status, Reason.COMMAND_MISMATCH.exit_status)
    assert gate.requests[-1].auth_key == sshd_env.keys["b"].public
    assert gate.requests[-1].command == b"true"
    assert not marker.exists()


def test_interactive_login_is_refused(sshd_env: SshdEnv, gate: ScriptedGate) -> None:
    marker = sshd_env.marker("x")
    proc = sshd_env.ssh(options=["-T"], input=f"touch {marker}\n".encode())
    assert proc.returncode == Reason.NOT_EXEC.exit_status
    assert b"interactive logins are not allowed" in proc.stderr
    assert not marker.exists()
    assert gate.requests == []


def test_pty_login_is_refused(sshd_env: SshdEnv, gate: ScriptedGate) -> None:
    marker = sshd_env.marker("x")
    proc = sshd_env.ssh(options=["-tt"], input=f"touch {marker}\nexit\n".encode())
    assert b"PTY allocation request failed" in proc.stderr
    assert proc.returncode in (255, Reason.NOT_EXEC.exit_status)
    assert not marker.exists()


def test_pty_exec_is_refused(sshd_env: SshdEnv, gate: ScriptedGate) -> None:
    """sshd refuses the PTY (PermitTTY no) and OpenSSH's client then gives up; had sshd allocated
    one, gk exec would refuse the session (tests/test_exec_local.py)."""
    marker = sshd_env.marker("x")
    command = f"touch {marker}"
    proc = sshd_env.ssh(command, bundle=permit(sshd_env, gate, command), options=["-tt"])
    assert b"PTY allocation request failed" in proc.stderr
    assert proc.returncode != 0
    assert not marker.exists()


def _sftp(env: SshdEnv, batch: str, *extra: str) -> subprocess.CompletedProcess[bytes]:
    argv = env.ssh_argv()[1:-1]  # the ssh options, without "ssh" and the destination
    options = [a for a in argv if a not in ("-p", str(env.sshd.port))]
    return subprocess.run(
        ["sftp", "-b", "-", "-P", str(env.sshd.port), *options, *extra, f"{env.account}@127.0.0.1"],
        input=batch.encode(),
        capture_output=True,
        timeout=30,
    )


def test_sftp_is_refused(sshd_env: SshdEnv, gate: ScriptedGate) -> None:
    marker = sshd_env.marker("sftp")
    proc = _sftp(sshd_env, f"put /etc/hostname {marker}\n")
    assert proc.returncode != 0
    assert not marker.exists()
    assert gate.requests == []  # gk exec refused the subsystem itself


@pytest.mark.parametrize("legacy", [False, True], ids=["scp-over-sftp", "scp-legacy"])
def test_scp_is_refused(sshd_env: SshdEnv, gate: ScriptedGate, legacy: bool) -> None:
    marker = sshd_env.marker("scp")
    argv = sshd_env.ssh_argv()[1:-1]
    options = [a for a in argv if a not in ("-p", str(sshd_env.sshd.port))]
    proc = subprocess.run(
        [
            "scp",
            *(["-O"] if legacy else []),
            "-P",
            str(sshd_env.sshd.port),
            *options,
            "/etc/hostname",
            f"{sshd_env.account}@127.0.0.1:{marker}",
        ],
        capture_output=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0
    assert not marker.exists()


class Listener:
    """A TCP server on 127.0.0.1 that records whether anyone ever connected."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


def test_stdio_forwarding_is_refused(sshd_env: SshdEnv, gate: ScriptedGate, listener: Listener) -> None:
    proc = sshd_env.ssh(options=["-W", f"127.0.0.1:{listener.port}"], input=b"hello\n")
    assert proc.returncode == 255
    assert b"stdio forwarding failed" in proc.stderr
    assert listener.connections == 0


def test_remote_forwarding_is_refused(sshd_env: SshdEnv, gate: ScriptedGate, listener: Listener) -> None:
    proc = sshd_env.ssh(
        options=["-N", "-o", "ExitOnForwardFailure=yes", "-R", f"0:127.0.0.1:{listener.port}"]
    )
    assert proc.returncode == 255
    assert b"remote port forwarding failed" in proc.stderr


def test_local_forwarding_is_refused(sshd_env: SshdEnv, gate: ScriptedGate, listener: Listener) -> None:
    local_port = free_port()
    proc = subprocess.Popen(
        sshd_env.ssh_argv(options=["-N", "-L", f"127.0.0.1:{local_port}:127.0.0.1:{listener.port}"]),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        outcome = None
        while time.monotonic() < deadline and proc.poll() is None and outcome is None:
            try:
                conn = socket.create_connection(("127.0.0.1", local_port), timeout=5)
            except ConnectionRefusedError:  # ssh is not listening yet
                time.sleep(0.05)
                continue
            with conn:
                try:
                    conn.sendall(b"hello\n")
                    outcome = "closed" if conn.recv(100) == b"" else "data"
                except ConnectionResetError:
                    outcome = "reset"
        # ssh accepted locally, sshd refused the channel, ssh dropped our connection.
        assert outcome in ("closed", "reset")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=10)
    assert listener.connections == 0
    refused = [line for line in sshd_env.sshd.log().splitlines() if "refused local port forward" in line]
    assert any(line.endswith(f"target 127.0.0.1 port {listener.port}") for line in refused)


def test_agent_forwarding_is_refused(sshd_env: SshdEnv, gate: ScriptedGate, tmp_path: Path) -> None:
    agent_sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(agent_sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not agent_sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        out = sshd_env.marker("agent")
        command = f"ls -d /tmp/ssh-* > {out} 2>/dev/null; env >> {out}; true"
        before = set(Path("/tmp").glob("ssh-*"))
        proc = sshd_env.ssh(
            command,
            bundle=permit(sshd_env, gate, command),
            options=["-A", "-o", f"IdentityAgent={agent_sock}", "-o", f"ForwardAgent={agent_sock}"],
        )
        assert proc.returncode == 0, proc.stderr
        text = out.read_text()
        assert "SSH_AUTH_SOCK" not in text
        created = {
            p for p in set(Path("/tmp").glob("ssh-*")) - before if p.stat().st_uid == sshd_env.user.pw_uid
        }
        assert created == set()
    finally:
        os.kill(agent.pid, signal.SIGTERM)
        agent.wait(timeout=10)


# -- environment and home-directory tricks ------------------------------------------------------


EVIL_C = r"""
#include <stdio.h>
__attribute__((constructor)) static void evil(void) {
    FILE *f = fopen(MARKER, "a");
    if (f) { fputs("preloaded\n", f); fclose(f); }
}
"""


@pytest.fixture
def evil_so(sshd_env: SshdEnv) -> Path | None:
    """A shared object that leaves a marker when loaded, or None without a C compiler."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        return None
    source = sshd_env.workdir / "evil.c"
    source.write_text(EVIL_C)
    lib = sshd_env.workdir / "evil.so"
    marker = sshd_env.marker("preloaded")
    subprocess.run(
        [gcc, "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", str(lib), str(source)],
        check=True,
        capture_output=True,
    )
    os.chmod(lib, 0o755)
    return lib


def _evil_script(env: SshdEnv, name: str) -> Path:
    script = env.workdir / f"{name}.sh"
    script.write_text(f"touch {env.marker(name)}\n")
    os.chmod(script, 0o755)
    return script


def test_client_environment_never_reaches_sshd_python_or_the_command(
    sshd_env: SshdEnv, gate: ScriptedGate, evil_so: Path | None
) -> None:
    bash_env = _evil_script(sshd_env, "bash-env")
    evil_path = sshd_env.workdir / "evilpath"
    evil_path.mkdir(exist_ok=True)
    (evil_path / "env").write_text(f"#!/bin/sh\ntouch {sshd_env.marker('path')}\n")
    os.chmod(evil_path / "env", 0o755)
    preload = evil_so or "/nonexistent/evil.so"
    injected = (
        f"LD_PRELOAD={preload} BASH_ENV={bash_env} ENV={bash_env} PATH={evil_path}:/usr/bin:/bin "
        f"PYTHONPATH={evil_path} PYTHONSTARTUP={bash_env} LC_ALL=C"
    )
    out = sshd_env.marker("env.out")
    command = f"env > {out}"
    proc = sshd_env.ssh(command, bundle=permit(sshd_env, gate, command), options=["-o", f"SetEnv={injected}"])
    assert proc.returncode == 0, proc.stderr
    assert b"ld.so" not in proc.stderr
    names = {line.split("=", 1)[0] for line in out.read_text().splitlines()}
    assert names <= {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "PWD"}
    refused = sshd_env.ssh("true", options=["-o", f"SetEnv={injected}"])
    assert refused.returncode == Reason.NO_BUNDLE.exit_status
    for name in ("preloaded", "bash-env", "path"):
        assert not sshd_env.marker(name).exists(), name


def _runtime_user_site(env: SshdEnv) -> str:
    return subprocess.run(
        [str(env.python), "-c", "import site; print(site.getusersitepackages())"],
        user=env.user.pw_uid,
        env={"HOME": str(env.home), "PATH": "/usr/bin:/bin"},
        cwd="/",
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_files_in_the_users_home_never_run(
    sshd_env: SshdEnv, gate: ScriptedGate, evil_so: Path | None
) -> None:
    """~/.bashrc, ~/.profile, ~/.ssh/rc, ~/.ssh/environment, Python user site-packages
    (usercustomize, .pth) and modules shadowing gatekeeper in the working directory (the home)."""
    m = sshd_env.marker
    preload = evil_so or "/nonexistent/evil.so"
    site = Path(_runtime_user_site(sshd_env)).relative_to(sshd_env.home)
    tricks = {
        ".bashrc": f"touch {m('bashrc')}\n",
        ".bash_profile": f"touch {m('bash_profile')}\n",
        ".profile": f"touch {m('profile')}\n",
        ".ssh/rc": f"touch {m('sshrc')}\n",
        ".ssh/environment": f"LD_PRELOAD={preload}\nBASH_ENV={_evil_script(sshd_env, 'env-file')}\n",
        f"{site}/usercustomize.py": f"open({str(m('usercustomize'))!r}, 'w').close()\n",
        f"{site}/evil.pth": f"import os; open({str(m('pth'))!r}, 'w').close()\n",
        "sitecustomize.py": f"open({str(m('sitecustomize'))!r}, 'w').close()\n",
        "gatekeeper/__init__.py": f"open({str(m('shadow'))!r}, 'w').close()\n",
        "gatekeeper/execgate/__init__.py": f"open({str(m('shadow'))!r}, 'w').close()\n",
        "gatekeeper/execgate/__main__.py": f"open({str(m('shadow'))!r}, 'w').close()\n",
    }
    written = [sshd_env.write_user_file(rel, text) for rel, text in tricks.items()]
    try:
        # Control: the traps are armed. The same interpreter without -I, started in the home,
        # runs the user's site-packages and shadowing modules.
        subprocess.run(
            [str(sshd_env.python), "-m", "gatekeeper.execgate", "--help"],
            user=sshd_env.user.pw_uid,
            env={"HOME": str(sshd_env.home), "PATH": "/usr/bin:/bin"},
            cwd=sshd_env.home,
            capture_output=True,
            timeout=30,
        )
        armed = {name for name in ("usercustomize", "pth", "shadow") if m(name).exists()}
        assert armed == {"usercustomize", "pth", "shadow"}
        for name in armed:
            m(name).unlink()

        command = "echo ran"
        proc = sshd_env.ssh(command, bundle=permit(sshd_env, gate, command))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == b"ran\n"
        assert sshd_env.ssh("echo unlogged").returncode == Reason.NO_BUNDLE.exit_status
        leftovers = sorted(p.name for p in sshd_env.markers.iterdir())
        assert leftovers == []
    finally:
        for path in written:
            path.unlink()
        for directory in ("gatekeeper/execgate", "gatekeeper"):
            shutil.rmtree(sshd_env.home / directory, ignore_errors=True)


def test_bash_login_shell_reads_bashrc_first_so_the_account_is_refused(
    sshd_env: SshdEnv, gate: ScriptedGate
) -> None:
    """The pitfall the docs warn about, demonstrated: sshd starts the ForceCommand with the login
    shell, and Debian's bash sources ~/.bashrc first when SSH_CLIENT is set, so the user's file
    runs before gk exec can refuse anything. The agent refuses accounts whose shell is not
    /bin/sh or dash, so the misconfiguration is loud."""
    user = sshd_env.bash_user
    bashrc = sshd_env.write_user_file(".bashrc", f"touch {sshd_env.marker('bashrc-ran')}\n", user=user)
    try:
        command = "echo hi"
        bundle = gate.permit(command, sshd_env.keys["a"].public, user.pw_name)
        proc = sshd_env.ssh(command, bundle=bundle, user=user.pw_name)
        assert sshd_env.marker("bashrc-ran").exists()  # the bypass is real with bash
        assert proc.returncode == Reason.POLICY.exit_status
        assert b"login shell" in proc.stderr and b"/bin/bash" in proc.stderr
        assert proc.stdout == b""
        assert gate.requests == []
    finally:
        bashrc.unlink()


# -- the user cannot touch the agent's socket ---------------------------------------------------


def test_user_cannot_replace_or_remove_the_socket(sshd_env: SshdEnv, gate: ScriptedGate) -> None:
    run_dir = sshd_env.socket_path.parent
    before = sshd_env.socket_path.lstat()
    command = (
        f"rm -f {sshd_env.socket_path}; mv {sshd_env.socket_path} {run_dir}/old; "
        f"touch {run_dir}/planted; ln -s /tmp {run_dir}/link; chmod 777 {run_dir}; "
        f"chmod 600 {sshd_env.socket_path}; echo done"
    )
    proc = sshd_env.ssh(command, bundle=permit(sshd_env, gate, command))
    assert proc.stdout == b"done\n"
    assert proc.stderr.count(b"Permission denied") + proc.stderr.count(b"Operation not permitted") >= 5
    after = sshd_env.socket_path.lstat()
    assert (after.st_ino, after.st_uid, after.st_mode) == (before.st_ino, 0, before.st_mode)
    assert sorted(p.name for p in run_dir.iterdir()) == [sshd_env.socket_path.name]
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o755
