"""The user's signing identity: one SSH key that both signs the action (SSHSIG) and, for ``gk ssh``,
authenticates the SSH session (the host requires the two to be the same key).

A key comes from a private key file (asked for its passphrase on the terminal when encrypted) or
from ssh-agent (``$SSH_AUTH_SOCK``). Signing delegates to :mod:`gatekeeper.sshsig`; nothing here
parses signatures. Errors are :class:`~gatekeeper.errors.ConfigError` (exit 78).

No SSH library is imported here: key files are read with ``cryptography`` (once per identity, so
an encrypted key is decrypted once for every signature), the agent is spoken to with
:mod:`gatekeeper.client.sshagent`, and paramiko only when the key must authenticate an SSH session.
"""

from __future__ import annotations

import base64
import getpass
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatekeeper import sshsig
from gatekeeper.action import NAMESPACE
from gatekeeper.errors import ActionFormatError, ConfigError

if TYPE_CHECKING:
    import paramiko

__all__ = ["Identity", "from_file", "from_agent", "agent_keys", "default_identity"]

DEFAULT_KEY_FILES = ("id_ed25519", "id_ecdsa", "id_rsa")


@dataclass
class Identity:
    """A signing key. ``public_key`` is ``"<type> <base64>"`` (no comment)."""

    public_key: str
    key_file: Path | None = None
    passphrase: str | None = None
    agent_path: str | None = None
    _agent: Any = field(default=None, repr=False, compare=False)  # paramiko.Agent, while in use
    _signing_key: sshsig.SigningKey | None = field(default=None, repr=False, compare=False)

    def close(self) -> None:
        """Close the ssh-agent connection opened by :meth:`paramiko_key` (idempotent)."""
        if self._agent is not None:
            self._agent.close()
            self._agent = None

    @property
    def fingerprint(self) -> str:
        return sshsig.fingerprint(self.public_key)

    @property
    def source(self) -> str:
        return str(self.key_file) if self.key_file else f"ssh-agent ({self.agent_path})"

    def sign(self, message: bytes) -> bytes:
        """The armored SSHSIG of ``message`` in the action namespace. Raises ConfigError."""
        if self.key_file is not None:
            if self._signing_key is None:
                self._signing_key = sshsig.load_signing_key(self.key_file, self.passphrase)
            return self._signing_key.sign(message, NAMESPACE)
        return sshsig.sign_agent_sync(message, NAMESPACE, self.public_key, self.agent_path)

    def paramiko_key(self) -> paramiko.PKey:
        """The same key for SSH user authentication (a paramiko key, or an agent key whose agent
        connection stays open until :meth:`close`)."""
        import paramiko

        if self.key_file is not None:
            try:
                pw = self.passphrase.encode() if self.passphrase else None
                return paramiko.PKey.from_path(str(self.key_file), pw)
            except (OSError, paramiko.SSHException, ValueError) as exc:
                raise ConfigError(f"cannot load private key {self.key_file}: {exc}") from None
        want = sshsig.parse_public_key(self.public_key).blob
        self.close()
        saved = os.environ.get("SSH_AUTH_SOCK")
        if self.agent_path:  # paramiko.Agent only reads the environment
            os.environ["SSH_AUTH_SOCK"] = self.agent_path
        try:
            agent = paramiko.Agent()
        finally:
            if saved is None:
                os.environ.pop("SSH_AUTH_SOCK", None)
            else:
                os.environ["SSH_AUTH_SOCK"] = saved
        for key in agent.get_keys():
            if key.asbytes() == want:
                self._agent = agent
                return key
        agent.close()
        raise ConfigError(f"ssh-agent does not hold key {self.fingerprint}")


