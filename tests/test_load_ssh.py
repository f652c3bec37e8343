"""Load: 200 concurrent SSH sessions against one agent (``gk agent serve``), loopback only.

The real pieces: a log (``gk log serve --accept-any``), one agent with the verification gate,
actions signed and submitted with ``gatekeeper.client.submit``, and 200 asyncssh client sessions
opened at the same moment, each with its own connection:

- 100 logged commands, each with its own bundle (must run exactly once);
- 40 replays of those bundles, racing their originals (exactly one of each pair may run: the spent
  nonce is the only thing between them);
- 20 commands with no bundle, 20 with a valid bundle sent with another command, 20 with a
  tampered bundle (none may run).

Every command appends a line to its own marker file, so afterwards the files say exactly what ran.
Two waves run once per module (about 10 s); the tests then check: every session ends with an exit
status (nothing lost, no connection dropped); nothing unlogged, altered or tampered runs and no
bundle runs twice (safety); refusals carry their reason's exit status; the agent's journal has one
decision per session; the agent still serves; its RSS after the second wave is within a fixed
margin of its RSS after the first; and (liveness) every logged command runs exactly once. That
last check found valid commands refused as "the log's head kept moving" under concurrent load;
fixed in gatekeeper/verify/gate.py (d8275d5).
"""

from __future__ import annotations

import asyncio
import base64
import getpass
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
from conftest import LogServer, init_log

from gatekeeper.client import identity as ident
from gatekeeper.client.submit import LogSettings, build_action, submit_action
from gatekeeper.gate import Reason
from gatekeeper.journal import read_journal

ROOT = Path(__file__).resolve().parents[1]
GK = [sys.executable, "-m", "gatekeeper"]
USER = getpass.getuser()
VALID, REPLAYS, UNLOGGED, ALTERED, TAMPERED = 100, 40, 20, 20, 20
SESSIONS = VALID + REPLAYS + UNLOGGED + ALTERED + TAMPERED
#: RSS growth allowed between the end of wave 1 and the end of wave 2 (the same load again).
RSS_MARGIN_KIB = 64 * 1024

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "GK_CONFIG")}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@dataclass
class Setup:
    log: LogServer
    agent: subprocess.Popen[str]
    port: int
    directory: Path
    key: asyncssh.SSHKey
    identity: ident.Identity
    settings: LogSettings
    markers: Path


def _setup(tmp_path: Path) -> Iterator[Setup]:
    init_log(tmp_path / "log", "load-ssh.example/log")
    log = LogServer(tmp_path / "log", "load-ssh.example/log", ("--accept-any",), "127.0.0.1:0").start()
    agent_dir = tmp_path / "web-01"
    proc: subprocess.Popen[str] | None = None
    try:
        subprocess.run([*GK, "agent", "init", str(agent_dir), "--name", "web-01", "--log", log.url,
                        "--log-key", log.vkey, "--listen", "127.0.0.1:0"],
                       check=True, capture_output=True, cwd=ROOT, env=_env(), timeout=60)
        key = asyncssh.generate_private_key("ssh-ed25519")
        key_path = tmp_path / "id_ed25519"
        key.write_private_key(str(key_path))
        key_path.chmod(0o600)
        (agent_dir / "authorized_keys").write_text(key.export_public_key("openssh").decode())
        proc = subprocess.Popen([*GK, "agent", "serve", "--config", str(agent_dir / "agent.toml")],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
                                env=_env())
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on "), line
        port = int(line.strip().rsplit(":", 1)[1])
        markers = tmp_path / "markers"
        markers.mkdir()
        settings = LogSettings.from_strings(log.url, log.vkey, None, tmp_path / "state", timeout=10)
        yield Setup(log, proc, port, agent_dir, key, ident.from_file(key_path), settings, markers)
    finally:
        if proc is not None:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        log.stop()


@dataclass(frozen=True)
class Session:
    kind: str  # valid | replay | unlogged | altered | tampered
    command: bytes
    bundle: str | None
    marker: str


