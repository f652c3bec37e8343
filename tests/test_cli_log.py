"""`gk log ...`: init, key, serve (errors), add, proof, export-static; clear errors, no tracebacks."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import LogServer, free_port, gk_command

from gatekeeper.cli import main
from personality.client import LogClient, StaticTransport
from personality.config import load_config
from personality.errors import ConfigError
from personality.tlog.note import parse_vkey, signer_from_skey


def _gk(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_init_creates_key_config_and_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "new" / "log"
    rc, out, _ = _gk(capsys, "log", "init", str(d), "--origin", "log.example.com/ops")
    assert rc == 0
    key = d / "log.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    signer = signer_from_skey(key.read_text())
    assert signer.name == "log.example.com/ops"
    assert signer.verifier().vkey() in out
    cfg = load_config(d)
    assert cfg.origin == "log.example.com/ops"
    assert cfg.server.listen == "127.0.0.1:8080" and cfg.server.admission == "allowed-signers"
    assert cfg.database.exists()
    rc, out, _ = _gk(capsys, "log", "key", str(d))
    assert rc == 0 and parse_vkey(out.strip()) == signer.verifier()


def test_init_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "log"
    assert _gk(capsys, "log", "init", str(d), "--origin", "a.example/log")[0] == 0
    key = (d / "log.key").read_bytes()
    rc, _, err = _gk(capsys, "log", "init", str(d), "--origin", "b.example/log")
    assert rc == 2 and "refusing to overwrite" in err
    assert (d / "log.key").read_bytes() == key


@pytest.mark.parametrize("origin", ["has space", "plus+sign", ""])
def test_init_refuses_bad_origins(tmp_path: Path, capsys: pytest.CaptureFixture[str], origin: str) -> None:
    rc, _, err = _gk(capsys, "log", "init", str(tmp_path / "log"), "--origin", origin)
    assert rc == 2 and "not a valid name" in err
    assert not (tmp_path / "log" / "log.key").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("colour = 1\n", "unknown setting"),
        ("[server]\nlisten = 8080\n", "listen"),
        ("[sequencer]\nmax_batch = 0\n", "max_batch must be a positive integer"),
        ('[server]\nadmission = "everyone"\n', "admission must be"),
        ("this is not toml\n", "cannot read"),
    ],
)
def test_bad_config_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str, message: str
) -> None:
    d = tmp_path / "log"
    assert _gk(capsys, "log", "init", str(d), "--origin", "c.example/log")[0] == 0
    text = 'origin = "c.example/log"\n' + edit  # the other settings keep their defaults
    (d / "log.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(d)
    rc, _, err = _gk(capsys, "log", "serve", str(d), "--accept-any")
    assert rc == 2
    assert message.split()[0] in err and "Traceback" not in err


def test_serve_needs_an_admission_policy_that_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "log"
    assert _gk(capsys, "log", "init", str(d), "--origin", "d.example/log")[0] == 0
    # A subprocess: serve configures logging for the process once its config is read.
    proc = subprocess.run(gk_command("log", "serve", str(d)), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "allowed_signers" in proc.stderr and "Traceback" not in proc.stderr


def test_serve_reports_a_busy_port(log_server: LogServer) -> None:
    port = log_server.url.rsplit(":", 1)[1]
    proc = subprocess.run(
        gk_command(
            "log", "serve", str(log_server.directory), "--listen", f"127.0.0.1:{port}", "--accept-any"
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The running server holds the sequencer lock (or the port): either way a clear refusal.
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "already sequencing" in proc.stderr or "cannot listen" in proc.stderr


def test_add_and_verified_proof(
    log_server: LogServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = tmp_path / "entry"
    entry.write_bytes(b"an entry from the CLI")
    rc, out, _ = _gk(capsys, "log", "add", log_server.url, str(entry))
    assert rc == 0
    body = json.loads(out)
    assert body["index"] == 0 and body["duplicate"] is False and body["size"] == 1
    rc, out, _ = _gk(capsys, "log", "proof", log_server.url, "--entry", str(entry), "--vkey", log_server.vkey)
    assert rc == 0 and json.loads(out)["verified"] is True
    rc, out, _ = _gk(capsys, "log", "proof", log_server.url, "--index", "0")
    assert rc == 0 and json.loads(out)["proof"] == []
    rc, out, _ = _gk(capsys, "log", "proof", log_server.url, "--consistency", "0", "1")
    assert rc == 0 and json.loads(out) == {"from": 0, "to": 1, "proof": []}
    rc, _, err = _gk(capsys, "log", "proof", log_server.url, "--index", "5")
    assert rc == 1 and "404 not_found" in err


def test_add_to_an_unreachable_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entry = tmp_path / "entry"
    entry.write_bytes(b"x")
    rc, _, err = _gk(capsys, "log", "add", f"http://127.0.0.1:{free_port()}", str(entry))
    assert rc == 69 and "cannot reach" in err


def test_export_static_then_read_it(
    log_server: LogServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = [f"e{i}".encode() for i in range(3)]
    for i, e in enumerate(entries):
        f = tmp_path / f"e{i}"
        f.write_bytes(e)
        assert _gk(capsys, "log", "add", log_server.url, str(f), "--no-wait")[0] == 0
    out = tmp_path / "www"
    rc, text, _ = _gk(capsys, "log", "export-static", str(log_server.directory), str(out))
    assert rc == 0 and "exported size 3" in text
    client = LogClient(StaticTransport(out))
    assert client.entries(0, 3, 3) == entries


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:\u00b2", "127.0.0.1:8\u2460", "127.0.0.1:99999", "127.0.0.1:", "8080"]
)
def test_parse_listen_refuses_bad_ports(listen: str) -> None:
    from personality.config import parse_listen

    with pytest.raises(ConfigError):
        parse_listen(listen)


def test_config_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "log.toml").write_bytes(b'origin = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)
