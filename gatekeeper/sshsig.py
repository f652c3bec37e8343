"""SSHSIG signatures (OpenSSH ``PROTOCOL.sshsig``), compatible with ``ssh-keygen -Y sign/verify``.

A signature binds a message to a *namespace* (Gatekeeper uses ``action@gatekeeper``) so that a
signature made for one purpose (git commits, files) can never be replayed as another. The signed
data is ``"SSHSIG" ‖ string(namespace) ‖ string("") ‖ string(hash_alg) ‖ string(H(message))``; the
signature blob is ``"SSHSIG" ‖ uint32(1) ‖ string(public key) ‖ string(namespace) ‖ string("") ‖
string(hash_alg) ‖ string(signature)``, armored between ``-----BEGIN SSH SIGNATURE-----`` lines with
base64 wrapped at 70 columns, exactly as ``ssh-keygen`` writes it.

Supported keys: Ed25519 (required), ECDSA P-256/P-384/P-521 and RSA ≥ 2048 bits (signing with
``rsa-sha2-512``; ``rsa-sha2-256`` accepted on verification, SHA-1 ``ssh-rsa`` never). Certificates
and FIDO (``sk-``) keys are not supported in v1.

Pure functions (no I/O): :func:`parse_public_key`, :func:`armor`, :func:`dearmor`,
:func:`parse_signature`, :func:`signed_data`, :func:`verify`, :func:`fingerprint`.
Key access: :func:`load_signing_key` / :func:`sign_file` read a private key file (OpenSSH or PEM
format, encrypted or not); :func:`sign_agent` / :func:`sign_agent_sync` ask ssh-agent.

Everything is done with ``cryptography`` (verification: Ed25519, ECDSA with the curve's hash,
RSA PKCS#1 v1.5) and a small agent client (:mod:`gatekeeper.client.sshagent`), so that importing
this module — which every ``gk`` command that touches an action does — costs no SSH library.

Errors: malformed keys and signatures raise :class:`~gatekeeper.errors.ActionFormatError` from the
parsers; :func:`verify` raises :class:`~gatekeeper.errors.SignatureInvalid` for *anything* that is
not a valid signature by the embedded key; signing raises :class:`~gatekeeper.errors.ConfigError`
when the key file or agent cannot be used.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from gatekeeper.errors import ActionFormatError, ConfigError, SignatureInvalid

__all__ = [
    "MAGIC",
    "HASH_ALG",
    "KEY_TYPES",
    "MAX_ARMORED",
    "PublicKey",
    "Signature",
    "parse_public_key",
    "armor",
    "dearmor",
    "parse_signature",
    "signed_data",
    "verify",
    "fingerprint",
    "SigningKey",
    "load_signing_key",
    "sign_file",
    "sign_agent",
    "sign_agent_sync",
]

MAGIC = b"SSHSIG"
VERSION = 1
HASH_ALG = "sha512"  # what we sign with (ssh-keygen's default); sha256 is accepted on verification
_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}

#: key type -> (curve name, point length) for ECDSA; None for the others
_ECDSA = {
    "ecdsa-sha2-nistp256": ("nistp256", 65),
    "ecdsa-sha2-nistp384": ("nistp384", 97),
    "ecdsa-sha2-nistp521": ("nistp521", 133),
}
#: ECDSA key type -> (curve, the hash RFC 5656 pairs with it)
_ECDSA_CURVES: dict[str, tuple[ec.EllipticCurve, hashes.HashAlgorithm]] = {
    "ecdsa-sha2-nistp256": (ec.SECP256R1(), hashes.SHA256()),
    "ecdsa-sha2-nistp384": (ec.SECP384R1(), hashes.SHA384()),
    "ecdsa-sha2-nistp521": (ec.SECP521R1(), hashes.SHA512()),
}
_RSA_HASHES: dict[str, hashes.HashAlgorithm] = {
    "rsa-sha2-256": hashes.SHA256(),
    "rsa-sha2-512": hashes.SHA512(),
}
MAX_KEY_FILE = 1 << 20
KEY_TYPES = ("ssh-ed25519", *_ECDSA, "ssh-rsa")
#: signature algorithms accepted for each key type (PROTOCOL.sshsig forbids SHA-1 RSA)
_SIG_ALGS = {
    "ssh-ed25519": ("ssh-ed25519",),
    **{t: (t,) for t in _ECDSA},
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
}
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 16384
MAX_KEY_BLOB = 4 + 7 + 4 + 8 + 4 + 2 + RSA_MAX_BITS // 8  # an RSA-16384 key with a large exponent
MAX_ARMORED = 16384  # an RSA-16384 signature armors to ~5.8 KiB

_BEGIN = b"-----BEGIN SSH SIGNATURE-----\n"
_END = b"-----END SSH SIGNATURE-----\n"
_WRAP = 70


class _Reader:
    """Bounds-checked cursor over SSH wire data; every short read is an ActionFormatError."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def u32(self) -> int:
        if len(self._data) - self._pos < 4:
            raise ActionFormatError(f"{self._what}: truncated")
        (value,) = struct.unpack_from(">I", self._data, self._pos)
        self._pos += 4
        return int(value)

    def raw(self, n: int) -> bytes:
        if len(self._data) - self._pos < n:
            raise ActionFormatError(f"{self._what}: truncated")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def string(self) -> bytes:
        return self.raw(self.u32())

    def text(self, field: str) -> str:
        raw = self.string()
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise ActionFormatError(f"{self._what}: {field} is not ASCII") from None

    def end(self) -> None:
        if self._pos != len(self._data):
            raise ActionFormatError(f"{self._what}: {len(self._data) - self._pos} trailing bytes")


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _mpint_bits(raw: bytes, what: str) -> int:
    """Bit length of a positive, minimally encoded SSH mpint."""
    if not raw or raw[0] & 0x80:
        raise ActionFormatError(f"{what}: RSA parameter is not a positive integer")
    if raw[0] == 0 and (len(raw) == 1 or not raw[1] & 0x80):
        raise ActionFormatError(f"{what}: RSA parameter is not minimally encoded")
    return int.from_bytes(raw, "big").bit_length()


