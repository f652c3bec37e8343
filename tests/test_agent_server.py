"""The agent's SSH server with an asyncssh client: what an allowed command gets (exact bytes in and
out, exit status, signals, environment, account) and that a refused one never starts."""

from __future__ import annotations

import asyncio
import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import paramiko
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
from gatekeeper.agent.session import AgentSettings
from gatekeeper.gate import Decision, Reason
from gatekeeper.journal import read_journal

ME = pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture(scope="module")
def client_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture
def gate() -> OneCommandGate:
    return OneCommandGate()


@pytest.fixture
def agent(tmp_path: Path, gate: OneCommandGate, client_key: asyncssh.SSHKey) -> Iterator[AgentThread]:
    with AgentThread(tmp_path, gate, authorized=[client_key]) as a:
        yield a


def run(agent: AgentThread, key: asyncssh.SSHKey, command: str, *, account: str = ME,
        **kwargs: object) -> asyncssh.SSHCompletedProcess:
    async def go() -> asyncssh.SSHCompletedProcess:
        async with await agent.connect(account, [key]) as conn:
            return await conn.run(command, encoding=None, **kwargs)

    return asyncio.run(go())


def test_allowed_command_runs_and_returns_output_and_status(agent, gate, client_key) -> None:
    cmd = "echo hello; echo oops >&2; exit 3"
    gate.allow(client_key, ME, cmd, bundle="BUNDLE-1")
    result = run(agent, client_key, cmd, env={"GK_BUNDLE": "BUNDLE-1"})
    assert (result.stdout, result.stderr, result.exit_status) == (b"hello\n", b"oops\n", 3)
    [request] = gate.requests
    assert request.command == cmd.encode()
    assert request.auth_key == openssh_public(client_key)
    assert request.account == ME
    assert request.bundle == "BUNDLE-1"
    assert request.frontend == "agent"
    assert request.peer.startswith("127.0.0.1:")
    assert wait_until(lambda: gate.exits)  # journalled just after the client got the status
    assert [status for _, status in gate.exits] == [3]


def test_refused_command_never_starts(agent, gate, client_key, tmp_path) -> None:
    marker = tmp_path / "marker"
    gate.allow(client_key, ME, "true")
    result = run(agent, client_key, f"touch {marker}")
    assert result.exit_status == Reason.COMMAND_MISMATCH.exit_status
    assert result.stderr == b"gk: refused: the command differs from the logged one\n"
    assert result.stdout == b""
    assert not marker.exists()
    assert gate.exits == []


def test_no_bundle_is_refused_with_its_status(agent, gate, client_key, tmp_path) -> None:
    marker = tmp_path / "marker"
    gate.allow(client_key, ME, f"touch {marker}", bundle="B")
    result = run(agent, client_key, f"touch {marker}")
    assert result.exit_status == Reason.NO_BUNDLE.exit_status
    assert gate.requests[0].bundle is None
    assert not marker.exists()


def test_command_bytes_reach_the_gate_exactly(agent, gate, client_key) -> None:
    cmd = "printf '%s|' \"a  b\" 'é\tz'  ;  true"
    gate.allow(client_key, ME, cmd)
    result = run(agent, client_key, cmd)
    assert gate.requests[0].command == cmd.encode("utf-8")
    assert result.stdout == "a  b|é\tz|".encode()


def test_binary_output_is_intact(agent, gate, client_key, tmp_path) -> None:
    blob = tmp_path / "blob"
    data = bytes(range(256)) * 64 + b"\r\n\x00\xff"
    blob.write_bytes(data)
    gate.allow(client_key, ME, f"cat {blob}")
    result = run(agent, client_key, f"cat {blob}")
    assert result.stdout == data
    assert result.exit_status == 0


def test_large_output_and_stdin_are_intact(agent, gate, client_key) -> None:
    data = os.urandom(1 << 20)
    gate.allow(client_key, ME, "cat")
    result = run(agent, client_key, "cat", input=data)
    assert len(result.stdout) == len(data)
    assert result.stdout == data
    assert result.exit_status == 0


