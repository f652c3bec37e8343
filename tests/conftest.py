"""Shared test helpers: a free loopback port, and a real log server in a subprocess.

Fixtures and helpers (reuse them; keep them generic):

``free_port() -> int``
    A TCP port on 127.0.0.1 that was free a moment ago (plain function, not a fixture). Prefer
    port 0 where the code under test reports the port it bound.

``log_server`` (fixture) -> :class:`LogServer`
    A fresh log created with ``gk log init`` in a temporary directory and served by
    ``gk log serve --listen 127.0.0.1:0 --accept-any`` in a subprocess. Ready when the fixture
    returns (the server printed ``listening on URL``); stopped with SIGTERM, by PID, at teardown.

``log_server_factory`` (fixture) -> ``start(*serve_args, origin=None) -> LogServer``
    The same with your own ``gk log serve`` arguments instead of ``--accept-any``, e.g.
    ``start("--allowed-signers", str(path))``. Every server started is stopped at teardown.

``LogServer.create(directory, *serve_args, origin=...)``
    The same for fixtures of other scopes (module, session): you stop it yourself.

:class:`LogServer` attributes: ``url`` (``http://127.0.0.1:PORT``, no trailing slash),
``directory`` (the log directory), ``origin``, ``vkey`` (verifier key string for
``personality.tlog.note.parse_vkey``), ``pid``, ``stderr_path`` (the server's log). Methods:
``stop()`` (SIGTERM, then SIGKILL after 10 s), ``kill()`` (SIGKILL: a crash), ``start()``
(start again on the same directory; the port may change: read ``url`` again), ``stderr()``.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free when this returned."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gk_command(*args: str) -> list[str]:
    """argv running ``gk`` from this checkout with the test interpreter."""
    return [sys.executable, "-m", "gatekeeper", *args]


class LogServer:
    """A ``gk log serve`` subprocess on one log directory (see the module docstring)."""

    def __init__(self, directory: Path, origin: str, serve_args: tuple[str, ...], listen: str) -> None:
        self.directory = directory
        self.origin = origin
        self.serve_args = serve_args
        self.listen = listen
        self.stderr_path = directory.parent / f"{directory.name}-server.log"
        from personality.tlog.note import signer_from_skey

        self.vkey = signer_from_skey((directory / "log.key").read_text()).verifier().vkey()
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "server not running"
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> LogServer:
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                gk_command("log", "serve", str(self.directory), "--listen", self.listen, *self.serve_args),
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline()
                if b"listening on " in line:
                    self.url = line.decode().split("listening on ", 1)[1].strip()
                    return self
            if self.proc.poll() is not None:
                break
        self.kill()
        raise RuntimeError(f"gk log serve did not start: {line!r}\n{self.stderr()[-2000:]}")

    def stop(self) -> None:
        """SIGTERM (clean shutdown), SIGKILL if it has not exited within 10 s."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """SIGKILL: the server dies at whatever it was doing."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    @classmethod
    def create(
        cls, directory: Path, *serve_args: str, origin: str = "test.example/log", listen: str = "127.0.0.1:0"
    ) -> LogServer:
        """``gk log init`` a new log in ``directory`` and start serving it (for custom-scoped fixtures;
        the caller must :meth:`stop` it)."""
        init_log(directory, origin)
        return cls(directory, origin, tuple(serve_args), listen).start()

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def init_log(directory: Path, origin: str) -> None:
    """``gk log init DIRECTORY --origin ORIGIN`` (in this process: the same code, no startup cost)."""
    import contextlib
    import io

    from gatekeeper.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(["log", "init", str(directory), "--origin", origin])
    if rc != 0:
        raise RuntimeError(f"gk log init {directory} failed with status {rc}")


@pytest.fixture
def log_server_factory(tmp_path: Path) -> Iterator[Callable[..., LogServer]]:
    servers: list[LogServer] = []

    def start(*serve_args: str, origin: str | None = None, listen: str = "127.0.0.1:0") -> LogServer:
        n = len(servers)
        directory = tmp_path / f"log{n}"
        name = origin or f"test.example/log{n}"
        init_log(directory, name)
        server = LogServer(directory, name, tuple(serve_args), listen)
        servers.append(server)
        return server.start()

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def log_server(log_server_factory: Callable[..., LogServer]) -> LogServer:
    return log_server_factory("--accept-any")
