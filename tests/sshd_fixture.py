"""A real OpenSSH sshd on 127.0.0.1 with the documented Gatekeeper snippet, for tests.

What the ``sshd_env`` fixture (session scope) sets up, all under one world-traversable temporary directory:

- the dedicated account ``gktest`` (login shell ``/bin/sh``), created with ``useradd`` if missing;
- a Python runtime the account can execute (a venv of a world-executable ``python3`` whose
  site-packages points at this checkout), because the test venv's interpreter may live under a
  private directory such as ``/root/.pyenv``;
- the local-mode agent (:func:`gatekeeper.agent.local.start_local`) in a background thread, root,
  answering with whatever gate the test installs (``env.gate = ...``);
- ``/usr/sbin/sshd -D -e -f CONFIG`` (absolute path: sshd re-execs itself) on a free port with its
  own host key, a root-owned ``AuthorizedKeysFile`` holding two client keys, ``PidFile none``,
  ``StrictModes no``, ``UsePAM no``, ``LogLevel VERBOSE``, Debian's defaults (``AcceptEnv LANG
  LC_*``, a global sftp ``Subsystem``, X11 and TCP forwarding on), and the snippet from
  ``examples/sshd_config.d/gatekeeper.conf`` included first, as Debian does. It is stopped by PID.

Needs root and Debian's openssh-server. Without them the tests skip with the reason, except when
the ``CI`` variable is set: then they fail, so CI can never silently skip the OpenSSH tests.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.agent.local import LocalServer, start_local
from gatekeeper.gate import Decision, ExecRequest, Gate, Reason

REPO = Path(__file__).resolve().parents[1]
SNIPPET = REPO / "examples" / "sshd_config.d" / "gatekeeper.conf"
SSHD = "/usr/sbin/sshd"
SSH = shutil.which("ssh") or "/usr/bin/ssh"
ACCOUNT = "gktest"
# A second gated account with bash as its login shell: shows why gated accounts need /bin/sh.
BASH_ACCOUNT = "gktestbash"
# Placeholders in the documented snippet that a test deployment must replace (each appears once).
SNIPPET_MATCH = "Match Group gk-gated"
SNIPPET_PYTHON = "/opt/gatekeeper/bin/python3"
SNIPPET_SOCKET = "/run/gatekeeper/local.sock"


def unavailable_reason() -> str | None:
    """Why a real sshd cannot run here, or None."""
    if os.geteuid() != 0:
        return "the OpenSSH tests need root (sshd must switch to the test account)"
    for tool in (SSHD, SSH, "/usr/bin/ssh-keygen", "/usr/sbin/useradd"):
        if not os.access(tool, os.X_OK):
            return f"{tool} is missing (install openssh-server / openssh-client / passwd)"
    try:
        pwd.getpwnam("sshd")
    except KeyError:
        return "the 'sshd' privilege-separation user is missing (install openssh-server)"
    return None


def _skip_unless_ci(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the OpenSSH and local-mode tests: {reason}")
    pytest.skip(reason)


def require_sshd() -> None:
    """Skip (fail under CI) unless a real sshd can run here."""
    reason = unavailable_reason()
    if reason is not None:
        _skip_unless_ci(reason)


def require_root() -> None:
    """Skip (fail under CI) unless running as root (local mode checks the server's uid)."""
    if os.geteuid() != 0:
        _skip_unless_ci("local mode tests need root (the agent must run as uid 0)")


def ensure_account(name: str = ACCOUNT, shell: str = "/bin/sh") -> pwd.struct_passwd:
    """The test account, created if missing, unlocked for public-key login (``UsePAM no`` refuses a
    locked password field) and with ``shell`` as its login shell."""
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["/usr/sbin/useradd", "--create-home", "--user-group", "--shell", shell, name],
            check=True,
            capture_output=True,
        )
        user = pwd.getpwnam(name)
    if user.pw_shell != shell:
        subprocess.run(["/usr/sbin/usermod", "--shell", shell, name], check=True, capture_output=True)
    subprocess.run(["/usr/sbin/usermod", "--password", "*", name], check=True, capture_output=True)
    user = pwd.getpwnam(name)
    home = Path(user.pw_dir)
    if not home.is_dir():
        home.mkdir(mode=0o755, parents=True)
        os.chown(home, user.pw_uid, user.pw_gid)
    return user