def test_stderr_and_stdout_complete_before_exit_status(agent, gate, client_key, tmp_path) -> None:
    blob = tmp_path / "blob"
    data = os.urandom(300_000)
    blob.write_bytes(data)
    cmd = f"cat {blob}; head -c 70000 {blob} >&2; echo last >&2; exit 5"
    gate.allow(client_key, ME, cmd)
    for _ in range(5):  # the ordering bug FIELD-NOTES describes was intermittent
        result = run(agent, client_key, cmd)
        assert result.exit_status == 5
        assert result.stdout == data
        assert result.stderr == data[:70000] + b"last\n"


def test_exit_signal_is_reported(agent, gate, client_key) -> None:
    gate.allow(client_key, ME, "kill -KILL $$")
    result = run(agent, client_key, "kill -KILL $$")
    assert result.exit_signal is not None
    assert result.exit_signal[0] == "KILL"
    assert wait_until(lambda: gate.exits)
    assert gate.exits[0][1] is None


def test_client_signal_is_forwarded(agent, gate, client_key) -> None:
    cmd = "trap 'echo got-usr1; exit 7' USR1; echo ready; while :; do sleep 0.05; done"
    gate.allow(client_key, ME, cmd)

    async def go() -> tuple[bytes, int | None]:
        async with await agent.connect(ME, [client_key]) as conn:
            proc = await conn.create_process(cmd, encoding=None)
            assert await proc.stdout.readline() == b"ready\n"
            proc.send_signal("USR1")
            rest = await proc.stdout.read()
            await proc.wait()
            return rest, proc.exit_status

    assert asyncio.run(go()) == (b"got-usr1\n", 7)


@pytest.mark.parametrize("ignore_term", [False, True])
def test_client_disconnect_kills_the_child(agent, gate, client_key, ignore_term) -> None:
    prefix = "trap '' TERM; " if ignore_term else ""
    cmd = prefix + "echo $$; while :; do sleep 0.05; done"
    gate.allow(client_key, ME, cmd)

    async def go() -> int:
        conn = await agent.connect(ME, [client_key])
        proc = await conn.create_process(cmd, encoding=None)
        pid = int(await proc.stdout.readline())
        conn.abort()  # the client vanishes
        await conn.wait_closed()
        return pid

    pid = asyncio.run(go())
    assert wait_until(lambda: not pid_exists(pid)), f"child {pid} survived the disconnect"
    assert wait_until(lambda: len(gate.exits) == 1)
    assert gate.exits[0][1] is None


def test_child_environment_is_the_allow_list(agent, gate, client_key) -> None:
    gate.allow(client_key, ME, "env", bundle="B")
    env = {"GK_BUNDLE": "B", "LD_PRELOAD": "/tmp/evil.so", "BASH_ENV": "/tmp/evil.sh", "PATH": "/evil",
           "LANG": "xx", "LC_ALL": "C", "ENV": "/tmp/evil.sh"}
    result = run(agent, client_key, "env", env=env)
    assert result.exit_status == 0, result.stderr
    child = dict(line.split("=", 1) for line in result.stdout.decode().splitlines())
    home = pwd.getpwnam(ME).pw_dir
    assert child.pop("SSH_CONNECTION").startswith("127.0.0.1 ")
    assert child.pop("PWD", None) in (None, home if os.path.isdir(home) else "/")
    assert child == {
        "PATH": CHILD_PATH,
        "HOME": home,
        "USER": ME,
        "LOGNAME": ME,
        "SHELL": "/bin/sh",
        "LANG": "C.UTF-8",
        "GK_LOG_INDEX": str(gate.index),
    }


def test_gate_timeout_refuses(tmp_path, client_key) -> None:
    gate = OneCommandGate(delay=5)
    marker = tmp_path / "marker"
    gate.allow(client_key, ME, f"touch {marker}")
    settings = AgentSettings(decision_timeout=0.2)
    with AgentThread(tmp_path, gate, authorized=[client_key], settings=settings) as agent:
        result = run(agent, client_key, f"touch {marker}")
        assert result.exit_status == Reason.LOG_UNAVAILABLE.exit_status
        assert b"did not finish within 0.2 s" in result.stderr
        [record] = list(read_journal(agent.journal_path))
        assert record["reason"] == "log-unavailable"
    assert not marker.exists()


