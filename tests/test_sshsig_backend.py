"""sshsig without asyncssh: verification and signing are done with ``cryptography`` directly. These
tests hold that backend to asyncssh's answers (the implementation it replaced), byte for byte, on
valid signatures and on mutated ones, and cover the key file formats ssh-keygen writes."""

from __future__ import annotations

import struct
from pathlib import Path

import asyncssh
import pytest
from asyncssh.public_key import decode_ssh_public_key
from hypothesis import given, settings
from hypothesis import strategies as st
from keys import KEY_SPECS, Key, clean_env, keygen, ssh_keygen_verify

from gatekeeper import sshsig
from gatekeeper.errors import ConfigError, SignatureInvalid

NS = "action@gatekeeper"
MESSAGE = b"gatekeeper/action/v1\nkind exec\n"


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


@pytest.fixture(scope="module")
def all_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    directory = tmp_path_factory.mktemp("backend-keys")
    return {kind: keygen(directory, kind) for kind in KEY_SPECS}


def reference(message: bytes, armored: bytes, namespace: str) -> bool:
    """asyncssh's verdict on the same SSHSIG (what sshsig.verify used to compute)."""
    try:
        sig = sshsig.parse_signature(sshsig.dearmor(armored))
    except Exception:
        return False
    if sig.namespace != namespace:
        return False
    try:
        key = decode_ssh_public_key(sig.public_key.blob)
    except (asyncssh.KeyImportError, ValueError):
        return False
    try:
        return bool(key.verify(sshsig.signed_data(message, namespace, sig.hash_alg), sig.signature))
    except (ValueError, TypeError):
        return False


def ours(message: bytes, armored: bytes, namespace: str) -> bool:
    try:
        sshsig.verify(message, armored, namespace)
    except SignatureInvalid:
        return False
    return True


def rebuild(sig: sshsig.Signature, value: bytes) -> bytes:
    """The same SSHSIG with another signature value (the algorithm kept)."""
    signature = _string(sig.sig_alg.encode()) + _string(value)
    blob = (b"SSHSIG" + struct.pack(">I", 1) + _string(sig.public_key.blob) + _string(sig.namespace.encode())
            + _string(b"") + _string(sig.hash_alg.encode()) + _string(signature))
    return sshsig.armor(blob)


def value_of(sig: sshsig.Signature) -> bytes:
    n = struct.unpack(">I", sig.signature[:4])[0]
    rest = sig.signature[4 + n :]
    return rest[4:]


@pytest.mark.parametrize("kind", list(KEY_SPECS))
def test_signing_matches_asyncssh_verification(all_keys: dict[str, Key], kind: str, tmp_path: Path) -> None:
    armored = sshsig.sign_file(MESSAGE, NS, all_keys[kind].path)
    assert ours(MESSAGE, armored, NS) and reference(MESSAGE, armored, NS)
    assert ssh_keygen_verify(all_keys[kind].public, NS, MESSAGE, armored, tmp_path).returncode == 0
    assert not ours(MESSAGE + b"!", armored, NS) and not reference(MESSAGE + b"!", armored, NS)


@pytest.mark.parametrize("kind", ["ecdsa256", "ecdsa384", "ecdsa521"])
def test_ecdsa_value_encodings_agree_with_asyncssh(all_keys: dict[str, Key], kind: str) -> None:
    """ECDSA values are ``mpint(r) ‖ mpint(s)``: a redundant leading zero is the same number (both
    accept), trailing bytes, a negative or zero component or a missing one are refused (both)."""
    sig = sshsig.parse_signature(sshsig.dearmor(sshsig.sign_file(MESSAGE, NS, all_keys[kind].path)))
    value = value_of(sig)
    n = struct.unpack(">I", value[:4])[0]
    r, s = value[4 : 4 + n], value[8 + n :]
    variants = {
        "leading-zero": _string(b"\x00" + r) + _string(s),
        "trailing": value + b"\x00",
        "negative": _string(bytes([r[0] | 0x80]) + r[1:]) + _string(s),
        "zero": _string(b"") + _string(s),
        "missing-s": _string(r),
        "swapped": _string(s) + _string(r),
    }
    for name, variant in variants.items():
        armored = rebuild(sig, variant)
        assert ours(MESSAGE, armored, NS) == reference(MESSAGE, armored, NS), name
    assert ours(MESSAGE, rebuild(sig, variants["leading-zero"]), NS)
    assert not ours(MESSAGE, rebuild(sig, variants["trailing"]), NS)


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_short_or_long_values_agree_with_asyncssh(all_keys: dict[str, Key], kind: str) -> None:
    sig = sshsig.parse_signature(sshsig.dearmor(sshsig.sign_file(MESSAGE, NS, all_keys[kind].path)))
    value = value_of(sig)
    for variant in (value[:-1], value + b"\x00", b"\x00" + value, value[1:], b"\x00" * len(value)):
        armored = rebuild(sig, variant)
        assert ours(MESSAGE, armored, NS) is False
        assert reference(MESSAGE, armored, NS) is False


