"""gk exec against the local-mode agent, without sshd: the environment sshd would set is simulated.

The agent runs in a background thread (root); ``gk exec`` runs as a subprocess, as root or, for the
identity checks, as the test account.
"""

from __future__ import annotations

import gc
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import LogServer
from sshd_fixture import (
    LocalServiceThread,
    ScriptedGate,
    ensure_account,
    make_runtime,
    require_root,
    require_sshd,
)

from gatekeeper.agent.local import start_local
from gatekeeper.agent.wiring import init_agent_dir
from gatekeeper.client import identity as ident
from gatekeeper.client.submit import LogSettings, build_action, submit_action
from gatekeeper.errors import ConfigError
from gatekeeper.execgate import program
from gatekeeper.execgate.client import LocalClient, LocalUnavailable
from gatekeeper.execgate.protocol import DecideRequest, DecisionReply, parse_message, payload_length
from gatekeeper.gate import Decision, ExecRequest, Reason
from gatekeeper.journal import read_journal

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@dataclass
class Local:
    dir: Path
    socket: Path
    gate: ScriptedGate
    service: LocalServiceThread

    def auth_file(self, content: str = f"publickey {KEY}\n") -> Path:
        path = self.dir / f"sshauth.{time.monotonic_ns()}"
        path.write_text(content)
        os.chmod(path, 0o644)
        return path

    def env(self, command: str | None, bundle: str | None = None, **extra: str) -> dict[str, str]:
        env = {
            "SSH_USER_AUTH": str(self.auth_file()),
            "SSH_CONNECTION": "192.0.2.7 50000 127.0.0.1 22",
            "SSH_CLIENT": "192.0.2.7 50000 22",
            # Variables sshd could pass on (it never passes LD_PRELOAD: AcceptEnv GK_BUNDLE) that
            # must not reach the command.
            "LC_ALL": "C",
            "GK_SECRET": "leak",
            "BASH_ENV": "/nonexistent/bashenv",
            "PYTHONPATH": "/nonexistent",
            "PATH": "/nonexistent:/usr/bin:/bin",
            "HOME": "/nonexistent",
        }
        if command is not None:
            env["SSH_ORIGINAL_COMMAND"] = command
        if bundle is not None:
            env["GK_BUNDLE"] = bundle
        env.update(extra)
        return env

    def run(
        self, env: dict[str, str], *, python: str = sys.executable, user: int | None = None, **kw: object
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [python, "-I", "-m", "gatekeeper.execgate", "--socket", str(self.socket), "--timeout", "20"],
            env=env,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
            user=user,
            cwd="/",
            **kw,  # type: ignore[arg-type]
        )


@pytest.fixture
def local() -> Iterator[Local]:
    require_root()
    base = Path(tempfile.mkdtemp(prefix="gk-local-"))
    os.chmod(base, 0o755)
    gate = ScriptedGate()
    # As root, the caller's login shell is root's (often bash): not what these tests are about.
    path = base / "run" / "local.sock"
    loc = Local(base, path, gate, LocalServiceThread(gate, path, login_shells=None))
    try:
        yield loc
    finally:
        loc.service.stop()
        gc.collect()  # a leaked socket warns here, in the test that leaked it
        shutil.rmtree(base, ignore_errors=True)


def test_allowed_command_runs_with_a_fixed_environment(local: Local) -> None:
    out = local.dir / "env.out"
    command = f"env > {out}; echo hello; exit 3"
    proc = local.run(local.env(command, local.gate.permit(command, KEY, "root")))
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == b"hello\n"
    assert proc.stderr == b""
    env = dict(line.split("=", 1) for line in out.read_text().splitlines())
    env.pop("PWD", None)  # dash exports the working directory itself
    assert env == {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "USER": "root",
        "LOGNAME": "root",
        "SHELL": "/bin/sh",
        "LANG": "C.UTF-8",
    }
    (request,) = local.gate.requests
    assert request == ExecRequest(
        account="root",
        command=command.encode(),
        auth_key=KEY,
        bundle=request.bundle,
        peer="192.0.2.7:50000",
        frontend="exec",
    )
    assert [status for _, _, status in local.gate.exits] == [3]


