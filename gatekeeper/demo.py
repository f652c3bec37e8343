"""``make demo``: the whole Gatekeeper story on one machine, in a few seconds.

Runs the real ``gk`` commands as subprocesses (each shown as ``$ gk ...`` with its output indented)
against a log and two asyncssh agents on 127.0.0.1, with embedded defaults only: SQLite, no root
needed, no system service, every file in one temporary directory that is removed at the end (or
kept with ``--keep DIR``). The steps:

1. a user SSH key (``ssh-keygen``, or the ``cryptography`` package when it is missing);
2. the log: ``gk log init``, ``gk log key``, ``gk log serve --allowed-signers`` on a free port;
3. two hosts, web-01 and web-02: ``gk agent init`` and ``gk agent serve``, the user's key authorized,
   an ``ssh_config`` and ``known_hosts`` for them;
4. logged commands with ``gk ssh`` on one host and on both;
5. an unlogged command sent with plain ``ssh`` (or paramiko): refused, and it did not run;
6. the audit trail (``gk audit sync``, ``list``, ``reconcile``, ``prove``) and a monitor round;
7. the log goes down: an offline proof still verifies (``gk audit verify-bundle``), and nothing
   can be logged (fail closed);
8. the log operator restores an old backup of the log's database and serves that history: the
   user's own client refuses it, a host that is shown it refuses and halts (``gk agent status``),
   and the monitor raises a critical alert.

Every process the demo starts is stopped by its PID at the end, also after an error or Ctrl-C.
Exit status 0 when every step had the expected outcome, 1 otherwise (the failing step is named).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import select
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

__all__ = ["main", "Demo", "DemoFailure"]

ORIGIN = "demo.gatekeeper.example/log"
HOSTS = ("web-01", "web-02")
PRINCIPAL = "alice@demo.example"
_WAIT = 15.0  # seconds a server may take to become ready
_CMD_TIMEOUT = 60.0  # seconds any one command may take
_SHOW_WIDTH = 104  # longer output lines are wrapped on screen


class DemoFailure(Exception):
    """A step did not have the expected outcome."""


@dataclass(frozen=True)
class Ran:
    status: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _gk_command() -> list[str]:
    """The venv's ``gk`` script next to this interpreter, else ``python -m gatekeeper.cli``."""
    script = Path(sys.executable).parent / "gk"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "gatekeeper.cli"]