@pytest.fixture(scope="module")
def signatures(all_keys: dict[str, Key]) -> dict[str, sshsig.Signature]:
    """One signature per key type, made once (ECDSA signatures are randomised)."""
    return {
        kind: sshsig.parse_signature(sshsig.dearmor(sshsig.sign_file(MESSAGE, NS, key.path)))
        for kind, key in all_keys.items()
    }


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_mutated_signature_values_agree_with_asyncssh(
    signatures: dict[str, sshsig.Signature], data: st.DataObject
) -> None:
    sig = signatures[data.draw(st.sampled_from(sorted(KEY_SPECS)))]
    value = bytearray(value_of(sig))
    i = data.draw(st.integers(0, len(value) - 1))
    value[i] ^= data.draw(st.integers(1, 255))
    armored = rebuild(sig, bytes(value))
    assert ours(MESSAGE, armored, NS) == reference(MESSAGE, armored, NS)


def test_pem_key_files_sign(tmp_path: Path) -> None:
    """``ssh-keygen -m PEM`` (PKCS#1 / SEC1) and ``-m PKCS8`` files, plain and encrypted."""
    import subprocess

    for kind, fmt, passphrase in [("rsa", "PEM", ""), ("ecdsa256", "PEM", ""), ("rsa", "PKCS8", ""),
                                  ("rsa", "PEM", "secret words"), ("ecdsa384", "PKCS8", "secret words")]:
        key = keygen(tmp_path, kind, name=f"{kind}-{fmt}-{bool(passphrase)}")
        subprocess.run(
            ["ssh-keygen", "-q", "-p", "-m", fmt, "-N", passphrase, "-P", "", "-f", str(key.path)],
            check=True, capture_output=True, env=clean_env(),
        )
        assert b"OPENSSH" not in key.path.read_bytes()
        if passphrase:
            with pytest.raises(ConfigError, match="encrypted"):
                sshsig.load_signing_key(key.path)
            with pytest.raises(ConfigError, match="wrong passphrase"):
                sshsig.load_signing_key(key.path, "not it")
        asked: list[bool] = []

        def ask(asked: list[bool] = asked, passphrase: str = passphrase) -> str:
            asked.append(True)
            return passphrase

        signer = sshsig.load_signing_key(key.path, ask)
        assert asked == ([True] if passphrase else [])
        assert signer.public_key.openssh() == key.public_nocomment
        assert sshsig.verify(MESSAGE, signer.sign(MESSAGE, NS), NS) == key.public_nocomment


def test_key_files_that_are_not_private_keys(tmp_path: Path) -> None:
    for content in (b"", b"hello", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                    b"\x30\x03\x02\x01\x00", b"x" * (sshsig.MAX_KEY_FILE + 1)):
        path = tmp_path / "k"
        path.write_bytes(content)
        with pytest.raises(ConfigError, match="cannot load key file"):
            sshsig.load_signing_key(path)


def test_pkcs8_ed25519_and_unsupported_key_types(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519

    def write(key: object, name: str) -> Path:
        path = tmp_path / name
        path.write_bytes(key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))
        return path

    signer = sshsig.load_signing_key(write(ed25519.Ed25519PrivateKey.generate(), "ed"))
    assert sshsig.verify(MESSAGE, signer.sign(MESSAGE, NS), NS) == signer.public_key.openssh()
    for key, name in ((ed448.Ed448PrivateKey.generate(), "ed448"),
                      (ec.generate_private_key(ec.SECP256K1()), "k1")):
        with pytest.raises(ConfigError, match="unsupported key type"):
            sshsig.load_signing_key(write(key, name))
