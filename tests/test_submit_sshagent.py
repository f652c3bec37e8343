"""The minimal ssh-agent client (gatekeeper/client/sshagent.py): against the real ``ssh-agent``, and
against a scripted fake that answers with refusals, malformed or oversized messages, or nothing."""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from keys import clean_env, keygen, ssh_agent

from gatekeeper import sshsig
from gatekeeper.client.sshagent import SSH_AGENT_RSA_SHA2_512, AgentClient
from gatekeeper.errors import ConfigError

NS = "action@gatekeeper"


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def test_real_agent_lists_and_signs(tmp_path: Path) -> None:
    ed, rsa = keygen(tmp_path, "ed25519"), keygen(tmp_path, "rsa")
    with ssh_agent(tmp_path, ed, rsa) as sock, AgentClient(sock) as agent:
        listed = agent.identities()
        blobs = [blob for blob, _comment in listed]
        assert blobs == [sshsig.parse_public_key(k.public).blob for k in (ed, rsa)]
        assert [comment for _, comment in listed] == ["ed25519@test", "rsa@test"]
        signature = agent.sign(listed[1][0], b"data", SSH_AGENT_RSA_SHA2_512)
        assert signature.startswith(_string(b"rsa-sha2-512"))


def test_agent_refuses_a_key_that_needs_confirmation(tmp_path: Path) -> None:
    """``ssh-add -c``: with no way to ask the user, the agent answers FAILURE: one clear line."""
    key = keygen(tmp_path, "ed25519")
    with ssh_agent(tmp_path) as sock:
        subprocess.run(["ssh-add", "-q", "-c", str(key.path)], check=True, capture_output=True,
                       env=clean_env(SSH_AUTH_SOCK=sock, SSH_ASKPASS="/bin/false", DISPLAY=""))
        with pytest.raises(ConfigError, match="refused to sign"):
            sshsig.sign_agent_sync(b"m", NS, key.public, sock)


@contextmanager
def fake_agent(
    tmp_path: Path, answer: Callable[[bytes], bytes | None], *, keep_open: bool = False
) -> Iterator[str]:
    """A Unix socket that answers a request with ``answer(request)``, sent raw (None: close the
    connection without answering), then closes the connection (or, with ``keep_open``, waits for
    the next request)."""
    path = str(tmp_path / "fake.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    server.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with conn:
                try:
                    while header := conn.recv(4):
                        length = struct.unpack(">I", header)[0]
                        request = b""
                        while len(request) < length:
                            request += conn.recv(length - len(request))
                        reply = answer(request)
                        if reply is None:
                            break
                        conn.sendall(reply)
                        if not keep_open:
                            break
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        server.close()
        thread.join(5)


def _msg(kind: int, body: bytes) -> bytes:
    return _string(bytes([kind]) + body)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (None, "closed the connection"),
        (_msg(5, b""), "unexpected answer type 5"),
        (_msg(12, struct.pack(">I", 2) + _string(b"k") + _string(b"c")), "malformed key list"),
        (_msg(12, struct.pack(">I", 0) + b"x"), "malformed key list (1 trailing bytes)"),
        (_msg(12, struct.pack(">I", 10**6)), "malformed key list"),
        (struct.pack(">I", 0), "malformed answer (length 0)"),
        (struct.pack(">I", 10**9), "malformed answer"),
        (struct.pack(">I", 10) + b"\x0c", "closed the connection"),
    ],
)
def test_malformed_key_lists(tmp_path: Path, reply: bytes | None, message: str) -> None:
    with fake_agent(tmp_path, lambda _req: reply) as sock, AgentClient(sock, timeout=5) as agent:
        with pytest.raises(ConfigError) as err:
            agent.identities()
    assert str(err.value).startswith(f"ssh-agent at {sock}: ")
    assert message in str(err.value)


def test_sign_request_and_malformed_sign_answers(tmp_path: Path) -> None:
    seen: list[bytes] = []

    def answer(request: bytes) -> bytes:
        seen.append(request)
        return _msg(14, _string(b"sig") + b"extra")

    with fake_agent(tmp_path, answer) as sock, AgentClient(sock, timeout=5) as agent:
        with pytest.raises(ConfigError, match="malformed signature answer"):
            agent.sign(b"KEY", b"DATA", 4)
    assert seen == [bytes([13]) + _string(b"KEY") + _string(b"DATA") + struct.pack(">I", 4)]
    other = tmp_path / "other"
    other.mkdir()
    with fake_agent(other, lambda _r: _msg(12, struct.pack(">I", 0))) as sock:
        with AgentClient(sock, timeout=5) as agent, pytest.raises(ConfigError, match="answer type 12"):
            agent.sign(b"KEY", b"DATA")


def test_a_silent_agent_times_out(tmp_path: Path) -> None:
    release = threading.Event()

    def hang(_request: bytes) -> None:
        release.wait(10)
        return None

    with fake_agent(tmp_path, hang) as sock:
        try:
            with AgentClient(sock, timeout=0.2) as agent, pytest.raises(ConfigError, match="no answer"):
                agent.identities()
        finally:
            release.set()


def test_no_agent_socket(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ssh-agent at .*no\.sock: No such file"):
        AgentClient(str(tmp_path / "no.sock"))


def test_sign_agent_sync_verifies_what_the_agent_returns(tmp_path: Path) -> None:
    """An agent that lists a real key but answers with a signature by no one: SignatureInvalid."""
    key = keygen(tmp_path, "ed25519")
    blob = sshsig.parse_public_key(key.public).blob

    def answer(request: bytes) -> bytes:
        if request[0] == 11:
            return _msg(12, struct.pack(">I", 1) + _string(blob) + _string(b"c"))
        return _msg(14, _string(_string(b"ssh-ed25519") + _string(b"\x00" * 64)))

    with fake_agent(tmp_path, answer, keep_open=True) as sock, pytest.raises(sshsig.SignatureInvalid):
        sshsig.sign_agent_sync(b"m", NS, None, sock)