@dataclass(frozen=True)
class PublicKey:
    """An SSH public key: its type name and its wire blob (``string(type) ‖ parameters``)."""

    key_type: str
    blob: bytes

    def openssh(self) -> str:
        """The canonical one-line form ``"<type> <base64>"`` (no comment)."""
        return f"{self.key_type} {base64.b64encode(self.blob).decode('ascii')}"

    def fingerprint(self) -> str:
        """``SHA256:<unpadded base64>``, as ``ssh-keygen -l`` prints it."""
        digest = hashlib.sha256(self.blob).digest()
        return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _check_key_blob(blob: bytes, what: str = "public key") -> str:
    """Structural validation of a supported key blob; returns its type name."""
    if len(blob) > MAX_KEY_BLOB:
        raise ActionFormatError(f"{what}: key blob too large ({len(blob)} bytes)")
    r = _Reader(blob, what)
    key_type = r.text("key type")
    if key_type == "ssh-ed25519":
        if len(r.string()) != 32:
            raise ActionFormatError(f"{what}: Ed25519 key is not 32 bytes")
    elif key_type in _ECDSA:
        curve, point_len = _ECDSA[key_type]
        if r.text("curve") != curve:
            raise ActionFormatError(f"{what}: curve name does not match key type {key_type}")
        point = r.string()
        if len(point) != point_len or point[0] != 4:
            raise ActionFormatError(f"{what}: ECDSA point is not an uncompressed {curve} point")
    elif key_type == "ssh-rsa":
        e_raw, n_raw = r.string(), r.string()
        e_bits, n_bits = _mpint_bits(e_raw, what), _mpint_bits(n_raw, what)
        if e_bits > 64 or not e_raw[-1] & 1 or int.from_bytes(e_raw, "big") < 3:
            raise ActionFormatError(f"{what}: unusable RSA public exponent")
        if not RSA_MIN_BITS <= n_bits <= RSA_MAX_BITS:
            raise ActionFormatError(
                f"{what}: RSA key has {n_bits} bits; {RSA_MIN_BITS}..{RSA_MAX_BITS} are accepted"
            )
    elif key_type.startswith("sk-") or "-cert-" in key_type:
        raise ActionFormatError(f"{what}: {key_type} keys (FIDO / certificates) are not supported")
    else:
        raise ActionFormatError(f"{what}: unsupported key type {key_type!r}; use one of {KEY_TYPES}")
    r.end()
    return key_type


