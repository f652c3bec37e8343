"""SSHSIG: interop both ways with OpenSSH's ssh-keygen, ssh-agent signing, strict parsing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import subprocess
from pathlib import Path

import asyncssh
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keys import KEY_SPECS, Key, clean_env, keygen, ssh_agent, ssh_keygen_sign, ssh_keygen_verify

from gatekeeper import sshsig
from gatekeeper.errors import ActionFormatError, ConfigError, SignatureInvalid

NS = "action@gatekeeper"
MESSAGE = b"gatekeeper/action/v1\nkind exec\n"


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="module")
def all_keys(keydir: Path) -> dict[str, Key]:
    return {kind: keygen(keydir, kind) for kind in KEY_SPECS}


@pytest.fixture(scope="module")
def ed25519(all_keys: dict[str, Key]) -> Key:
    return all_keys["ed25519"]


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


@pytest.mark.parametrize("kind", list(KEY_SPECS))
def test_our_signature_verifies_with_ssh_keygen(all_keys: dict[str, Key], kind: str, tmp_path: Path) -> None:
    key = all_keys[kind]
    armored = sshsig.sign_file(MESSAGE, NS, key.path)
    proc = ssh_keygen_verify(key.public, NS, MESSAGE, armored, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert b"Good" in proc.stdout
    # and ssh-keygen refuses it for another message or namespace
    assert ssh_keygen_verify(key.public, NS, MESSAGE + b"x", armored, tmp_path).returncode != 0
    assert ssh_keygen_verify(key.public, "file", MESSAGE, armored, tmp_path).returncode != 0


@pytest.mark.parametrize("kind", list(KEY_SPECS))
def test_ssh_keygen_signature_verifies_with_us(all_keys: dict[str, Key], kind: str, tmp_path: Path) -> None:
    key = all_keys[kind]
    armored = ssh_keygen_sign(key, NS, MESSAGE, tmp_path)
    assert sshsig.verify(MESSAGE, armored, NS) == key.public_nocomment
    # byte-identical armor: ours is exactly ssh-keygen's format
    assert sshsig.armor(sshsig.dearmor(armored)) == armored
    with pytest.raises(SignatureInvalid, match="altered"):
        sshsig.verify(MESSAGE + b"\n", armored, NS)
    with pytest.raises(SignatureInvalid, match="namespace"):
        sshsig.verify(MESSAGE, armored, "git")


def test_ed25519_signature_is_deterministic_and_equals_ssh_keygen(ed25519: Key, tmp_path: Path) -> None:
    # Ed25519 is deterministic, so our blob must equal OpenSSH's bit for bit.
    assert sshsig.sign_file(MESSAGE, NS, ed25519.path) == ssh_keygen_sign(ed25519, NS, MESSAGE, tmp_path)


def test_rsa_signs_with_sha512(all_keys: dict[str, Key]) -> None:
    sig = sshsig.parse_signature(sshsig.dearmor(sshsig.sign_file(MESSAGE, NS, all_keys["rsa"].path)))
    assert sig.sig_alg == "rsa-sha2-512"
    assert sig.hash_alg == "sha512"


def test_sha1_rsa_signature_is_refused(all_keys: dict[str, Key]) -> None:
    key = asyncssh.read_private_key(str(all_keys["rsa"].path))
    raw = key.sign(sshsig.signed_data(MESSAGE, NS), b"ssh-rsa")
    blob = (
        b"SSHSIG"
        + struct.pack(">I", 1)
        + _string(key.public_data)
        + _string(NS.encode())
        + _string(b"")
        + _string(b"sha512")
        + _string(raw)
    )
    assert key.convert_to_public().verify(sshsig.signed_data(MESSAGE, NS), raw)  # it is a real signature
    with pytest.raises(SignatureInvalid, match="ssh-rsa"):
        sshsig.verify(MESSAGE, sshsig.armor(blob), NS)


def test_sha256_hash_is_accepted(ed25519: Key) -> None:
    key = asyncssh.read_private_key(str(ed25519.path))
    raw = key.sign(sshsig.signed_data(MESSAGE, NS, "sha256"), b"ssh-ed25519")
    blob = (
        b"SSHSIG"
        + struct.pack(">I", 1)
        + _string(key.public_data)
        + _string(NS.encode())
        + _string(b"")
        + _string(b"sha256")
        + _string(raw)
    )
    assert sshsig.verify(MESSAGE, sshsig.armor(blob), NS) == ed25519.public_nocomment


def test_passphrase_key(keydir: Path, tmp_path: Path) -> None:
    key = keygen(tmp_path, "ed25519", passphrase="correct horse")
    armored = sshsig.sign_file(MESSAGE, NS, key.path, passphrase="correct horse")
    assert ssh_keygen_verify(key.public, NS, MESSAGE, armored, tmp_path).returncode == 0
    with pytest.raises(ConfigError, match="encrypted"):
        sshsig.sign_file(MESSAGE, NS, key.path)
    with pytest.raises(ConfigError, match="wrong passphrase"):
        sshsig.sign_file(MESSAGE, NS, key.path, passphrase="battery staple")


def test_missing_or_bad_key_file(tmp_path: Path, ed25519: Key) -> None:
    with pytest.raises(ConfigError, match="cannot read key file"):
        sshsig.sign_file(MESSAGE, NS, tmp_path / "nope")
    with pytest.raises(ConfigError, match="cannot load key file"):
        sshsig.sign_file(MESSAGE, NS, Path(str(ed25519.path) + ".pub"))


def test_small_rsa_key_is_refused(tmp_path: Path) -> None:
    key = keygen(tmp_path, "rsa1024")
    with pytest.raises(ConfigError, match="1024 bits"):
        sshsig.sign_file(MESSAGE, NS, key.path)
    with pytest.raises(ActionFormatError, match="1024 bits"):
        sshsig.parse_public_key(key.public)


@pytest.mark.parametrize("kind", ["ed25519", "rsa", "ecdsa256"])
def test_agent_signature_verifies_with_ssh_keygen(
    all_keys: dict[str, Key], kind: str, tmp_path: Path
) -> None:
    key = all_keys[kind]
    other = all_keys["ecdsa384"]
    with ssh_agent(tmp_path, other, key) as sock:
        armored = asyncio.run(sshsig.sign_agent(MESSAGE, NS, public_key=key.public, agent_path=sock))
    proc = ssh_keygen_verify(key.public, NS, MESSAGE, armored, tmp_path)
    assert proc.returncode == 0, proc.stderr
    sig = sshsig.parse_signature(sshsig.dearmor(armored))
    assert sig.public_key.openssh() == key.public_nocomment
    if kind == "rsa":
        assert sig.sig_alg == "rsa-sha2-512"


def test_agent_default_key_and_env(
    all_keys: dict[str, Key], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = all_keys["ed25519"]
    with ssh_agent(tmp_path, key) as sock:
        monkeypatch.setenv("SSH_AUTH_SOCK", sock)
        armored = asyncio.run(sshsig.sign_agent(MESSAGE, NS))
        assert sshsig.verify(MESSAGE, armored, NS) == key.public_nocomment
        with pytest.raises(ConfigError, match="does not hold key"):
            asyncio.run(sshsig.sign_agent(MESSAGE, NS, public_key=all_keys["rsa"].public))


def test_agent_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ed25519: Key) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(ConfigError, match="SSH_AUTH_SOCK"):
        asyncio.run(sshsig.sign_agent(MESSAGE, NS))
    with pytest.raises(ConfigError, match="ssh-agent at"):
        asyncio.run(sshsig.sign_agent(MESSAGE, NS, agent_path=str(tmp_path / "no.sock")))
    with ssh_agent(tmp_path) as sock, pytest.raises(ConfigError, match="no supported key"):
        asyncio.run(sshsig.sign_agent(MESSAGE, NS, agent_path=sock))


def test_fingerprint_matches_ssh_keygen(all_keys: dict[str, Key]) -> None:
    for key in all_keys.values():
        out = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha256", "-f", str(key.path) + ".pub"],
            check=True,
            capture_output=True,
            text=True,
            env=clean_env(),
        ).stdout
        assert sshsig.fingerprint(key.public) == out.split()[1]


# -- strict parsing ---------------------------------------------------------------------------


def test_armor_must_be_exactly_ssh_keygens(ed25519: Key) -> None:
    armored = sshsig.sign_file(MESSAGE, NS, ed25519.path)
    blob = sshsig.dearmor(armored)
    b64 = base64.b64encode(blob)
    rewrapped = (
        b"-----BEGIN SSH SIGNATURE-----\n"
        + b"\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
        + b"\n-----END SSH SIGNATURE-----\n"
    )
    bad = {
        "64 columns": rewrapped,
        "no final newline": armored[:-1],
        "trailing bytes": armored + b"x",
        "CRLF": armored.replace(b"\n", b"\r\n"),
        "no header": armored[30:],
        "whitespace": armored.replace(b"\n", b" \n", 2),
    }
    for what, data in bad.items():
        with pytest.raises(ActionFormatError):
            sshsig.dearmor(data)
        with pytest.raises(SignatureInvalid):
            sshsig.verify(MESSAGE, data, NS)
        assert what


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_single_byte_change_is_refused(ed25519_sig: tuple[bytes, bytes], data: st.DataObject) -> None:
    blob, armored = ed25519_sig
    pos = data.draw(st.integers(0, len(blob) - 1))
    flip = data.draw(st.integers(1, 255))
    mutated = bytearray(blob)
    mutated[pos] ^= flip
    with pytest.raises(SignatureInvalid):
        sshsig.verify(MESSAGE, sshsig.armor(bytes(mutated)), NS)


@pytest.fixture(scope="module")
def ed25519_sig(ed25519: Key) -> tuple[bytes, bytes]:
    armored = sshsig.sign_file(MESSAGE, NS, ed25519.path)
    return sshsig.dearmor(armored), armored


def _blob(**over: bytes) -> bytes:
    parts = {
        "magic": b"SSHSIG",
        "version": struct.pack(">I", 1),
        "key": _string(_string(b"ssh-ed25519") + _string(bytes(32))),
        "ns": _string(NS.encode()),
        "reserved": _string(b""),
        "hash": _string(b"sha512"),
        "sig": _string(_string(b"ssh-ed25519") + _string(bytes(64))),
        "trailer": b"",
    }
    parts.update(over)
    return b"".join(parts.values())


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"magic": b"SSHSIX"}, "magic"),
        ({"version": struct.pack(">I", 2)}, "version 2"),
        ({"reserved": _string(b"x")}, "reserved"),
        ({"hash": _string(b"sha1")}, "sha1"),
        ({"ns": _string(b"")}, "empty namespace"),
        ({"trailer": b"\x00"}, "trailing"),
        ({"sig": _string(_string(b"ssh-rsa") + _string(bytes(64)))}, "not allowed"),
        ({"key": _string(_string(b"ssh-dss") + _string(bytes(32)))}, "unsupported key type"),
        ({"key": _string(_string(b"sk-ssh-ed25519@openssh.com") + _string(bytes(32)))}, "FIDO"),
        ({"key": _string(_string(b"ssh-ed25519") + _string(bytes(31)))}, "32 bytes"),
        ({"sig": b"\x00\x00\x01\x00"}, "truncated"),
    ],
)
def test_malformed_signature_blobs(over: dict[str, bytes], message: str) -> None:
    sshsig.parse_signature(_blob())  # the baseline parses
    with pytest.raises(ActionFormatError, match=message):
        sshsig.parse_signature(_blob(**over))


def test_all_zero_signature_does_not_verify() -> None:
    with pytest.raises(SignatureInvalid, match="does not verify|not a valid public key"):
        sshsig.verify(MESSAGE, sshsig.armor(_blob()), NS)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ssh-ed25519",
        "ssh-ed25519 not-base64!",
        "ssh-rsa " + base64.b64encode(_string(b"ssh-ed25519") + _string(bytes(32))).decode(),  # type mismatch
        "ssh-ed25519 " + base64.b64encode(_string(b"ssh-ed25519") + _string(bytes(32)) + b"x").decode(),
        "ecdsa-sha2-nistp256 "
        + base64.b64encode(
            _string(b"ecdsa-sha2-nistp256") + _string(b"nistp384") + _string(b"\x04" + bytes(64))
        ).decode(),
    ],
)
def test_malformed_public_keys(text: str) -> None:
    with pytest.raises(ActionFormatError):
        sshsig.parse_public_key(text)


def test_public_key_comment_is_dropped(ed25519: Key) -> None:
    pk = sshsig.parse_public_key(ed25519.public + " more words")
    assert pk.openssh() == ed25519.public_nocomment
    assert pk.fingerprint() == "SHA256:" + base64.b64encode(hashlib.sha256(pk.blob).digest()).decode().rstrip(
        "="
    )


@pytest.mark.parametrize("text", ["QR==", "QQ", "QQ==\n", " QQ==", "Q Q==", "QQ=="[:3] + "\u00e9"])
def test_base64_must_be_canonical(text: str) -> None:
    assert sshsig.b64decode_canonical("QQ==", "x") == b"A"
    with pytest.raises(ActionFormatError, match="base64"):
        sshsig.b64decode_canonical(text, "x")


@pytest.mark.parametrize("kind", ["ecdsa256", "rsa"])
def test_every_single_bit_flip_and_truncation_is_refused(all_keys: dict[str, Key], kind: str) -> None:
    """ECDSA and RSA signatures carry nested mpints: no corruption may escape as anything but
    SignatureInvalid (never a raw ValueError from a parser underneath)."""
    blob = sshsig.dearmor(sshsig.sign_file(MESSAGE, NS, all_keys[kind].path))
    for i in range(len(blob)):
        mutated = bytearray(blob)
        mutated[i] ^= 0x80 if i % 2 else 0x01
        with pytest.raises(SignatureInvalid):
            sshsig.verify(MESSAGE, sshsig.armor(bytes(mutated)), NS)
    for n in range(0, len(blob), 7):
        with pytest.raises(SignatureInvalid):
            sshsig.verify(MESSAGE, sshsig.armor(blob[:n]), NS)
