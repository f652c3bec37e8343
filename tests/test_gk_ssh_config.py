"""gk ssh: destination parsing, ssh_config resolution and known_hosts matching (no network)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from gatekeeper.client import knownhosts
from gatekeeper.client.sshclient import Destination, Resolver, parse_destination
from gatekeeper.errors import ConfigError


def blob(key_type: str, payload: bytes) -> bytes:
    t = key_type.encode()
    return len(t).to_bytes(4, "big") + t + len(payload).to_bytes(4, "big") + payload


ED1 = blob("ssh-ed25519", b"\x01" * 32)
ED2 = blob("ssh-ed25519", b"\x02" * 32)
B1 = base64.b64encode(ED1).decode()
B2 = base64.b64encode(ED2).decode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("web", Destination(None, "web", None)),
        ("root@web", Destination("root", "web", None)),
        ("root@web:2222", Destination("root", "web", 2222)),
        ("web:22", Destination(None, "web", 22)),
        ("[::1]:2200", Destination(None, "::1", 2200)),
        ("u@[fe80::1]", Destination("u", "fe80::1", None)),
        ("::1", Destination(None, "::1", None)),
        ("a@b@host", Destination("a@b", "host", None)),
    ],
)
def test_parse_destination(text: str, expected: Destination) -> None:
    assert parse_destination(text) == expected


@pytest.mark.parametrize(
    "text", ["", "@web", "web:0", "web:65536", "web:x", "[::1", "[::1]x", "-oProxyCommand=x"]
)
def test_parse_destination_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_destination(text)


def test_resolver_honours_ssh_config(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.write_text(
        "Host web\n  HostName web-01.example\n  User deploy\n  Port 2222\n  IdentityFile ~/.ssh/id_web\n"
        "  ProxyJump bastion\n  UserKnownHostsFile /tmp/kh1 /tmp/kh2\n"
        "Host lax\n  StrictHostKeyChecking accept-new\n  HashKnownHosts yes\n  ConnectTimeout 3\n"
    )
    r = Resolver([cfg])
    spec = r.resolve("web")
    assert (spec.alias, spec.hostname, spec.port, spec.user) == ("web", "web-01.example", 2222, "deploy")
    assert spec.identity_files == (Path.home() / ".ssh" / "id_web",)
    assert spec.proxy_jump == "bastion"
    assert spec.known_hosts_files[:2] == (Path("/tmp/kh1"), Path("/tmp/kh2"))
    assert spec.strict is True
    assert spec.key_name == "[web-01.example]:2222"
    # command-line values win
    spec = r.resolve("root@web:22", identity=Path("/k"))
    assert (spec.user, spec.port, spec.identity_files[0]) == ("root", 22, Path("/k"))
    assert spec.key_name == "web-01.example"
    assert r.resolve("web", user="x", port=2).user == "x"
    lax = r.resolve("lax")
    assert (lax.hostname, lax.strict, lax.hash_known_hosts, lax.connect_timeout) == ("lax", False, True, 3.0)


def test_resolver_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Resolver([tmp_path / "none"])


def test_known_hosts_plain_port_and_wildcards() -> None:
    kh = knownhosts.KnownHosts.parse(
        f"# comment\n\nweb,10.0.0.1 ssh-ed25519 {B1}\n[web]:2222 ssh-ed25519 {B2} c\n"
        f"*.example,!bad.example ssh-ed25519 {B2}\n"
    )
    assert kh.keys_for("web") == [ED1]
    assert kh.keys_for("WEB") == [ED1]
    assert kh.keys_for("10.0.0.1") == [ED1]
    assert kh.keys_for("[web]:2222") == [ED2]
    assert kh.keys_for("a.example") == [ED2]
    assert kh.keys_for("bad.example") == []
    assert kh.keys_for("other") == []
    assert kh.key_types_for("web") == ["ssh-ed25519"]


def test_known_hosts_hashed_names() -> None:
    salt = b"s" * 20
    digest = hmac.new(salt, b"[web]:2222", hashlib.sha1).digest()
    line = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()} ssh-ed25519 {B1}"
    kh = knownhosts.KnownHosts.parse(line)
    assert kh.keys_for("[web]:2222") == [ED1]
    assert kh.keys_for("web") == []


def test_known_hosts_revoked_beats_listed() -> None:
    kh = knownhosts.KnownHosts.parse(f"web ssh-ed25519 {B1}\n@revoked * ssh-ed25519 {B1}\n")
    assert kh.keys_for("web") == []
    assert ED1 in kh.revoked()


def test_known_hosts_skips_malformed_lines() -> None:
    kh = knownhosts.KnownHosts.parse(
        f"web ssh-ed25519 !!!notbase64\nweb ssh-rsa {B1}\nweb\n@weird web ssh-ed25519 {B1}\n"
        f"@cert-authority * ssh-ed25519 {B1}\nweb ssh-ed25519 {B2}\n"
    )
    assert kh.keys_for("web") == [ED2]


def test_append_then_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "known_hosts"
    knownhosts.append_host_key(path, ["[h]:2200"], ED1)
    knownhosts.append_host_key(path, ["h2"], ED2, hashed=True)
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    kh = knownhosts.load([path, tmp_path / "missing"])
    assert kh.keys_for("[h]:2200") == [ED1]
    assert kh.keys_for("h2") == [ED2]
    assert "h2" not in path.read_text()


def test_fingerprint_matches_openssh_form() -> None:
    fp = knownhosts.fingerprint_blob(ED1)
    assert fp.startswith("SHA256:") and not fp.endswith("=") and len(fp) == 7 + 43
