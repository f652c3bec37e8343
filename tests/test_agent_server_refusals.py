"""Everything but a plain exec is refused, and nothing runs: shells, PTYs, subsystems (sftp), TCP and
Unix-socket forwarding in both directions, agent and X11 forwarding. In each test the gate *would*
allow the command (so a refusal can only come from the SSH front end) and a marker file proves that
it never ran. OpenSSH's own client is exercised in test_agent_server_openssh.py."""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import paramiko
import pytest
from agent_fixtures import AgentThread, OneCommandGate, write_private_key
from conftest import free_port

from gatekeeper.gate import Reason
from gatekeeper.journal import read_journal

ME = pwd.getpwuid(os.geteuid()).pw_name
NOT_EXEC = Reason.NOT_EXEC.exit_status


@pytest.fixture(scope="module")
def client_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "marker"


@pytest.fixture
def gate(client_key: asyncssh.SSHKey, marker: Path) -> OneCommandGate:
    g = OneCommandGate()
    g.allow(client_key, ME, f"touch {marker}")
    return g


@pytest.fixture
def agent(tmp_path: Path, gate: OneCommandGate, client_key: asyncssh.SSHKey) -> Iterator[AgentThread]:
    with AgentThread(tmp_path, gate, authorized=[client_key]) as a:
        yield a


