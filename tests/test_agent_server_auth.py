"""Authentication on the agent: public keys and trusted-CA certificates only, the key that actually
authenticated is the one the gate sees, and authorized_keys options that the agent cannot honour
make a key unusable rather than silently unrestricted."""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
import time
from pathlib import Path

import asyncssh
import paramiko
import pytest
from agent_fixtures import AgentThread, OneCommandGate, openssh_public, write_private_key

from gatekeeper.agent.authkeys import KeyRing, match_from, parse_authorized_keys, parse_ca_keys

ME = pwd.getpwuid(os.geteuid()).pw_name


def _key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


def _public(key: asyncssh.SSHKey) -> str:
    return key.export_public_key("openssh").decode().strip()


def _run(agent: AgentThread, keys: list[object], account: str = ME, command: str = "true",
         **kwargs: object) -> int | None:
    async def go() -> int | None:
        async with await agent.connect(account, keys, **kwargs) as conn:
            return (await conn.run(command)).exit_status

    return asyncio.run(go())


def test_unknown_key_is_refused_at_authentication(tmp_path) -> None:
    known, stranger = _key(), _key()
    gate = OneCommandGate()
    gate.allow(stranger, ME, "true")
    with AgentThread(tmp_path, gate, authorized=[known]) as agent:
        with pytest.raises(asyncssh.PermissionDenied):
            _run(agent, [stranger])
    assert gate.requests == []


def test_password_and_keyboard_interactive_are_not_offered(tmp_path) -> None:
    gate = OneCommandGate()
    with AgentThread(tmp_path, gate, authorized=[_key()]) as agent:
        with pytest.raises(asyncssh.PermissionDenied):
            _run(agent, [], password="secret", password_auth=True, kbdint_auth=True)
        for attempt in ("none", "password", "interactive"):
            transport = paramiko.Transport(socket.create_connection(("127.0.0.1", agent.port)))
            try:
                transport.start_client(timeout=10)
                with pytest.raises(paramiko.BadAuthenticationType) as exc:
                    if attempt == "none":
                        transport.auth_none(ME)
                    elif attempt == "password":
                        transport.auth_password(ME, "secret")
                    else:
                        transport.auth_interactive(ME, lambda *_: ["secret"])
                assert exc.value.allowed_types == ["publickey"]
            finally:
                transport.close()
    assert gate.requests == []


def test_the_key_that_authenticated_is_recorded(tmp_path) -> None:
    first, second, stranger = _key(), _key(), _key()
    gate = OneCommandGate()
    with AgentThread(tmp_path, gate, authorized=[first, second]) as agent:
        _run(agent, [stranger, second, first])  # stranger fails, second succeeds, first is never tried
        _run(agent, [first, second])
    assert [r.auth_key for r in gate.requests] == [openssh_public(second), openssh_public(first)]


def test_authenticating_key_recorded_with_paramiko_probe_then_sign(tmp_path) -> None:
    """paramiko (like OpenSSH) may query a key without a signature before signing; the query alone
    must not set the identity, only the verified signature does."""
    key = _key()
    gate = OneCommandGate()
    gate.allow(key, ME, "echo ok")
    with AgentThread(tmp_path, gate, authorized=[key]) as agent:
        path = write_private_key(key, tmp_path / "id")
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            client.connect("127.0.0.1", agent.port, username=ME, key_filename=str(path),
                           look_for_keys=False, allow_agent=False, timeout=10)
            _, out, _ = client.exec_command("echo ok")
            assert out.read() == b"ok\n"
            assert out.channel.recv_exit_status() == 0
        finally:
            client.close()
    assert gate.requests[0].auth_key == openssh_public(key)


def _cert(ca: asyncssh.SSHKey, key: asyncssh.SSHKey, principals: list[str],
          **kwargs: object) -> asyncssh.SSHCertificate:
    return ca.generate_user_certificate(key, "alice@example", principals=principals, **kwargs)


def test_certificate_from_trusted_ca_is_accepted(tmp_path) -> None:
    ca, user = _key(), _key()
    gate = OneCommandGate()
    gate.allow(user, ME, "echo cert")
    with AgentThread(tmp_path, gate, cas=[ca]) as agent:
        status = _run(agent, [(user, _cert(ca, user, [ME, "other"]))], command="echo cert")
    assert status == 0
    [request] = gate.requests
    assert request.auth_key == openssh_public(user)  # the certified key, as actions are signed by it


@pytest.mark.parametrize(
    "case",
    ["other-ca", "wrong-principal", "no-principals", "expired", "not-yet-valid", "force-command",
     "source-address", "host-cert"],
)
def test_certificate_refused(tmp_path, case) -> None:
    ca, other_ca, user = _key(), _key(), _key()
    now = int(time.time())
    signer = other_ca if case == "other-ca" else ca
    kwargs: dict[str, object] = {}
    principals = [ME]
    if case == "wrong-principal":
        principals = ["somebody-else"]
    elif case == "no-principals":
        principals = []
    elif case == "expired":
        kwargs = {"valid_after": now - 7200, "valid_before": now - 3600}
    elif case == "not-yet-valid":
        kwargs = {"valid_after": now + 3600, "valid_before": now + 7200}
    elif case == "force-command":
        kwargs = {"force_command": "true"}
    elif case == "source-address":
        kwargs = {"source_address": ["192.0.2.0/24"]}
    if case == "host-cert":
        cert = ca.generate_host_certificate(user, "host", principals=principals)
    else:
        cert = _cert(signer, user, principals, **kwargs)
    gate = OneCommandGate()
    gate.allow(user, ME, "true")
    with AgentThread(tmp_path, gate, cas=[ca]) as agent:
        with pytest.raises(asyncssh.PermissionDenied):
            _run(agent, [(user, cert)])
    assert gate.requests == []


