"""Start-up cost, pinned structurally: what each ``gk`` command imports (``sys.modules`` checked in a
fresh interpreter), never how long it takes (the timing is in docs/client.md, "Start-up").

- Building the ``gk`` parser (every command, ``--help``) imports no SSH library, no HTTP client, no
  asyncio, no cryptography and no logging: the subcommand modules import those in their handlers.
- ``gk submit`` and ``gk ssh``, run for real (a key file or ssh-agent, a log, an SSH host), never
  import asyncssh (~140 ms: SSHSIG is done with cryptography, the agent protocol by a small client)
  nor asyncio, and paramiko's optional ``invoke`` (~50 ms) stays unloaded unless an ssh_config
  ``Match exec`` needs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncssh
import pytest
from agent_fixtures import AgentThread, OneCommandGate, openssh_public, write_private_key
from keys import keygen, ssh_agent

from tests.test_submit_fakelog import FakeLog, running

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("asyncssh", "asyncio", "paramiko", "requests", "cryptography", "logging", "aiohttp", "sqlite3")

# Runs gk's main() with the argv given as JSON, then reports the exit status and which of the
# named modules were imported (and whether invoke is still paramiko's unloaded placeholder).
_PROBE = textwrap.dedent(
    """
    import json, sys
    argv, watch = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    from gatekeeper.cli import build_parser, main
    if argv:
        rc = main(argv)
    else:
        build_parser()
        rc = 0
    invoke = sys.modules.get("invoke")
    report = {"rc": rc, "loaded": [m for m in watch if m in sys.modules],
              "invoke": None if invoke is None else type(invoke).__name__}
    print("PROBE " + json.dumps(report), file=sys.stderr)
    """
)


def probe(argv: list[str], watch: tuple[str, ...], env: dict[str, str] | None = None) -> dict[str, object]:
    e = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "GK_CONFIG")}
    e.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv), json.dumps(list(watch))],
        capture_output=True, text=True, cwd=REPO, env=e, timeout=120, stdin=subprocess.DEVNULL,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("PROBE ")]
    assert lines, proc.stderr
    report: dict[str, object] = json.loads(lines[-1].removeprefix("PROBE "))
    report["stderr"] = proc.stderr
    return report


def test_building_the_parser_imports_nothing_heavy() -> None:
    report = probe([], HEAVY)
    assert report["rc"] == 0
    assert report["loaded"] == [], report


@pytest.mark.parametrize(
    "module",
    ["gatekeeper.cli.client_cmd", "gatekeeper.client.run", "gatekeeper.sshsig", "gatekeeper.action",
     "gatekeeper.client.identity"],
)
def test_client_modules_do_not_import_asyncssh(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in ('asyncssh', 'asyncio') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def _submit_argv(log: FakeLog, tmp_path: Path, *identity: str) -> list[str]:
    return ["submit", "--log", log.url, "--log-key", log.vkey, "--state", str(tmp_path / "state"),
            *identity, "--host", "web-01", "--account", "deploy", "--output", str(tmp_path / "bundle"),
            "--", "uptime"]


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa256", "rsa"])
def test_gk_submit_with_a_key_file_never_imports_asyncssh(tmp_path: Path, kind: str) -> None:
    key = keygen(tmp_path, kind)
    with running(FakeLog()) as log:
        report = probe(_submit_argv(log, tmp_path, "--key", str(key.path)), ("asyncssh", "asyncio"))
    assert report["rc"] == 0, report["stderr"]
    assert report["loaded"] == [], report
    assert (tmp_path / "bundle").read_text().strip()


def test_gk_submit_with_ssh_agent_never_imports_asyncssh(tmp_path: Path) -> None:
    key = keygen(tmp_path, "ed25519")
    with ssh_agent(tmp_path, key) as sock, running(FakeLog()) as log:
        argv = _submit_argv(log, tmp_path, "--agent")
        report = probe(argv, ("asyncssh", "asyncio"), {"SSH_AUTH_SOCK": sock})
    assert report["rc"] == 0, report["stderr"]
    assert report["loaded"] == [], report


def test_gk_ssh_end_to_end_never_imports_asyncssh_nor_invoke(tmp_path: Path) -> None:
    """A whole ``gk ssh`` (submit, connect, authenticate, run, exit status) against the agent's SSH
    server: neither asyncssh nor asyncio is imported, and ``invoke`` stays a placeholder."""
    user = asyncssh.generate_private_key("ssh-ed25519")
    key_path = write_private_key(user, tmp_path / "id_ed25519")
    account = os.environ.get("USER") or __import__("getpass").getuser()
    gate = OneCommandGate()
    gate.allow(openssh_public(user), account, "true")
    with running(FakeLog()) as log, AgentThread(tmp_path, gate, authorized=[user]) as agent:
        kind, b64 = agent.host_key.export_public_key("openssh").decode().split()[:2]
        known = tmp_path / "gk_known_hosts"
        known.write_text(f"web-01 {kind} {b64}\n")
        config = tmp_path / "ssh_config"
        config.write_text(
            f"Host web-01\n  HostName 127.0.0.1\n  Port {agent.port}\n  HostKeyAlias web-01\n"
            f"  User {account}\n  UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n"
        )
        argv = ["ssh", "--log", log.url, "--log-key", log.vkey, "--state", str(tmp_path / "state"),
                "-i", str(key_path), "-F", str(config), "-n", "web-01", "--", "true"]
        report = probe(argv, ("asyncssh", "asyncio", "unittest.mock"))
    assert report["rc"] == 0, report["stderr"]
    assert report["loaded"] == [], report
    assert report["invoke"] in (None, "_Deferred"), report
    assert [r.command for r in gate.requests] == [b"true"]


def test_match_exec_still_loads_invoke_on_demand(tmp_path: Path) -> None:
    """The placeholder is transparent: an ssh_config ``Match exec`` runs through invoke as before."""
    config = tmp_path / "ssh_config"
    config.write_text('Match exec "true"\n  HostName matched.example\nHost *\n  Port 2200\n')
    code = textwrap.dedent(
        f"""
        import sys
        from gatekeeper.client.sshclient import Resolver
        assert type(sys.modules.get("invoke")).__name__ in ("_Deferred", "NoneType")
        spec = Resolver([{str(config)!r}]).resolve("anything")
        print(spec.hostname, spec.port, type(sys.modules["invoke"]).__name__)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["matched.example", "2200", "module"]


def test_action_cmd_input_bound_matches_the_format_limits() -> None:
    """action_cmd spells out MAX_ENTRY + MAX_BUNDLE so that registering it imports neither module."""
    from gatekeeper import action, bundle
    from gatekeeper.cli import action_cmd

    assert action_cmd._MAX_INPUT == action.MAX_ENTRY + bundle.MAX_BUNDLE + 64
