"""Benchmark: does re-arming TCP_QUICKACK after every read matter? ``true`` over a new SSH
connection each time, against two agents running side by side in one process, identical except for
``AgentSettings.quickack`` (TCP_NODELAY is on in both: asyncio sets it on every TCP transport and
the agent sets it again), with the gate switched off (``UnsafeAllowAllGate``) so only the SSH front
end is measured. Runs alternate between the two agents to cancel drift.

Run: ``.venv/bin/python bench/bench_agent_tcp.py [--n N]``; prints one JSON object: per client
(stock OpenSSH ``ssh -T``; asyncssh; paramiko with TCP_NODELAY on its socket) and per agent
(``quickack``, ``no_quickack``), the median and p90 wall time in milliseconds of connect + exec +
exit status + close, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh
import paramiko

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from agent_fixtures import AgentThread, UnsafeAllowAllGate, write_private_key  # noqa: E402

from gatekeeper.agent.session import AgentSettings  # noqa: E402

USER = "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")


def _ssh_client(agent: AgentThread, identity: Path) -> Callable[[], None]:
    argv = [
        "ssh", "-T", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={agent.known_hosts}", "-o", "IdentitiesOnly=yes",
        "-o", f"IdentityFile={identity}", "-o", "KexAlgorithms=curve25519-sha256",
        "-p", str(agent.port), "-l", USER, "127.0.0.1", "true",
    ]
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}

    def run() -> None:
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, env=env)

    return run


def _asyncssh_client(agent: AgentThread, key: asyncssh.SSHKey) -> Callable[[], None]:
    async def once() -> None:
        async with await agent.connect(USER, [key]) as conn:
            result = await conn.run("true")
            assert result.exit_status == 0

    return lambda: asyncio.run(once())


def _paramiko_client(agent: AgentThread, identity: Path) -> Callable[[], None]:
    pkey = paramiko.Ed25519Key.from_private_key_file(str(identity))

    def run() -> None:
        sock = socket.create_connection(("127.0.0.1", agent.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=10)
            transport.auth_publickey(USER, pkey)
            chan = transport.open_session()
            chan.exec_command("true")
            assert chan.recv_exit_status() == 0
        finally:
            transport.close()

    return run


def _time(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=40, help="connections per client and agent")
    args = parser.parse_args()

    key = asyncssh.generate_private_key("ssh-ed25519")
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        identity = write_private_key(key, base / "id")
        dirs = {name: base / name for name in ("quickack", "no_quickack")}
        for d in dirs.values():
            d.mkdir()
        agents = {
            name: AgentThread(d, UnsafeAllowAllGate(), authorized=[key],
                              settings=AgentSettings(quickack=(name == "quickack")))
            for name, d in dirs.items()
        }
        for agent in agents.values():
            agent.__enter__()
        try:
            clients: dict[str, Callable[[AgentThread], Callable[[], None]]] = {
                "asyncssh": lambda a: _asyncssh_client(a, key),
                "paramiko_nodelay": lambda a: _paramiko_client(a, identity),
            }
            if shutil.which("ssh"):
                clients = {"openssh": lambda a: _ssh_client(a, identity), **clients}
            for client, make in clients.items():
                runners = {name: make(agent) for name, agent in agents.items()}
                samples: dict[str, list[float]] = {name: [] for name in agents}
                for run in runners.values():  # warm-up
                    run()
                for _ in range(args.n):
                    for name, run in runners.items():
                        samples[name].append(_time(run))
                summary = {name: _summary(s) for name, s in samples.items()}
                ratio = summary["no_quickack"]["median_ms"] / summary["quickack"]["median_ms"]
                summary["median_ratio_no_quickack_over_quickack"] = {"ratio": round(ratio, 2)}
                results[client] = summary
        finally:
            for agent in agents.values():
                agent.__exit__(None, None, None)
    print(json.dumps({
        "benchmark": "agent_tcp_tuning",
        "n": args.n,
        "python": platform.python_version(),
        "asyncssh": asyncssh.__version__,
        "results": results,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
