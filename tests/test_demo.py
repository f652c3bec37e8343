"""``make demo`` end to end: it must keep telling the whole story, or fail here.

The demo runs the real ``gk`` commands (log, two agents, gk ssh, plain ssh, audit, monitor) as
subprocesses; these tests run it as ``make demo`` does and check its key outcomes both in what it
prints and in the state it leaves behind (``--keep``), and that it cleans up after itself, also
when interrupted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # ~10-15 s: the whole demo, plus an interrupted start

ROOT = Path(__file__).resolve().parents[1]
GK = [sys.executable, "-m", "gatekeeper.cli"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GK_", "SSH_AUTH_SOCK"))}
    env["NO_COLOR"] = "1"
    return env


def _ports(root: Path) -> list[int]:
    """The log's and the agents' ports, from the files the demo wrote."""
    text = (root / "alice" / "ssh_config").read_text() + (root / "alice" / "client.toml").read_text()
    return [int(p) for p in re.findall(r"(?:Port |127\.0\.0\.1:)(\d+)", text)]


def _journal(root: Path, host: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (root / host / "state" / "journal.jsonl").read_text().splitlines()]


Run = tuple[subprocess.CompletedProcess[str], Path]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    keep = tmp_path_factory.mktemp("demo") / "fleet"
    proc = subprocess.run(
        [sys.executable, "-m", "gatekeeper.demo", "--keep", str(keep)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    return proc, keep


def test_demo_exits_zero(demo_run: Run) -> None:
    proc, _ = demo_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "DEMO FAILED" not in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_logged_commands_ran_on_both_hosts(demo_run: Run) -> None:
    proc, keep = demo_run
    assert "hello from web-01, I am" in proc.stdout
    assert "logged as index" in proc.stdout
    for host in ("web-01", "web-02"):
        journal = _journal(keep, host)
        ran = [r for r in journal if r["event"] == "exit" and r.get("exit_status") == 0]
        assert ran, f"{host} ran no logged command"
        assert all(isinstance(r["index"], int) for r in ran)


def test_unlogged_command_refused_and_did_not_run(demo_run: Run) -> None:
    proc, keep = demo_run
    assert "gk: refused (no-bundle)" in proc.stdout
    assert "[exit 210]" in proc.stdout
    assert not (keep / "UNLOGGED-RAN").exists()
    journal = _journal(keep, "web-01")
    refused = [r for r in journal if r["event"] == "refused" and r["reason"] == "no-bundle"]
    assert len(refused) == 1 and refused[0]["exit_status"] == 210
    assert "UNLOGGED-RAN" in str(refused[0]["command"])


def test_offline_proof_and_fail_closed(demo_run: Run) -> None:
    proc, keep = demo_run
    assert (keep / "proof-1.txt").is_file()
    assert "[exit 69]" in proc.stdout  # gk ssh with the log down


def test_fork_halts_the_host(demo_run: Run) -> None:
    proc, keep = demo_run
    assert "gk: refused (log-fork)" in proc.stdout and "[exit 222]" in proc.stdout
    assert "halted: YES" in proc.stdout
    assert "gk: refused (halted)" in proc.stdout and "[exit 224]" in proc.stdout
    # the halt is durable: the store still says so after the demo stopped the agent
    status = subprocess.run(
        [*GK, "agent", "status", "--state-dir", str(keep / "web-01" / "state"), "--json"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert status.returncode == 1, status.stderr
    report = json.loads(status.stdout)
    assert report["halted"] is not None
    assert report["halted"]["known_checkpoint"] != report["halted"]["conflicting_checkpoint"]


def test_monitor_raised_a_critical_alert(demo_run: Run) -> None:
    proc, _ = demo_run
    assert re.search(r"ALERT critical (fork|rollback|rewrite)", proc.stdout), proc.stdout[-3000:]
    assert "[exit 76]" in proc.stdout


def test_everything_was_stopped(demo_run: Run) -> None:
    _, keep = demo_run
    ports = _ports(keep)
    assert len(ports) >= 3
    assert not [p for p in ports if _listening(p)]


def _start_until_fleet_runs() -> tuple[subprocess.Popen[str], Path, list[int], list[str]]:
    """Start the demo (no --keep) and read its output until the log and both agents run."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatekeeper.demo"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    root: Path | None = None
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        seen.append(line)
        match = re.search(r"Everything happens in (\S+) ", line)
        if match:
            root = Path(match.group(1))
        if "alice's side:" in line:  # the log and both agents run, their ports are on disk
            break
        assert time.monotonic() < deadline, "".join(seen)
    assert root is not None and root.is_dir(), "".join(seen)
    return proc, root, _ports(root), seen


def test_interrupted_demo_stops_its_processes_and_removes_its_directory() -> None:
    proc, root, ports, seen = _start_until_fleet_runs()
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout is not None
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 130, "".join(seen) + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert "every process the demo started was stopped" in rest
    assert not root.exists()
    assert not [p for p in ports if _listening(p)]


def test_killed_demo_leaves_no_server_running() -> None:
    """Even SIGKILL (no cleanup possible in the demo) takes the log and the agents down with it."""
    proc, root, ports, _ = _start_until_fleet_runs()
    try:
        assert [p for p in ports if _listening(p)] == ports
        proc.kill()
        proc.wait(timeout=60)
        deadline = time.monotonic() + 30
        while [p for p in ports if _listening(p)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in ports if _listening(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        shutil.rmtree(root, ignore_errors=True)


def test_key_fallback_without_ssh_keygen(tmp_path: Path) -> None:
    """Without ssh-keygen the demo makes the user key with cryptography: an OpenSSH key that
    OpenSSH itself reads, with the matching public key file."""
    from gatekeeper.demo import _generate_key

    key = tmp_path / "id_ed25519"
    _generate_key(key, "alice@demo.example")
    assert key.stat().st_mode & 0o077 == 0
    public = key.with_suffix(".pub").read_text().split()
    assert public[0] == "ssh-ed25519" and public[2] == "alice@demo.example"
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True)
    assert derived.stdout.split()[:2] == public[:2]


def test_operations_exit_status_table_matches_gate_reasons() -> None:
    """docs/operations.md lists every refusal status exactly as gatekeeper.gate.Reason defines it."""
    from gatekeeper.gate import Reason

    text = (ROOT / "docs" / "operations.md").read_text()
    documented = {int(s): code for s, code in re.findall(r"^\| (2\d\d) \| `([a-z-]+)` \|", text, re.M)}
    expected = {r.exit_status: r.code for r in Reason if r is not Reason.ALLOWED}
    assert documented == expected


def test_docs_index_links_exist() -> None:
    """Every page docs/README.md links to exists, and every page in docs/ is in the index."""
    docs = ROOT / "docs"
    index = (docs / "README.md").read_text()
    linked = set(re.findall(r"\]\(([^)#]+\.md)\)", index))
    assert linked
    assert not [name for name in linked if not (docs / name).resolve().is_file()]
    pages = {p.relative_to(docs).as_posix() for p in docs.rglob("*.md")} - {"README.md"}
    assert pages <= linked, f"not in docs/README.md: {sorted(pages - linked)}"