def _python_for(user: pwd.struct_passwd) -> str:
    """A python3 (3.11+) that ``user`` can execute."""
    candidates = [os.path.realpath(sys._base_executable), "/usr/bin/python3"]  # type: ignore[attr-defined]
    for candidate in candidates:
        if not os.path.exists(candidate):
            continue
        try:
            probe = subprocess.run(
                [candidate, "-I", "-c", "import sys; sys.exit(sys.version_info < (3, 11))"],
                user=user.pw_uid,
                group=user.pw_gid,
                extra_groups=[],
                capture_output=True,
                cwd="/",
            )
        except PermissionError:
            continue
        if probe.returncode == 0:
            return candidate
    pytest.fail(f"no python3 >= 3.11 executable by {user.pw_name} among {candidates}")


def make_runtime(root: Path, user: pwd.struct_passwd) -> Path:
    """A venv at ``root`` whose site-packages imports this checkout (as a deployment's venv would
    have gatekeeper installed); returns its ``bin/python3``. It includes the system site-packages,
    which also enables the *user* site-packages (as a system interpreter would): the harder case
    for ``-I`` to defend."""
    base = _python_for(user)
    subprocess.run(
        [base, "-m", "venv", "--without-pip", "--system-site-packages", str(root)],
        check=True,
        capture_output=True,
    )
    site = subprocess.run(
        [str(root / "bin" / "python3"), "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "gatekeeper-checkout.pth").write_text(f"{REPO}\n")
    return root / "bin" / "python3"


def render_snippet(
    python: Path, socket_path: Path, match: str = f"Match User {ACCOUNT},{BASH_ACCOUNT}"
) -> str:
    """The documented snippet with its three deployment placeholders replaced."""
    text = SNIPPET.read_text()
    for placeholder in (SNIPPET_MATCH, SNIPPET_PYTHON, SNIPPET_SOCKET):
        assert text.count(placeholder) == 1, f"snippet must contain {placeholder!r} exactly once"
    return (
        text.replace(SNIPPET_MATCH, match)
        .replace(SNIPPET_PYTHON, str(python))
        .replace(SNIPPET_SOCKET, str(socket_path))
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sshd:
    """``/usr/sbin/sshd -D -e -f CONFIG`` on 127.0.0.1; :meth:`stop` kills it by PID."""

    def __init__(self, workdir: Path, main_config: Callable[[int], str]) -> None:
        self.workdir = workdir
        self._main_config = main_config
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "sshd.log"

    def start(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        for _attempt in range(5):
            self.port = free_port()
            config = self.workdir / "sshd_config"
            config.write_text(self._main_config(self.port))
            log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
            try:
                self.proc = subprocess.Popen(
                    [SSHD, "-D", "-e", "-f", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            finally:
                log.close()
            if self._wait_listening():
                return
            self.stop()
        raise RuntimeError(f"sshd did not start:\n{self.log()}")

    def _wait_listening(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


class LocalServiceThread:
    """The local-mode agent, running in its own event loop in a background thread."""

    def __init__(self, gate: Gate, socket_path: Path, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gk-local", daemon=True)
        self.thread.start()
        self.server: LocalServer = self.call(start_local(gate, socket_path, **options))

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def stop(self) -> None:
        async def _close() -> None:
            self.server.close()
            await self.server.wait_closed()

        self.call(_close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        # Like asyncio.run: whatever is still pending (an accept in flight) is cancelled and run
        # to completion, so that no socket is left for the garbage collector.
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()

        async def _drain() -> None:
            await asyncio.gather(*pending, return_exceptions=True)
            for _ in range(5):  # transports closed by the cancellations release their sockets
                await asyncio.sleep(0)

        self.loop.run_until_complete(_drain())
        self.loop.close()


class SwitchableGate:
    """A :class:`Gate` that delegates to ``self.target`` (tests swap the gate per test) and
    refuses everything when none is installed."""

    def __init__(self) -> None:
        self.target: Gate | None = None

    async def decide(self, request: ExecRequest) -> Decision:
        if self.target is None:
            return Decision(Reason.POLICY, "gk: refused: no gate installed by the test")
        return await self.target.decide(request)

    def record_exit(
        self, request: ExecRequest, decision: Decision, exit_status: int | None, *, signal: str | None = None
    ) -> None:
        if self.target is not None:
            self.target.record_exit(request, decision, exit_status, signal=signal)


@dataclass
class Permit:
    command: bytes
    auth_key: str
    account: str
    used: bool = False


@dataclass
class ScriptedGate:
    """Allows exactly the (command, key, account) triples registered with :meth:`permit`, once
    each, identified by an opaque bundle token. A test double for the plumbing around the gate
    (sshd, gk exec, the local protocol), not a verifier: the real checks are VerifyingGate's."""

    permits: dict[str, Permit] = field(default_factory=dict)
    requests: list[ExecRequest] = field(default_factory=list)
    exits: list[tuple[ExecRequest, Decision, int | None]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def permit(self, command: str | bytes, auth_key: str, account: str) -> str:
        raw = command.encode() if isinstance(command, str) else command
        token = f"test-bundle-{next(self._ids)}"
        self.permits[token] = Permit(raw, auth_key, account)
        return token

    async def decide(self, request: ExecRequest) -> Decision:
        self.requests.append(request)
        if request.bundle is None:
            return Decision(Reason.NO_BUNDLE, "gk: refused: no GK_BUNDLE")
        permit = self.permits.get(request.bundle)
        if permit is None:
            return Decision(Reason.MALFORMED_BUNDLE, "gk: refused: unknown bundle")
        if permit.auth_key != request.auth_key:
            return Decision(Reason.KEY_MISMATCH, "gk: refused: key mismatch")
        if permit.account != request.account:
            return Decision(Reason.WRONG_ACCOUNT, "gk: refused: wrong account")
        if permit.command != request.command:
            return Decision(Reason.COMMAND_MISMATCH, "gk: refused: command mismatch")
        if permit.used:
            return Decision(Reason.REPLAY, "gk: refused: replay")
        permit.used = True
        return Decision(Reason.ALLOWED, "", index=len(self.requests), key_fingerprint="SHA256:test")

    def record_exit(
        self, request: ExecRequest, decision: Decision, exit_status: int | None, *, signal: str | None = None
    ) -> None:
        self.exits.append((request, decision, exit_status))


@dataclass
class ClientKey:
    path: Path
    public: str  # "ssh-ed25519 AAAA..." without comment


def make_key(path: Path, comment: str) -> ClientKey:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    public = " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])
    return ClientKey(path, public)


@dataclass
class SshdEnv:
    """Everything a test needs to talk to the gated sshd."""

    workdir: Path
    user: pwd.struct_passwd
    bash_user: pwd.struct_passwd
    python: Path  # the runtime the ForceCommand uses
    socket_path: Path
    markers: Path  # writable by the test accounts (1777); commands touch files here
    keys: dict[str, ClientKey]
    known_hosts: Path
    sshd: Sshd
    service: LocalServiceThread
    gate: SwitchableGate
    extra_options: list[str] = field(default_factory=list)

    @property
    def account(self) -> str:
        return self.user.pw_name

    @property
    def home(self) -> Path:
        return Path(self.user.pw_dir)

    def ssh_argv(
        self,
        *args: str,
        key: str = "a",
        bundle: str | None = None,
        options: Sequence[str] = (),
        user: str | None = None,
    ) -> list[str]:
        argv = [
            SSH,
            "-F",
            "/dev/null",
            "-p",
            str(self.sshd.port),
            "-i",
            str(self.keys[key].path),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "KexAlgorithms=curve25519-sha256",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
        ]
        if bundle is not None:
            argv += ["-o", f"SetEnv=GK_BUNDLE={bundle}"]
        argv += list(options)
        argv += [f"{user or self.account}@127.0.0.1", *args]
        return argv

    def ssh(
        self,
        *args: str,
        key: str = "a",
        bundle: str | None = None,
        options: Sequence[str] = (),
        input: bytes | None = None,
        timeout: float = 30,
        user: str | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run OpenSSH's ``ssh`` against the gated sshd; ``args`` after the destination (empty: a
        shell login)."""
        return subprocess.run(
            self.ssh_argv(*args, key=key, bundle=bundle, options=options, user=user),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )

    def marker(self, name: str) -> Path:
        return self.markers / name

    def write_user_file(
        self, relative: str, content: str, mode: int = 0o644, user: pwd.struct_passwd | None = None
    ) -> Path:
        """Create a file in the account's home, owned by the account (as if the user wrote it).
        Returns its path; the caller removes it (:meth:`remove_user_files`)."""
        owner = user or self.user
        home = Path(owner.pw_dir)
        path = home / relative
        current = home
        for part in Path(relative).parts[:-1]:
            current = current / part
            if not current.exists():
                current.mkdir(mode=0o755)
                os.chown(current, owner.pw_uid, owner.pw_gid)
        path.write_text(content)
        os.chmod(path, mode)
        os.chown(path, owner.pw_uid, owner.pw_gid)
        return path


def main_config(workdir: Path, snippet_dir: Path, port: int) -> str:
    """Debian 12's shipped sshd_config, made test-local: snippet directory first."""
    return f"""\
Include {snippet_dir}/*.conf
ListenAddress 127.0.0.1
Port {port}
HostKey {workdir}/ssh_host_ed25519_key
PidFile none
StrictModes no
UsePAM no
LogLevel VERBOSE
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile {workdir}/authorized_keys/%u
X11Forwarding yes
AllowTcpForwarding yes
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
"""


@pytest.fixture(scope="session", name="sshd_env")
def sshd_env_fixture() -> Iterator[SshdEnv]:
    """The session's gated sshd (import ``sshd_env_fixture`` into a test module, use ``sshd_env``)."""
    require_sshd()
    user = ensure_account()
    bash_user = ensure_account(BASH_ACCOUNT, "/bin/bash")
    workdir = Path(tempfile.mkdtemp(prefix="gk-sshd-"))
    os.chmod(workdir, 0o755)
    service: LocalServiceThread | None = None
    sshd: Sshd | None = None
    try:
        python = make_runtime(workdir / "runtime", user)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / "ssh_host_ed25519_key")],
            check=True,
            capture_output=True,
        )
        keys_dir = workdir / "client"
        keys_dir.mkdir(mode=0o700)
        keys = {name: make_key(keys_dir / f"id_{name}", f"gk-test-{name}") for name in ("a", "b")}
        auth_dir = workdir / "authorized_keys"
        auth_dir.mkdir(mode=0o755)
        for account in (user, bash_user):
            (auth_dir / account.pw_name).write_text("".join(k.public + "\n" for k in keys.values()))
        markers = workdir / "markers"
        markers.mkdir()
        os.chmod(markers, 0o1777)  # both test accounts leave markers here
        run_dir = workdir / "run"
        socket_path = run_dir / "local.sock"
        gate = SwitchableGate()
        service = LocalServiceThread(gate, socket_path)
        snippet_dir = workdir / "sshd_config.d"
        snippet_dir.mkdir()
        (snippet_dir / "00-gatekeeper.conf").write_text(render_snippet(python, socket_path))
        sshd = Sshd(workdir, lambda port: main_config(workdir, snippet_dir, port))
        sshd.start()
        host_key = (workdir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(host_key)}\n")
        yield SshdEnv(
            workdir=workdir,
            user=user,
            bash_user=bash_user,
            python=python,
            socket_path=socket_path,
            markers=markers,
            keys=keys,
            known_hosts=known_hosts,
            sshd=sshd,
            service=service,
            gate=gate,
        )
    finally:
        if sshd is not None:
            sshd.stop()
        if service is not None:
            service.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# The fixture's plain name, for modules that import it as ``sshd_env`` (same fixture object).
sshd_env = sshd_env_fixture
