"""Local mode: the root-owned agent answers ``gk exec`` (sshd ForceCommand) over a Unix socket.

Under ForceCommand, ``gk exec`` runs as the SSH user, who must not be able to touch the head store,
the spent nonces or the halted flag. So ``gk exec`` holds no state and decides nothing: it sends
what sshd told it to this service, which runs as root with the same :class:`~gatekeeper.gate.Gate`
(``VerifyingGate``) as the asyncssh front end, and answers with the decision. Protocol:
:mod:`gatekeeper.execgate.protocol`.

What this service guarantees on top of the gate:

- **Identity from the kernel.** The account is the peer's uid (``SO_PEERCRED``, fixed at connect
  time), never the client's word: a request naming any other account is refused (WRONG_ACCOUNT)
  without consulting the gate.
- **Only exec.** Shell, subsystem and PTY sessions, and sessions without a public key, are refused
  here (and already by ``gk exec``); they are logged and journaled but never reach the gate.
- **Safe login shells.** sshd starts the ForceCommand through the account's login shell, and bash
  reads ``~/.bashrc`` first when ``SSH_CLIENT`` is set. An account whose shell is not in
  ``login_shells`` (default: ``/bin/sh`` and dash) is refused (POLICY), so a misconfiguration is
  loud instead of silently bypassable.
- **Exit statuses.** After an allowed decision the connection stays open while the command runs;
  ``gk exec`` reports the exit status or the signal that killed the command, which go to
  :meth:`Gate.record_exit` (both ``None`` if the connection ends without a report, e.g. ``gk exec``
  was killed).
- **Bounded.** Frames are at most ``MAX_PAYLOAD`` bytes, the request must arrive within
  ``request_timeout`` seconds, at most ``max_connections`` sessions are served at once (the next
  is closed without an answer, which ``gk exec`` reports as a refusal), and at most
  ``max_pending_per_uid`` of one uid may wait for a decision at the same time.

The socket's directory must be owned by the service's user and writable by nobody else, so that no
user can replace the socket; the socket itself is ``mode`` (default 0666: every local user may ask,
the kernel tells us who asks). Direct access to the socket is not a privilege: the service only
answers; ``gk exec`` runs the command as the asking user, and only what the gate allows for that
user's own account.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import socket
import stat
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

from gatekeeper.agent.child import signal_name
from gatekeeper.errors import ConfigError, GatekeeperError
from gatekeeper.execgate.protocol import (
    HEADER_SIZE,
    Ack,
    DecideRequest,
    DecisionReply,
    ExitReport,
    LocalProtocolError,
    Message,
    encode,
    parse_message,
    payload_length,
)
from gatekeeper.gate import Decision, ExecRequest, Gate, Reason
from gatekeeper.journal import Journal, decision_record

__all__ = ["DEFAULT_LOGIN_SHELLS", "LocalServer", "start_local", "main"]

log = logging.getLogger("gatekeeper.agent.local")

DEFAULT_LOGIN_SHELLS = frozenset({"/bin/sh", "/usr/bin/sh", "/bin/dash", "/usr/bin/dash"})
_UCRED = struct.Struct("3i")


async def _read_message(reader: asyncio.StreamReader) -> Message:
    length = payload_length(await reader.readexactly(HEADER_SIZE))
    return parse_message(await reader.readexactly(length))


def _peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected, as the kernel recorded it at connect()."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(creds)
    return pid, uid, gid


def _prepare_directory(path: Path) -> None:
    """Create the socket's directory if needed (0755, whatever the umask: the gated users must
    reach the socket) and check that only we can write it."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o755, parents=True)
        os.chmod(parent, 0o755)
    st = parent.stat()
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"{parent} must be owned by uid {os.geteuid()} and writable by nobody else "
            f"(owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})"
        )
    try:
        existing = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(existing.st_mode):
        raise ConfigError(f"{path} exists and is not a socket")
    path.unlink()


