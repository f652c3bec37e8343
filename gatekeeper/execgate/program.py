"""``gk exec``: the sshd ForceCommand that runs a command only if the root-owned agent allows it.

Started by sshd as the SSH user, through that user's login shell (which must be ``/bin/sh``: see
docs/openssh.md), as ``python3 -I -m gatekeeper.execgate [--socket PATH] [--timeout SECONDS]``.
The steps, in order:

1. Read the ``SSH_USER_AUTH`` file (``ExposeAuthInfo yes``) *first*: the public key that
   authenticated this session. The file belongs to the user, so the window to tamper with it is
   kept as short as possible.
2. Read ``SSH_ORIGINAL_COMMAND`` (unset: a shell login; a subsystem program: sftp) and ``GK_BUNDLE``.
3. Ask the local agent over its Unix socket (the agent checks who we are with SO_PEERCRED and runs
   the one verification core, ``VerifyingGate``). Nothing is decided here: this program holds no
   state, and every refusal it makes on its own (shell, subsystem, PTY, no key) is stricter.
4. Refused, or agent unreachable (fail closed): one line on stderr, exit with the reason's status.
5. Allowed: run exactly ``<shell> -c <verified bytes>`` with a fixed environment (nothing from the
   client), wait for it while forwarding signals, report the exit status to the agent (so the
   journal carries it), and exit with the command's status (or die of the same signal).

Forking and waiting costs one idle Python process per running command; in exchange the journal
records how each command ended, and the agent sees a session end even if the command is killed.

Start-up matters (this runs for every SSH command): the path from ``python3 -I -m
gatekeeper.execgate`` to the decision imports only small standard modules (``os``, ``pwd``,
``signal``, ``socket``, ``struct``, ``binascii``) — no ``argparse``, ``subprocess``, ``json`` or
``enum``; the child is started with ``os.posix_spawn``.
"""

from __future__ import annotations

import os
import pwd
import signal
import sys
from collections.abc import Mapping, Sequence

from gatekeeper.execgate.client import LocalClient, LocalUnavailable
from gatekeeper.execgate.protocol import (
    MAX_STRING,
    REASON_STATUS,
    DecideRequest,
    DecisionReply,
    ExitReport,
    LocalProtocolError,
)
from gatekeeper.execgate.sshinfo import MAX_AUTH_INFO, AuthInfoError, classify_command, parse_auth_info

__all__ = [
    "DEFAULT_SOCKET",
    "DEFAULT_TIMEOUT",
    "FORWARDED_SIGNALS",
    "fixed_environment",
    "build_parser",
    "parse_args",
    "run",
    "main",
]

DEFAULT_SOCKET = "/run/gatekeeper/local.sock"
DEFAULT_TIMEOUT = 60.0
# Signals sshd may deliver to the session (SSH "signal" requests, session teardown) that we pass on
# to the command so that it, not this waiting parent, decides what they mean.
FORWARDED_SIGNALS = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
)
# Reset to their default action in the child: Python ignores SIGPIPE and SIGXFSZ, and ignored
# signals stay ignored across exec.
_CHILD_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, *FORWARDED_SIGNALS)
_USER_PATH = "/usr/local/bin:/usr/bin:/bin"
_ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_USAGE = "usage: gk exec [--socket PATH] [--timeout SECONDS]"

# Refusal statuses used here (gatekeeper.gate.Reason, without importing enum/dataclasses).
NOT_EXEC = REASON_STATUS["not-exec"]
KEY_MISMATCH = REASON_STATUS["key-mismatch"]
POLICY = REASON_STATUS["policy"]
LOG_UNAVAILABLE = REASON_STATUS["log-unavailable"]
UNKNOWN_ACCOUNT = REASON_STATUS["unknown-account"]
MALFORMED_BUNDLE = REASON_STATUS["malformed-bundle"]
COMMAND_MISMATCH = REASON_STATUS["command-mismatch"]
INTERNAL = REASON_STATUS["internal-error"]


class UsageError(Exception):
    """The ForceCommand line is wrong (an operator error)."""


def fixed_environment(user: pwd.struct_passwd, shell: str) -> dict[bytes, bytes]:
    """The whole environment of the command: derived from the account database and the agent's
    shell, never from the client or from sshd's environment."""
    env = {
        "PATH": _ROOT_PATH if user.pw_uid == 0 else _USER_PATH,
        "HOME": user.pw_dir,
        "USER": user.pw_name,
        "LOGNAME": user.pw_name,
        "SHELL": shell,
        "LANG": "C.UTF-8",
    }
    return {os.fsencode(k): os.fsencode(v) for k, v in env.items()}