def test_plain_key_of_a_certificate_is_not_authorized_by_the_ca(tmp_path) -> None:
    ca, user = _key(), _key()
    with AgentThread(tmp_path, OneCommandGate(), cas=[ca]) as agent:
        with pytest.raises(asyncssh.PermissionDenied):
            _run(agent, [user])


def test_authorized_keys_changes_apply_to_new_connections(tmp_path) -> None:
    key = _key()
    gate = OneCommandGate()
    gate.allow(key, ME, "true")
    with AgentThread(tmp_path, gate, authorized=[key]) as agent:
        assert _run(agent, [key]) == 0
        agent.authorized_keys.write_text("# emptied\n")
        with pytest.raises(asyncssh.PermissionDenied):
            _run(agent, [key])


@pytest.mark.parametrize(
    ("options", "allowed"),
    [
        ("restrict,no-pty", True),
        ('from="127.0.0.0/8"', True),
        ('from="127.0.0.1,!10.*"', True),
        ('from="10.0.0.0/8"', False),
        ('from="*,!127.0.0.1"', False),
        ('command="true"', False),
        ('environment="A=b"', False),
        ("permitopen=\"127.0.0.1:22\"", False),
        ("cert-authority", False),
        ("no-touch-required", False),
    ],
)
def test_authorized_keys_options(tmp_path, options, allowed) -> None:
    key = _key()
    gate = OneCommandGate()
    gate.allow(key, ME, "true")
    with AgentThread(tmp_path, gate) as agent:
        agent.authorized_keys.write_text(f"{options} {_public(key)}\n")
        if allowed:
            assert _run(agent, [key]) == 0
        else:
            with pytest.raises(asyncssh.PermissionDenied):
                _run(agent, [key])


def test_parse_authorized_keys_reports_bad_lines() -> None:
    good, other = _key(), _key()
    text = "\n".join([
        "# comment",
        "",
        _public(good) + " alice@laptop",
        'command="uptime" ' + _public(other),
        "ssh-ed25519 not-base64!",
        'from="127.0.0.1 ' + _public(other),
        'restrict,from="10.0.0.1,10.0.0.2" ' + _public(other),
    ])
    keys, warnings = parse_authorized_keys(text)
    assert [(k.line, k.from_patterns) for k in keys] == [(3, ()), (7, ("10.0.0.1", "10.0.0.2"))]
    assert [w.split(":")[0] for w in warnings] == [
        "authorized_keys line 4", "authorized_keys line 5", "authorized_keys line 6",
    ]
    assert "'command' is not supported" in warnings[0]


def test_parse_ca_keys() -> None:
    ca = _key()
    keys, warnings = parse_ca_keys(f"# CAs\n{_public(ca)}\nnonsense\n")
    assert [k.public_data for k in keys] == [ca.public_data]
    assert warnings == ["trusted CA keys line 3: expected: key-type base64 [comment]; line ignored"]


@pytest.mark.parametrize(
    ("patterns", "address", "expected"),
    [
        (["127.0.0.1"], "127.0.0.1", True),
        (["127.0.0.*"], "127.0.0.9", True),
        (["10.0.0.0/8"], "127.0.0.1", False),
        (["*", "!127.0.0.1"], "127.0.0.1", False),
        (["::1"], "::1", True),
        (["127.0.0.1"], "::ffff:127.0.0.1", True),
        (["2001:db8::/32"], "2001:db8::5", True),
        (["bad/pattern"], "127.0.0.1", False),
        ([], "127.0.0.1", False),
        (["*"], "not-an-address", False),
    ],
)
def test_match_from(patterns, address, expected) -> None:
    assert match_from(patterns, address) is expected


def test_keyring_missing_file_authorizes_nobody(tmp_path: Path) -> None:
    messages: list[str] = []
    ring = KeyRing(tmp_path / "missing", warn=messages.append)
    assert ring.identify(ME, _key().public_data, "127.0.0.1") is None
    assert ring.key_count == 0
    assert "nobody is authorized" in messages[0]


def test_too_many_failed_keys_end_the_connection(tmp_path) -> None:
    good = _key()
    gate = OneCommandGate()
    gate.allow(good, ME, "true")
    with AgentThread(tmp_path, gate, authorized=[good]) as agent:
        assert _run(agent, [_key() for _ in range(5)] + [good]) == 0  # five failures are tolerated
        with pytest.raises((asyncssh.PermissionDenied, asyncssh.DisconnectError)):
            _run(agent, [_key() for _ in range(6)] + [good])  # the sixth failure disconnects
    assert len(gate.requests) == 1