def test_exact_bytes_reach_the_shell(local: Local) -> None:
    out = local.dir / "args.out"
    command = b"printf '%s\\n' \"a  b\" '$HOME' \xc3\xa9 > " + str(out).encode()
    env = {k.encode(): v.encode() for k, v in local.env(None).items()}
    env[b"SSH_ORIGINAL_COMMAND"] = command
    env[b"GK_BUNDLE"] = local.gate.permit(command, KEY, "root").encode()
    proc = subprocess.run(
        [sys.executable, "-I", "-m", "gatekeeper.execgate", "--socket", str(local.socket)],
        env=env,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == b"a  b\n$HOME\n\xc3\xa9\n"
    assert local.gate.requests[0].command == command


def test_stdin_and_binary_output_pass_through(local: Local) -> None:
    data = bytes(range(256)) * 64
    command = "cat"
    proc = subprocess.run(
        [sys.executable, "-I", "-m", "gatekeeper.execgate", "--socket", str(local.socket)],
        env=local.env(command, local.gate.permit(command, KEY, "root")),
        input=data,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data


@pytest.mark.parametrize(
    ("command", "bundle", "reason"),
    [
        ("touch {m}", None, Reason.NO_BUNDLE),
        ("touch {m}", "forged", Reason.MALFORMED_BUNDLE),
        ("touch {m}; true", "permit:touch {m}", Reason.COMMAND_MISMATCH),
    ],
)
def test_refusals_from_the_gate_never_run_the_command(
    local: Local, command: str, bundle: str | None, reason: Reason
) -> None:
    marker = local.dir / "marker"
    command = command.format(m=marker)
    if bundle is not None and bundle.startswith("permit:"):
        bundle = local.gate.permit(bundle.removeprefix("permit:").format(m=marker), KEY, "root")
    proc = local.run(local.env(command, bundle))
    assert proc.returncode == reason.exit_status
    assert proc.stdout == b""
    assert proc.stderr.decode().startswith("gk: refused: ")
    assert proc.stderr.count(b"\n") == 1
    assert not marker.exists()
    assert local.gate.exits == []


def test_replay_is_refused(local: Local) -> None:
    marker = local.dir / "marker"
    command = f"echo x >> {marker}"
    bundle = local.gate.permit(command, KEY, "root")
    assert local.run(local.env(command, bundle)).returncode == 0
    proc = local.run(local.env(command, bundle))
    assert proc.returncode == Reason.REPLAY.exit_status
    assert marker.read_text() == "x\n"


@pytest.mark.parametrize(
    ("original", "extra", "reason"),
    [
        (None, {}, Reason.NOT_EXEC),  # shell login
        ("internal-sftp", {}, Reason.NOT_EXEC),
        ("/usr/lib/openssh/sftp-server", {}, Reason.NOT_EXEC),
        ("touch {m}", {"SSH_TTY": "/dev/pts/9"}, Reason.NOT_EXEC),
        ("touch {m}", {"SSH_USER_AUTH": ""}, Reason.POLICY),
        ("touch {m}", {"SSH_USER_AUTH": "/nonexistent"}, Reason.POLICY),
    ],
)
def test_local_refusals_never_reach_the_gate(
    local: Local, original: str | None, extra: dict[str, str], reason: Reason
) -> None:
    marker = local.dir / "marker"
    command = None if original is None else original.format(m=marker)
    env = local.env(command, local.gate.permit(command or "", KEY, "root"), **extra)
    if not extra.get("SSH_USER_AUTH", "x"):
        del env["SSH_USER_AUTH"]
    proc = local.run(env)
    assert proc.returncode == reason.exit_status, proc.stderr
    assert proc.stderr.startswith(b"gk: refused: ")
    assert not marker.exists()
    assert local.gate.requests == []


def test_session_authenticated_without_a_key_is_refused(local: Local) -> None:
    marker = local.dir / "marker"
    command = f"touch {marker}"
    env = local.env(command, local.gate.permit(command, KEY, "root"))
    env["SSH_USER_AUTH"] = str(local.auth_file("password\n"))
    proc = local.run(env)
    assert proc.returncode == Reason.KEY_MISMATCH.exit_status
    assert b"not authenticated with a public key" in proc.stderr
    assert not marker.exists()


def test_auth_info_symlink_is_not_followed(local: Local) -> None:
    link = local.dir / "sshauth.link"
    link.symlink_to(local.auth_file())
    command = f"touch {local.dir / 'marker'}"
    proc = local.run(local.env(command, local.gate.permit(command, KEY, "root"), SSH_USER_AUTH=str(link)))
    assert proc.returncode == Reason.POLICY.exit_status
    assert not (local.dir / "marker").exists()


def test_agent_unreachable_fails_closed(local: Local, tmp_path: Path) -> None:
    marker = local.dir / "marker"
    command = f"touch {marker}"
    env = local.env(command, local.gate.permit(command, KEY, "root"))
    proc = subprocess.run(
        [sys.executable, "-I", "-m", "gatekeeper.execgate", "--socket", str(tmp_path / "none.sock")],
        env=env,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert proc.returncode == Reason.LOG_UNAVAILABLE.exit_status
    assert b"unreachable" in proc.stderr and b"fail closed" in proc.stderr
    assert not marker.exists()


def test_client_refuses_a_socket_served_by_another_uid(local: Local) -> None:
    with pytest.raises(LocalUnavailable, match="served by uid 0"):
        LocalClient.connect(str(local.socket), timeout=5, server_uid=4242)


def test_killed_command_dies_of_the_same_signal(local: Local) -> None:
    command = "kill -TERM $$"
    proc = local.run(local.env(command, local.gate.permit(command, KEY, "root")))
    assert proc.returncode == -signal.SIGTERM
    assert [status for _, _, status in local.gate.exits] == [None]


def test_signals_are_forwarded_to_the_command(local: Local) -> None:
    started = local.dir / "started"
    got = local.dir / "got"
    command = f"trap 'echo TERM > {got}; exit 42' TERM; touch {started}; while :; do sleep 0.05; done"
    proc = subprocess.Popen(
        [sys.executable, "-I", "-m", "gatekeeper.execgate", "--socket", str(local.socket)],
        env=local.env(command, local.gate.permit(command, KEY, "root")),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started.exists()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 42
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
    assert got.read_text() == "TERM\n"
    assert [status for _, _, status in local.gate.exits] == [42]


def test_gk_exec_killed_mid_command_is_journaled_as_unknown(local: Local) -> None:
    started = local.dir / "started"
    command = f"touch {started}; sleep 30"
    proc = subprocess.Popen(
        [sys.executable, "-I", "-m", "gatekeeper.execgate", "--socket", str(local.socket)],
        env=local.env(command, local.gate.permit(command, KEY, "root")),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # gk exec and its shell: the process group we started
    proc.wait()
    deadline = time.monotonic() + 30
    while not local.gate.exits and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [status for _, _, status in local.gate.exits] == [None]


# -- the agent's side: identity, shells, malformed input, limits --------------------------------


def _raw_session(path: Path, frame: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(str(path))
        s.sendall(frame)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def _reply(raw: bytes) -> DecisionReply:
    reply = parse_message(raw[4:])
    assert isinstance(reply, DecisionReply)
    assert payload_length(raw[:4]) == len(raw) - 4
    return reply


def test_malformed_request_gets_an_internal_refusal(local: Local) -> None:
    reply = _reply(_raw_session(local.socket, b"\x00\x00\x00\x02{}"))
    assert reply.code == "internal-error" and "malformed local request" in reply.message
    assert local.gate.requests == []


def test_oversized_frame_is_refused_without_reading_it(local: Local) -> None:
    reply = _reply(_raw_session(local.socket, b"\xff\xff\xff\xff"))
    assert reply.code == "internal-error" and "outside 1..262144" in reply.message
    assert local.gate.requests == []


def test_socket_permissions_and_cleanup(local: Local) -> None:
    st = local.socket.lstat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o666
    assert st.st_uid == 0
    dst = local.socket.parent.stat()
    assert dst.st_uid == 0 and not dst.st_mode & 0o022
    local.service.stop()
    assert not local.socket.exists()
    local.service = LocalServiceThread(local.gate, local.socket, login_shells=None)


def test_unsafe_socket_directory_is_refused(tmp_path: Path) -> None:
    require_root()
    import asyncio

    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    os.chmod(unsafe, 0o777)
    with pytest.raises(ConfigError, match="writable by nobody else"):
        asyncio.run(start_local(ScriptedGate(), unsafe / "local.sock"))
    safe = tmp_path / "safe"
    safe.mkdir()
    (safe / "local.sock").write_text("not a socket")
    with pytest.raises(ConfigError, match="not a socket"):
        asyncio.run(start_local(ScriptedGate(), safe / "local.sock"))
    with pytest.raises(ConfigError, match="absolute"):
        asyncio.run(start_local(ScriptedGate(), safe / "x.sock", shell="sh"))


class RaisingGate(ScriptedGate):
    async def decide(self, request: ExecRequest) -> Decision:
        raise RuntimeError("bug")


def test_a_raising_gate_is_an_internal_refusal(tmp_path: Path) -> None:
    require_root()
    os.chmod(tmp_path, 0o755)
    service = LocalServiceThread(RaisingGate(), tmp_path / "run" / "l.sock", login_shells=None)
    try:
        with LocalClient.connect(str(tmp_path / "run" / "l.sock"), timeout=10) as client:
            reply = client.decide(DecideRequest("root", b"true", KEY, "b"))
        assert reply.reason is Reason.INTERNAL
    finally:
        service.stop()


def test_unsafe_login_shell_is_refused(tmp_path: Path) -> None:
    require_root()
    os.chmod(tmp_path, 0o755)
    gate = ScriptedGate()
    service = LocalServiceThread(gate, tmp_path / "run" / "l.sock", login_shells={"/nonexistent/sh"})
    try:
        with LocalClient.connect(str(tmp_path / "run" / "l.sock"), timeout=10) as client:
            reply = client.decide(DecideRequest("root", b"true", KEY, gate.permit("true", KEY, "root")))
        assert reply.reason is Reason.POLICY
        assert "login shell" in reply.message
        assert gate.requests == []
    finally:
        service.stop()


def test_connection_limit(tmp_path: Path) -> None:
    require_root()
    os.chmod(tmp_path, 0o755)
    path = tmp_path / "run" / "l.sock"
    service = LocalServiceThread(ScriptedGate(), path, login_shells=None, max_connections=1)
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        held.connect(str(path))
        time.sleep(0.2)  # let the service accept the first connection (not a timing assertion)
        with pytest.raises(LocalUnavailable, match="closed the connection|lost the local"):
            with LocalClient.connect(str(path), timeout=10) as client:
                client.decide(DecideRequest("root", b"true", KEY, None))
    finally:
        held.close()
        service.stop()


def test_one_uid_cannot_hold_every_pending_slot(tmp_path: Path) -> None:
    require_root()
    os.chmod(tmp_path, 0o755)
    path = tmp_path / "run" / "l.sock"
    gate = ScriptedGate()
    service = LocalServiceThread(gate, path, login_shells=None, max_pending_per_uid=1, request_timeout=60)
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        held.connect(str(path))  # connected, request not sent yet: pending
        deadline = time.monotonic() + 10
        reply = None
        while time.monotonic() < deadline:
            with LocalClient.connect(str(path), timeout=10) as client:
                reply = client.decide(DecideRequest("root", b"true", KEY, None))
            if "too many requests" in reply.message:
                break
            time.sleep(0.02)  # the held connection may not be accepted yet
        assert reply is not None and reply.code == "internal-error", reply
        assert "too many requests from uid 0" in reply.message
        held.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the slot frees once the held session ends
            with LocalClient.connect(str(path), timeout=10) as client:
                reply = client.decide(DecideRequest("root", b"true", KEY, None))
            if reply.code == "no-bundle":
                break
            time.sleep(0.02)
        assert reply.code == "no-bundle", reply
    finally:
        held.close()
        service.stop()


# -- identity: the account comes from the kernel, not from the client ---------------------------


@pytest.fixture(scope="module")
def gktest_python() -> Iterator[tuple[int, str]]:
    require_sshd()
    user = ensure_account()
    base = Path(tempfile.mkdtemp(prefix="gk-rt-"))
    os.chmod(base, 0o755)
    try:
        yield user.pw_uid, str(make_runtime(base / "venv", user))
    finally:
        shutil.rmtree(base, ignore_errors=True)


CLAIM = """
import sys
from gatekeeper.execgate.client import LocalClient
from gatekeeper.execgate.protocol import DecideRequest, DecisionReply, parse_message, payload_length
with LocalClient.connect(sys.argv[1], timeout=10) as c:
    r = c.decide(DecideRequest(sys.argv[2], b"true", sys.argv[3], sys.argv[4]))
print(r.reason.code, r.message)
"""


def test_a_user_cannot_claim_another_account(local: Local, gktest_python: tuple[int, str]) -> None:
    uid, python = gktest_python
    bundle = local.gate.permit("true", KEY, "root")
    outcomes = []
    for claimed in ("root", "gktest"):
        proc = subprocess.run(
            [python, "-I", "-c", CLAIM, str(local.socket), claimed, KEY, bundle],
            user=uid,
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
        outcomes.append(proc.stdout.strip())
    # Claiming root is refused by the agent itself (the kernel says the peer is gktest) ...
    assert outcomes[0] == f"wrong-account gk: refused: uid {uid} (gktest) may not ask for account 'root'"
    # ... while the honest claim reaches the gate, which refuses a bundle made out for root.
    assert outcomes[1] == "wrong-account gk: refused: wrong account"
    # Only the honest claim reached the gate, and it was for the peer's own account.
    assert [r.account for r in local.gate.requests] == ["gktest"]


def test_gk_exec_as_the_user_asks_for_its_own_account(local: Local, gktest_python: tuple[int, str]) -> None:
    uid, python = gktest_python
    out = local.dir / "whoami.out"
    local.dir.chmod(0o777)
    try:
        command = f"id -un > {out}"
        env = local.env(command, local.gate.permit(command, KEY, "gktest"))
        proc = local.run(env, python=python, user=uid)
    finally:
        local.dir.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == "gktest\n"
    assert local.gate.requests[0].account == "gktest"


# -- the standalone runner with the real gate ----------------------------------------------------


def test_standalone_runner_with_the_verifying_gate(
    gktest_python: tuple[int, str], log_server: LogServer
) -> None:
    """``python3 -m gatekeeper.agent.local --config agent.toml``: the gate ``gk agent serve`` builds,
    behind the local socket; gk exec as the test account runs a logged command once."""
    uid, python = gktest_python
    account = pwd.getpwuid(uid).pw_name
    base = Path(tempfile.mkdtemp(prefix="gk-runner-"))
    os.chmod(base, 0o755)
    runner = None
    try:
        init_agent_dir(base / "host", name="runner-host", log_url=log_server.url, log_keys=[log_server.vkey])
        key = base / "id"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        me = ident.from_file(key)
        auth = base / "auth"
        auth.write_text(f"publickey {me.public_key}\n")
        os.chmod(auth, 0o644)
        markers = base / "markers"
        markers.mkdir()
        os.chmod(markers, 0o1777)
        socket_path = base / "run" / "local.sock"
        config = base / "host" / "agent.toml"
        runner = subprocess.Popen(
            [sys.executable, "-m", "gatekeeper.agent.local", "--config", str(config),
             "--socket", str(socket_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert runner.stdout is not None
        assert runner.stdout.readline() == f"local mode listening on {socket_path}\n"

        command = f"touch {markers / 'ran'}"
        settings = LogSettings.from_strings(log_server.url, log_server.vkey, None, base / "client-state")
        action = build_action(me, ["runner-host"], account, command.encode(), window=300)
        bundle = submit_action(settings, me, action, warn=lambda _line: None).bundle
        env = {"SSH_USER_AUTH": str(auth), "SSH_ORIGINAL_COMMAND": command, "GK_BUNDLE": bundle}
        argv = [python, "-I", "-m", "gatekeeper.execgate", "--socket", str(socket_path)]
        first = subprocess.run(argv, env=env, user=uid, cwd="/", capture_output=True, timeout=60)
        assert first.returncode == 0, first.stderr
        assert (markers / "ran").exists()
        (markers / "ran").unlink()
        again = subprocess.run(argv, env=env, user=uid, cwd="/", capture_output=True, timeout=60)
        assert again.returncode == Reason.REPLAY.exit_status
        assert not (markers / "ran").exists()

        os.kill(runner.pid, signal.SIGTERM)
        assert runner.wait(timeout=30) == 0
        assert not socket_path.exists()
        journal = read_journal(base / "host" / "state" / "journal.jsonl")
        events = [(r["event"], r["frontend"], r["reason"]) for r in journal]
        assert events == [
            ("allowed", "exec", "allowed"),
            ("exit", "exec", "allowed"),
            ("refused", "exec", "replay"),
        ]
    finally:
        if runner is not None:
            if runner.poll() is None:
                os.kill(runner.pid, signal.SIGKILL)
                runner.wait()
            assert runner.stdout is not None
            runner.stdout.close()
        shutil.rmtree(base, ignore_errors=True)


def test_gk_exec_subcommand_and_bad_arguments(local: Local) -> None:
    env = local.env(None)
    proc = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "exec", "--socket", str(local.socket)],
        env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=60,
    )
    assert proc.returncode == Reason.NOT_EXEC.exit_status
    assert proc.stderr == b"gk: refused: interactive logins are not allowed; run a logged command\n"
    for bad in (["--sock", "x"], ["--socket"], ["--timeout", "soon"], ["--timeout", "0"]):
        proc = subprocess.run(
            [sys.executable, "-I", "-m", "gatekeeper.execgate", *bad],
            env=local.env("true"), capture_output=True, stdin=subprocess.DEVNULL, timeout=60,
        )
        assert proc.returncode == Reason.INTERNAL.exit_status, bad
        assert proc.stderr.startswith(b"gk: refused: ") and b"ForceCommand" in proc.stderr
    assert local.gate.requests == []


def test_oversized_command_or_bundle_is_refused_here(
    local: Local, capsys: pytest.CaptureFixture[str]
) -> None:
    """Linux caps one environment string at 128 KiB, so sshd cannot even pass more; gk exec
    refuses at the protocol's field limit on its own (in process: no exec limit applies)."""
    big = b"x" * (128 * 1024 + 1)
    base = {k.encode(): v.encode() for k, v in local.env("true").items()}
    argv = ["--socket", str(local.socket)]
    assert program.run(argv, base | {b"SSH_ORIGINAL_COMMAND": big}) == Reason.COMMAND_MISMATCH.exit_status
    assert program.run(argv, base | {b"GK_BUNDLE": big}) == Reason.MALFORMED_BUNDLE.exit_status
    assert capsys.readouterr().err.splitlines() == [
        "gk: refused: the command is longer than any action can be",
        "gk: refused: GK_BUNDLE is too large",
    ]
    assert local.gate.requests == []