@pytest.fixture
def paramiko_transport(agent: AgentThread, client_key: asyncssh.SSHKey) -> Iterator[paramiko.Transport]:
    path = write_private_key(client_key, agent.dir / "id_paramiko")
    sock = socket.create_connection(("127.0.0.1", agent.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=10)
        transport.auth_publickey(ME, paramiko.Ed25519Key.from_private_key_file(str(path)))
        yield transport
    finally:
        transport.close()


def _assert_nothing_ran(gate: OneCommandGate, marker: Path) -> None:
    assert gate.requests == []  # the gate was never even asked
    assert gate.exits == []
    assert not marker.exists()


def test_the_allowed_command_does_run(agent, gate, client_key, marker) -> None:
    """Control: the fixture gate allows the marker command, so only the front end refuses below."""

    async def go() -> int | None:
        async with await agent.connect(ME, [client_key]) as conn:
            return (await conn.run(f"touch {marker}")).exit_status

    assert asyncio.run(go()) == 0
    assert marker.exists()


def test_shell_request_is_refused(agent, gate, client_key, marker) -> None:
    async def go() -> tuple[int | None, bytes]:
        async with await agent.connect(ME, [client_key]) as conn:
            proc = await conn.create_process(encoding=None)  # no command: a shell
            proc.stdin.write(f"touch {marker}\n".encode())
            proc.stdin.write_eof()
            err = await proc.stderr.read()
            await proc.wait()
            return proc.exit_status, err

    status, err = asyncio.run(go())
    assert status == NOT_EXEC
    assert err.startswith(b"gk: refused: an interactive shell requested;")
    assert err.count(b"\n") == 1
    _assert_nothing_ran(gate, marker)
    [record] = list(read_journal(agent.journal_path))
    assert (record["reason"], record["event"], record["exit_status"]) == ("not-exec", "refused", NOT_EXEC)


def test_pty_request_is_refused(agent, gate, client_key, marker) -> None:
    async def go() -> None:
        async with await agent.connect(ME, [client_key]) as conn:
            await conn.run(f"touch {marker}", term_type="xterm")

    with pytest.raises(asyncssh.ChannelOpenError, match="PTY request failed"):
        asyncio.run(go())
    _assert_nothing_ran(gate, marker)


def test_pty_request_then_exec_is_refused_paramiko(paramiko_transport, gate, marker) -> None:
    chan = paramiko_transport.open_session()
    with pytest.raises(paramiko.SSHException):
        chan.get_pty()
    with pytest.raises(paramiko.SSHException):
        chan.exec_command(f"touch {marker}")
    _assert_nothing_ran(gate, marker)


def test_sftp_subsystem_is_refused(agent, gate, client_key, marker) -> None:
    async def go() -> tuple[int | None, bytes]:
        async with await agent.connect(ME, [client_key]) as conn:
            with pytest.raises((asyncssh.SFTPError, asyncssh.ConnectionLost, asyncssh.ProcessError)):
                async with conn.start_sftp_client() as sftp:
                    await sftp.put(__file__, str(marker))
            result = await conn.run(subsystem="sftp", encoding=None)
            return result.exit_status, result.stderr

    status, err = asyncio.run(go())
    assert status == NOT_EXEC
    assert err.startswith(b"gk: refused: the 'sftp' subsystem requested;")
    _assert_nothing_ran(gate, marker)


def test_sftp_subsystem_is_refused_paramiko(paramiko_transport, gate, marker) -> None:
    with pytest.raises(paramiko.SSHException):
        sftp = paramiko.SFTPClient.from_transport(paramiko_transport)
        assert sftp is not None
        sftp.put(__file__, str(marker))
    _assert_nothing_ran(gate, marker)


@pytest.fixture
def tcp_target() -> Iterator[socket.socket]:
    """A listening socket that records whether anyone connected (nobody should)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.setblocking(False)
    yield srv
    srv.close()


def _accepted_nothing(srv: socket.socket) -> bool:
    try:
        conn, _ = srv.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


def test_local_port_forwarding_is_refused(agent, gate, client_key, marker, tcp_target) -> None:
    port = tcp_target.getsockname()[1]

    async def go() -> None:
        async with await agent.connect(ME, [client_key]) as conn:
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.open_connection("127.0.0.1", port)
            listener = await conn.forward_local_port("127.0.0.1", 0, "127.0.0.1", port)
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.get_port())
            assert await reader.read() == b""  # the forwarded channel was refused: closed at once
            writer.close()
            listener.close()

    asyncio.run(go())
    assert _accepted_nothing(tcp_target)
    _assert_nothing_ran(gate, marker)


def test_local_port_forwarding_is_refused_paramiko(paramiko_transport, gate, marker, tcp_target) -> None:
    port = tcp_target.getsockname()[1]
    with pytest.raises(paramiko.ChannelException):
        paramiko_transport.open_channel("direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 1))
    assert _accepted_nothing(tcp_target)
    _assert_nothing_ran(gate, marker)


def test_remote_port_forwarding_is_refused(agent, gate, client_key, marker, tcp_target) -> None:
    port = free_port()

    async def go() -> None:
        async with await agent.connect(ME, [client_key]) as conn:
            with pytest.raises(asyncssh.ChannelListenError):
                await conn.forward_remote_port("127.0.0.1", port, "127.0.0.1", tcp_target.getsockname()[1])

    asyncio.run(go())
    with pytest.raises(ConnectionRefusedError):  # nothing listens on the requested port
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert _accepted_nothing(tcp_target)
    _assert_nothing_ran(gate, marker)


def test_remote_port_forwarding_is_refused_paramiko(paramiko_transport, gate, marker) -> None:
    port = free_port()
    with pytest.raises(paramiko.SSHException):
        paramiko_transport.request_port_forward("127.0.0.1", port)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    _assert_nothing_ran(gate, marker)


def test_unix_socket_forwarding_is_refused_both_ways(agent, gate, client_key, marker, tmp_path) -> None:
    target = tmp_path / "target.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(target))
    srv.listen(1)
    srv.setblocking(False)
    remote = tmp_path / "remote.sock"

    async def go() -> None:
        async with await agent.connect(ME, [client_key]) as conn:
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.open_unix_connection(str(target))
            with pytest.raises(asyncssh.ChannelListenError):
                await conn.forward_remote_path(str(remote), str(target))

    try:
        asyncio.run(go())
        assert _accepted_nothing(srv)
    finally:
        srv.close()
    assert not remote.exists()
    _assert_nothing_ran(gate, marker)


def test_agent_forwarding_is_refused(agent, gate, client_key, marker, tmp_path) -> None:
    async def go() -> tuple[int | None, bytes]:
        async with await agent.connect(
            ME, [client_key], agent_forwarding=True, agent_path=str(tmp_path / "agent.sock")
        ) as conn:
            result = await conn.run(f"touch {marker}", encoding=None)
            return result.exit_status, result.stderr

    status, err = asyncio.run(go())
    assert status == NOT_EXEC
    assert err.startswith(b"gk: refused: agent forwarding requested;")
    _assert_nothing_ran(gate, marker)


def test_agent_forwarding_is_refused_paramiko(paramiko_transport, gate, marker) -> None:
    chan = paramiko_transport.open_session()
    chan.request_forward_agent(lambda _chan: None)
    chan.exec_command(f"touch {marker}")
    assert chan.recv_exit_status() == NOT_EXEC
    assert chan.recv_stderr(4096).startswith(b"gk: refused: agent forwarding requested;")
    _assert_nothing_ran(gate, marker)


def test_x11_forwarding_is_refused(agent, gate, client_key, marker) -> None:
    async def go() -> None:
        options = {"x11_forwarding": True, "x11_display": "127.0.0.1:9"}
        async with await agent.connect(ME, [client_key], **options) as conn:
            await conn.run(f"touch {marker}")

    with pytest.raises(asyncssh.ChannelOpenError, match="X11 forwarding request failed"):
        asyncio.run(go())
    _assert_nothing_ran(gate, marker)


def test_x11_forwarding_is_refused_paramiko(paramiko_transport, gate, marker) -> None:
    chan = paramiko_transport.open_session()
    with pytest.raises(paramiko.SSHException):
        chan.request_x11(auth_protocol="MIT-MAGIC-COOKIE-1", auth_cookie="00" * 16)
    with pytest.raises(paramiko.SSHException):
        chan.exec_command(f"touch {marker}")
    _assert_nothing_ran(gate, marker)