def from_file(path: Path, passphrase: str | None = None, prompt: bool = True) -> Identity:
    """Load a private key file (``~`` expanded). An encrypted key without ``passphrase`` is
    unlocked with a terminal prompt when ``prompt`` is true, else ConfigError."""
    path = Path(os.path.expanduser(path))
    entered: list[str] = []

    def ask() -> str:
        if not prompt:
            raise ConfigError(f"key file {path} is encrypted and no passphrase was given")
        try:
            entered.append(getpass.getpass(f"Enter passphrase for key {path}: "))
        except (EOFError, OSError):
            raise ConfigError(f"key file {path} is encrypted and there is no terminal to ask") from None
        return entered[0]

    key = sshsig.load_signing_key(path, passphrase if passphrase is not None else ask)
    secret = passphrase if passphrase is not None else (entered[0] if entered else None)
    return Identity(key.public_key.openssh(), key_file=path, passphrase=secret, _signing_key=key)


def _checked(public: str, where: str) -> str:
    try:
        return sshsig.parse_public_key(public).openssh()
    except ActionFormatError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _openssh_line(blob: bytes) -> str:
    """``"<type> <base64>"`` for a public key blob (its type is the blob's first string)."""
    n = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else 0
    key_type = blob[4 : 4 + n].decode("ascii", "replace")
    return f"{key_type} {base64.b64encode(blob).decode('ascii')}"


def agent_keys(agent_path: str | None = None) -> list[str]:
    """Public keys (``"<type> <base64>"``) held by ssh-agent that can sign actions, in agent order."""
    path = agent_path or os.environ.get("SSH_AUTH_SOCK", "")
    if not path:
        raise ConfigError("no ssh-agent: SSH_AUTH_SOCK is not set (or give a key file with --key)")
    from gatekeeper.client.sshagent import AgentClient

    with AgentClient(path, timeout=10.0) as agent:
        listed = [_openssh_line(blob) for blob, _comment in agent.identities()]
    out = []
    for line in listed:
        try:
            out.append(sshsig.parse_public_key(line).openssh())
        except ActionFormatError:
            continue  # FIDO keys, certificates, short RSA: not usable for actions
    return out


def from_agent(public_key: str | None = None, agent_path: str | None = None) -> Identity:
    """A key held by ssh-agent: ``public_key`` if given (it must be in the agent), else the agent's
    first supported key."""
    path = agent_path or os.environ.get("SSH_AUTH_SOCK", "")
    keys = agent_keys(path)
    if public_key is not None:
        want = _checked(public_key, "public key")
        if want not in keys:
            raise ConfigError(f"ssh-agent at {path} does not hold key {sshsig.fingerprint(want)}")
        return Identity(want, agent_path=path)
    if not keys:
        raise ConfigError(f"ssh-agent at {path} holds no key that can sign actions")
    return Identity(keys[0], agent_path=path)


def default_identity(candidates: list[Path] | tuple[Path, ...] = ()) -> Identity:
    """What to sign with when nothing was configured, like ``ssh`` picks a key: the first of
    ``candidates`` (``IdentityFile`` from ssh_config) that exists — through ssh-agent when the agent
    holds the same key (no passphrase prompt) — else the agent's first key, else
    ``~/.ssh/id_ed25519``, ``id_ecdsa``, ``id_rsa``."""
    agent_path = os.environ.get("SSH_AUTH_SOCK", "")
    held: list[str] = []
    if agent_path:
        try:
            held = agent_keys(agent_path)
        except ConfigError:
            held = []
    for path in candidates:
        path = Path(os.path.expanduser(path))
        pub = _public_of(path)
        if pub is not None and pub in held:
            return Identity(pub, agent_path=agent_path)
        if path.exists():
            return from_file(path)
    if held:
        return Identity(held[0], agent_path=agent_path)
    for name in DEFAULT_KEY_FILES:
        path = Path.home() / ".ssh" / name
        if path.exists():
            return from_file(path)
    raise ConfigError('no signing key: pass --key FILE or --agent, or set key = "..." in client.toml')


def _public_of(path: Path) -> str | None:
    """The ``.pub`` next to a private key file, if it is readable and valid."""
    try:
        text = Path(str(path) + ".pub").read_text()
        return sshsig.parse_public_key(text).openssh()
    except (OSError, UnicodeDecodeError, ActionFormatError):
        return None
