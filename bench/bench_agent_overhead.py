"""Benchmark: what the verification gate adds to ``true`` over SSH (target <= 3 ms median).

Run: ``.venv/bin/python bench/bench_agent_overhead.py [--n N]``; prints one JSON object.

Two agents run side by side in this process (each in its own event-loop thread), identical except
for the gate: ``gated`` uses the real ``VerifyingGate`` (SQLite head store with fsync, JSON-lines
journal with fsync, SSHSIG and checkpoint verification, inclusion proof), ``ungated`` uses
``UnsafeAllowAllGate`` (tests/agent_fixtures.py; never part of the package). Every run is a new
connection: connect, authenticate, send ``GK_BUNDLE``, exec ``true``, exit status, close. Each
gated run uses a fresh action (its own nonce) signed with the client's Ed25519 key, included in a
log of ``--size`` entries under a checkpoint the host already holds: the fast path, no log request
(the log client raises if called). Runs alternate between the two agents to cancel drift.

Clients: stock OpenSSH (``ssh -T``, bundle via ``SetEnv``) and asyncssh. Reported per client: the
median and p90 wall time (ms) for each agent, and the difference of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import asyncssh

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from agent_fixtures import AgentThread, UnsafeAllowAllGate, write_private_key  # noqa: E402

from gatekeeper import sshsig  # noqa: E402
from gatekeeper.action import NAMESPACE, encode_action, encode_entry, new_action  # noqa: E402
from gatekeeper.agent.session import AgentSettings  # noqa: E402
from gatekeeper.bundle import Bundle, encode_bundle  # noqa: E402
from gatekeeper.journal import Journal  # noqa: E402
from gatekeeper.verify.alarm import Alarm  # noqa: E402
from gatekeeper.verify.gate import VerifyingGate  # noqa: E402
from gatekeeper.verify.headstore import HeadStore  # noqa: E402
from gatekeeper.verify.policy import HostPolicy  # noqa: E402
from personality.tlog.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint  # noqa: E402
from personality.tlog.merkle import CompactRange, inclusion_proof, leaf_hash, node_hash  # noqa: E402
from personality.tlog.note import generate_signer  # noqa: E402

ORIGIN = "bench.example/log"
HOST = "bench-host"
ACCOUNT = pwd.getpwuid(os.geteuid()).pw_name
COMMAND = "true"


class NoLog:
    """The fast path must not talk to the log."""

    def checkpoint(self) -> bytes:
        raise AssertionError("fast path fetched a checkpoint")

    def consistency_proof(self, size1: int, size2: int) -> Sequence[bytes]:
        raise AssertionError("fast path fetched a consistency proof")


def build_bundles(n: int, size: int, key_path: Path, public: str) -> tuple[HostPolicy, bytes, list[str]]:
    """``n`` GK_BUNDLE values (fresh actions for ``true``) as the last leaves of a ``size`` log."""
    log = generate_signer(ORIGIN)
    now = int(time.time())
    entries = []
    for _ in range(n):
        action = new_action(targets=[HOST], account=ACCOUNT, command=COMMAND, signer=public,
                            now=now - 5, window=3600, reason="bench")
        body = encode_action(action)
        entries.append(encode_entry(body, sshsig.sign_file(body, NAMESPACE, key_path)))
    fillers = size - n
    levels = [[leaf_hash(b"%d" % i) for i in range(fillers)] + [leaf_hash(e) for e in entries]]
    while len(levels[-1]) > 1:
        prev = levels[-1]
        levels.append([node_hash(prev[i], prev[i + 1]) for i in range(0, len(prev) - 1, 2)])

    def get(level: int, index: int) -> bytes:
        return levels[level][index]

    checkpoint = sign_checkpoint(Checkpoint(ORIGIN, size, CompactRange.from_getter(size, get).root()), [log])
    bundles = [
        encode_bundle(Bundle(e, fillers + i, tuple(inclusion_proof(fillers + i, size, get)), checkpoint))
        for i, e in enumerate(entries)
    ]
    policy = HostPolicy(host_name=HOST, log_origin=ORIGIN, log_verifiers=(log.verifier(),))
    return policy, checkpoint, bundles


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": round(statistics.median(ordered), 2),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 2)}


def _openssh(agent: AgentThread, identity: Path) -> Callable[[str], None]:
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}

    def run(bundle: str) -> None:
        argv = ["ssh", "-T", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={agent.known_hosts}", "-o", "IdentitiesOnly=yes",
                "-o", f"IdentityFile={identity}", "-o", "KexAlgorithms=curve25519-sha256",
                "-o", f"SetEnv=GK_BUNDLE={bundle}", "-p", str(agent.port), "-l", ACCOUNT, "127.0.0.1",
                COMMAND]
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"bench: ssh exited {proc.returncode}: {proc.stderr.decode().strip()}")

    return run


def _asyncssh(agent: AgentThread, key: asyncssh.SSHKey) -> Callable[[str], None]:
    async def once(bundle: str) -> None:
        async with await agent.connect(ACCOUNT, [key]) as conn:
            result = await conn.run(COMMAND, env={"GK_BUNDLE": bundle})
            if result.exit_status != 0:
                raise SystemExit(f"bench: exit {result.exit_status}: {result.stderr!r}")

    return lambda bundle: asyncio.run(once(bundle))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60, help="connections per client and agent")
    parser.add_argument("--size", type=int, default=1 << 16, help="log size (default %(default)s)")
    args = parser.parse_args()
    clients = ["asyncssh"] + (["openssh"] if shutil.which("ssh") else [])
    runs = (args.n + 1) * 2 * len(clients)  # one bundle per run, both agents

    key = asyncssh.generate_private_key("ssh-ed25519")
    public = " ".join(key.export_public_key("openssh").decode().split()[:2])
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        identity = write_private_key(key, base / "id")
        policy, checkpoint, bundles = build_bundles(runs, args.size, identity, public)
        state = base / "state"
        store = HeadStore.open(state)
        cp = open_checkpoint(checkpoint, ORIGIN, policy.log_verifiers)
        store.commit(ORIGIN, (cp.checkpoint.size, cp.checkpoint.root, checkpoint), newest_seq=0,
                     spend=None, now=int(time.time()))
        journal = Journal(base / "gate-journal.jsonl")
        gate = VerifyingGate(policy, store, NoLog(), journal, Alarm(use_syslog=False),
                             background_refresh=False)
        gates = {"gated": gate, "ungated": UnsafeAllowAllGate()}
        agents = {}
        for name, g in gates.items():
            (base / name).mkdir()
            agents[name] = AgentThread(base / name, g, authorized=[key], settings=AgentSettings())
        for agent in agents.values():
            agent.__enter__()
        try:
            pending = iter(bundles)
            for client in clients:
                runners = {name: (_openssh(a, identity) if client == "openssh" else _asyncssh(a, key))
                           for name, a in agents.items()}
                for run in runners.values():  # warm-up
                    run(next(pending))
                samples: dict[str, list[float]] = {name: [] for name in runners}
                for _ in range(args.n):
                    for name, run in runners.items():
                        bundle = next(pending)
                        start = time.perf_counter()
                        run(bundle)
                        samples[name].append((time.perf_counter() - start) * 1000)
                summary: dict[str, object] = {name: _summary(s) for name, s in samples.items()}
                diff = statistics.median(samples["gated"]) - statistics.median(samples["ungated"])
                summary["overhead_median_ms"] = round(diff, 2)
                results[client] = summary
        finally:
            for agent in agents.values():
                agent.__exit__(None, None, None)
            store.close()
            journal.close()
    print(json.dumps({
        "benchmark": "agent_gate_overhead",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "log_size": args.size,
        "n": args.n,
        "results": results,
        "target_overhead_ms": 3.0,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
