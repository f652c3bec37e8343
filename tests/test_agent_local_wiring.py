"""``[local]`` in agent.toml: ``gk agent serve`` starts local mode (sshd + ``gk exec``) next to, or
instead of, the SSH listener, with one gate for both.

The end-to-end path through a real sshd is in tests/test_sshd_agent_serve.py; the local protocol
and ``gk exec`` themselves in tests/test_exec_local.py.
"""

from __future__ import annotations

import asyncio
import grp
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import gatekeeper.agent.local as local_mod
import gatekeeper.agent.wiring as wiring
from gatekeeper.agent.config import DEFAULT_LOCAL_MODE, load_config, parse_config
from gatekeeper.agent.wiring import config_template, init_agent_dir, run_agent
from gatekeeper.cli import main
from gatekeeper.errors import ConfigError
from gatekeeper.gate import Gate
from gatekeeper.verify.gate import VerifyingGate
from personality.tlog.note import generate_signer

REPO = Path(__file__).resolve().parents[1]
VKEY = generate_signer("log.example/gk").verifier().vkey()
MINIMAL = f'[log]\nkeys = ["{VKEY}"]\n'


def test_local_is_off_by_default_and_in_the_template(tmp_path: Path) -> None:
    cfg = parse_config(MINIMAL, base_dir=tmp_path)
    assert (cfg.local_socket, cfg.local_mode, cfg.local_group) == (None, DEFAULT_LOCAL_MODE, None)
    assert cfg.serves_ssh
    for text in (config_template(name="h", log_url="http://x", log_keys=[VKEY]),
                 (REPO / "examples" / "agent.toml").read_text()):
        assert "\n[local]" in text and '\nsocket = ""\n' in text
        cfg = parse_config(text, base_dir=tmp_path)
        assert cfg.local_socket is None and cfg.serves_ssh


def test_local_section_is_parsed_and_paths_resolved(tmp_path: Path) -> None:
    cfg = parse_config(MINIMAL + '[local]\nsocket = "run/gk.sock"\nmode = "0660"\ngroup = "gk-gated"\n',
                       base_dir=tmp_path)
    assert cfg.local_socket == tmp_path / "run" / "gk.sock"
    assert (cfg.local_mode, cfg.local_group) == (0o660, "gk-gated")
    cfg = parse_config(MINIMAL + '[local]\nsocket = "/run/gatekeeper/local.sock"\nmode = "600"\n',
                       base_dir=tmp_path)
    assert (cfg.local_socket, cfg.local_mode, cfg.local_group) == (Path("/run/gatekeeper/local.sock"),
                                                                   0o600, None)


def test_listen_may_be_empty_for_a_local_only_host(tmp_path: Path) -> None:
    local_only = MINIMAL + '[agent]\nlisten = ""\n[local]\nsocket = "/run/gk.sock"\n'
    cfg = parse_config(local_only, base_dir=tmp_path)
    assert not cfg.serves_ssh
    assert cfg.local_socket == Path("/run/gk.sock")
    with pytest.raises(ConfigError, match="would serve nothing"):
        parse_config(MINIMAL + '[agent]\nlisten = ""\n', base_dir=tmp_path)
    with pytest.raises(ConfigError, match="would serve nothing"):
        off = MINIMAL + '[agent]\nlisten = ""\n[local]\nsocket = ""\nmode = "0660"\n'
        parse_config(off, base_dir=tmp_path)


