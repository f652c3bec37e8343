"""``gk exec``: the sshd ForceCommand that runs a command only if the root-owned agent allows it.

Started by sshd as the SSH user, through that user's login shell (which must be ``/bin/sh``: see
docs/openssh.md), as ``python3 -I -m gatekeeper.execgate [--socket PATH]``. The steps, in order:

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
"""

from __future__ import annotations

import argparse
import os
import pwd
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

from gatekeeper.execgate.client import LocalClient, LocalUnavailable
from gatekeeper.execgate.protocol import DecideRequest, DecisionReply, ExitReport, LocalProtocolError
from gatekeeper.execgate.sshinfo import MAX_AUTH_INFO, AuthInfoError, classify_command, parse_auth_info
from gatekeeper.gate import Reason

__all__ = ["DEFAULT_SOCKET", "FORWARDED_SIGNALS", "fixed_environment", "build_parser", "run", "main"]

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
_USER_PATH = "/usr/local/bin:/usr/bin:/bin"
_ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="gk exec",
        description="sshd ForceCommand: run SSH_ORIGINAL_COMMAND only if the local gatekeeper agent "
        "verified that it was logged.",
    )
    parser.add_argument(
        "--socket",
        default=DEFAULT_SOCKET,
        help=f"the local agent's Unix socket (default {DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for the agent's decision (default {DEFAULT_TIMEOUT:g})",
    )
    return parser


def _read_auth_info(path: bytes | None) -> tuple[str, Reason | None, str]:
    """(auth_key, refusal reason or None, message)."""
    if not path:
        return "", Reason.POLICY, "sshd did not expose the authenticating key (set ExposeAuthInfo yes)"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            data = os.read(fd, MAX_AUTH_INFO + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        return "", Reason.POLICY, f"cannot read the SSH_USER_AUTH file ({exc.strerror})"
    try:
        return parse_auth_info(data), None, ""
    except AuthInfoError as exc:
        return "", Reason.KEY_MISMATCH, str(exc)


def _peer(connection: bytes | None) -> str:
    fields = (connection or b"").split()
    if len(fields) != 4:
        return ""
    address, port = os.fsdecode(fields[0]), os.fsdecode(fields[1])
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _say(message: str) -> None:
    line = " ".join(message.split())
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


def _wait_forwarding_signals(child: subprocess.Popen[bytes]) -> int:
    def forward(signum: int, _frame: object) -> None:
        try:
            child.send_signal(signum)
        except OSError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
    """Run ``gk exec``; return the exit status (refusal statuses are ``Reason.exit_status``).

    ``environ`` defaults to the process environment; ``server_uid`` is the uid the agent must run
    as (root). Never raises for anything sshd, the client or the agent can cause.
    """
    env = os.environb if environ is None else environ
    # 1. The authenticating key, before anything else.
    auth_key, refusal, refusal_message = _read_auth_info(env.get(b"SSH_USER_AUTH"))
    args = build_parser().parse_args(argv)
    original = env.get(b"SSH_ORIGINAL_COMMAND")
    bundle_raw = env.get(b"GK_BUNDLE")
    bundle = None if bundle_raw is None else bundle_raw.decode("utf-8", errors="replace")

    kind = classify_command(original)
    if kind == "exec" and (b"SSH_TTY" in env or os.isatty(0)):
        kind = "pty"
    if kind == "shell":
        refusal, refusal_message = Reason.NOT_EXEC, "interactive logins are not allowed; run a logged command"
    elif kind == "subsystem":
        refusal, refusal_message = Reason.NOT_EXEC, "subsystems (sftp, scp) are not allowed"
    elif kind == "pty":
        refusal, refusal_message = Reason.NOT_EXEC, "PTY sessions are not allowed"

    try:
        user = pwd.getpwuid(os.getuid())
    except KeyError:
        _say(f"gk: refused: uid {os.getuid()} has no account")
        return Reason.UNKNOWN_ACCOUNT.exit_status
    request = DecideRequest(
        account=user.pw_name,
        command=original or b"",
        auth_key=auth_key,
        bundle=bundle,
        peer=_peer(env.get(b"SSH_CONNECTION")),
        kind=kind,
    )
    if refusal is not None:
        _notify(args.socket, args.timeout, server_uid, request)
        _say(f"gk: refused: {refusal_message}")
        return refusal.exit_status

    # 3. Ask the agent.
    try:
        client = LocalClient.connect(args.socket, timeout=args.timeout, server_uid=server_uid)
    except LocalUnavailable as exc:
        _say(f"gk: refused: {exc} (fail closed)")
        return Reason.LOG_UNAVAILABLE.exit_status
    with client:
        try:
            decision: DecisionReply = client.decide(request)
        except LocalUnavailable as exc:
            _say(f"gk: refused: {exc} (fail closed)")
            return Reason.LOG_UNAVAILABLE.exit_status
        except LocalProtocolError as exc:
            _say(f"gk: refused: bad answer from the local gatekeeper service: {exc}")
            return Reason.INTERNAL.exit_status
        if not decision.allowed:
            _say(decision.message or f"gk: refused: {decision.reason.code}")
            return decision.reason.exit_status
        if not os.path.isabs(decision.shell):
            _say(f"gk: refused: the agent named a relative shell {decision.shell!r}")
            return Reason.INTERNAL.exit_status

        # 5. Run exactly the verified bytes.
        try:
            child = subprocess.Popen(
                [decision.shell, "-c", request.command],
                executable=decision.shell,
                env=fixed_environment(user, decision.shell),
                close_fds=True,
                restore_signals=True,
            )
        except OSError as exc:
            _say(f"gk: cannot start {decision.shell}: {exc.strerror}")
            status: int | None = 127
            signum: int | None = None
        else:
            returncode = _wait_forwarding_signals(child)
            status, signum = (returncode, None) if returncode >= 0 else (None, -returncode)
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
        return Reason.INTERNAL.exit_status