def parse_args(argv: Sequence[str]) -> tuple[str, float]:
    """(socket path, timeout) from ``--socket PATH`` and ``--timeout SECONDS`` (also with ``=``).
    Raises :class:`UsageError`. Hand-written so that the ForceCommand does not import argparse."""
    socket_path, timeout = DEFAULT_SOCKET, DEFAULT_TIMEOUT
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        if name not in ("--socket", "--timeout"):
            raise UsageError(f"unknown argument {arg!r:.60}")
        if not eq:
            if not args:
                raise UsageError(f"{name} needs a value")
            value = args.pop(0)
        if name == "--socket":
            if not value:
                raise UsageError("--socket needs a path")
            socket_path = value
        else:
            try:
                timeout = float(value)
            except ValueError:
                raise UsageError(f"--timeout {value!r:.30} is not a number") from None
            if not 0 < timeout <= 3600:
                raise UsageError("--timeout must be in (0, 3600] seconds")
    return socket_path, timeout


def build_parser(parser: object | None = None) -> object:
    """The ``gk exec`` options on an ``argparse.ArgumentParser`` (for the ``gk`` CLI; the
    ForceCommand itself uses :func:`parse_args`)."""
    import argparse

    p = parser if isinstance(parser, argparse.ArgumentParser) else argparse.ArgumentParser(
        prog="gk exec",
        description="sshd ForceCommand: run SSH_ORIGINAL_COMMAND only if the local gatekeeper agent "
        "verified that it was logged.",
    )
    p.add_argument("--socket", default=DEFAULT_SOCKET, help=f"the agent's Unix socket ({DEFAULT_SOCKET})")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for the agent's decision (default {DEFAULT_TIMEOUT:g})",
    )
    return p


