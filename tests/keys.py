"""Test helpers: SSH keys made by the real ``ssh-keygen``, OpenSSH's ``-Y sign/verify``, and a real
``ssh-agent`` started for one test and stopped by PID. Plain functions (not fixtures) so any test
module can use them with its own ``tmp_path`` / ``tmp_path_factory``."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SSH_KEYGEN = shutil.which("ssh-keygen")
SSH_AGENT = shutil.which("ssh-agent")
SSH_ADD = shutil.which("ssh-add")

#: (ssh-keygen -t, -b) for each supported key type
KEY_SPECS = {
    "ed25519": ("ed25519", None),
    "ecdsa256": ("ecdsa", "256"),
    "ecdsa384": ("ecdsa", "384"),
    "ecdsa521": ("ecdsa", "521"),
    "rsa": ("rsa", "2048"),
}
#: key types ssh-keygen makes but we refuse (not in KEY_SPECS, which tests iterate as "supported")
REFUSED_KEY_SPECS = {
    "rsa1024": ("rsa", "1024"),
}


def clean_env(**extra: str) -> dict[str, str]:
    """An environment without SSH_AUTH_SOCK, so ssh-keygen never reaches the user's own agent."""
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID")}
    env.update(extra)
    return env


def need_openssh() -> None:
    if not (SSH_KEYGEN and SSH_AGENT and SSH_ADD):
        pytest.skip("OpenSSH client tools (ssh-keygen, ssh-agent, ssh-add) are not installed")


@dataclass(frozen=True)
class Key:
    path: Path  # private key file
    public: str  # "<type> <base64> <comment>" as in the .pub file

    @property
    def public_nocomment(self) -> str:
        return " ".join(self.public.split()[:2])


def keygen(directory: Path, kind: str = "ed25519", passphrase: str = "", name: str | None = None) -> Key:
    """Generate a key with ssh-keygen in ``directory``."""
    need_openssh()
    assert SSH_KEYGEN
    key_type, bits = KEY_SPECS[kind] if kind in KEY_SPECS else REFUSED_KEY_SPECS[kind]
    path = directory / (name or f"id_{kind}")
    cmd = [SSH_KEYGEN, "-q", "-t", key_type, "-N", passphrase, "-C", f"{kind}@test", "-f", str(path)]
    if bits:
        cmd += ["-b", bits]
    subprocess.run(cmd, check=True, env=clean_env(), capture_output=True)
    return Key(path, path.with_suffix(".pub").read_text().strip())


def ssh_keygen_sign(key: Key, namespace: str, message: bytes, tmp: Path) -> bytes:
    """``ssh-keygen -Y sign`` over ``message``; returns the armored signature."""
    assert SSH_KEYGEN
    msg = tmp / "message"
    msg.write_bytes(message)
    sig = tmp / "message.sig"
    sig.unlink(missing_ok=True)
    subprocess.run(
        [SSH_KEYGEN, "-Y", "sign", "-f", str(key.path), "-n", namespace, str(msg)],
        check=True,
        env=clean_env(),
        capture_output=True,
    )
    return sig.read_bytes()


def ssh_keygen_verify(
    public: str, namespace: str, message: bytes, signature: bytes, tmp: Path, principal: str = "tester"
) -> subprocess.CompletedProcess[bytes]:
    """``ssh-keygen -Y verify`` with a one-line allowed_signers file for ``public``."""
    assert SSH_KEYGEN
    allowed = tmp / "allowed_signers"
    allowed.write_text(f"{principal} {public}\n")
    sig = tmp / "verify.sig"
    sig.write_bytes(signature)
    return subprocess.run(
        [SSH_KEYGEN, "-Y", "verify", "-f", str(allowed), "-I", principal, "-n", namespace, "-s", str(sig)],
        input=message,
        env=clean_env(),
        capture_output=True,
    )


@contextmanager
def ssh_agent(directory: Path, *keys: Key) -> Iterator[str]:
    """Run ``ssh-agent -D -a <sock>`` holding ``keys``; yields the socket path; kills it by PID."""
    need_openssh()
    assert SSH_AGENT and SSH_ADD
    sock = directory / "agent.sock"
    proc = subprocess.Popen(
        [SSH_AGENT, "-D", "-a", str(sock)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ssh-agent did not start")
            time.sleep(0.01)
        for key in keys:
            subprocess.run(
                [SSH_ADD, "-q", str(key.path)],
                check=True,
                env=clean_env(SSH_AUTH_SOCK=str(sock)),
                capture_output=True,
            )
        yield str(sock)
    finally:
        proc.kill()
        proc.wait(timeout=10)
