"""The bypass list end to end: a real sshd with the documented snippet, gk exec, the local-mode
agent running the real verifying gate (``build_gate`` from an agent.toml, as ``gk agent serve``
builds it), and a real log (``gk log serve``). Bundles come from ``gk submit``'s code path
(``submit_action``). Every refusal proves that its marker file never appeared.

(``gk ssh`` through this sshd, plain ``ssh`` with a submitted bundle, replay and another key are
in tests/test_gk_ssh_sshd.py.)
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import LogServer, free_port, init_log
from sshd_fixture import SshdEnv, sshd_env_fixture  # noqa: F401

from gatekeeper.action import Target
from gatekeeper.agent.config import load_config
from gatekeeper.agent.wiring import build_gate, init_agent_dir
from gatekeeper.bundle import encode_bundle, parse_bundle
from gatekeeper.client import identity as ident
from gatekeeper.client.submit import LogSettings, build_action, submit_action
from gatekeeper.gate import Gate, Reason
from gatekeeper.journal import read_journal
from gatekeeper.verify.admin import status
from gatekeeper.verify.headstore import HeadStore
from personality.tlog.note import generate_signer, parse_note, parse_vkey, sign_note

pytestmark = pytest.mark.sshd
HOST = "sshd-host"
ORIGIN = "sshd-e2e.example/log"


@dataclass
class World:
    """One host (sshd + local agent with its own state) and the log it trusts."""

    env: SshdEnv
    log: LogServer
    host_dir: Path
    tmp: Path
    gate: Gate

    @property
    def state_dir(self) -> Path:
        return self.host_dir / "state"

    def settings(self, state: str = "client-state", log: LogServer | None = None) -> LogSettings:
        log = log or self.log
        return LogSettings.from_strings(log.url, log.vkey, None, self.tmp / state, timeout=5)

    def bundle(
        self,
        command: str,
        *,
        hosts: list[str | Target] | None = None,
        account: str | None = None,
        now: float | None = None,
        window: int = 300,
        log: LogServer | None = None,
        state: str = "client-state",
    ) -> str:
        me = ident.from_file(self.env.keys["a"].path)
        action = build_action(
            me, hosts or [HOST], account or self.env.account, command.encode(), window=window,
            reason="sshd e2e", now=now,
        )
        return submit_action(self.settings(state, log), me, action, warn=lambda _line: None).bundle

    def journal(self) -> list[dict[str, object]]:
        return list(read_journal(self.state_dir / "journal.jsonl"))


def make_world(env: SshdEnv, tmp: Path, listen: str = "127.0.0.1:0") -> World:
    init_log(tmp / "log", ORIGIN)
    log = LogServer(tmp / "log", ORIGIN, ("--accept-any",), listen).start()
    try:
        init_agent_dir(tmp / "host", name=HOST, log_url=log.url, log_keys=[log.vkey])
        # Local mode: the host's identity is sshd's host key, the one clients see and pin.
        config_path = tmp / "host" / "agent.toml"
        sshd_key = env.workdir / "ssh_host_ed25519_key"
        config_path.write_text(
            config_path.read_text().replace('host_key = "host_key"', f'host_key = "{sshd_key}"', 1)
        )
        gate = build_gate(load_config(config_path))
    except BaseException:
        log.stop()
        raise
    env.gate.target = gate
    return World(env, log, tmp / "host", tmp, gate)


@pytest.fixture(scope="module")
def world(sshd_env: SshdEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = make_world(sshd_env, tmp_path_factory.mktemp("sshd-e2e"))
    try:
        yield w
    finally:
        sshd_env.gate.target = None
        w.log.stop()


@pytest.fixture
def fresh_world(sshd_env: SshdEnv, tmp_path: Path) -> Iterator[World]:
    """A world of its own (log, host state) for tests that break the log; fixed port, so that a
    restarted log keeps its URL."""
    previous = sshd_env.gate.target
    w = make_world(sshd_env, tmp_path, listen=f"127.0.0.1:{free_port()}")
    try:
        yield w
    finally:
        sshd_env.gate.target = previous
        w.log.stop()


@pytest.fixture(autouse=True)
def clean_markers(sshd_env: SshdEnv) -> None:
    for path in sshd_env.markers.iterdir():
        path.unlink()


def test_logged_command_runs_and_is_journaled_with_its_exit_status(world: World) -> None:
    marker = world.env.marker("ran")
    command = f"touch {marker}; exit 5"
    bundle = world.bundle(command)
    index = parse_bundle(bundle).index
    proc = world.env.ssh(command, bundle=bundle)
    assert proc.returncode == 5, proc.stderr
    assert marker.exists()
    records = [r for r in world.journal() if r.get("index") == index]
    assert [(r["event"], r["frontend"]) for r in records] == [("allowed", "exec"), ("exit", "exec")]
    assert records[1]["exit_status"] == 5
    assert records[0]["account"] == world.env.account


def test_command_killed_by_a_signal_is_journaled_with_it(world: World) -> None:
    command = "echo before; kill -KILL $$"
    bundle = world.bundle(command)
    index = parse_bundle(bundle).index
    proc = world.env.ssh(command, bundle=bundle)
    assert proc.stdout == b"before\n"
    assert proc.returncode in (128 + 9, 255), proc.stderr  # the login shell's 137, or exit-signal
    records = [r for r in world.journal() if r.get("index") == index]
    assert [(r["event"], r["frontend"]) for r in records] == [("allowed", "exec"), ("exit", "exec")]
    assert (records[1]["exit_status"], records[1]["signal"]) == (None, "KILL")
    assert records[1]["account"] == world.env.account


def test_action_bound_to_sshds_host_key_runs(world: World) -> None:
    marker = world.env.marker("pinned")
    command = f"touch {marker}"
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(world.env.workdir / "ssh_host_ed25519_key.pub")],
        check=True, capture_output=True, text=True,
    ).stdout.split()[1]
    proc = world.env.ssh(command, bundle=world.bundle(command, hosts=[Target(HOST, fingerprint)]))
    assert proc.returncode == 0, proc.stderr
    assert marker.exists()


def _refused(world: World, proc: subprocess.CompletedProcess[bytes], reason: Reason, marker: Path) -> None:
    assert proc.returncode == reason.exit_status, proc.stderr
    assert proc.stdout == b""
    assert proc.stderr.startswith(b"gk: refused") and proc.stderr.count(b"\n") == 1, proc.stderr
    assert not marker.exists()
    last = world.journal()[-1]
    assert (last["event"], last["reason"], last["frontend"]) == ("refused", reason.code, "exec")


def test_no_bundle(world: World) -> None:
    marker = world.env.marker("x")
    _refused(world, world.env.ssh(f"touch {marker}"), Reason.NO_BUNDLE, marker)


def test_malformed_bundle(world: World) -> None:
    marker = world.env.marker("x")
    _refused(world, world.env.ssh(f"touch {marker}", bundle="AAAA"), Reason.MALFORMED_BUNDLE, marker)


def test_bundle_for_another_host(world: World) -> None:
    marker = world.env.marker("x")
    command = f"touch {marker}"
    proc = world.env.ssh(command, bundle=world.bundle(command, hosts=["web-01"]))
    _refused(world, proc, Reason.WRONG_HOST, marker)


def test_bundle_pinned_to_another_host_key(world: World) -> None:
    marker = world.env.marker("x")
    command = f"touch {marker}"
    other = "SHA256:" + base64.b64encode(b"\x01" * 32).decode().rstrip("=")
    proc = world.env.ssh(command, bundle=world.bundle(command, hosts=[Target(HOST, other)]))
    _refused(world, proc, Reason.WRONG_HOST, marker)


def test_bundle_for_another_account(world: World) -> None:
    marker = world.env.marker("x")
    command = f"touch {marker}"
    bundle = world.bundle(command, account=world.env.bash_user.pw_name)
    _refused(world, world.env.ssh(command, bundle=bundle), Reason.WRONG_ACCOUNT, marker)


def test_another_key(world: World) -> None:
    marker = world.env.marker("x")
    command = f"touch {marker}"
    proc = world.env.ssh(command, key="b", bundle=world.bundle(command))
    _refused(world, proc, Reason.KEY_MISMATCH, marker)


@pytest.mark.parametrize(
    "sent",
    ["touch {m}; touch {m}2", "touch {m} ", " touch {m}", "touch  {m}", "touch {m}\n"],
    ids=["appended", "trailing-space", "leading-space", "double-space", "newline"],
)
def test_altered_command(world: World, sent: str) -> None:
    marker = world.env.marker("x")
    bundle = world.bundle(f"touch {marker}")
    proc = world.env.ssh(sent.format(m=marker), bundle=bundle)
    _refused(world, proc, Reason.COMMAND_MISMATCH, marker)
    assert not world.env.marker("x2").exists()


def test_expired(world: World) -> None:
    marker = world.env.marker("x")
    command = f"touch {marker}"
    bundle = world.bundle(command, now=time.time() - 3600, window=600)
    _refused(world, world.env.ssh(command, bundle=bundle), Reason.EXPIRED, marker)


def test_not_yet_valid(world: World) -> None:
    marker = world.env.marker("x")
    command = f"touch {marker}"
    bundle = world.bundle(command, now=time.time() + 3600, window=600)
    _refused(world, world.env.ssh(command, bundle=bundle), Reason.NOT_YET_VALID, marker)


def test_replayed(world: World) -> None:
    marker = world.env.marker("x")
    command = f"echo once >> {marker}"
    bundle = world.bundle(command)
    assert world.env.ssh(command, bundle=bundle).returncode == 0
    proc = world.env.ssh(command, bundle=bundle)
    assert proc.returncode == Reason.REPLAY.exit_status
    assert marker.read_text() == "once\n"


def test_tampered_inclusion_proof(world: World) -> None:
    marker = world.env.marker("x")
    command = f"touch {marker}"
    world.bundle("true")  # the log has at least two entries, so the proof is not empty
    b = parse_bundle(world.bundle(command))
    assert b.proof
    forged = encode_bundle(type(b)(b.entry, b.index, (b"\x00" * 32, *b.proof[1:]), b.checkpoint))
    _refused(world, world.env.ssh(command, bundle=forged), Reason.BAD_INCLUSION, marker)


def test_checkpoint_signed_by_another_key_with_the_same_origin(world: World) -> None:
    """A forged log: the same origin name, its own key. The very checkpoint the real log signed,
    re-signed by the forger, does not verify here."""
    marker = world.env.marker("x")
    command = f"touch {marker}"
    b = parse_bundle(world.bundle(command))
    body = parse_note(b.checkpoint).body
    forged_cp = sign_note(body, [generate_signer(parse_vkey(world.log.vkey).name)])
    forged = encode_bundle(type(b)(b.entry, b.index, b.proof, forged_cp))
    _refused(world, world.env.ssh(command, bundle=forged), Reason.BAD_CHECKPOINT, marker)


def test_checkpoint_with_a_flipped_bit(world: World) -> None:
    marker = world.env.marker("x")
    command = f"touch {marker}"
    b = parse_bundle(world.bundle(command))
    lines = b.checkpoint.split(b"\n")
    lines[1] = str(int(lines[1]) + 1).encode()  # claim a bigger tree, keep the signature
    forged = encode_bundle(type(b)(b.entry, b.index, b.proof, b"\n".join(lines)))
    proc = world.env.ssh(command, bundle=forged)
    assert proc.returncode in (Reason.BAD_CHECKPOINT.exit_status, Reason.MALFORMED_BUNDLE.exit_status)
    assert not marker.exists()


def test_user_cannot_touch_the_state(world: World) -> None:
    """The head store, spent nonces, halted flag and journal are root's (0700 directory); a logged
    command of the gated user cannot read, write, replace or remove them."""
    store = world.state_dir / "heads.sqlite3"
    before = {p.name: (p.stat().st_ino, p.stat().st_uid) for p in world.state_dir.iterdir()}
    command = (
        f"ls {world.state_dir}; cat {store}; touch {world.state_dir}/x; rm -f {store}; "
        f"mv {world.state_dir} {world.host_dir}/moved; echo corrupt > {store}; echo done"
    )
    proc = world.env.ssh(command, bundle=world.bundle(command))
    assert proc.stdout == b"done\n"
    assert proc.stderr.count(b"Permission denied") >= 5, proc.stderr
    after = {p.name: (p.stat().st_ino, p.stat().st_uid) for p in world.state_dir.iterdir()}
    assert {k: v for k, v in after.items() if k in before} == before
    assert "x" not in after
    assert all(uid == 0 for _, uid in after.values())
    assert world.state_dir.stat().st_mode & 0o077 == 0


def test_log_unreachable_fails_closed(fresh_world: World) -> None:
    w = fresh_world
    first = "true"
    assert w.env.ssh(first, bundle=w.bundle(first)).returncode == 0  # the host stores a head
    marker = w.env.marker("x")
    command = f"touch {marker}"
    bundle = w.bundle(command)  # a newer checkpoint: the host must ask the log for consistency
    w.log.stop()
    _refused(w, w.env.ssh(command, bundle=bundle), Reason.LOG_UNAVAILABLE, marker)
    w.log.start()
    proc = w.env.ssh(command, bundle=bundle)  # once the log is back, the same bundle runs
    assert proc.returncode == 0, proc.stderr
    assert marker.exists()


def test_forked_log_halts_the_host(fresh_world: World) -> None:
    """The log operator restores an old backup and serves that history: the host has seen a
    newer checkpoint, so the restored log's checkpoint is a fork. The host refuses, keeps both
    checkpoints as evidence, and stays halted for every later command."""
    w = fresh_world
    assert w.env.ssh("true", bundle=w.bundle("true")).returncode == 0
    w.log.stop()
    backup = w.tmp / "backup"
    shutil.copytree(w.log.directory, backup)
    w.log.start()
    for i in range(3):  # the history the host sees moves on
        command = f"echo {i}"
        assert w.env.ssh(command, bundle=w.bundle(command)).returncode == 0
    w.log.stop()
    shutil.rmtree(w.log.directory)
    shutil.copytree(backup, w.log.directory)
    w.log.start()

    marker = w.env.marker("x")
    command = f"touch {marker}"
    # A client that never saw the newer history (its own state) gets a bundle from the restored log.
    bundle = w.bundle(command, state="other-client")
    _refused(w, w.env.ssh(command, bundle=bundle), Reason.FORK, marker)
    with HeadStore.open(w.state_dir) as store:
        report = status(store)
    assert report["halted"] is not None

    later = f"touch {w.env.marker('later')}"
    proc = w.env.ssh(later, bundle=w.bundle(later, state="other-client"))
    assert proc.returncode == Reason.HALTED.exit_status
    assert not w.env.marker("later").exists()
    assert os.path.exists(w.state_dir)


def test_documented_plain_ssh_with_gk_submit_cli(world: World) -> None:
    """docs/openssh.md step 6, verbatim apart from paths: gk submit --output, then ssh -T with
    SetEnv=GK_BUNDLE and the same words."""
    marker = world.env.marker("documented")
    out = world.tmp / "bundle"
    submit = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "submit", "--log", world.log.url, "--log-key", world.log.vkey,
         "--state", str(world.tmp / "cli-state"), "-i", str(world.env.keys["a"].path),
         "--host", HOST, "--account", world.env.account, "--reason", "INC-4711", "--output", str(out),
         "--", "touch", str(marker)],
        capture_output=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(world.tmp)},
    )
    assert submit.returncode == 0, submit.stderr
    proc = world.env.ssh("touch", str(marker), bundle=out.read_text().strip(), options=["-T"])
    assert proc.returncode == 0, proc.stderr
    assert marker.exists()