class Demo:
    """One run of the demo in ``root`` (which must exist and be empty). ``out`` gets the story."""

    def __init__(self, root: Path, out: TextIO, *, bold: bool = False) -> None:
        self.root = root
        self.out = out
        self.bold = bold
        self.gk = _gk_command()
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.env = self._environment()
        self.step_no = 0
        self.log_port = 0
        self.log_url = ""
        self.vkey = ""
        self.host_ports: dict[str, int] = {}
        self.user_key = root / "alice" / "id_ed25519"
        self.backup = root / "backup"
        self.outcomes: list[str] = []

    # -- output -------------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def step(self, title: str) -> None:
        self.step_no += 1
        line = f"{self.step_no}. {title}"
        self.say()
        self.say(f"\033[1m{line}\033[0m" if self.bold else line)

    def note(self, text: str) -> None:
        self.say(f"   {text}")

    def _show_output(self, text: str) -> None:
        for line in text.rstrip("\n").splitlines():
            pieces = textwrap.wrap(line, _SHOW_WIDTH, subsequent_indent="    ", break_on_hyphens=False,
                                   drop_whitespace=False) or [""]
            for piece in pieces:
                self.say(f"     {piece.rstrip()}")

    def _show_command(self, argv: Sequence[str], shown: Sequence[str] | None) -> None:
        words = list(shown) if shown is not None else ["gk", *argv]
        text = shlex.join(words).replace(str(self.root) + "/", "")
        if self.vkey:  # the verifier key is long; show where it came from instead
            text = text.replace(self.vkey, '"$(cat log.vkey)"')
        self.say(f"   $ {text}")

    # -- processes ----------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        """A clean environment: nothing from the user's ~/.ssh, ~/.config or ssh-agent leaks in."""
        home = self.root / "home"
        home.mkdir(mode=0o700, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "GK_CONFIG": str(self.root / "alice" / "client.toml"),
            "PYTHONUNBUFFERED": "1",
        }
        if "VIRTUAL_ENV" in os.environ:
            env["VIRTUAL_ENV"] = os.environ["VIRTUAL_ENV"]
        return env

    def run(
        self,
        argv: Sequence[str],
        *,
        expect: int | None = 0,
        shown: Sequence[str] | None = None,
        gk: bool = True,
        quiet_stdout: bool = False,
    ) -> Ran:
        """Run ``gk argv`` (or ``argv`` itself when ``gk`` is False) in ``root`` and show it.
        Raises DemoFailure when the exit status is not ``expect`` (None: any)."""
        self._show_command(argv, shown if shown is not None or gk else list(argv))
        full = [*self.gk, *argv] if gk else list(argv)
        try:
            proc = subprocess.run(
                full,
                cwd=self.root,
                env=self.env,
                input=b"",  # never the demo's own stdin
                capture_output=True,
                timeout=_CMD_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise DemoFailure(f"{shlex.join(full)} did not finish within {_CMD_TIMEOUT:g} s") from None
        except OSError as exc:
            raise DemoFailure(f"cannot run {full[0]}: {exc.strerror or exc}") from None
        ran = Ran(proc.returncode, proc.stdout.decode("utf-8", "replace"),
                  proc.stderr.decode("utf-8", "replace"))
        if not quiet_stdout:
            self._show_output(ran.stdout)
        self._show_output(ran.stderr)
        self.say(f"     [exit {ran.status}]")
        if expect is not None and ran.status != expect:
            raise DemoFailure(f"{shlex.join(full)} exited {ran.status}, expected {expect}")
        return ran

    def start(self, name: str, argv: Sequence[str]) -> None:
        """Start ``gk argv`` in the background, in its own session (so that Ctrl-C reaches only the
        demo, which stops it by PID); stdout is kept for :meth:`ready`, stderr goes to
        ``logs/NAME.log``."""
        self._show_command(argv, None)
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        err = open(logs / f"{name}.log", "ab")  # noqa: SIM115 (closed below, the child keeps its copy)
        try:
            proc = subprocess.Popen(
                [*self.gk, *argv],
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            err.close()
        self.procs.append((name, proc))

    def ready(self, name: str, marker: str = "listening on ") -> str:
        """Wait (at most ``_WAIT`` seconds) until ``name`` prints a line containing ``marker`` on
        stdout; return the text from the marker on."""
        proc = dict(self.procs)[name]
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + _WAIT
        buffered = b""
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buffered += chunk
            for raw in buffered.split(b"\n")[:-1]:
                line = raw.decode("utf-8", "replace").strip()
                if marker in line:
                    said = line[line.index(marker):]
                    self.note(f"  ({name}, pid {proc.pid}: {said})")
                    return said
        self._fail_start(name, proc)
        raise AssertionError("unreachable")

    def _fail_start(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(OSError):
            proc.terminate()
        tail = ""
        with contextlib.suppress(OSError):
            tail = (self.root / "logs" / f"{name}.log").read_text(errors="replace")[-2000:]
        raise DemoFailure(f"{name} did not become ready:\n{tail}")

    def stop(self, name: str) -> None:
        """Stop the process started as ``name`` by its PID: SIGTERM, then SIGKILL after 5 s."""
        for i, (n, proc) in enumerate(self.procs):
            if n == name:
                _terminate(proc)
                del self.procs[i]
                return

    def stop_all(self) -> None:
        """SIGTERM to every process still running (by PID), then wait for each (SIGKILL after 5 s)."""
        procs = [proc for _name, proc in reversed(self.procs)]
        self.procs.clear()
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            _terminate(proc)

    # -- the story ----------------------------------------------------------------------------

    def run_all(self) -> None:
        self.user_keypair()
        self.log_service()
        self.hosts()
        self.logged_commands()
        self.unlogged_command()
        self.audit_and_monitor()
        self.log_down()
        self.forked_history()

    def user_keypair(self) -> None:
        self.step("A user and her SSH key (the key signs every action and logs in to the hosts)")
        (self.root / "alice").mkdir(mode=0o700)
        if shutil.which("ssh-keygen"):
            self.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", PRINCIPAL, "-f",
                      str(self.user_key)], gk=False)
        else:
            self.note("(ssh-keygen is not installed: generating the Ed25519 key with 'cryptography')")
            _generate_key(self.user_key, PRINCIPAL)
        pub = self.user_key.with_suffix(".pub").read_text().strip()
        self.note(f"public key: {pub[:60]}…")

    def log_service(self) -> None:
        self.step("The log: a verifiable, append-only Merkle log (SQLite) that admits only signed actions")
        self.run(["log", "init", "log", "--origin", ORIGIN])
        self.vkey = self.run(["log", "key", "log"]).stdout.strip()
        (self.root / "log.vkey").write_text(self.vkey + "\n")
        self.note("(saved as log.vkey: clients, agents, monitors and auditors trust this key)")
        pub = self.user_key.with_suffix(".pub").read_text().split()
        signers = self.root / "allowed_signers"
        signers.write_text(f'{PRINCIPAL} namespaces="action@gatekeeper" {pub[0]} {pub[1]}\n')
        self.note("allowed_signers (who may write to the log):")
        self._show_output(signers.read_text())
        self.log_port = _free_port()
        self.log_url = f"http://127.0.0.1:{self.log_port}"
        self._serve_log()

    def _serve_log(self) -> None:
        self.start("log", ["log", "serve", "log", "--listen", f"127.0.0.1:{self.log_port}",
                           "--allowed-signers", "allowed_signers"])

    def hosts(self) -> None:
        self.step("Two hosts, web-01 and web-02, each running the Gatekeeper agent (an SSH server)")
        for name in HOSTS:
            self.run(["agent", "init", name, "--name", name, "--log", self.log_url, "--log-key", self.vkey,
                      "--listen", "127.0.0.1:0"])
            with open(self.root / name / "authorized_keys", "a") as fh:
                fh.write(self.user_key.with_suffix(".pub").read_text())
            self.note(f"(alice's public key appended to {name}/authorized_keys)")
        for name in HOSTS:
            self.start(name, ["agent", "serve", "--config", f"{name}/agent.toml"])
        self.ready("log")
        for name in HOSTS:
            self.host_ports[name] = int(self.ready(name).rsplit(":", 1)[1])
        known = []
        for name in HOSTS:
            host_pub = (self.root / name / "host_key.pub").read_text().split()
            known.append(f"{name} {host_pub[0]} {host_pub[1]}\n")
        (self.root / "alice" / "known_hosts").write_text("".join(known))
        user = getpass.getuser()
        blocks = []
        for name, port in self.host_ports.items():
            blocks.append(
                f"Host {name}\n    HostName 127.0.0.1\n    Port {port}\n    HostKeyAlias {name}\n"
                f"    User {user}\n    IdentityFile {self.user_key}\n    IdentitiesOnly yes\n"
                f"    UserKnownHostsFile {self.root / 'alice' / 'known_hosts'}\n"
                "    GlobalKnownHostsFile /dev/null\n    StrictHostKeyChecking yes\n    BatchMode yes\n"
            )
        (self.root / "alice" / "ssh_config").write_text("\n".join(blocks))
        (self.root / "alice" / "client.toml").write_text(
            f'log = "{self.log_url}"\nlog_key = "{self.vkey}"\n'
            f'key = "{self.user_key}"\nstate = "{self.root / "alice" / "checkpoint"}"\n'
        )
        self.note("alice's side: alice/ssh_config (HostKeyAlias = the host's name in actions), "
                  "alice/known_hosts")
        self.note("(the agents' host keys), alice/client.toml (the log's URL and verifier key)")

    def logged_commands(self) -> None:
        self.step("Logged commands: gk ssh signs the action, logs it, verifies the proof, then runs it")
        self.run(["ssh", "-F", "alice/ssh_config", "web-01", "--reason", "DEMO-1: who am I?", "--",
                  "echo", "hello from web-01, I am", "$(id -un)"])
        self._take_backup()
        self.run(["ssh", "-F", "alice/ssh_config", "-H", "web-01,web-02", "--reason",
                  "DEMO-2: kernel version on both", "--", "uname", "-sr"])
        self.outcomes.append("logged commands ran on web-01 and web-02 (gk ssh)")

    def _take_backup(self) -> None:
        """What a careful operator does every night: an online SQLite backup of the log's store."""
        self.backup.mkdir()
        for path in sorted((self.root / "log").iterdir()):
            if path.is_file() and _is_sqlite(path):
                _sqlite_backup(path, self.backup / path.name)
            elif path.is_file() and not path.name.endswith(("-wal", "-shm", "-journal")):
                shutil.copy2(path, self.backup / path.name)
        self.note("(meanwhile, the log operator takes a backup of the log's SQLite store: backup/)")

    def unlogged_command(self) -> None:
        self.step("An unlogged command: plain SSH without a bundle is refused, and nothing runs")
        marker = self.root / "UNLOGGED-RAN"
        command = f"touch {marker}"
        if shutil.which("ssh"):
            ran = self.run(["ssh", "-F", "alice/ssh_config", "-T", "-a", "-x", "web-01", command],
                           gk=False, expect=210)
        else:
            shown = shlex.quote(command.replace(str(self.root) + "/", ""))
            self.say(f"   $ (no OpenSSH client here) paramiko: exec {shown} on web-01, no GK_BUNDLE")
            ran = _paramiko_exec(self.user_key, self.host_ports["web-01"], command)
            self._show_output(ran.output)
            self.say(f"     [exit {ran.status}]")
            if ran.status != 210:
                raise DemoFailure(f"the unlogged command exited {ran.status}, expected 210 (no-bundle)")
        if "gk: refused (no-bundle)" not in ran.output:
            raise DemoFailure("the refusal line 'gk: refused (no-bundle)' was not shown")
        if marker.exists():
            raise DemoFailure(f"{marker} exists: the unlogged command ran")
        self.note(f"{marker.name} does not exist: the command never started. web-01's journal says:")
        self._show_journal("web-01", "refused")
        self.outcomes.append("an unlogged command was refused with exit 210 (no-bundle) and did not run")

    def _show_journal(self, host: str, event: str) -> None:
        path = self.root / host / "state" / "journal.jsonl"
        for line in reversed(path.read_text().splitlines()):
            record = json.loads(line)
            if record.get("event") == event:
                keep = ("event", "reason", "exit_status", "account", "command", "key")
                self._show_output(json.dumps({k: record[k] for k in keep if k in record}))
                return

    def audit_and_monitor(self) -> None:
        self.step("The audit trail: what ran where, who signed it, and why, with proofs")
        self.run(["audit", "sync", "--log", self.log_url, "--log-key", self.vkey,
                  "--allowed-signers", "allowed_signers", "--no-progress"])
        self.run(["audit", "list"])
        self.note("web-01's journal against the log: did it run anything that was not logged?")
        self.run(["audit", "reconcile", "web-01/state/journal.jsonl", "--host", "web-01"])
        self.run(["audit", "prove", "1", "--output", "proof-1.txt"])
        self.note("A monitor checks the log: every checkpoint, the whole tree, every signature")
        self.run(["monitor", "--once", "--no-progress", "--log", self.log_url, "--log-key", self.vkey,
                  "--state", "monitor"])

    def log_down(self) -> None:
        self.step("The log goes down: proofs still verify offline, and nothing new can run (fail closed)")
        self.stop("log")
        self.note(f"(log stopped: nothing listens on 127.0.0.1:{self.log_port} any more)")
        self.run(["audit", "verify-bundle", "proof-1.txt", "--log-key", self.vkey])
        self.run(["ssh", "-F", "alice/ssh_config", "web-01", "--", "echo", "this will not run"], expect=69)
        self.outcomes.append("an offline proof verified with the log stopped; gk ssh failed closed (exit 69)")

    def forked_history(self) -> None:
        self.step("Tampering: the operator restores the old backup and serves that history")
        for path in (self.root / "log").iterdir():
            if path.is_file() and (path.name in {p.name for p in self.backup.iterdir()}
                                   or path.name.endswith(("-wal", "-shm", "-journal"))):
                path.unlink()
        for path in self.backup.iterdir():
            shutil.copy2(path, self.root / "log" / path.name)
        self.note("(log/ restored from backup/: the log forgets everything after DEMO-1,")
        self.note(" and its next entries get indexes it already used for other entries)")
        self._serve_log()
        self.ready("log")
        self.note("alice's own client remembers the newest checkpoint it verified, so it refuses:")
        ran = self.run(["ssh", "-F", "alice/ssh_config", "web-01", "--", "echo", "rewritten history"],
                       expect=76)
        if "LOG FORK" in ran.output:
            self.outcomes.append("alice's client detected the fork itself and kept the evidence (exit 76)")
        self.note("a second laptop (no stored checkpoint) is fooled, but the host is not:")
        ran = self.run(["ssh", "-F", "alice/ssh_config", "--state", "alice/laptop2-checkpoint", "web-01",
                        "--reason", "DEMO-4: on the rewritten log", "--", "echo", "this will not run"],
                       expect=222)
        if "gk: refused (log-fork)" not in ran.output:
            raise DemoFailure("web-01 did not refuse with 'gk: refused (log-fork)'")
        status = self.run(["agent", "status", "--config", "web-01/agent.toml"], expect=1)
        if "halted: YES" not in status.output:
            raise DemoFailure("gk agent status does not show web-01 halted")
        self.note("web-01 now refuses everything until an operator has reviewed the evidence:")
        self.run(["ssh", "-F", "alice/ssh_config", "--state", "alice/laptop2-checkpoint", "web-01", "--",
                  "echo", "still halted"], expect=224)
        self.outcomes.append("web-01 refused the rewritten history (exit 222) and halted (exit 224 after)")
        self.note("The monitor compares the log with the history it verified before:")
        mon = self.run(["monitor", "--once", "--no-progress", "--log", self.log_url, "--log-key", self.vkey,
                        "--state", "monitor"], expect=76, quiet_stdout=True)
        alerts = [json.loads(line) for line in mon.stdout.splitlines() if line.startswith("{")]
        critical = [a for a in alerts if a.get("severity") == "critical"]
        if not critical:
            raise DemoFailure("the monitor raised no critical alert")
        for a in alerts:
            self._show_output(f"ALERT {a.get('severity')} {a.get('kind')}: {a.get('message')}")
        self.outcomes.append(f"the monitor raised a critical '{critical[0].get('kind')}' alert (exit 76)")
        self.note("Run 'gk agent unhalt --evidence-reviewed' only once the cause is understood "
                  "(docs/operations.md).")


def _die_with_parent() -> None:
    """In the child, before exec (Linux): get SIGTERM when the demo dies, even by SIGKILL, so that
    no server outlives it. Elsewhere a no-op: the demo still stops its children by PID."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _sqlite_backup(src: Path, dst: Path) -> None:
    """An online, consistent copy (what ``sqlite3 FILE ".backup DST"`` does)."""
    with contextlib.closing(sqlite3.connect(src)) as source:
        with contextlib.closing(sqlite3.connect(dst)) as target:
            source.backup(target)


def _generate_key(path: Path, comment: str) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    public = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    path.with_suffix(".pub").write_bytes(public + f" {comment}\n".encode())


def _paramiko_exec(key_file: Path, port: int, command: str) -> Ran:
    """A plain SSH exec without GK_BUNDLE (when no OpenSSH client is installed)."""
    import paramiko

    key = paramiko.Ed25519Key.from_private_key_file(str(key_file))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=10)
            transport.auth_publickey(getpass.getuser(), key)
            chan = transport.open_session()
            chan.exec_command(command)
            stdout = chan.makefile("rb").read().decode("utf-8", "replace")
            stderr = chan.makefile_stderr("rb").read().decode("utf-8", "replace")
            return Ran(chan.recv_exit_status(), stdout, stderr)
        finally:
            transport.close()


@contextlib.contextmanager
def _workspace(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        if any(keep.iterdir()):
            raise DemoFailure(f"--keep {keep}: the directory must be empty")
        os.chmod(keep, 0o700)
        yield keep.resolve()
        return
    root = Path(tempfile.mkdtemp(prefix="gk-demo-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gatekeeper.demo",
        description="Run a log and two agents on 127.0.0.1 and show logged, refused and tampered commands.",
    )
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="use this (empty or new) directory and keep it afterwards")
    args = parser.parse_args(argv)
    out = sys.stdout
    bold = out.isatty() and "NO_COLOR" not in os.environ

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    started = time.monotonic()
    demo: Demo | None = None
    try:
        with _workspace(args.keep) as root:
            print("Gatekeeper demo: no command runs on a server unless it was first written into a", file=out)
            print("verifiable, append-only log.", file=out)
            where = "kept afterwards" if args.keep else "removed at the end; --keep DIR keeps it"
            print(f"Everything happens in {root} ({where}), on 127.0.0.1.", file=out, flush=True)
            demo = Demo(root, out, bold=bold)
            try:
                demo.run_all()
            finally:
                demo.stop_all()
    except DemoFailure as exc:
        print(f"\nDEMO FAILED at step {demo.step_no if demo else 0}: {exc}", file=out, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: every process the demo started was stopped", file=out, flush=True)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"\nWhat you saw ({time.monotonic() - started:.1f} s):", file=out)
    for line in demo.outcomes:
        print(f"  ok  {line}", file=out)
    print("Next: docs/quickstart.md walks through the same steps; docs/deployment.md for a real fleet.",
          file=out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
