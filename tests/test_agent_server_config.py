"""The agent's configuration, ``gk agent init`` and ``gk agent serve`` (as a real process, with the
real verification gate: no bundle is refused before any log access)."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest
from agent_fixtures import wait_until

from gatekeeper.agent.config import DEFAULT_SHELL, Timeouts, load_config, parse_config, parse_listen
from gatekeeper.agent.wiring import build_gate, config_template, init_agent_dir, load_host_key
from gatekeeper.cli import main
from gatekeeper.errors import ConfigError
from gatekeeper.gate import ExecRequest, Reason
from gatekeeper.journal import read_journal
from personality.tlog.note import generate_signer

REPO = Path(__file__).resolve().parents[1]
VKEY = generate_signer("log.example/gk").verifier().vkey()
MINIMAL = f'[log]\nkeys = ["{VKEY}"]\n'


def test_minimal_config_takes_every_default(tmp_path: Path) -> None:
    cfg = parse_config(MINIMAL + '[agent]\nname = "web-01"\n', base_dir=tmp_path)
    assert (cfg.name, cfg.listen_host, cfg.listen_port) == ("web-01", "127.0.0.1", 2222)
    assert cfg.host_key == tmp_path / "host_key"
    assert cfg.authorized_keys == tmp_path / "authorized_keys"
    assert cfg.trusted_user_ca_keys is None
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.journal == tmp_path / "state" / "journal.jsonl"
    assert cfg.log.url == "http://127.0.0.1:8080"
    assert cfg.log.origin == "log.example/gk"
    assert cfg.shell == DEFAULT_SHELL
    assert cfg.timeouts == Timeouts()
    assert cfg.webhook is None
    table = cfg.policy_table("SHA256:x")
    assert table == {"host_name": "web-01", "log_origin": "log.example/gk", "log_keys": [VKEY],
                     "host_key_fingerprint": "SHA256:x"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[agnet]\nname = 'x'\n", "unknown section(s) ['agnet']"),
        ("[agent]\nlisten_addr = '1.2.3.4:5'\n", "unknown key(s) ['listen_addr'] in [agent]"),
        ("[agent]\nname = 3\n", "[agent] name must be a string"),
        ("[agent]\nname = 'bad name'\n", "must be a host name"),
        ("[agent]\nlisten = 'localhost:22'\n", "is not an IP address"),
        ("[agent]\nlisten = '127.0.0.1:70000'\n", "out of range"),
        ("[agent]\nhost_key = ''\n", "must not be empty"),
        ("[policy]\nshell = 'sh'\n", "shell must be an absolute path"),
        ("[policy]\nmax_clock_skew = 99999\n", "max_clock_skew"),
        ("[policy]\nmax_clock_skew = true\n", "must be an integer"),
        ("[policy]\nallowed_accounts = []\n", "no command could ever run"),
        ("[policy.witnesses]\nrequired = 2\nkeys = []\n", "requires 2 cosignatures"),
        ("[policy.witnesses]\nquorum = 1\n", "unknown key(s) ['quorum']"),
        ("[timeouts]\ndecision = 0\n", "decision must be > 0"),
        ("[timeouts]\nlogin = '5'\n", "must be a number of seconds"),
        ("[alarm]\nwebhook = 'ftp://x'\n", "webhook must be an http"),
        ("[log]\nurl = 'file:///x'\n", "url must be an http"),
    ],
)
def test_invalid_settings_are_rejected_clearly(tmp_path: Path, extra: str, message: str) -> None:
    text = MINIMAL + extra if not extra.startswith("[log]") else extra.replace("[log]\n", MINIMAL)
    with pytest.raises(ConfigError) as exc:
        parse_config(text, base_dir=tmp_path, source=tmp_path / "agent.toml")
    assert message in str(exc.value)
    assert str(tmp_path / "agent.toml") in str(exc.value)


@pytest.mark.parametrize("keys", ["[]", '["not a key"]'])
def test_log_keys_are_required(tmp_path: Path, keys: str) -> None:
    with pytest.raises(ConfigError, match=r"\[log\] keys"):
        parse_config(f"[log]\nkeys = {keys}\n", base_dir=tmp_path)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "agent.toml"
    bad.write_text("[agent\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read agent config"):
        load_config(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:2222", ("127.0.0.1", 2222)), ("[::1]:0", ("::1", 0)), ("0.0.0.0:22", ("0.0.0.0", 22))],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["2222", "127.0.0.1:", ":22", "127.0.0.1:x", "[::1]22", "::1:22",
                                  "127.0.0.1:\u00b2", "127.0.0.1:8\u2460", "[::1]:\u0662\u0662"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen(text)


def test_template_and_example_are_valid(tmp_path: Path) -> None:
    text = config_template(name="web-01", log_url="https://log.example", log_keys=[VKEY])
    cfg = parse_config(text, base_dir=tmp_path)
    assert cfg.name == "web-01"
    example = load_config(REPO / "examples" / "agent.toml")
    assert example.listen_port == 2222
    assert example.shell == "/bin/sh"


def test_init_writes_safe_files_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "agent"
    argv = ["agent", "init", str(directory), "--name", "web-01", "--log", "http://127.0.0.1:9",
            "--log-key", VKEY]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "host key fingerprint: SHA256:" in out
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(directory) == 0o700
    assert mode(directory / "host_key") == 0o600
    assert mode(directory / "authorized_keys") == 0o600
    assert mode(directory / "state") == 0o700
    assert mode(directory / "agent.toml") == 0o600
    assert load_host_key(directory / "host_key").algorithm == b"ssh-ed25519"
    cfg = load_config(directory / "agent.toml")
    assert (cfg.name, cfg.log.keys) == ("web-01", (VKEY,))
    before = (directory / "host_key").read_bytes()
    assert main(argv) == ConfigError.exit_code
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (directory / "host_key").read_bytes() == before


def test_init_rejects_a_bad_log_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--log-key"):
        init_agent_dir(tmp_path / "a", name="h", log_url="http://x", log_keys=["x+00000000+AAAA"])
    assert not (tmp_path / "a").exists()


def test_host_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "host_key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(path))
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_host_key(path)


def test_build_gate_assembles_the_verifying_gate(tmp_path: Path) -> None:
    init_agent_dir(tmp_path, name="web-01", log_url="http://127.0.0.1:9", log_keys=[VKEY])
    cfg = load_config(tmp_path / "agent.toml")
    gate = build_gate(cfg)
    request = ExecRequest("root", b"true", "ssh-ed25519 AAAA", None, "127.0.0.1:1", "agent")
    decision = asyncio.run(gate.decide(request))
    assert decision.reason is Reason.NO_BUNDLE
    [record] = list(read_journal(cfg.journal))
    assert (record["reason"], record["event"]) == ("no-bundle", "refused")


def test_serve_process_prints_its_port_and_refuses_without_bundle(tmp_path: Path) -> None:
    init_agent_dir(tmp_path, name="web-01", log_url="http://127.0.0.1:9", log_keys=[VKEY],
                   listen="127.0.0.1:0")
    user = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "authorized_keys").write_text(user.export_public_key("openssh").decode())
    marker = tmp_path / "marker"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatekeeper", "agent", "serve", "--config", str(tmp_path / "agent.toml")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("listening on 127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        port = int(line.rsplit(":", 1)[1])
        host_pub = (tmp_path / "host_key.pub").read_text().split()

        async def go() -> asyncssh.SSHCompletedProcess:
            known = asyncssh.import_known_hosts(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
            async with asyncssh.connect("127.0.0.1", port, username="root", client_keys=[user],
                                        known_hosts=known, agent_path=None, config=None) as conn:
                return await conn.run(f"touch {marker}", encoding=None)

        result = asyncio.run(go())
        assert result.exit_status == Reason.NO_BUNDLE.exit_status
        assert result.stderr.startswith(b"gk: refused")
        assert not marker.exists()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert wait_until(lambda: any(r["reason"] == "no-bundle"
                                  for r in read_journal(tmp_path / "state" / "journal.jsonl")))
