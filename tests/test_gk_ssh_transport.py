"""gk ssh's SSH layer against a small asyncssh server on 127.0.0.1: host-key policy, authentication
with exactly the signing key, env + exact command bytes, byte-exact streams, exit statuses."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import paramiko
import pytest

from gatekeeper.client import knownhosts
from gatekeeper.client.sshclient import HostKeyChanged, HostKeyUnknown, Resolver, SSHError, connect

BINARY = bytes(range(256)) * 64


@pytest.fixture(autouse=True)
def _no_user_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@dataclass
class Seen:
    commands: list[bytes] = field(default_factory=list)
    envs: list[dict[str, str]] = field(default_factory=list)


class _Server(asyncssh.SSHServer):
    def __init__(self, user_key: asyncssh.SSHKey, conns: list[asyncssh.SSHServerConnection]) -> None:
        self._user_key = user_key
        self._conns = conns
        self._port = 0

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conns.append(conn)
        self._port = conn.get_extra_info("sockname")[1]

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
        return (dest_host, dest_port) == ("127.0.0.1", self._port)  # for the ProxyJump test only

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return bytes(key.public_data) == bytes(self._user_key.public_data)


def _handler(seen: Seen) -> object:
    async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
        raw = process.command or ""
        cmd = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
        seen.commands.append(cmd)
        seen.envs.append({str(k): str(v) for k, v in process.env.items()})
        if cmd == b"cat":
            while data := await process.stdin.read(65536):
                process.stdout.write(data)
            process.exit(0)
        elif cmd == b"bin":
            process.stdout.write(BINARY)
            process.stderr.write(b"to-stderr\n")
            process.exit(0)
        elif cmd == b"forever":
            try:
                while True:
                    process.stdout.write(b"y\n" * 32768)
                    await process.stdout.drain()
            except (asyncssh.Error, OSError, BrokenPipeError):
                return
        elif cmd.startswith(b"exit "):
            process.exit(int(cmd.split()[1]))
        else:
            process.stdout.write(b"ran:" + cmd + b"\n")
            process.exit(0)

    return handle


@dataclass
class Env:
    port: int
    host_key: asyncssh.SSHKey
    user_key_path: Path
    other_key_path: Path
    known_hosts: Path
    ssh_config: Path
    seen: Seen


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Env]:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    user_key = asyncssh.generate_private_key("ssh-ed25519")
    other_key = asyncssh.generate_private_key("ssh-ed25519")
    user_key_path = tmp_path / "id_user"
    user_key.write_private_key(str(user_key_path))
    other_key_path = tmp_path / "id_other"
    other_key.write_private_key(str(other_key_path))
    seen = Seen()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, object] = {}
    conns: list[asyncssh.SSHServerConnection] = []

    async def start() -> None:
        srv = await asyncssh.create_server(
            lambda: _Server(user_key, conns),
            "127.0.0.1",
            0,
            server_host_keys=[host_key],
            process_factory=_handler(seen),
            encoding=None,
        )
        holder["srv"] = srv
        holder["port"] = srv.sockets[0].getsockname()[1]
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    started.wait(10)
    port = int(holder["port"])  # type: ignore[call-overload]
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key('openssh').decode().strip()}\n")
    cfg = tmp_path / "ssh_config"
    cfg.write_text(
        f"Host testhost\n  HostName 127.0.0.1\n  Port {port}\n  UserKnownHostsFile {kh}\n"
        f"  GlobalKnownHostsFile /dev/null\n  IdentityFile {user_key_path}\n"
    )
    try:
        yield Env(port, host_key, user_key_path, other_key_path, kh, cfg, seen)
    finally:
        srv = holder["srv"]

        async def stop() -> None:
            srv.close()  # type: ignore[attr-defined]
            await srv.wait_closed()  # type: ignore[attr-defined]
            for conn in conns:
                conn.close()
                await conn.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def run(env: Env, command: bytes, stdin: bytes | None = None, bundle: str = "B") -> tuple[int, bytes, bytes]:
    spec = Resolver([env.ssh_config]).resolve("tester@testhost")
    key = paramiko.PKey.from_path(str(env.user_key_path))
    out, err = io.BytesIO(), io.BytesIO()
    with connect(spec, key) as conn:
        rc = conn.run(
            command, {"GK_BUNDLE": bundle}, None if stdin is None else io.BytesIO(stdin), out.write, err.write
        )
    return rc, out.getvalue(), err.getvalue()


def test_exact_command_bytes_and_bundle_env(server: Env) -> None:
    cmd = b"ls -l /tmp/my dir; echo '$HOME' \"x\""
    rc, out, _ = run(server, cmd, bundle="Zm9vYmFy")
    assert rc == 0
    assert server.seen.commands == [cmd]
    assert server.seen.envs[0]["GK_BUNDLE"] == "Zm9vYmFy"
    assert out == b"ran:" + cmd + b"\n"


def test_stdin_is_streamed_and_eof_propagated(server: Env) -> None:
    data = BINARY * 8
    rc, out, _ = run(server, b"cat", stdin=data)
    assert rc == 0
    assert out == data


def test_binary_output_and_stderr_intact(server: Env) -> None:
    rc, out, err = run(server, b"bin")
    assert (rc, out, err) == (0, BINARY, b"to-stderr\n")


@pytest.mark.parametrize("status", [1, 2, 219, 255])
def test_remote_exit_status(server: Env, status: int) -> None:
    assert run(server, b"exit %d" % status)[0] == status


def test_unknown_host_is_refused_with_fingerprint(server: Env) -> None:
    server.known_hosts.write_text("")
    with pytest.raises(HostKeyUnknown) as exc:
        run(server, b"true")
    fp = knownhosts.fingerprint_blob(bytes(server.host_key.public_data))
    assert fp in str(exc.value)
    assert "ssh-keyscan -p" in str(exc.value) and "--accept-new" in str(exc.value)
    assert exc.value.exit_code == 255
    assert server.seen.commands == []


def test_accept_new_records_the_key_then_it_is_known(server: Env) -> None:
    server.known_hosts.write_text("")
    spec = Resolver([server.ssh_config]).resolve("tester@testhost")
    key = paramiko.PKey.from_path(str(server.user_key_path))
    with connect(spec, key, accept_new=True) as conn:
        assert conn.run(b"x", {}, None, lambda b: None, lambda b: None) == 0
    assert f"[127.0.0.1]:{server.port} ssh-ed25519" in server.known_hosts.read_text()
    assert run(server, b"x")[0] == 0


def test_changed_host_key_is_refused_even_with_accept_new(server: Env) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
    server.known_hosts.write_text(f"[127.0.0.1]:{server.port} {other}")
    spec = Resolver([server.ssh_config]).resolve("tester@testhost")
    key = paramiko.PKey.from_path(str(server.user_key_path))
    with pytest.raises(HostKeyChanged, match="HOST KEY CHANGED"):
        connect(spec, key, accept_new=True)
    assert server.seen.commands == []


def test_only_the_signing_key_authenticates(server: Env) -> None:
    spec = Resolver([server.ssh_config]).resolve("tester@testhost")
    key = paramiko.PKey.from_path(str(server.other_key_path))
    with pytest.raises(SSHError, match="did not accept the signing key"):
        connect(spec, key)


def test_connection_refused_is_one_line(server: Env, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg2"
    cfg.write_text("Host dead\n  HostName 127.0.0.1\n  Port 1\n")
    spec = Resolver([cfg]).resolve("dead")
    with pytest.raises(SSHError, match="cannot connect to 127.0.0.1 port 1"):
        connect(spec, None)


def test_proxy_jump_through_the_same_server(server: Env, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg3"
    cfg.write_text(
        f"Host jumped\n  HostName 127.0.0.1\n  Port {server.port}\n  ProxyJump tester@testhost\n"
        f"  UserKnownHostsFile {server.known_hosts}\n" + server.ssh_config.read_text()
    )
    r = Resolver([cfg])
    spec = r.resolve("tester@jumped")
    key = paramiko.PKey.from_path(str(server.user_key_path))
    out = io.BytesIO()
    with connect(spec, key, resolver=r) as conn:
        assert conn.run(b"via-jump", {}, None, out.write, lambda b: None) == 0
    assert out.getvalue() == b"ran:via-jump\n"
    assert server.seen.commands == [b"via-jump"]


def test_closed_output_stops_the_remote_command(server: Env) -> None:
    spec = Resolver([server.ssh_config]).resolve("tester@testhost")
    key = paramiko.PKey.from_path(str(server.user_key_path))
    got: list[bytes] = []

    def sink(data: bytes) -> None:
        got.append(data)
        raise BrokenPipeError(32, "Broken pipe")

    with connect(spec, key) as conn:
        assert conn.run(b"forever", {}, None, sink, lambda b: None) == 141
    assert len(got) == 1
