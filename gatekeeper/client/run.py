"""``gk ssh``: one logged action, then the command on one or more hosts.

For each destination the exec request carries exactly the signed command bytes and the bundle in
``GK_BUNDLE``; the session authenticates with the key that signed the action. The exit status is the
remote one (for several hosts: the first non-zero in the order given). See docs/client.md.

Target names: the action names each host by its ``HostName`` *after* ``~/.ssh/config`` resolution
(what ``ssh -G host`` prints as ``hostname``), lowercased -- not the alias typed on the command line,
which is personal to one user's config. The agent's configured name must equal it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO

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
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
    stderr: IO[bytes] | None = None,
    parallel: int = 1,
    connect_timeout: float = 10.0,
    on_logged: Callable[[SubmitResult], None] | None = None,
) -> RunReport:
    """Log one action naming every host of ``specs``, then run ``command`` on each.

    One host: streams go straight through (``stdin`` forwarded, EOF propagated). Several hosts:
    output lines are prefixed ``[label] ``, stdin is not forwarded (each command sees EOF), hosts
    run ``parallel`` at a time (1..MAX_PARALLEL). Raises the submit errors (nothing ran); per-host
    SSH failures are recorded in the report (status 255) and do not stop the other hosts.
    """
    out = stdout if stdout is not None else sys.stdout.buffer
    err = stderr if stderr is not None else sys.stderr.buffer
    t0 = time.perf_counter()
    auth_key = identity.paramiko_key()
    t_key = time.perf_counter()
    accounts = sorted({s.user for s in specs})
    if len(accounts) != 1:
        raise ConfigError(
            f"one action has one account, but the hosts log in as {', '.join(accounts)}; use -l"
        )
    names = [s.hostname for s in specs]
    action = build_action(identity, names, accounts[0], command, window=window, reason=reason)
    logged = submit_action(log, identity, action)
    if on_logged is not None:
        on_logged(logged)
    report = RunReport(logged)
    report.timings.update(logged.timings)
    report.timings["load_key"] = t_key - t0
    env = {"GK_BUNDLE": logged.bundle}
    single = len(specs) == 1
    lock = threading.Lock()

    def one(spec: sshclient.HostSpec) -> HostResult:
        start = time.perf_counter()
        if single:
            o, e, closers = _direct(out), _direct(err), []
        else:
            po = _Prefixer(f"[{spec.label}] ".encode(), out, lock)
            pe = _Prefixer(f"[{spec.label}] ".encode(), err, lock)
            o, e, closers = po.write, pe.write, [po, pe]
        try:
            with sshclient.connect(
                spec, auth_key, resolver=resolver, accept_new=accept_new, timeout=connect_timeout
            ) as conn:
                t_conn = time.perf_counter()
                status = conn.run(command, env, stdin if single else None, o, e)
                if single:
                    report.timings["ssh_connect"] = t_conn - start
                    report.timings["ssh_exec"] = time.perf_counter() - t_conn
            return HostResult(spec.label, status, seconds=time.perf_counter() - start)
        except GatekeeperError as exc:
            return HostResult(spec.label, 255, error=str(exc), seconds=time.perf_counter() - start)
        finally:
            for c in closers:
                c.close()

    if single or parallel <= 1:
        report.results = [one(s) for s in specs]
    else:
        with ThreadPoolExecutor(max_workers=min(parallel, MAX_PARALLEL, len(specs))) as pool:
            report.results = list(pool.map(one, specs))
    report.timings["total"] = time.perf_counter() - t0
    return report
