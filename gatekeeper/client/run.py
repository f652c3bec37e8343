"""``gk ssh``: one logged action, then the command on one or more hosts.

For each destination the exec request carries exactly the signed command bytes and the bundle in
``GK_BUNDLE``; the session authenticates with the key that signed the action. The exit status is the
remote one (for several hosts: the first non-zero in the order given). See docs/client.md.

Target names: the action names each host by its ``HostKeyAlias`` if ``~/.ssh/config`` sets one,
else by its ``HostName`` after ``~/.ssh/config`` resolution (what ``ssh -G host`` prints), lowercased
-- never by a personal alias typed on the command line. The agent's configured ``name`` must equal
it (see :attr:`gatekeeper.client.sshclient.HostSpec.target_name`).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO

from gatekeeper.action import Target
from gatekeeper.client import sshclient
from gatekeeper.client.identity import Identity
from gatekeeper.client.submit import LogSettings, SubmitResult, build_action, submit_action
from gatekeeper.errors import ConfigError, GatekeeperError
from gatekeeper.gate import Reason

__all__ = ["HostResult", "RunReport", "run_on_hosts", "reason_for_status", "MAX_PARALLEL"]

MAX_PARALLEL = 32
_REFUSALS = {r.exit_status: r for r in Reason if r is not Reason.ALLOWED}


def reason_for_status(status: int) -> Reason | None:
    """The gate refusal that uses ``status``, if any (a command may also exit with these values)."""
    return _REFUSALS.get(status)


@dataclass
class HostResult:
    label: str
    status: int  # remote exit status; 255 = could not connect / no status
    error: str = ""  # one line when gk itself failed for this host
    seconds: float = 0.0


@dataclass
class RunReport:
    submit: SubmitResult
    results: list[HostResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def exit_status(self) -> int:
        for r in self.results:
            if r.status != 0:
                return r.status
        return 0


class _Prefixer:
    """Writes whole lines prefixed with ``[host] ``; partial lines are held until completed or
    flushed at the end (then terminated with a newline)."""

    def __init__(self, prefix: bytes, out: IO[bytes], lock: threading.Lock) -> None:
        self._prefix, self._out, self._lock, self._buf = prefix, out, lock, b""

    def write(self, data: bytes) -> None:
        self._buf += data
        if b"\n" not in self._buf:
            return
        head, _, self._buf = self._buf.rpartition(b"\n")
        text = b"".join(self._prefix + line + b"\n" for line in head.split(b"\n"))
        with self._lock:
            self._out.write(text)
            self._out.flush()

    def close(self) -> None:
        if self._buf:
            with self._lock:
                self._out.write(self._prefix + self._buf + b"\n")
                self._out.flush()
            self._buf = b""


def _direct(out: IO[bytes]) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    return write


def run_on_hosts(
    *,
    specs: Sequence[sshclient.HostSpec],
    identity: Identity,
    log: LogSettings,
    command: bytes,
    window: int,
    reason: str = "",
    resolver: sshclient.Resolver | None = None,
    accept_new: bool = False,
    pin_host_keys: bool = False,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
    stderr: IO[bytes] | None = None,
    parallel: int = 1,
    connect_timeout: float = 10.0,
    on_logged: Callable[[SubmitResult], None] | None = None,
) -> RunReport:
    """Log one action naming every host of ``specs``, then run ``command`` on each.

    One host: the SSH connection is set up while the action is signed and logged (both take a few
    milliseconds; doing them at once hides the shorter). The signed action is sent only once the
    TCP connection is up: an unreachable host raises :class:`~gatekeeper.client.sshclient.SSHError`
    with nothing logged (a failure later in the handshake is reported per host, after logging).
    Then streams go straight through (``stdin`` forwarded, EOF propagated).

    Several hosts: each host is connected after the action is logged; output lines are prefixed
    ``[label] ``; stdin is not forwarded (each command sees EOF); hosts run ``parallel`` at a time
    (1..MAX_PARALLEL). ``pin_host_keys``: connect to every host first and put the fingerprint of
    the host key each one presented into the action, so only that machine accepts it.

    Raises the submit errors (then nothing ran). Per-host SSH failures are recorded in the report
    (status 255, ``error``) and do not stop the other hosts.
    """
    out = stdout if stdout is not None else sys.stdout.buffer
    err = stderr if stderr is not None else sys.stderr.buffer
    t0 = time.perf_counter()
    accounts = sorted({s.user for s in specs})
    if len(accounts) != 1:
        raise ConfigError(
            f"one action has one account, but the hosts log in as {', '.join(accounts)}; use -l"
        )
    if len({s.target_name for s in specs}) != len(specs):
        raise ConfigError("two destinations resolve to the same host name")
    auth_key = identity.paramiko_key()
    single = len(specs) == 1
    workers = 1 if single else min(max(parallel, 1), MAX_PARALLEL, len(specs))
    pool = ThreadPoolExecutor(max_workers=workers)
    timings: dict[str, float] = {"load_key": time.perf_counter() - t0}

    reached = threading.Event()  # single host: TCP connected, or the connection failed

    def open_one(spec: sshclient.HostSpec) -> sshclient.Connection | GatekeeperError:
        start = time.perf_counter()
        try:
            return sshclient.connect(
                spec,
                auth_key,
                resolver=resolver,
                accept_new=accept_new,
                timeout=connect_timeout,
                on_tcp=reached.set if single else None,
            )
        except GatekeeperError as exc:
            return exc
        finally:
            reached.set()
            if single:
                timings["ssh_connect"] = time.perf_counter() - start

    early: list[Future[sshclient.Connection | GatekeeperError]] = []
    try:
        if single or pin_host_keys:
            early = [pool.submit(open_one, s) for s in specs]
        targets: list[Target] = []
        if pin_host_keys:
            for spec, fut in zip(specs, early, strict=True):
                c = fut.result()
                pin = c.host_key_fingerprint if isinstance(c, sshclient.Connection) else None
                targets.append(Target(spec.target_name, pin))
        else:
            targets = [Target(s.target_name) for s in specs]
        action = build_action(identity, targets, accounts[0], command, window=window, reason=reason)

        def connection_still_possible() -> None:
            # single host: wait until TCP is connected (one round trip, normally over while the
            # action was signed); an unreachable host then fails here and nothing is logged
            if single and early:
                reached.wait(connect_timeout)
                if early[0].done():
                    failed = early[0].result()
                    if isinstance(failed, GatekeeperError):
                        raise failed

        logged = submit_action(log, identity, action, before_post=connection_still_possible)
        if on_logged is not None:
            on_logged(logged)
        report = RunReport(logged, timings=timings)
        report.timings.update(logged.timings)
        env = {"GK_BUNDLE": logged.bundle}
        lock = threading.Lock()

        def one(i: int) -> HostResult:
            spec = specs[i]
            start = time.perf_counter()
            conn = early[i].result() if early else open_one(spec)
            if isinstance(conn, GatekeeperError):
                return HostResult(spec.label, 255, error=str(conn), seconds=time.perf_counter() - start)
            if single:
                o, e, closers = _direct(out), _direct(err), []
            else:
                po = _Prefixer(f"[{spec.label}] ".encode(), out, lock)
                pe = _Prefixer(f"[{spec.label}] ".encode(), err, lock)
                o, e, closers = po.write, pe.write, [po, pe]
            t_run = time.perf_counter()
            try:
                status = conn.run(command, env, stdin if single else None, o, e)
            except GatekeeperError as exc:
                return HostResult(spec.label, 255, error=str(exc), seconds=time.perf_counter() - start)
            finally:
                conn.close()
                for c in closers:
                    c.close()
            if single:
                report.timings["ssh_exec"] = time.perf_counter() - t_run
            return HostResult(spec.label, status, seconds=time.perf_counter() - start)

        report.results = list(pool.map(one, range(len(specs))))
    finally:
        for fut in early:  # close whatever was opened but not run (a submit error)
            c = fut.result()
            if isinstance(c, sshclient.Connection):
                c.close()
        pool.shutdown(wait=True)
        identity.close()
    report.timings["total"] = time.perf_counter() - t0
    return report