def _plan(s: Setup, wave: int) -> list[Session]:
    """Submit the logged actions (sequentially: the client's state file is locked per log) and
    build the 200 sessions."""
    sessions: list[Session] = []
    bundles: list[tuple[bytes, str, str]] = []
    for i in range(VALID):
        marker = f"w{wave}-ok-{i}"
        command = f"echo ran >> {s.markers / marker}".encode()
        action = build_action(s.identity, ["web-01"], USER, command, window=300, reason="load test")
        result = submit_action(s.settings, s.identity, action, warn=lambda _line: None)
        bundles.append((command, result.bundle, marker))
        sessions.append(Session("valid", command, result.bundle, marker))
    for command, bundle, marker in bundles[:REPLAYS]:
        sessions.append(Session("replay", command, bundle, marker))
    for j in range(UNLOGGED):
        marker = f"w{wave}-unlogged-{j}"
        sessions.append(Session("unlogged", f"echo ran >> {s.markers / marker}".encode(), None, marker))
    for _command, bundle, marker in bundles[REPLAYS:REPLAYS + ALTERED]:
        # the bundle of a logged command, sent with another command (writing another file)
        other = f"echo ran >> {s.markers / (marker + '-x')}".encode()
        sessions.append(Session("altered", other, bundle, marker + "-x"))
    for k, (command, bundle, marker) in enumerate(bundles[REPLAYS + ALTERED:REPLAYS + ALTERED + TAMPERED]):
        raw = bytearray(base64.b64decode(bundle))
        raw[len(raw) // 2 + k] ^= 0x01  # one bit inside the entry, proof or checkpoint
        sessions.append(Session("tampered", command, base64.b64encode(bytes(raw)).decode(), marker))
    assert len(sessions) == SESSIONS
    return sessions


async def _run_all(s: Setup, sessions: list[Session]) -> list[int | str]:
    start = asyncio.Event()

    async def one(sess: Session) -> int | str:
        await start.wait()
        try:
            async with asyncssh.connect("127.0.0.1", s.port, username=USER, client_keys=[s.key],
                                        known_hosts=None, agent_path=None, connect_timeout=60) as conn:
                env = {} if sess.bundle is None else {"GK_BUNDLE": sess.bundle}
                result = await conn.run(sess.command.decode(), env=env, timeout=120)
                return result.exit_status if result.exit_status is not None else "no exit status"
        except (OSError, asyncssh.Error) as exc:
            return f"{type(exc).__name__}: {exc}"

    tasks = [asyncio.create_task(one(x)) for x in sessions]
    await asyncio.sleep(0)
    start.set()
    return await asyncio.gather(*tasks)


def _runs(s: Setup, marker: str) -> int:
    path = s.markers / marker
    return len(path.read_text().splitlines()) if path.exists() else 0


@dataclass
class Wave:
    sessions: list[Session]
    statuses: list[int | str]
    runs: dict[str, int]  # marker -> times its command ran
    seconds: float

    def by_kind(self) -> dict[str, Counter[int | str]]:
        out: dict[str, Counter[int | str]] = {}
        for x, st in zip(self.sessions, self.statuses, strict=True):
            out.setdefault(x.kind, Counter())[st] += 1
        return out

    def pairs(self) -> list[tuple[int, int]]:
        """(position of a logged session, position of its replay)."""
        first = {x.bundle: i for i, x in enumerate(self.sessions) if x.kind == "valid"}
        return [(first[x.bundle], i) for i, x in enumerate(self.sessions) if x.kind == "replay"]


@dataclass
class LoadResult:
    waves: list[Wave]
    rss: dict[str, int]
    journal: list[dict[str, object]]
    agent_alive: bool


@pytest.fixture(scope="module")
def load(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadResult]:
    """Two waves of the 200 sessions against one agent; the tests below examine what happened."""
    gen = _setup(tmp_path_factory.mktemp("load-ssh"))
    s = next(gen)
    try:
        rss = {"start": rss_kib(s.agent.pid)}
        waves = []
        for n in (1, 2):
            sessions = _plan(s, n)
            t0 = time.perf_counter()
            statuses = asyncio.run(_run_all(s, sessions))
            seconds = time.perf_counter() - t0
            waves.append(Wave(sessions, statuses, {x.marker: _runs(s, x.marker) for x in sessions}, seconds))
            rss[f"after_wave{n}"] = rss_kib(s.agent.pid)
        journal = list(read_journal(s.directory / "state" / "journal.jsonl"))
        result = LoadResult(waves, rss, journal, s.agent.poll() is None)
        print("\nload-ssh: " + json.dumps({
            "sessions_per_wave": SESSIONS,
            "waves": [{"seconds": round(w.seconds, 2),
                       "statuses": {k: dict(v) for k, v in w.by_kind().items()}} for w in waves],
            "rss_kib": rss,
            "refusal_messages": Counter(str(r.get("message")) for r in journal
                                        if r.get("event") == "refused").most_common(8),
        }))
        yield result
    finally:
        gen.close()


def test_nothing_lost_and_nothing_unlogged_runs(load: LoadResult) -> None:
    """Safety under load: every session ends with an exit status; nothing unlogged, altered or
    tampered runs; no logged command runs twice, whatever its replay does."""
    for w in load.waves:
        lost = [(x.kind, st) for x, st in zip(w.sessions, w.statuses, strict=True) if not isinstance(st, int)]
        assert not lost, f"{len(lost)} sessions ended without an exit status: {lost[:5]}"
        kinds = w.by_kind()
        assert kinds["unlogged"] == Counter({Reason.NO_BUNDLE.exit_status: UNLOGGED}), kinds["unlogged"]
        assert kinds["altered"] == Counter({Reason.COMMAND_MISMATCH.exit_status: ALTERED}), kinds["altered"]
        assert 0 not in kinds["tampered"], kinds["tampered"]
        for x in w.sessions:
            if x.kind in ("unlogged", "altered"):
                assert w.runs[x.marker] == 0, f"{x.kind} command {x.marker} ran"
            else:
                assert w.runs[x.marker] <= 1, f"{x.marker} ran {w.runs[x.marker]} times"
        for a, b in w.pairs():
            assert (w.statuses[a], w.statuses[b]) != (0, 0), "a bundle ran twice"
            assert w.runs[w.sessions[a].marker] == [w.statuses[a], w.statuses[b]].count(0)
        # a command ran if and only if its session was told so (exit status 0 from `echo`)
        for x, st in zip(w.sessions, w.statuses, strict=True):
            if x.kind == "valid" and st == 0:
                assert w.runs[x.marker] == 1


def test_journal_and_memory(load: LoadResult) -> None:
    """One journal decision per session, the agent still up, RSS bounded across waves."""
    decisions = Counter(r["event"] for r in load.journal if r.get("event") in ("allowed", "refused"))
    allowed = sum(st == 0 for w in load.waves for st in w.statuses)
    assert decisions["allowed"] == allowed, decisions
    assert decisions["allowed"] + decisions["refused"] == 2 * SESSIONS, decisions
    assert load.agent_alive, "the agent died"
    assert load.rss["after_wave2"] - load.rss["after_wave1"] < RSS_MARGIN_KIB, load.rss


def test_every_logged_command_runs_once(load: LoadResult) -> None:
    """Liveness under load: each of the 100 logged commands runs exactly once per wave (either the
    original session or its racing replay runs it; the other is refused as a replay)."""
    for w in load.waves:
        for x in w.sessions:
            if x.kind == "valid":
                assert w.runs[x.marker] == 1, f"{x.marker} ran {w.runs[x.marker]} times: {w.by_kind()}"
        for a, b in w.pairs():
            assert sorted([w.statuses[a], w.statuses[b]], key=str) == sorted(
                [0, Reason.REPLAY.exit_status], key=str)
