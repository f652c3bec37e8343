"""gk ssh against a real OpenSSH sshd with the documented snippet, gk exec and the local service
running the real verifying gate (``build_gate``), with the real log (``gk log serve``); and the
documented plain ``ssh -o SetEnv=GK_BUNDLE=...`` path with a bundle from ``gk submit``."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import LogServer, init_log
from sshd_fixture import SshdEnv, sshd_env_fixture  # noqa: F401 - the "sshd_env" fixture

from gatekeeper.agent.config import load_config
from gatekeeper.agent.wiring import build_gate, init_agent_dir
from gatekeeper.client import identity as ident
from gatekeeper.client import sshclient
from gatekeeper.client.run import run_on_hosts
from gatekeeper.client.submit import LogSettings, build_action, submit_action
from gatekeeper.gate import Reason

pytestmark = pytest.mark.sshd
HOST = "sshd-host"
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Setup:
    env: SshdEnv
    log: LogServer
    ssh_config: Path
    tmp: Path

    def settings(self) -> LogSettings:
        return LogSettings.from_strings(self.log.url, self.log.vkey, None, self.tmp / "state", timeout=5)

    def identity(self) -> ident.Identity:
        return ident.from_file(self.env.keys["a"].path)


@pytest.fixture(scope="module")
def setup(sshd_env: SshdEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("gk-ssh-sshd")
    init_log(tmp / "log", "sshd.example/log")
    log = LogServer(tmp / "log", "sshd.example/log", ("--accept-any",), "127.0.0.1:0").start()
    try:
        init_agent_dir(tmp / "host", name=HOST, log_url=log.url, log_keys=[log.vkey])
        gate = build_gate(load_config(tmp / "host" / "agent.toml"))
        sshd_env.gate.target = gate
        kind, b64 = (sshd_env.workdir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        kh = tmp / "known_hosts"
        kh.write_text(f"{HOST} {kind} {b64}\n")
        cfg = tmp / "ssh_config"
        cfg.write_text(
            f"Host {HOST}\n  HostName 127.0.0.1\n  Port {sshd_env.sshd.port}\n  HostKeyAlias {HOST}\n"
            f"  User {sshd_env.account}\n  UserKnownHostsFile {kh}\n  GlobalKnownHostsFile /dev/null\n"
        )
        yield Setup(sshd_env, log, cfg, tmp)
    finally:
        sshd_env.gate.target = None
        log.stop()


def gk_ssh(s: Setup, command: bytes, stdin: bytes | None = None):  # type: ignore[no-untyped-def]
    r = sshclient.Resolver([s.ssh_config])
    out, err = io.BytesIO(), io.BytesIO()
    report = run_on_hosts(
        specs=[r.resolve(HOST)],
        identity=s.identity(),
        log=s.settings(),
        command=command,
        window=300,
        reason="sshd test",
        resolver=r,
        stdin=None if stdin is None else io.BytesIO(stdin),
        stdout=out,
        stderr=err,
    )
    return report.exit_status, out.getvalue(), err.getvalue()


def test_logged_command_runs_under_sshd(setup: Setup) -> None:
    status, out, err = gk_ssh(setup, b"id -un; echo to-err >&2; exit 3")
    assert (status, out, err) == (3, f"{setup.env.account}\n".encode(), b"to-err\n")


def test_stdin_and_binary_through_sshd(setup: Setup) -> None:
    data = bytes(range(256)) * 200
    status, out, _ = gk_ssh(setup, b"cat", stdin=data)
    assert (status, out) == (0, data)


def test_bundle_from_gk_submit_with_plain_openssh(setup: Setup) -> None:
    marker = setup.env.marker("plain-ssh")
    command = f"touch {marker}"
    me = setup.identity()
    action = build_action(me, [HOST], setup.env.account, command.encode(), window=300, reason="doc")
    bundle = submit_action(setup.settings(), me, action).bundle
    # the documented invocation: ssh -T -o SetEnv=GK_BUNDLE=... host <the same words>
    proc = setup.env.ssh("touch", str(marker), bundle=bundle)
    assert proc.returncode == 0, proc.stderr
    assert marker.exists()
    # the same bundle again: a replay, refused with the host's line
    marker.unlink()
    proc = setup.env.ssh("touch", str(marker), bundle=bundle)
    assert proc.returncode == Reason.REPLAY.exit_status
    assert proc.stderr.startswith(b"gk: refused")
    assert not marker.exists()


def test_cli_against_sshd(setup: Setup) -> None:
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "gatekeeper",
            "ssh",
            "-F",
            str(setup.ssh_config),
            "--log",
            setup.log.url,
            "--log-key",
            setup.log.vkey,
            "--state",
            str(setup.tmp / "cli-state"),
            "-i",
            str(setup.env.keys["a"].path),
            HOST,
            "--",
            "echo",
            "via",
            "gk",
            "ssh",
        ],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(setup.tmp)},
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"via gk ssh\n"
    assert p.stderr.decode().startswith("gk: logged as index ")


def test_other_key_cannot_use_the_action(setup: Setup) -> None:
    # signed by key "a", but a session authenticated by key "b" presents the bundle: key-mismatch
    marker = setup.env.marker("other-key")
    me = setup.identity()
    command = f"touch {marker}"
    action = build_action(me, [HOST], setup.env.account, command.encode(), window=300)
    bundle = submit_action(setup.settings(), me, action).bundle
    proc = setup.env.ssh("touch", str(marker), bundle=bundle, key="b")
    assert proc.returncode == Reason.KEY_MISMATCH.exit_status
    assert not marker.exists()