def parse_public_key(text: str) -> PublicKey:
    """Parse an OpenSSH public key line ``"<type> <base64> [comment]"``.

    The base64 must be canonical (padded, no stray bits) and the blob must be a structurally valid
    key of the named, supported type. The comment, if any, is dropped. Raises ActionFormatError.
    """
    parts = text.strip(" \t\r\n").split(None, 2)
    if len(parts) < 2:
        raise ActionFormatError("public key: expected '<type> <base64> [comment]'")
    key_type, b64 = parts[0], parts[1]
    if len(b64) > 2 * MAX_KEY_BLOB:
        raise ActionFormatError("public key: too long")
    blob = b64decode_canonical(b64, "public key")
    if _check_key_blob(blob) != key_type:
        raise ActionFormatError("public key: the type name does not match the key blob")
    return PublicKey(key_type, blob)


def b64decode_canonical(text: str, what: str) -> bytes:
    """Strict standard base64 (padded, no whitespace, canonical trailing bits); ActionFormatError."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ActionFormatError(f"{what}: invalid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise ActionFormatError(f"{what}: base64 is not in canonical form")
    return raw


def armor(blob: bytes) -> bytes:
    """Armor a signature blob exactly as ``ssh-keygen -Y sign`` does (70-column base64)."""
    b64 = base64.b64encode(blob)
    lines = [b64[i : i + _WRAP] for i in range(0, len(b64), _WRAP)]
    return _BEGIN + b"\n".join(lines) + b"\n" + _END


def dearmor(armored: bytes) -> bytes:
    """Strict inverse of :func:`armor`: anything but its exact output raises ActionFormatError."""
    if len(armored) > MAX_ARMORED:
        raise ActionFormatError(f"signature: armored signature longer than {MAX_ARMORED} bytes")
    if not armored.startswith(_BEGIN):
        raise ActionFormatError("signature: missing '-----BEGIN SSH SIGNATURE-----' line")
    if not armored.endswith(b"\n" + _END):
        raise ActionFormatError("signature: missing '-----END SSH SIGNATURE-----' line or final newline")
    body = armored[len(_BEGIN) : -len(_END) - 1]
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise ActionFormatError("signature: non-ASCII bytes in the armor") from None
    blob = b64decode_canonical(text.replace("\n", ""), "signature")
    if armor(blob) != armored:
        raise ActionFormatError("signature: armor is not wrapped at 70 columns like ssh-keygen's")
    return blob


@dataclass(frozen=True)
class Signature:
    """A parsed (not verified) SSHSIG blob."""

    public_key: PublicKey
    namespace: str
    hash_alg: str
    sig_alg: str
    signature: bytes  # the SSH signature: string(sig_alg) ‖ string(raw signature)
    blob: bytes


def parse_signature(blob: bytes) -> Signature:
    """Parse an SSHSIG blob (version 1, empty reserved field, sha256/sha512, supported key).

    Structure only: nothing is verified. Raises ActionFormatError.
    """
    r = _Reader(blob, "signature")
    if r.raw(6) != MAGIC:
        raise ActionFormatError("signature: not an SSHSIG blob (bad magic)")
    version = r.u32()
    if version != VERSION:
        raise ActionFormatError(f"signature: SSHSIG version {version} is not supported")
    key_blob = r.string()
    key_type = _check_key_blob(key_blob, "signature key")
    namespace = r.text("namespace")
    if not namespace:
        raise ActionFormatError("signature: empty namespace")
    if r.string():
        raise ActionFormatError("signature: the reserved field is not empty")
    hash_alg = r.text("hash algorithm")
    if hash_alg not in _HASHES:
        raise ActionFormatError(f"signature: hash algorithm {hash_alg!r} is not sha256 or sha512")
    sig = r.string()
    r.end()
    s = _Reader(sig, "signature")
    sig_alg = s.text("signature algorithm")
    if sig_alg not in _SIG_ALGS[key_type]:
        raise ActionFormatError(f"signature: algorithm {sig_alg!r} is not allowed for {key_type} keys")
    if not s.string():
        raise ActionFormatError("signature: empty signature value")
    s.end()
    return Signature(PublicKey(key_type, key_blob), namespace, hash_alg, sig_alg, sig, blob)


def signed_data(message: bytes, namespace: str, hash_alg: str = HASH_ALG) -> bytes:
    """The bytes the key actually signs (PROTOCOL.sshsig "signed data")."""
    if not namespace or not namespace.isascii():
        raise ActionFormatError("signature: the namespace must be non-empty ASCII")
    if hash_alg not in _HASHES:
        raise ActionFormatError(f"signature: hash algorithm {hash_alg!r} is not sha256 or sha512")
    digest = _HASHES[hash_alg](message).digest()
    return (
        MAGIC
        + _string(namespace.encode("ascii"))
        + _string(b"")
        + _string(hash_alg.encode("ascii"))
        + _string(digest)
    )


def _assemble(public_blob: bytes, namespace: str, signature: bytes) -> bytes:
    return (
        MAGIC
        + struct.pack(">I", VERSION)
        + _string(public_blob)
        + _string(namespace.encode("ascii"))
        + _string(b"")
        + _string(HASH_ALG.encode())
        + _string(signature)
    )


def verify(message: bytes, armored: bytes, namespace: str) -> str:
    """Verify an armored SSHSIG over ``message`` in ``namespace``.

    Returns the signer's public key as ``"<type> <base64>"``. Who that key belongs to is the
    caller's business (an allowed_signers file, the ``signer`` field of an action). Raises
    :class:`SignatureInvalid` when the signature is malformed, for another namespace, made with a
    disallowed algorithm, or does not verify.
    """
    try:
        sig = parse_signature(dearmor(armored))
    except ActionFormatError as exc:
        raise SignatureInvalid(f"malformed SSHSIG: {exc}") from None
    if sig.namespace != namespace:
        raise SignatureInvalid(f"signature is for namespace {sig.namespace!r}, expected {namespace!r}")
    try:
        key = _public_key_object(sig.public_key.blob)
    except (ActionFormatError, ValueError, UnsupportedAlgorithm):
        raise SignatureInvalid("signature key is not a valid public key") from None
    if not _verify_ssh_signature(key, signed_data(message, namespace, sig.hash_alg), sig.signature):
        raise SignatureInvalid(
            f"signature by {sig.public_key.fingerprint()} does not verify: the message or the "
            "signature was altered"
        )
    return sig.public_key.openssh()


_PublicKeyObject = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
_PrivateKeyObject = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@functools.lru_cache(maxsize=1024)
def _public_key_object(blob: bytes) -> _PublicKeyObject:
    """The ``cryptography`` key for a supported public key blob (cached: signers repeat).
    Raises ActionFormatError (structure), ValueError (not a valid key, e.g. a point off the curve)."""
    key_type = _check_key_blob(blob)
    r = _Reader(blob, "public key")
    r.string()  # the type name, checked above
    if key_type == "ssh-ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(r.string())
    if key_type in _ECDSA_CURVES:
        r.string()  # the curve name, checked above
        return ec.EllipticCurvePublicKey.from_encoded_point(_ECDSA_CURVES[key_type][0], r.string())
    e, n = int.from_bytes(r.string(), "big"), int.from_bytes(r.string(), "big")
    return rsa.RSAPublicNumbers(e, n).public_key()


def _verify_ssh_signature(key: _PublicKeyObject, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` (``string(algorithm) ‖ string(value)``, the algorithm already checked
    against the key type by :func:`parse_signature`) is ``key``'s signature of ``data``. An ECDSA
    value is ``mpint(r) ‖ mpint(s)`` with nothing after it. Never raises."""
    try:
        r = _Reader(signature, "signature")
        sig_alg = r.text("signature algorithm")
        value = r.string()
        r.end()
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(value, data)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            v = _Reader(value, "signature")
            big_r = int.from_bytes(v.string(), "big", signed=True)
            big_s = int.from_bytes(v.string(), "big", signed=True)
            v.end()
            if big_r <= 0 or big_s <= 0:
                return False
            key.verify(encode_dss_signature(big_r, big_s), data, ec.ECDSA(_ECDSA_CURVES[sig_alg][1]))
        else:
            key.verify(value, data, padding.PKCS1v15(), _RSA_HASHES[sig_alg])
    except (InvalidSignature, ActionFormatError, ValueError, TypeError, KeyError):
        return False
    return True