def _read_auth_info(path: bytes | None) -> tuple[str, int, str]:
    """(auth_key, refusal status or 0, message)."""
    if not path:
        return "", POLICY, "sshd did not expose the authenticating key (set ExposeAuthInfo yes)"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            data = os.read(fd, MAX_AUTH_INFO + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        return "", POLICY, f"cannot read the SSH_USER_AUTH file ({exc.strerror})"
    try:
        return parse_auth_info(data), 0, ""
    except AuthInfoError as exc:
        return "", KEY_MISMATCH, str(exc)


def _peer(connection: bytes | None) -> str:
    fields = (connection or b"").split()
    if len(fields) != 4:
        return ""
    address, port = os.fsdecode(fields[0]), os.fsdecode(fields[1])
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _say(message: str) -> None:
    """One printable line on stderr (the agent's message is trusted, but keep it one line)."""
    line = "".join(ch if ch.isprintable() else " " for ch in " ".join(message.split()))
    if not line.startswith("gk:"):
        line = "gk: refused: " + line
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except OSError:
        pass


def _notify(socket_path: str, timeout: float, server_uid: int | None, request: DecideRequest) -> None:
    """Tell the agent about a session refused here, so that its log shows it; best effort."""
    try:
        with LocalClient.connect(socket_path, timeout=min(timeout, 5.0), server_uid=server_uid) as c:
            c.decide(request)
    except (LocalUnavailable, LocalProtocolError):
        pass


def _spawn_and_wait(shell: str, command: bytes, env: dict[bytes, bytes]) -> tuple[int | None, int | None]:
    """Run ``shell -c command``; forward signals to it; return (exit status, None) or (None,
    signal number). Raises OSError if the shell cannot be started."""
    child: list[int] = []
    pending: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if child:
            try:
                os.kill(child[0], signum)
            except OSError:
                pass
        else:
            pending.append(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        pid = os.posix_spawn(
            shell,
            [os.fsencode(shell), b"-c", command],
            env,
            setsigdef=_CHILD_DEFAULT_SIGNALS,
            setsigmask=(),
        )
        child.append(pid)
        for signum in pending:
            os.kill(pid, signum)
        _, wait_status = os.waitpid(pid, 0)  # retried on EINTR (PEP 475)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if os.WIFSIGNALED(wait_status):
        return None, os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status), None


def _die_like(signum: int) -> int:
    """Exit the way the command did: killed by ``signum`` (so sshd reports exit-signal)."""
    try:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    except (OSError, ValueError):
        pass
    return 128 + signum


def run(
    argv: Sequence[str] | None = None,
    environ: Mapping[bytes, bytes] | None = None,
    *,
    server_uid: int | None = 0,
) -> int:
    """Run ``gk exec``; return the exit status (refusals: ``gatekeeper.gate.Reason.exit_status``).

    ``environ`` defaults to the process environment; ``server_uid`` is the uid the agent must run
    as (root). Never raises for anything sshd, the client or the agent can cause.
    """
    env = os.environb if environ is None else environ
    # 1. The authenticating key, before anything else.
    auth_key, refusal, refusal_message = _read_auth_info(env.get(b"SSH_USER_AUTH"))
    try:
        socket_path, timeout = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        _say(f"gk: refused: {exc} (fix the ForceCommand line; {_USAGE})")
        return INTERNAL
    original = env.get(b"SSH_ORIGINAL_COMMAND")
    bundle_raw = env.get(b"GK_BUNDLE")
    bundle = None if bundle_raw is None else bundle_raw.decode("utf-8", errors="replace")

    kind = classify_command(original)
    if kind == "exec" and (b"SSH_TTY" in env or os.isatty(0)):
        kind = "pty"
    if kind == "shell":
        refusal, refusal_message = NOT_EXEC, "interactive logins are not allowed; run a logged command"
    elif kind == "subsystem":
        refusal, refusal_message = NOT_EXEC, "subsystems (sftp, scp) are not allowed"
    elif kind == "pty":
        refusal, refusal_message = NOT_EXEC, "PTY sessions are not allowed"
    elif original is not None and len(original) > MAX_STRING:
        refusal, refusal_message = COMMAND_MISMATCH, "the command is longer than any action can be"
    if bundle is not None and len(bundle.encode("utf-8")) > MAX_STRING:
        if not refusal:
            refusal, refusal_message = MALFORMED_BUNDLE, "GK_BUNDLE is too large"
        bundle = None  # not sent to the agent (it could not be framed)

    try:
        user = pwd.getpwuid(os.getuid())
    except KeyError:
        _say(f"gk: refused: uid {os.getuid()} has no account")
        return UNKNOWN_ACCOUNT
    request = DecideRequest(
        account=user.pw_name,
        command=(original or b"")[:MAX_STRING],
        auth_key=auth_key,
        bundle=bundle,
        peer=_peer(env.get(b"SSH_CONNECTION")),
        kind=kind,
    )
    if refusal:
        # Let the agent log the attempt, but only where it refuses before its gate (a non-exec
        # session, or no key): a refused-here exec must never reach the gate, which could spend
        # the action's nonce for a command that does not run.
        if kind != "exec" or not auth_key:
            _notify(socket_path, timeout, server_uid, request)
        _say(f"gk: refused: {refusal_message}")
        return refusal

    # 3. Ask the agent.
    try:
        client = LocalClient.connect(socket_path, timeout=timeout, server_uid=server_uid)
    except LocalUnavailable as exc:
        _say(f"gk: refused: {exc} (fail closed)")
        return LOG_UNAVAILABLE
    with client:
        try:
            decision: DecisionReply = client.decide(request)
        except LocalUnavailable as exc:
            _say(f"gk: refused: {exc} (fail closed)")
            return LOG_UNAVAILABLE
        except LocalProtocolError as exc:
            _say(f"gk: refused: bad answer from the local gatekeeper service: {exc}")
            return INTERNAL
        if not decision.allowed:
            _say(decision.message or f"gk: refused: {decision.code}")
            return decision.exit_status
        if not os.path.isabs(decision.shell):
            _say(f"gk: refused: the agent named a relative shell {decision.shell!r}")
            return INTERNAL

        # 5. Run exactly the verified bytes.
        status: int | None
        signum: int | None
        try:
            status, signum = _spawn_and_wait(
                decision.shell, request.command, fixed_environment(user, decision.shell)
            )
        except OSError as exc:
            _say(f"gk: cannot start {decision.shell}: {exc.strerror}")
            status, signum = 127, None
        try:
            client.set_timeout(10.0)
            client.report_exit(ExitReport(status=status, signal=signum))
        except (LocalUnavailable, LocalProtocolError) as exc:
            _say(f"gk: warning: the exit status was not journaled ({exc})")
    if signum is not None:
        return _die_like(signum)
    assert status is not None
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python3 -I -m gatekeeper.execgate``."""
    try:
        return run(argv)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # fail closed, one line, never a traceback to the SSH client
        _say(f"gk: refused: internal error in gk exec ({type(exc).__name__})")
        return INTERNAL
