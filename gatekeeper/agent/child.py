"""The allowed command's process: which account it runs as, its environment, spawning, signals.

An allowed command runs as exactly ``[shell, "-c", command]`` in a new session (its own process
group, so a disconnect or a forwarded signal reaches everything it started), with stdin/stdout/
stderr as pipes, every other descriptor closed, umask 022, cwd = the account's home (``/`` if that
is not a directory, as sshd does), and a fixed environment built here: nothing the client sent.

When the agent runs as root the child switches to the account (``setgroups`` to its supplementary
groups as ``initgroups`` would, then ``setregid``/``setreuid``, done by :mod:`subprocess` in the
child before ``exec``). When it does not, it can only run commands as its own account.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
from dataclasses import dataclass

__all__ = [
    "CHILD_PATH",
    "FORWARDABLE_SIGNALS",
    "Account",
    "AccountRefused",
    "resolve_account",
    "child_environment",
    "spawn",
    "signal_name",
]

CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"
# RFC 4254 §6.10 signal names a client may send; anything else is ignored.
FORWARDABLE_SIGNALS = {
    name: getattr(signal, "SIG" + name)
    for name in ("ABRT", "ALRM", "FPE", "HUP", "ILL", "INT", "KILL", "PIPE", "QUIT", "SEGV", "TERM",
                 "USR1", "USR2")
}


class AccountRefused(Exception):
    """The requested account cannot run commands here; ``str()`` is the line for the user."""


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...]
    switch: bool  # True: the child must setuid to this account (the agent runs as root)

    @property
    def cwd(self) -> str:
        return self.home if os.path.isdir(self.home) else "/"


def resolve_account(name: str, *, agent_uid: int | None = None) -> Account:
    """The account ``name`` as this agent can run it. Raises :class:`AccountRefused` for an
    unknown account, or, when the agent is not root, for any account but its own."""
    euid = os.geteuid() if agent_uid is None else agent_uid
    if not name or "\0" in name or "/" in name:
        raise AccountRefused(f"gk: refused: invalid account name {name!r}")
    if euid != 0:
        try:
            own = pwd.getpwuid(euid)
        except KeyError:
            raise AccountRefused(f"gk: refused: the agent's own uid {euid} has no account") from None
        if name != own.pw_name:
            raise AccountRefused(
                f"gk: refused: this agent runs as {own.pw_name!r} and can only run commands as "
                f"{own.pw_name!r}, not {name!r}"
            )
        return Account(own.pw_name, own.pw_uid, own.pw_gid, own.pw_dir, (), switch=False)
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise AccountRefused(f"gk: refused: no account {name!r} on this host") from None
    groups = tuple(os.getgrouplist(pw.pw_name, pw.pw_gid))
    return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, groups, switch=True)


def child_environment(
    account: Account,
    *,
    shell: str,
    ssh_connection: str | None = None,
    log_index: int | None = None,
) -> dict[str, str]:
    """The complete environment of an allowed command (an allow-list: nothing from the client)."""
    env = {
        "PATH": CHILD_PATH,
        "HOME": account.home,
        "USER": account.name,
        "LOGNAME": account.name,
        "SHELL": shell,
        "LANG": "C.UTF-8",
    }
    if ssh_connection:
        env["SSH_CONNECTION"] = ssh_connection
    if log_index is not None:
        env["GK_LOG_INDEX"] = str(log_index)
    return env


async def spawn(
    account: Account, shell: str, command: bytes, env: dict[str, str]
) -> asyncio.subprocess.Process:
    """Start ``[shell, "-c", command]`` as ``account``. Raises ``OSError`` (or ``ValueError`` for a
    NUL byte in the command) when it cannot be started; nothing has run then."""
    kwargs: dict[str, object] = {}
    if account.switch:
        kwargs = {"user": account.uid, "group": account.gid, "extra_groups": list(account.groups)}
    return await asyncio.create_subprocess_exec(
        shell,
        "-c",
        command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=account.cwd,
        start_new_session=True,
        close_fds=True,
        umask=0o022,
        **kwargs,  # type: ignore[arg-type]
    )


def signal_name(returncode: int) -> str:
    """RFC 4254 name (``TERM``) for a child killed by signal ``-returncode``."""
    try:
        return signal.Signals(-returncode).name.removeprefix("SIG")
    except ValueError:
        return f"SIG{-returncode}"


def kill_group(pid: int, sig: int) -> None:
    """Signal the child's process group (it leads a session of its own); gone already is fine."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