def _mpint(value: int) -> bytes:
    """SSH mpint of a non-negative integer: minimal big-endian two's complement, length-prefixed."""
    return _string(value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b"")


@dataclass(frozen=True)
class SigningKey:
    """A private key loaded from a file, ready to sign: :func:`load_signing_key`."""

    public_key: PublicKey
    _private: _PrivateKeyObject

    def sign(self, message: bytes, namespace: str) -> bytes:
        """The armored SSHSIG of ``message`` in ``namespace`` (RSA keys: ``rsa-sha2-512``)."""
        data = signed_data(message, namespace)
        key = self._private
        if isinstance(key, ed25519.Ed25519PrivateKey):
            value = key.sign(data)
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            algorithm = ec.ECDSA(_ECDSA_CURVES[self.public_key.key_type][1])
            big_r, big_s = decode_dss_signature(key.sign(data, algorithm))
            value = _mpint(big_r) + _mpint(big_s)
        else:
            value = key.sign(data, padding.PKCS1v15(), hashes.SHA512())
        signature = _string(_sig_alg_for(self.public_key.key_type)) + _string(value)
        return armor(_assemble(self.public_key.blob, namespace, signature))


Passphrase = str | bytes | Callable[[], str | bytes] | None


def load_signing_key(key_path: str | os.PathLike[str], passphrase: Passphrase = None) -> SigningKey:
    """Read an OpenSSH-format or PEM (PKCS#1, PKCS#8, SEC1) private key file.

    ``passphrase`` is used only when the key is encrypted; it may be a callable, then called once,
    only in that case (a terminal prompt). Raises ConfigError if the file is missing, unreadable,
    encrypted without a passphrase, the passphrase is wrong, or the key type is unsupported (the
    same rules as :func:`parse_public_key`, e.g. RSA below 2048 bits).
    """
    path = os.fspath(key_path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE:
        raise ConfigError(f"cannot load key file {path}: larger than {MAX_KEY_FILE} bytes")
    try:
        key = _load_private(data, None)
    except TypeError:  # encrypted
        secret = passphrase() if callable(passphrase) else passphrase
        if secret is None:
            raise ConfigError(f"key file {path} is encrypted: a passphrase is needed") from None
        try:
            key = _load_private(data, secret.encode() if isinstance(secret, str) else secret)
        except (ValueError, TypeError):
            raise ConfigError(f"wrong passphrase for key file {path}") from None
        except UnsupportedAlgorithm as exc:
            raise ConfigError(f"cannot load key file {path}: {exc}") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"cannot load key file {path}: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError(f"key file {path}: unsupported key type; use one of {KEY_TYPES}")
    try:
        line = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        public = parse_public_key(line.decode("ascii"))
    except (ValueError, UnsupportedAlgorithm):  # e.g. an EC curve SSH has no name for
        raise ConfigError(f"key file {path}: unsupported key type; use one of {KEY_TYPES}") from None
    except ActionFormatError as exc:
        raise ConfigError(f"key file {path}: {exc}") from None
    return SigningKey(public, key)


def _load_private(data: bytes, password: bytes | None) -> object:
    """cryptography's loaders; TypeError = encrypted and no password (or the reverse)."""
    if data.lstrip().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
        return serialization.load_ssh_private_key(data, password)
    if data.lstrip().startswith(b"-----BEGIN "):
        return serialization.load_pem_private_key(data, password)
    if data[:1] == b"\x30":  # DER
        return serialization.load_der_private_key(data, password)
    raise ValueError("not a private key (OpenSSH or PEM format expected)")


def fingerprint(public_key: str) -> str:
    """``SHA256:...`` fingerprint of an OpenSSH public key line (comment ignored)."""
    return parse_public_key(public_key).fingerprint()


def _sig_alg_for(key_type: str) -> bytes:
    return b"rsa-sha2-512" if key_type == "ssh-rsa" else key_type.encode("ascii")


def sign_file(
    message: bytes, namespace: str, key_path: str | os.PathLike[str], passphrase: str | bytes | None = None
) -> bytes:
    """Sign ``message`` with an OpenSSH private key file; returns the armored SSHSIG.

    Reads the key file (unencrypted, or encrypted with ``passphrase``). Raises ConfigError if the
    file is missing, unreadable, encrypted without a passphrase, the passphrase is wrong, or the
    key type is unsupported.
    """
    return load_signing_key(key_path, passphrase).sign(message, namespace)


def sign_agent_sync(
    message: bytes, namespace: str, public_key: str | None = None, agent_path: str | None = None
) -> bytes:
    """Sign ``message`` with a key held by ssh-agent; returns the armored SSHSIG.

    ``agent_path`` defaults to ``$SSH_AUTH_SOCK``. ``public_key`` (``"<type> <base64> [comment]"``)
    selects the key; without it the agent's first supported key is used. RSA keys sign with
    ``rsa-sha2-512``. The agent's signature is verified before it is returned. Raises ConfigError
    when there is no agent, the key is not in it, or the agent refuses to sign; SignatureInvalid if
    the agent returns a signature that does not verify. Blocks (a confirmed key waits for the user).
    """
    from gatekeeper.client.sshagent import SSH_AGENT_RSA_SHA2_512, AgentClient

    path = agent_path or os.environ.get("SSH_AUTH_SOCK", "")
    if not path:
        raise ConfigError("no ssh-agent: SSH_AUTH_SOCK is not set (or give a key file)")
    wanted = parse_public_key(public_key) if public_key else None
    with AgentClient(path) as agent:
        chosen: PublicKey | None = None
        for blob, _comment in agent.identities():
            if wanted is not None:
                if blob == wanted.blob:
                    chosen = wanted
                    break
                continue
            try:
                chosen = PublicKey(_check_key_blob(blob), blob)
            except ActionFormatError:
                continue
            break
        if chosen is None:
            if wanted is not None:
                raise ConfigError(f"ssh-agent at {path} does not hold key {wanted.fingerprint()}")
            raise ConfigError(f"ssh-agent at {path} holds no supported key ({', '.join(KEY_TYPES)})")
        flags = SSH_AGENT_RSA_SHA2_512 if chosen.key_type == "ssh-rsa" else 0
        signature = agent.sign(chosen.blob, signed_data(message, namespace), flags)
    armored = armor(_assemble(chosen.blob, namespace, signature))
    verify(message, armored, namespace)
    return armored


async def sign_agent(
    message: bytes, namespace: str, public_key: str | None = None, agent_path: str | None = None
) -> bytes:
    """:func:`sign_agent_sync` for async callers: the agent conversation runs in a worker thread,
    so a key that needs the user's confirmation does not block the event loop."""
    import asyncio

    return await asyncio.to_thread(sign_agent_sync, message, namespace, public_key, agent_path)
