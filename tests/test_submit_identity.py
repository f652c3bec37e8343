"""The signing identity: key files (plain, encrypted, prompted) and a real ssh-agent; gk submit
--agent end to end against the in-test log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gatekeeper import sshsig
from gatekeeper.action import NAMESPACE, parse_entry, verify_entry
from gatekeeper.bundle import parse_bundle
from gatekeeper.client import identity as ident
from gatekeeper.errors import ConfigError
from tests.keys import keygen, ssh_agent
from tests.test_submit_fakelog import FakeLog, running


@pytest.fixture(autouse=True)
def _no_user_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def test_plain_key_file(tmp_path: Path) -> None:
    key = keygen(tmp_path, "ed25519")
    me = ident.from_file(key.path)
    assert me.public_key == key.public_nocomment
    sig = me.sign(b"hello")
    assert sshsig.verify(b"hello", sig, NAMESPACE) == key.public_nocomment
    assert me.paramiko_key().asbytes() == sshsig.parse_public_key(key.public).blob


@pytest.mark.parametrize("kind", ["ecdsa256", "rsa"])
def test_other_key_types(tmp_path: Path, kind: str) -> None:
    key = keygen(tmp_path, kind)
    me = ident.from_file(key.path)
    assert sshsig.verify(b"m", me.sign(b"m"), NAMESPACE) == key.public_nocomment


def test_encrypted_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = keygen(tmp_path, "ed25519", passphrase="correct horse")
    with pytest.raises(ConfigError, match="encrypted"):
        ident.from_file(key.path, prompt=False)
    with pytest.raises(ConfigError, match="wrong passphrase"):
        ident.from_file(key.path, passphrase="nope")
    asked: list[str] = []
    monkeypatch.setattr(ident.getpass, "getpass", lambda prompt: asked.append(prompt) or "correct horse")
    me = ident.from_file(key.path)
    assert len(asked) == 1 and str(key.path) in asked[0]
    assert sshsig.verify(b"x", me.sign(b"x"), NAMESPACE) == key.public_nocomment
    assert me.paramiko_key().asbytes() == sshsig.parse_public_key(key.public).blob


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read key file"):
        ident.from_file(tmp_path / "nope")


def test_agent_identity_signs_and_authenticates(tmp_path: Path) -> None:
    a = keygen(tmp_path, "ed25519", name="a")
    b = keygen(tmp_path, "ecdsa256", name="b")
    with ssh_agent(tmp_path, a, b) as sock:
        assert ident.agent_keys(sock) == [a.public_nocomment, b.public_nocomment]
        first = ident.from_agent(agent_path=sock)
        assert first.public_key == a.public_nocomment
        chosen = ident.from_agent(b.public, agent_path=sock)
        assert sshsig.verify(b"m", chosen.sign(b"m"), NAMESPACE) == b.public_nocomment
        try:
            assert chosen.paramiko_key().asbytes() == sshsig.parse_public_key(b.public).blob
        finally:
            chosen.close()
        assert "SSH_AUTH_SOCK" not in os.environ
        other = keygen(tmp_path, "ed25519", name="c")
        with pytest.raises(ConfigError, match="does not hold key"):
            ident.from_agent(other.public, agent_path=sock)


def test_default_identity_prefers_agent_copy_of_identity_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = keygen(tmp_path, "ed25519", name="a")
    b = keygen(tmp_path, "ed25519", name="b", passphrase="secret")
    with ssh_agent(tmp_path, a) as sock:
        monkeypatch.setenv("SSH_AUTH_SOCK", sock)
        # b is not in the agent: the file is used (and would prompt); a is: the agent is used
        me = ident.default_identity([a.path])
        assert me.key_file is None and me.public_key == a.public_nocomment
        monkeypatch.setattr(ident.getpass, "getpass", lambda prompt: "secret")
        me = ident.default_identity([tmp_path / "missing", b.path])
        assert me.key_file == b.path
        # nothing configured: the agent's first key
        assert ident.default_identity([]).public_key == a.public_nocomment


def test_no_identity_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="no signing key"):
        ident.default_identity([])


def test_cli_submit_with_agent(tmp_path: Path) -> None:
    key = keygen(tmp_path, "ed25519")
    with ssh_agent(tmp_path, key) as sock, running(FakeLog()) as log:
        env = {k: v for k, v in os.environ.items() if k != "GK_CONFIG"}
        env["SSH_AUTH_SOCK"] = sock
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "gatekeeper",
                "submit",
                "--log",
                log.url,
                "--log-key",
                log.vkey,
                "--state",
                str(tmp_path / "s"),
                "--agent",
                "--host",
                "web-01",
                "--account",
                "deploy",
                "--",
                "uptime",
            ],
            capture_output=True,
            env=env,
            timeout=60,
        )
    assert p.returncode == 0, p.stderr
    signed = verify_entry(parse_bundle(p.stdout.decode().strip()).entry)
    assert signed.action.signer == key.public_nocomment
    assert parse_entry(signed.body + b"\n" + signed.signature).action.command == b"uptime"