class LocalServer:
    """A running local-mode service; create it with :func:`start_local`."""

    def __init__(
        self,
        gate: Gate,
        socket_path: Path,
        *,
        shell: str,
        login_shells: frozenset[str] | None,
        request_timeout: float,
        max_connections: int,
        max_pending_per_uid: int,
        journal: Journal | None,
    ) -> None:
        self.socket_path = socket_path
        self._gate = gate
        self._shell = shell
        self._login_shells = login_shells
        self._request_timeout = request_timeout
        self._max_connections = max_connections
        self._journal = journal
        # Session tasks and their connection; a task is "started" once it owns its connection.
        self._sessions: dict[asyncio.Task[None], socket.socket] = {}
        self._started: set[asyncio.Task[None]] = set()
        self._pending: dict[int, int] = {}  # uid -> sessions waiting for their decision
        self._max_pending_per_uid = max_pending_per_uid
        self._listener: socket.socket | None = None
        self._closed = asyncio.Event()
        self._inode: tuple[int, int] | None = None

    # Accepting is done here rather than with asyncio.start_unix_server: on Python 3.11 a
    # connection accepted just before the server closes leaks its socket (Server._attach asserts),
    # and every accepted connection must be accounted for, to be closed on shutdown.

    async def _start(self, mode: int, group: str | None) -> None:
        _prepare_directory(self.socket_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.socket_path))
            if group is not None:
                try:
                    gid = grp.getgrnam(group).gr_gid
                except KeyError as exc:
                    raise ConfigError(f"unknown group {group!r} for the local socket") from exc
                os.chown(self.socket_path, -1, gid)
            os.chmod(self.socket_path, mode)
            listener.listen(128)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            with contextlib.suppress(OSError):
                self.socket_path.unlink()
            raise
        st = self.socket_path.lstat()
        self._inode = (st.st_dev, st.st_ino)
        self._listener = listener
        asyncio.get_running_loop().add_reader(listener.fileno(), self._on_readable)
        log.info("local mode listening on %s (mode %04o)", self.socket_path, mode)

    def _on_readable(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        for _ in range(64):
            try:
                conn, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: log, and try again on the next event
                log.error("local mode: accept failed: %s", exc)
                return
            if len(self._sessions) >= self._max_connections:
                log.warning("local mode: %d sessions open, refusing another", len(self._sessions))
                conn.close()
                continue
            conn.setblocking(False)
            task = loop.create_task(self._handle(conn))
            self._sessions[task] = conn
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._sessions.pop(task, None)
        self._started.discard(task)

    def close(self) -> None:
        """Stop accepting sessions, end the open ones and remove the socket. Commands already
        running keep running; their ``gk exec`` can no longer report the exit status (it warns)."""
        if self._listener is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
            with contextlib.suppress(OSError):
                st = self.socket_path.lstat()
                if (st.st_dev, st.st_ino) == self._inode:
                    self.socket_path.unlink()
        for task, conn in list(self._sessions.items()):
            if task not in self._started:
                conn.close()  # the task will never run its body: close its connection here
            task.cancel()
        self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until every session has finished closing."""
        await asyncio.gather(*self._sessions, return_exceptions=True)

    async def serve_forever(self) -> None:
        """Serve until cancelled or :meth:`close`\\ d; then close."""
        try:
            await self._closed.wait()
        finally:
            self.close()
            await self.wait_closed()

    # -- one session -------------------------------------------------------------------------

    def _journal_refusal(self, request: ExecRequest, decision: Decision) -> None:
        if self._journal is None:
            return
        try:
            self._journal.append(decision_record(request, decision, event="refused"))
        except Exception:
            log.exception("local mode: could not journal a refusal")

    async def _decide(self, uid: int, msg: DecideRequest) -> tuple[ExecRequest, Decision]:
        request = ExecRequest(
            account=msg.account,
            command=msg.command,
            auth_key=msg.auth_key,
            bundle=msg.bundle,
            peer=msg.peer,
            frontend="exec",
        )
        try:
            user = pwd.getpwuid(uid)
        except KeyError:
            return request, Decision(Reason.UNKNOWN_ACCOUNT, f"gk: refused: uid {uid} has no account")
        refusal: Decision | None = None
        if msg.account != user.pw_name:
            refusal = Decision(
                Reason.WRONG_ACCOUNT,
                f"gk: refused: uid {uid} ({user.pw_name}) may not ask for account {msg.account!r:.64}",
            )
        elif msg.kind != "exec":
            refusal = Decision(Reason.NOT_EXEC, f"gk: refused: {msg.kind} sessions are not allowed")
        elif not msg.auth_key:
            refusal = Decision(Reason.KEY_MISMATCH, "gk: refused: the session has no public key")
        elif self._login_shells is not None and user.pw_shell not in self._login_shells:
            refusal = Decision(
                Reason.POLICY,
                f"gk: refused: the login shell of {user.pw_name} is {user.pw_shell}, which may run "
                "user files before gk exec; set it to /bin/sh",
            )
        if refusal is not None:
            self._journal_refusal(request, refusal)
            return request, refusal
        try:
            decision = await self._gate.decide(request)
        except Exception:  # the gate must not raise; if it does, that is a refusal
            log.exception("local mode: gate.decide raised")
            decision = Decision(Reason.INTERNAL, "gk: refused: internal error in the gatekeeper agent")
        return request, decision

    async def _handle(self, conn: socket.socket) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._started.add(task)
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn)
            await self._session(conn, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, LocalProtocolError, TimeoutError) as exc:
            log.warning("local mode: session ended early: %s", exc or type(exc).__name__)
        finally:
            if writer is None:
                conn.close()
            else:
                writer.close()
                with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                    await writer.wait_closed()

    async def _session(
        self, conn: socket.socket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        pid, uid, _gid = _peer_credentials(conn)
        if self._pending.get(uid, 0) >= self._max_pending_per_uid:
            log.warning("local mode: uid %d has too many requests pending, refusing another", uid)
            reply = DecisionReply(Reason.INTERNAL, f"gk: refused: too many requests from uid {uid} at once")
            writer.write(encode(reply))
            await writer.drain()
            return
        self._pending[uid] = self._pending.get(uid, 0) + 1
        try:
            try:
                msg = await asyncio.wait_for(_read_message(reader), self._request_timeout)
            except LocalProtocolError as exc:
                log.warning("local mode: pid %d uid %d sent a malformed request: %s", pid, uid, exc)
                reply = DecisionReply(Reason.INTERNAL, f"gk: refused: malformed local request ({exc})")
                writer.write(encode(reply))
                await writer.drain()
                return
            if not isinstance(msg, DecideRequest):
                raise LocalProtocolError(f"expected a decide request, got {type(msg).__name__}")
            request, decision = await self._decide(uid, msg)
        finally:
            self._pending[uid] -= 1
            if not self._pending[uid]:
                del self._pending[uid]
        log.info(
            "local mode: pid %d uid %d account %s kind %s: %s",
            pid,
            uid,
            msg.account,
            msg.kind,
            decision.reason.code,
        )
        writer.write(
            encode(
                DecisionReply(
                    reason=decision.reason,
                    message=decision.message,
                    index=decision.index,
                    key_fingerprint=decision.key_fingerprint,
                    shell=self._shell,
                )
            )
        )
        await writer.drain()
        if not decision.allowed:
            return
        # The command runs now; its session ends with an exit report or a closed connection.
        report: Message | None
        try:
            report = await _read_message(reader)
        except (ConnectionError, asyncio.IncompleteReadError, LocalProtocolError):
            report = None
        status = report.status if isinstance(report, ExitReport) else None
        # ExitReport.signal is the signal number that killed the command (positive, 1..127).
        killed = signal_name(-report.signal) if isinstance(report, ExitReport) and report.signal else None
        try:
            self._gate.record_exit(request, decision, status, signal=killed)
        except Exception:
            log.exception("local mode: gate.record_exit raised")
        if isinstance(report, ExitReport):
            writer.write(encode(Ack()))
            await writer.drain()


async def start_local(
    gate: Gate,
    socket_path: str | os.PathLike[str],
    *,
    mode: int = 0o666,
    group: str | None = None,
    shell: str = "/bin/sh",
    login_shells: Iterable[str] | None = DEFAULT_LOGIN_SHELLS,
    request_timeout: float = 10.0,
    max_connections: int = 512,
    max_pending_per_uid: int = 16,
    journal: Journal | None = None,
) -> LocalServer:
    """Listen on ``socket_path`` and answer ``gk exec`` with ``gate``'s decisions.

    ``mode``/``group``: the socket's permissions (who may ask at all). ``shell``: the absolute path
    ``gk exec`` runs the verified bytes with (``shell -c``). ``login_shells``: accounts whose login
    shell is not listed are refused (None: no check). ``request_timeout``: seconds for the request
    to arrive. ``max_connections``: sessions open at once, running commands included.
    ``max_pending_per_uid``: sessions of one uid waiting for their decision, so that one local user
    cannot hold every slot. ``journal``: where refusals made here, before the gate, are recorded
    (the gate journals its own decisions). Raises
    :class:`~gatekeeper.errors.ConfigError` for an unsafe directory or bad settings."""
    if not os.path.isabs(shell):
        raise ConfigError(f"the local-mode shell must be an absolute path, not {shell!r}")
    if not 0 <= mode <= 0o777:
        raise ConfigError(f"invalid socket mode {mode:o}")
    server = LocalServer(
        gate,
        Path(socket_path),
        shell=shell,
        login_shells=None if login_shells is None else frozenset(login_shells),
        request_timeout=request_timeout,
        max_connections=max_connections,
        max_pending_per_uid=max_pending_per_uid,
        journal=journal,
    )
    await server._start(mode, group)
    return server


# -- standalone runner: ``python3 -m gatekeeper.agent.local --config agent.toml`` ------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the agent in local mode only, from an agent.toml: exactly ``gk agent serve`` with
    ``[agent] listen = ""`` and ``[local]`` taken from the flags (kept for existing deployments;
    prefer a ``[local]`` section and ``gk agent serve --config``). Prints ``local mode listening
    on PATH`` once ready; stops on SIGTERM or SIGINT."""
    import argparse
    import dataclasses
    import sys

    from personality.errors import PersonalityError

    p = argparse.ArgumentParser(
        prog="python3 -m gatekeeper.agent.local",
        description="Answer gk exec (sshd ForceCommand) over a Unix socket, with the verifying gate "
        "configured by an agent.toml; its SSH listener is not started. Run as root. Equivalent to "
        "'gk agent serve' with a [local] section and listen = \"\". See docs/openssh.md.",
    )
    p.add_argument("--config", required=True, type=Path, help="the agent.toml (gk agent init)")
    p.add_argument("--socket", default="/run/gatekeeper/local.sock", help="default %(default)s")
    p.add_argument("--mode", default="0666", help="socket permissions, octal (default %(default)s)")
    p.add_argument("--group", help="group owning the socket (with --mode 0660: only its members ask)")
    args = p.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s gk-local %(levelname)s %(message)s"
    )
    try:
        mode = int(args.mode, 8)
    except ValueError:
        print(f"gk: --mode {args.mode!r} is not octal", file=sys.stderr)
        return 2

    from gatekeeper.agent.config import load_config
    from gatekeeper.agent.wiring import serve

    try:
        config = dataclasses.replace(
            load_config(args.config),
            listen_host="",
            listen_port=0,
            local_socket=Path(args.socket),
            local_mode=mode,
            local_group=args.group,
        )
        return serve(config)
    except (GatekeeperError, PersonalityError) as exc:
        print(exc.diagnostics(), file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":  # pragma: no cover - exercised as a subprocess by the tests
    raise SystemExit(main())
