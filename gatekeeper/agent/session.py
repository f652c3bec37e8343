"""One SSH session channel on the agent: refuse everything but a plain exec, ask the gate, run.

Life of a session (each step is the only way forward; any failure ends the session with one line
on stderr and the reason's exit status, and nothing is spawned):

1. Requests before the exec are recorded: a PTY, X11 or agent-forwarding request is answered with
   failure *and* marks the session, so that its exec is refused (``Reason.NOT_EXEC``) rather than
   run in a setting the user did not expect. ``env`` requests are stored by asyncssh and ignored,
   except ``GK_BUNDLE``.
2. A shell or subsystem request (sftp) is accepted at the protocol level only so that the client
   shows our refusal line and exit status 225; nothing runs.
3. Exec: the account is resolved (unknown → ``UNKNOWN_ACCOUNT``), then ``gate.decide`` runs under a
   timeout. Refused → the gate's message and status. Allowed → ``[shell, "-c", command]`` starts
   with the fixed environment (:mod:`gatekeeper.agent.child`). Input that arrives before then is
   held (up to 256 KiB, then the channel stops reading) and given to the child, or dropped.
4. Output is pumped byte for byte with flow control in both directions. After the child exited
   *and* both of its pipes reached EOF, the channel's send buffer is drained completely, then EOF,
   then ``exit-status`` (or ``exit-signal``) and close: the client always has all of stdout and
   stderr before it learns the status. Then ``gate.record_exit`` (off the client's critical path).
5. Client ``signal`` requests go to the child's process group. If the client disconnects, the
   group gets SIGTERM, then SIGKILL after ``kill_grace`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncssh

from gatekeeper.agent.child import (
    FORWARDABLE_SIGNALS,
    AccountRefused,
    child_environment,
    kill_group,
    resolve_account,
    signal_name,
    spawn,
)
from gatekeeper.gate import Decision, ExecRequest, Gate, Reason
from gatekeeper.journal import Journal, decision_record

if TYPE_CHECKING:
    from gatekeeper.agent.authkeys import Identity

__all__ = ["AgentSettings", "SessionContext", "ExecSession"]

log = logging.getLogger("gatekeeper.agent")

_READ_SIZE = 32768
_STDIN_HIGH_WATER = 256 * 1024
MAX_BUNDLE_BYTES = 256 * 1024


@dataclass(frozen=True)
class AgentSettings:
    """Behaviour of the SSH front end (identity and verification live in the gate)."""

    shell: str = "/bin/sh"
    decision_timeout: float = 15.0  # backstop around gate.decide
    login_timeout: float = 30.0
    kill_grace: float = 2.0
    quickack: bool = True
    max_auth_tries: int = 6
    keepalive_interval: float = 30.0  # SSH keepalives; a client silent for 3 of them is dropped
    agent_uid: int | None = None  # None: os.geteuid(); tests set it to exercise the non-root rules


@dataclass(frozen=True)
class SessionContext:
    """What a session knows about its connection (fixed once authentication succeeded)."""

    gate: Gate
    settings: AgentSettings
    identity: Identity
    account: str
    peer: str  # "address:port"
    ssh_connection: str  # "client_addr client_port server_addr server_port"
    journal: Journal | None = None


class ExecSession(asyncssh.SSHServerSession[bytes]):
    """See the module docstring. One instance per session channel."""

    def __init__(self, ctx: SessionContext) -> None:
        self._ctx = ctx
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._forbidden: list[str] = []
        self._kind = "an interactive shell"
        self._command: bytes | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._stdin_eof = False
        self._stdin_drain: asyncio.Task[None] | None = None
        self._early: list[bytes] | None = []  # input that arrived before the child existed
        self._early_size = 0
        self._lost = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task[None] | None = None
        self._hard_kill: asyncio.TimerHandle | None = None
        self.done = asyncio.Event()  # set when the session finished (tests, shutdown)
        self._done_callbacks: list[Callable[[ExecSession], None]] = []

    def on_done(self, callback: Callable[[ExecSession], None]) -> None:
        """Call ``callback(self)`` once the session has finished (its command, if any, reaped)."""
        self._done_callbacks.append(callback)

    def _set_done(self) -> None:
        if not self.done.is_set():
            self.done.set()
            for callback in self._done_callbacks:
                callback(self)

    def kill(self) -> None:
        """SIGKILL the command's process group if it is still running (agent shutdown)."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            kill_group(proc.pid, signal.SIGKILL)

    # --- requests -----------------------------------------------------------------------------

    def forbid(self, what: str) -> None:
        """Called by the channel for a PTY, X11 or agent-forwarding request (always refused)."""
        log.info("%s: refused %s request", self._ctx.peer, what)
        self._forbidden.append(what)

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def pty_requested(self, term_type: str, term_size: object, term_modes: object) -> bool:
        self.forbid("a PTY")  # normally intercepted by the channel already
        return False

    def shell_requested(self) -> bool:
        self._kind = "an interactive shell"
        return True

    def exec_requested(self, command: str) -> bool:
        # asyncssh refuses non-UTF-8 exec strings; for valid UTF-8, encode() restores the exact bytes.
        self._command = command.encode("utf-8")
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        self._kind = f"the {subsystem!r} subsystem"
        return True

    def break_received(self, msec: int) -> bool:
        return False

    def session_started(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    # --- data and flow control ----------------------------------------------------------------

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        proc = self._proc
        if proc is None:
            if self._early is not None:  # held until the decision: delivered to a child, or dropped
                self._early.append(data)
                self._early_size += len(data)
                if self._early_size > _STDIN_HIGH_WATER and self._chan is not None:
                    self._chan.pause_reading()  # the client's window fills up: it waits for us
            return
        self._feed(proc, data)

    def _feed(self, proc: asyncio.subprocess.Process, data: bytes) -> None:
        if proc.stdin is None or proc.stdin.transport.is_closing():
            return  # the child closed its stdin or is gone: discard, as a pipe would
        proc.stdin.write(data)
        size = proc.stdin.transport.get_write_buffer_size()
        if size > _STDIN_HIGH_WATER and self._stdin_drain is None and self._chan is not None:
            self._chan.pause_reading()
            self._stdin_drain = asyncio.get_running_loop().create_task(self._drain_stdin(proc))

    async def _drain_stdin(self, proc: asyncio.subprocess.Process) -> None:
        try:
            assert proc.stdin is not None
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self._stdin_drain = None
            if not self._lost and self._chan is not None:
                self._chan.resume_reading()

    def eof_received(self) -> bool:
        self._stdin_eof = True
        self._close_stdin()
        return True  # keep the channel half-open: output still flows

    def _close_stdin(self) -> None:
        proc = self._proc
        if proc is not None and proc.stdin is not None and not proc.stdin.transport.is_closing():
            proc.stdin.close()  # buffered input is flushed first, then the pipe closes

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def signal_received(self, signal_name: str) -> None:
        sig = FORWARDABLE_SIGNALS.get(signal_name)
        proc = self._proc
        if sig is None or proc is None or proc.returncode is not None:
            return
        log.info("%s: forwarding SIG%s to process group %d", self._ctx.peer, signal_name, proc.pid)
        kill_group(proc.pid, sig)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._writable.set()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            log.info("%s: client went away; terminating process group %d", self._ctx.peer, proc.pid)
            kill_group(proc.pid, signal.SIGTERM)
            loop = asyncio.get_running_loop()
            self._hard_kill = loop.call_later(
                self._ctx.settings.kill_grace, kill_group, proc.pid, signal.SIGKILL
            )
        if self._task is None:
            self._set_done()

    # --- the decision and the run -------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._run_checked()
        except Exception:  # a bug here must never leave a child unattended or a traceback to the user
            log.exception("%s: session failed", self._ctx.peer)
            proc = self._proc
            if proc is not None and proc.returncode is None:
                kill_group(proc.pid, signal.SIGKILL)
            await self._finish(Reason.INTERNAL.exit_status, "gk: internal error in the agent")
        finally:
            self._early = None
            self._set_done()

    def _request(self, bundle: str | None) -> ExecRequest:
        ctx = self._ctx
        return ExecRequest(
            account=ctx.account,
            command=self._command or b"",
            auth_key=ctx.identity.openssh,
            bundle=bundle,
            peer=ctx.peer,
            frontend="agent",
        )

    async def _refuse_here(self, request: ExecRequest, reason: Reason, message: str) -> None:
        """A refusal decided by the front end itself (the gate journals its own)."""
        decision = Decision(reason, message, key_fingerprint=self._ctx.identity.fingerprint)
        log.info("%s: refused (%s): %s", self._ctx.peer, reason.code, message)
        self._journal(decision_record(request, decision, event="refused"))
        await self._finish(decision.exit_status, decision.message)

    def _journal(self, record: dict[str, object]) -> None:
        if self._ctx.journal is None:
            return
        try:
            self._ctx.journal.append(record)
        except Exception as exc:  # the refusal stands; say loudly that it was not journalled
            log.error("could not write the journal %s: %s", self._ctx.journal.path, exc)

    def _bundle(self) -> tuple[str | None, bool]:
        """(GK_BUNDLE as text or None, well-formed?)"""
        assert self._chan is not None
        raw = self._chan.get_environment_bytes().get(b"GK_BUNDLE")
        if raw is None:
            return None, True
        if len(raw) > MAX_BUNDLE_BYTES:
            return None, False
        try:
            return raw.decode("ascii"), True
        except UnicodeDecodeError:
            return None, False

    async def _run_checked(self) -> None:
        ctx = self._ctx
        bundle, bundle_ok = self._bundle()
        request = self._request(bundle)
        if self._forbidden or self._command is None:
            what = " and ".join(self._forbidden) if self._forbidden else self._kind
            await self._refuse_here(
                request,
                Reason.NOT_EXEC,
                f"gk: refused: {what} requested; this host runs only logged commands sent as a plain "
                "exec request (ssh -T, no PTY, X11 or agent forwarding)",
            )
            return
        if not bundle_ok:
            await self._refuse_here(
                request, Reason.MALFORMED_BUNDLE, "gk: refused: GK_BUNDLE is not ASCII or is too large"
            )
            return
        if b"\0" in request.command:
            await self._refuse_here(request, Reason.POLICY, "gk: refused: the command contains a NUL byte")
            return
        try:
            account = resolve_account(ctx.account, agent_uid=ctx.settings.agent_uid)
        except AccountRefused as exc:
            await self._refuse_here(request, Reason.UNKNOWN_ACCOUNT, str(exc))
            return

        decision = await self._decide(request)
        if not decision.allowed:
            log.info("%s: refused (%s) %r", ctx.peer, decision.reason.code, request.command[:200])
            await self._finish(decision.exit_status, decision.message)
            return
        if self._lost:
            ctx.gate.record_exit(request, decision, None)
            return

        env = child_environment(
            account, shell=ctx.settings.shell, ssh_connection=ctx.ssh_connection, log_index=decision.index
        )
        try:
            proc = await spawn(account, ctx.settings.shell, request.command, env)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            log.error("%s: cannot start %s: %s", ctx.peer, ctx.settings.shell, exc)
            ctx.gate.record_exit(request, decision, None)
            await self._finish(Reason.INTERNAL.exit_status, f"gk: the command could not be started: {exc}")
            return
        self._proc = proc
        log.info("%s: running as %s (pid %d, index %s)", ctx.peer, account.name, proc.pid, decision.index)
        early, self._early = self._early or [], None
        if self._lost:
            self.connection_lost(None)  # the client left while we were spawning
        else:
            for data in early:
                self._feed(proc, data)
            if self._stdin_eof:
                self._close_stdin()
            elif self._chan is not None and self._stdin_drain is None:
                self._chan.resume_reading()

        pumps = [
            asyncio.create_task(self._pump(proc.stdout, None)),
            asyncio.create_task(self._pump(proc.stderr, asyncssh.EXTENDED_DATA_STDERR)),
        ]
        returncode = await proc.wait()
        if self._lost:  # a descendant that escaped the group must not keep this session alive
            for task in pumps:
                task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        if self._hard_kill is not None and not self._lost:
            self._hard_kill.cancel()
        # The client learns the outcome first; journalling the exit (an fsync) is not on its path.
        killed = signal_name(returncode) if returncode < 0 else None
        await self._finish(None if killed else returncode, None, signal=killed)
        ctx.gate.record_exit(request, decision, None if killed else returncode, signal=killed)

    async def _decide(self, request: ExecRequest) -> Decision:
        ctx = self._ctx
        timeout = ctx.settings.decision_timeout
        fingerprint = ctx.identity.fingerprint
        try:
            return await asyncio.wait_for(ctx.gate.decide(request), timeout)
        except TimeoutError:
            decision = Decision(
                Reason.LOG_UNAVAILABLE,
                f"gk: refused: verification did not finish within {timeout:g} s (log unreachable or slow)",
                key_fingerprint=fingerprint,
            )
        except Exception:  # the Gate contract says decide never raises; fail closed if it does
            log.exception("%s: gate.decide raised", ctx.peer)
            decision = Decision(
                Reason.INTERNAL,
                "gk: refused: internal error during verification",
                key_fingerprint=fingerprint,
            )
        self._journal(decision_record(request, decision, event="refused"))
        return decision

    async def _pump(self, reader: asyncio.StreamReader | None, datatype: asyncssh.DataType) -> None:
        if reader is None:
            return
        while True:
            data = await reader.read(_READ_SIZE)
            if not data:
                return
            if self._lost or self._chan is None:
                continue  # keep draining so the child is not blocked on a full pipe while dying
            try:
                self._chan.write(data, datatype)
            except OSError:
                self._lost = True
                continue
            await self._writable.wait()

    async def _drain_channel(self) -> None:
        """Wait until every byte written to the channel has been sent (or the connection is gone)."""
        chan = self._chan
        if chan is None or self._lost:
            return
        chan.set_write_buffer_limits(high=0, low=0)  # pause now unless empty; resume at exactly 0
        await self._writable.wait()

    async def _finish(self, status: int | None, message: str | None, *, signal: str | None = None) -> None:
        """Send ``message`` (one line) on stderr, all pending output, EOF, then the exit status or
        signal, and close. Does nothing once the client is gone."""
        chan = self._chan
        if chan is None or self._lost:
            return
        try:
            if message is not None:
                chan.write_stderr((_one_line(message) + "\n").encode("utf-8", "replace"))
            await self._drain_channel()
            if self._lost:
                return
            chan.write_eof()
            if signal is not None:
                chan.exit_with_signal(signal)
            else:
                chan.exit(status if status is not None else Reason.INTERNAL.exit_status)
        except OSError:
            self._lost = True


def _one_line(message: str) -> str:
    """The refusal as one line with no control characters (nothing can move the user's cursor)."""
    return "".join(ch if ch.isprintable() else "?" for ch in message.replace("\n", " "))
