"""gk submit against a tiny in-test log that can misbehave: the happy path, and each failure
gives one clear line and the documented exit status."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from gatekeeper.action import NAMESPACE, parse_entry, verify_entry
from gatekeeper.bundle import parse_bundle
from gatekeeper.cli import main
from gatekeeper.client import identity as ident
from gatekeeper.client.submit import (
    ClockSkew,
    LogFork,
    LogSettings,
    build_action,
    join_command,
    submit_action,
)
from gatekeeper.errors import LogMisbehaved, LogUnavailable, Refused
from personality.tlog import merkle
from personality.tlog.checkpoint import open_checkpoint
from personality.tlog.proof import parse_tlog_proof
from tests.test_submit_fakelog import ORIGIN, FakeLog, running


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(path))
    return path


@pytest.fixture
def log() -> Iterator[FakeLog]:
    with running(FakeLog()) as fake:
        yield fake


def settings(fake: FakeLog, tmp_path: Path) -> LogSettings:
    return LogSettings.from_strings(fake.url, fake.vkey, None, tmp_path / "state" / "cp", timeout=5)


def submit(fake: FakeLog, tmp_path: Path, key: Path, command: bytes = b"uptime", **kw):  # type: ignore[no-untyped-def]
    me = ident.from_file(key)
    action = build_action(me, ["web-01"], "deploy", command, window=300, reason="test")
    return submit_action(settings(fake, tmp_path), me, action, **kw)


def test_join_command_is_openssh_joining() -> None:
    assert join_command(["ls", "-l", "/tmp/my dir"]) == b"ls -l /tmp/my dir"
    assert join_command(["echo", "'a  b'"]) == b"echo 'a  b'"
    assert join_command([os.fsdecode(b"caf\xe9")]) == b"caf\xe9"


def test_bundle_verifies(log: FakeLog, tmp_path: Path, key: Path) -> None:
    res = submit(log, tmp_path, key, command=b"systemctl restart nginx")
    b = parse_bundle(res.bundle)
    assert b.index == res.index == 0
    signed = verify_entry(b.entry)
    assert signed.action.command == b"systemctl restart nginx"
    assert [t.name for t in signed.action.targets] == ["web-01"]
    assert signed.action.account == "deploy"
    assert signed.action.signer == ident.from_file(key).public_key
    sc = open_checkpoint(b.checkpoint, ORIGIN, [log.signer.verifier()])
    merkle.verify_inclusion(b.index, sc.size, merkle.leaf_hash(b.entry), b.proof, sc.root)
    # the bundle is a tlog-proof whose extra is the entry
    assert parse_tlog_proof(__import__("base64").b64decode(res.bundle)).extra == b.entry
    # and the state file now holds that checkpoint
    assert (tmp_path / "state" / "cp").read_bytes() == b.checkpoint
    assert NAMESPACE == "action@gatekeeper"


def test_state_advances_with_consistency_proofs(log: FakeLog, tmp_path: Path, key: Path) -> None:
    for i in range(5):
        res = submit(log, tmp_path, key, command=b"echo %d" % i)
        assert res.index == i
    assert log.requests.count("consistency") == 4  # first use trusts; then every update is proven
    stored = open_checkpoint((tmp_path / "state" / "cp").read_bytes(), ORIGIN, [log.signer.verifier()])
    assert stored.size == 5


def test_wrong_inclusion_proof_is_log_misbehaved(log: FakeLog, tmp_path: Path, key: Path) -> None:
    submit(log, tmp_path, key)
    before = (tmp_path / "state" / "cp").read_bytes()
    log.mode = "wrong-proof"
    with pytest.raises(LogMisbehaved) as exc:
        submit(log, tmp_path, key)
    assert exc.value.exit_code == 76
    assert (tmp_path / "state" / "cp").read_bytes() == before


def test_forged_checkpoint_is_log_misbehaved(log: FakeLog, tmp_path: Path, key: Path) -> None:
    log.mode = "forged-checkpoint"
    with pytest.raises(LogMisbehaved, match="does not verify"):
        submit(log, tmp_path, key)
    assert not (tmp_path / "state" / "cp").exists()


def test_missing_proof_is_log_misbehaved(log: FakeLog, tmp_path: Path, key: Path) -> None:
    log.mode = "no-proof"
    with pytest.raises(LogMisbehaved):
        submit(log, tmp_path, key)


def test_non_json_answer_is_log_misbehaved(log: FakeLog, tmp_path: Path, key: Path) -> None:
    log.mode = "not-json"
    with pytest.raises(LogMisbehaved, match="not JSON"):
        submit(log, tmp_path, key)


def test_fork_against_stored_checkpoint_is_loud_and_keeps_evidence(
    log: FakeLog, tmp_path: Path, key: Path
) -> None:
    submit(log, tmp_path, key)
    submit(log, tmp_path, key)
    log.mode = "fork"  # entry 0 silently rewritten: a different history
    with pytest.raises(LogFork) as exc:
        submit(log, tmp_path, key)
    assert exc.value.diagnostics().startswith("gk: LOG FORK DETECTED:")
    assert exc.value.exit_code == 76
    evidence = list((tmp_path / "state").glob("cp.fork-*"))
    assert len(evidence) == 1
    text = evidence[0].read_bytes()
    assert b"stored:\n" in text and b"received:\n" in text
    # the stored view was not replaced by the forked one
    stored = open_checkpoint((tmp_path / "state" / "cp").read_bytes(), ORIGIN, [log.signer.verifier()])
    assert stored.size == 2


def test_smaller_checkpoint_is_a_fork_whatever_the_log_answers_about_it(
    log: FakeLog, tmp_path: Path, key: Path
) -> None:
    """A log that went back in time and then fails the consistency request (HTTP 500 here) is
    still a fork: the smaller signed checkpoint is enough; no proof is asked for."""
    for _ in range(3):
        submit(log, tmp_path, key)
    before = (tmp_path / "state" / "cp").read_bytes()
    log.mode = "rollback"
    log.requests.clear()
    with pytest.raises(LogFork) as exc:
        submit(log, tmp_path, key)
    assert "went back in time: it serves size 2, this client verified size 3" in str(exc.value)
    assert log.requests == ["add"]
    [evidence] = (tmp_path / "state").glob("cp.fork-*")
    assert evidence.read_bytes().startswith(b"stored:\n" + before + b"\nreceived:\n")
    assert (tmp_path / "state" / "cp").read_bytes() == before


def test_refused_signer_shows_the_logs_message(log: FakeLog, tmp_path: Path, key: Path) -> None:
    log.mode = "refuse"
    with pytest.raises(Refused, match="not in allowed_signers") as exc:
        submit(log, tmp_path, key)
    assert exc.value.exit_code == 77


def test_overloaded_log_is_unavailable(log: FakeLog, tmp_path: Path, key: Path) -> None:
    log.mode = "unavailable"
    with pytest.raises(LogUnavailable) as exc:
        submit(log, tmp_path, key)
    assert exc.value.exit_code == 69


def test_clock_skew_beyond_window_refuses_and_small_skew_warns(
    log: FakeLog, tmp_path: Path, key: Path
) -> None:
    log.date_offset = -400  # the log's clock is 400 s behind ours; window is 300 s
    with pytest.raises(ClockSkew, match="ahead of"):
        submit(log, tmp_path, key)
    log.date_offset = 60
    warnings: list[str] = []
    res = submit(log, tmp_path, key, warn=warnings.append)
    assert res.skew is not None and -62 < res.skew < -58
    assert len(warnings) == 1 and "behind" in warnings[0]


def test_stored_checkpoint_from_another_key_is_a_config_error(
    log: FakeLog, tmp_path: Path, key: Path
) -> None:
    submit(log, tmp_path, key)
    other = FakeLog()
    with running(other):
        with pytest.raises(Exception, match="does not verify for log") as exc:
            submit(other, tmp_path, key)
        assert getattr(exc.value, "exit_code", None) == 78


# -- through the CLI -----------------------------------------------------------------------------


def gk(
    *args: str, env: dict[str, str] | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    e = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "GK_CONFIG")}
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gatekeeper", *args], input=stdin, capture_output=True, env=e, timeout=60
    )


def test_cli_prints_bundle_and_index(log: FakeLog, tmp_path: Path, key: Path) -> None:
    state = tmp_path / "st"
    p = gk(
        "submit",
        "--log",
        log.url,
        "--log-key",
        log.vkey,
        "--state",
        str(state),
        "--key",
        str(key),
        "--host",
        "web-01",
        "--host",
        "web-02",
        "--account",
        "deploy",
        "--",
        "ls",
        "-l",
        "/tmp/my dir",
    )
    assert p.returncode == 0, p.stderr
    b = parse_bundle(p.stdout.decode().strip())
    assert parse_entry(b.entry).action.command == b"ls -l /tmp/my dir"
    assert [t.name for t in parse_entry(b.entry).action.targets] == ["web-01", "web-02"]
    assert p.stderr.decode().strip() == "gk: logged as index 0 (checkpoint size 1)"


def test_cli_output_file_and_config(log: FakeLog, tmp_path: Path, key: Path) -> None:
    cfg = tmp_path / "client.toml"
    cfg.write_text(
        f'log = "{log.url}"\nlog_key = "{log.vkey}"\nkey = "{key}"\nstate = "{tmp_path}/s"\nwindow = 60\n'
    )
    out = tmp_path / "bundle"
    p = gk(
        "submit",
        "--config",
        str(cfg),
        "--host",
        "h",
        "--account",
        "a",
        "--output",
        str(out),
        "--command-string",
        "echo 'exact  string'",
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout == b""
    assert oct(out.stat().st_mode & 0o777) == oct(0o600)
    a = parse_entry(parse_bundle(out.read_text().strip()).entry).action
    assert a.command == b"echo 'exact  string'"
    assert a.not_after - a.not_before == 60


def test_cli_log_unreachable_is_exit_69_one_line(tmp_path: Path, key: Path) -> None:
    fake = FakeLog()
    p = gk(
        "submit",
        "--log",
        "http://127.0.0.1:9",
        "--log-key",
        fake.vkey,
        "--state",
        str(tmp_path / "s"),
        "--key",
        str(key),
        "--host",
        "h",
        "--account",
        "a",
        "--",
        "true",
    )
    assert p.returncode == 69
    lines = p.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "unreachable" in lines[0] and "Traceback" not in lines[0]
    # the operating system's reason, not the requests class name ("ConnectionError")
    assert lines[0].endswith("is unreachable: Connection refused"), lines[0]


def test_silent_log_says_timed_out(tmp_path: Path, key: Path) -> None:
    """A log that accepts the connection and never answers: the one line says it timed out."""
    fake = FakeLog()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        log = LogSettings.from_strings(url, fake.vkey, None, tmp_path / "s", timeout=0.3)
        me = ident.from_file(key)
        action = build_action(me, ["web-01"], "deploy", b"true", window=300)
        with pytest.raises(LogUnavailable) as exc:
            submit_action(log, me, action)
    message = exc.value.diagnostics()
    assert "\n" not in message
    assert "in time (timed out)" in message, message


def test_cli_refused_signer_is_one_line(log: FakeLog, tmp_path: Path, key: Path) -> None:
    log.mode = "refuse"
    p = gk(
        "submit",
        "--log",
        log.url,
        "--log-key",
        log.vkey,
        "--state",
        str(tmp_path / "s"),
        "--key",
        str(key),
        "--host",
        "h",
        "--account",
        "a",
        "--",
        "true",
    )
    assert p.returncode == 77
    assert (
        p.stderr.decode().strip().splitlines() == [p.stderr.decode().strip()]
        and "not in allowed_signers" in p.stderr.decode()
    )


def test_cli_usage_errors(tmp_path: Path, key: Path) -> None:
    p = gk(
        "submit",
        "--log",
        "http://127.0.0.1:9",
        "--log-key",
        FakeLog().vkey,
        "--key",
        str(key),
        "--account",
        "a",
        "--",
        "true",
    )
    assert p.returncode == 78 and b"--host" in p.stderr
    p = gk(
        "submit",
        "--log",
        "http://127.0.0.1:9",
        "--log-key",
        "garbage",
        "--key",
        str(key),
        "--host",
        "h",
        "--account",
        "a",
        "--",
        "true",
    )
    assert p.returncode == 78 and b"verifier key" in p.stderr
    p = gk(
        "submit",
        "--log",
        "http://127.0.0.1:9",
        "--log-key",
        FakeLog().vkey,
        "--key",
        str(key),
        "--host",
        "h",
        "--account",
        "a",
    )
    assert p.returncode == 78 and b"no command" in p.stderr


def test_cli_main_is_registered() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["submit", "--help"])
    assert exc.value.code == 0