def test_broken_gate_refuses(tmp_path, client_key) -> None:
    gate = OneCommandGate(fail=True)
    marker = tmp_path / "marker"
    gate.allow(client_key, ME, f"touch {marker}")
    with AgentThread(tmp_path, gate, authorized=[client_key]) as agent:
        result = run(agent, client_key, f"touch {marker}")
    assert result.exit_status == Reason.INTERNAL.exit_status
    assert result.stderr == b"gk: refused: internal error during verification\n"
    assert not marker.exists()


def test_unknown_account_is_refused_before_the_gate(agent, gate, client_key, tmp_path) -> None:
    marker = tmp_path / "marker"
    gate.allow(client_key, "gk-no-such-user", f"touch {marker}")
    result = run(agent, client_key, f"touch {marker}", account="gk-no-such-user")
    assert result.exit_status == Reason.UNKNOWN_ACCOUNT.exit_status
    assert b"no account 'gk-no-such-user'" in result.stderr
    assert gate.requests == []  # no nonce is spent on a command that cannot run
    assert not marker.exists()
    [record] = list(read_journal(agent.journal_path))
    assert record["reason"] == "unknown-account"
    assert record["command"] == f"touch {marker}"


@pytest.mark.skipif(os.geteuid() != 0, reason="switching accounts needs root")
def test_runs_as_the_requested_account_when_root(agent, gate, client_key) -> None:
    nobody = pwd.getpwnam("nobody")
    gate.allow(client_key, "nobody", "id -u; id -g; pwd")
    result = run(agent, client_key, "id -u; id -g; pwd", account="nobody")
    assert result.exit_status == 0, result.stderr
    cwd = nobody.pw_dir if os.path.isdir(nobody.pw_dir) else "/"
    assert result.stdout.decode().split() == [str(nobody.pw_uid), str(nobody.pw_gid), cwd]


def test_non_root_agent_runs_only_its_own_account(tmp_path, gate, client_key) -> None:
    marker = tmp_path / "marker"
    gate.allow(client_key, "root", f"touch {marker}")
    settings = AgentSettings(agent_uid=pwd.getpwnam("nobody").pw_uid)
    with AgentThread(tmp_path, gate, authorized=[client_key], settings=settings) as agent:
        result = run(agent, client_key, f"touch {marker}", account="root")
    assert result.exit_status == Reason.UNKNOWN_ACCOUNT.exit_status
    assert b"can only run commands as 'nobody'" in result.stderr
    assert gate.requests == []
    assert not marker.exists()


def test_several_sessions_on_one_connection(agent, gate, client_key) -> None:
    gate.allow(client_key, ME, "echo one")

    async def go() -> list[tuple[bytes, int | None]]:
        async with await agent.connect(ME, [client_key]) as conn:
            results = await asyncio.gather(*(conn.run("echo one", encoding=None) for _ in range(3)))
            bad = await conn.run("echo two", encoding=None)
            return [(r.stdout, r.exit_status) for r in (*results, bad)]

    assert asyncio.run(go()) == [(b"one\n", 0)] * 3 + [(b"", Reason.COMMAND_MISMATCH.exit_status)]


def test_shutdown_terminates_and_reaps_running_commands(tmp_path, gate, client_key) -> None:
    cmd = "trap '' TERM; echo $$; while :; do sleep 0.05; done"
    gate.allow(client_key, ME, cmd)
    path = write_private_key(client_key, tmp_path / "id")
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        with AgentThread(tmp_path, gate, authorized=[client_key]) as agent:
            client.connect("127.0.0.1", agent.port, username=ME, key_filename=str(path),
                           look_for_keys=False, allow_agent=False, timeout=10)
            _, out, _ = client.exec_command(cmd)
            pid = int(out.readline())
            assert pid_exists(pid)
        # leaving the block closed the agent: the command ignored SIGTERM and got SIGKILL
        assert not pid_exists(pid)
        assert gate.exits[0][1] is None
    finally:
        client.close()


def test_refusal_message_is_one_printable_line(tmp_path, client_key) -> None:
    class ChattyGate(OneCommandGate):
        async def decide(self, request):  # type: ignore[no-untyped-def]
            return Decision(Reason.POLICY, "gk: refused: two\nlines and \x1b[2J escape")

    with AgentThread(tmp_path, ChattyGate(), authorized=[client_key]) as agent:
        result = run(agent, client_key, "true")
    assert result.exit_status == Reason.POLICY.exit_status
    assert result.stderr == b"gk: refused: two lines and ?[2J escape\n"