@pytest.mark.parametrize(
    ("local", "message"),
    [
        ('sock = "/run/x"', "unknown key(s) ['sock'] in [local]"),
        ("socket = 3", "[local] socket must be a string"),
        ('socket = "/run/x"\nmode = 0o660', "[local] mode must be a string"),
        ('socket = "/run/x"\nmode = "660x"', "[local] mode must be octal"),
        ('socket = "/run/x"\nmode = "0888"', "[local] mode must be octal"),
        ('socket = "/run/x"\nmode = "01777"', "[local] mode must be octal"),
        ('socket = "/run/x"\ngroup = "bad group"', "is not a group name"),
        ('socket = "/run/x"\ngroup = ["a"]', "[local] group must be a string"),
        (f'socket = "/{"x" * 120}"', "longer than 107 bytes"),
    ],
)
def test_bad_local_settings_are_rejected(tmp_path: Path, local: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(MINIMAL + f"[local]\n{local}\n", base_dir=tmp_path)
    assert message in str(err.value)


def test_init_writes_a_local_section(tmp_path: Path) -> None:
    sock = str(tmp_path / "run" / "local.sock")
    argv = ["agent", "init", str(tmp_path / "a"), "--name", "web-01", "--log", "http://127.0.0.1:9",
            "--log-key", VKEY, "--listen", "", "--local-socket", sock]
    assert main(argv) == 0
    cfg = load_config(tmp_path / "a" / "agent.toml")
    assert cfg.local_socket == Path(sock) and not cfg.serves_ssh
    with pytest.raises(ConfigError, match="would serve nothing"):
        init_agent_dir(tmp_path / "b", name="h", log_url="http://x", log_keys=[VKEY], listen="")
    assert not (tmp_path / "b").exists()
    with pytest.raises(ConfigError, match="quotes"):
        init_agent_dir(tmp_path / "c", name="h", log_url="http://x", log_keys=[VKEY], local_socket='/a"b')


def _agent_dir(tmp_path: Path, *, listen: str = "127.0.0.1:0", mode: str = "0666", group: str = "") -> Path:
    init_agent_dir(tmp_path, name="web-01", log_url="http://127.0.0.1:9", log_keys=[VKEY], listen=listen,
                   local_socket=str(tmp_path / "run" / "local.sock"))
    config = tmp_path / "agent.toml"
    text = config.read_text().replace('mode = "0666"', f'mode = "{mode}"').replace(
        'group = ""', f'group = "{group}"')
    config.write_text(text)
    return config


def test_one_gate_for_both_front_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_agent builds one VerifyingGate and hands that same object to the SSH listener and to
    local mode (one head store, one spent set, one halted flag); stopping closes both and removes
    the socket."""
    cfg = load_config(_agent_dir(tmp_path))
    gates: dict[str, Gate] = {}
    real_start_agent, real_start_local = wiring.start_agent, local_mod.start_local

    async def spy_agent(**kwargs: Any) -> Any:
        gates["ssh"] = kwargs["gate"]
        return await real_start_agent(**kwargs)

    async def spy_local(gate: Gate, path: Any, **kwargs: Any) -> Any:
        gates["local"] = gate
        return await real_start_local(gate, path, **kwargs)

    monkeypatch.setattr(wiring, "start_agent", spy_agent)
    monkeypatch.setattr(local_mod, "start_local", spy_local)
    seen: list[object] = []

    async def go() -> None:
        stop = asyncio.Event()

        def local_ready(path: Path) -> None:
            seen.append(path)
            assert stat.S_ISSOCK(os.stat(path).st_mode)
            stop.set()

        await run_agent(cfg, stop=stop, ready=lambda host, port: seen.append((host, port)),
                        local_ready=local_ready)

    asyncio.run(go())
    assert isinstance(gates["ssh"], VerifyingGate)
    assert gates["ssh"] is gates["local"]
    assert seen[0][0] == "127.0.0.1" and seen[0][1] > 0  # type: ignore[index]
    assert seen[1] == cfg.local_socket
    assert cfg.local_socket is not None and not cfg.local_socket.exists()


def test_a_socket_that_cannot_be_created_stops_the_agent(tmp_path: Path) -> None:
    """Local mode fails first (unsafe directory): no SSH listener is left behind, one clear error."""
    config = _agent_dir(tmp_path)
    (tmp_path / "run").mkdir(mode=0o777)
    os.chmod(tmp_path / "run", 0o777)
    with pytest.raises(ConfigError, match="writable by nobody else"):
        asyncio.run(run_agent(load_config(config), stop=asyncio.Event()))


def _stop(proc: subprocess.Popen[str]) -> int:
    os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(30)
    finally:
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_serve_process_local_only(tmp_path: Path) -> None:
    """``gk agent serve`` with ``listen = ""``: no SSH port, the socket with the configured mode
    and group, removed on SIGTERM."""
    group = grp.getgrgid(os.getegid()).gr_name
    config = _agent_dir(tmp_path, listen="", mode="0660", group=group)
    sock = tmp_path / "run" / "local.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatekeeper", "agent", "serve", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=REPO, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == f"local mode listening on {sock}\n", proc.stderr.read() if proc.stderr else ""
        st = os.stat(sock)
        assert stat.S_ISSOCK(st.st_mode)
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, os.getegid())
    finally:
        status = _stop(proc)
    assert status == 0
    assert not sock.exists()


def test_standalone_runner_is_gk_agent_serve(tmp_path: Path) -> None:
    """``python3 -m gatekeeper.agent.local`` runs the same code as ``gk agent serve`` (local only,
    whatever ``listen`` says), and reports a config error in one line."""
    config = _agent_dir(tmp_path)
    sock = tmp_path / "other" / "gk.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatekeeper.agent.local", "--config", str(config), "--socket", str(sock)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=REPO, text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == f"local mode listening on {sock}\n"
    finally:
        status = _stop(proc)
    assert status == 0
    bad = subprocess.run(
        [sys.executable, "-m", "gatekeeper.agent.local", "--config", str(tmp_path / "missing.toml")],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert bad.returncode == ConfigError.exit_code
    assert bad.stderr.startswith("gk: ") and "cannot read agent config" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_socket_directory_is_reachable_whatever_the_umask(tmp_path: Path) -> None:
    """The unit runs with UMask=0077; a directory local mode creates must still be 0755, or the
    gated accounts could not reach the socket."""
    cfg = load_config(_agent_dir(tmp_path))
    assert cfg.local_socket is not None
    old = os.umask(0o077)
    try:
        async def go() -> None:
            stop = asyncio.Event()
            await run_agent(cfg, stop=stop, local_ready=lambda _path: stop.set())

        asyncio.run(go())
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(cfg.local_socket.parent).st_mode) == 0o755
