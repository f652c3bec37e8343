"""Benchmark: CPU per decision of the verification core on the fast path (target <= 1 ms).

Run: ``.venv/bin/python bench/bench_verify.py [--n N] [--size SIZE]``; prints one JSON object.

The fast path is a bundle whose checkpoint the host already holds: no log request at all. Each
decision is a fresh action (its own nonce) signed with a real Ed25519 SSH key (SSHSIG), included in
a log of ``SIZE`` entries under a checkpoint signed with a real note key, handed to
``VerifyingGate.decide`` with a real SQLite head store (WAL, synchronous=FULL: one fsync per
allowed command) and a real JSON-lines journal (one fsync per record).

Reported (microseconds, median and p99 over N decisions):

- ``check_static_cpu_us``: the pure checks alone (bundle parse, SSHSIG, checkpoint signature,
  inclusion proof, ...).
- ``check_static_cpu_us_known_checkpoint``: the same with a checkpoint cache that already holds the
  bundle's checkpoint, as the gate has on the fast path (no checkpoint signature to verify).
- ``decide_cpu_us``: the whole decision (halted flag, pure checks, nonce lookup, stored-head lookup,
  atomic commit of the spent nonce, journal record), CPU time of this process.
- ``decide_cpu_us_journal_in_memory``: the same with the journal kept in memory (verification and
  head store only: the journal's JSON encoding and fsync are the front end's cost).
- ``decide_cpu_us_on_tmpfs``: the whole decision with store and journal on /dev/shm, where fsync
  costs nothing: the CPU of the decision itself, without the disk (whose fsync CPU grows when other
  processes load the same virtual disk).
- ``decide_wall_us``: the whole decision, wall clock (includes waiting for two fsyncs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatekeeper import sshsig  # noqa: E402
from gatekeeper.action import NAMESPACE, encode_action, encode_entry, new_action  # noqa: E402
from gatekeeper.bundle import Bundle, encode_bundle  # noqa: E402
from gatekeeper.gate import ExecRequest  # noqa: E402
from gatekeeper.journal import Journal  # noqa: E402
from gatekeeper.verify.alarm import Alarm  # noqa: E402
from gatekeeper.verify.core import CheckpointCache, Verified, check_static  # noqa: E402
from gatekeeper.verify.gate import VerifyingGate  # noqa: E402
from gatekeeper.verify.headstore import HeadStore  # noqa: E402
from gatekeeper.verify.policy import HostPolicy  # noqa: E402
from personality.tlog.checkpoint import Checkpoint, sign_checkpoint  # noqa: E402
from personality.tlog.merkle import CompactRange, inclusion_proof, leaf_hash, node_hash  # noqa: E402
from personality.tlog.note import generate_signer  # noqa: E402

ORIGIN = "bench.example/log"
HOST = "web-01"


class NoLog:
    """The fast path must not talk to the log."""

    def checkpoint(self) -> bytes:
        raise AssertionError("fast path fetched a checkpoint")

    def consistency_proof(self, size1: int, size2: int) -> Sequence[bytes]:
        raise AssertionError("fast path fetched a consistency proof")


def build(n: int, size: int, tmp: Path) -> tuple[HostPolicy, bytes, list[ExecRequest]]:
    """``n`` requests whose entries are the last ``n`` leaves of a log of ``size`` entries."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = tmp / "id_ed25519"
    key.write_private_key(str(key_path))
    public = key.export_public_key("openssh").decode().strip()
    log = generate_signer(ORIGIN)
    now = int(time.time())
    entries = []
    for _ in range(n):
        a = new_action(
            targets=[HOST],
            account="deploy",
            command=b"systemctl restart nginx",
            signer=public,
            now=now - 5,
            window=600,
            reason="bench",
        )
        body = encode_action(a)
        entries.append(encode_entry(body, sshsig.sign_file(body, NAMESPACE, key_path)))
    # A tree of `size` leaves: filler leaves, then our entries; keep every level for proofs.
    fillers = size - n
    levels: list[list[bytes]] = [
        [leaf_hash(b"%d" % i) for i in range(fillers)] + [leaf_hash(e) for e in entries]
    ]
    while len(levels[-1]) > 1:
        prev = levels[-1]
        levels.append([node_hash(prev[i], prev[i + 1]) for i in range(0, len(prev) - 1, 2)])

    def get(level: int, index: int) -> bytes:
        return levels[level][index]

    cr = CompactRange.from_getter(size, get)
    checkpoint = sign_checkpoint(Checkpoint(ORIGIN, size, cr.root()), [log])
    requests = []
    for i, entry in enumerate(entries):
        index = fillers + i
        bundle = Bundle(entry, index, tuple(inclusion_proof(index, size, get)), checkpoint)
        requests.append(
            ExecRequest(
                account="deploy",
                command=b"systemctl restart nginx",
                auth_key=public,
                bundle=encode_bundle(bundle),
                peer="127.0.0.1:1",
            )
        )
    policy = HostPolicy(host_name=HOST, log_origin=ORIGIN, log_verifiers=(log.verifier(),))
    return policy, checkpoint, requests


class MemoryJournal:
    def __init__(self) -> None:
        self.records: list[Mapping[str, Any]] = []

    def append(self, record: Mapping[str, Any]) -> None:
        self.records.append(record)


def summary(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "median": round(statistics.median(values), 1),
        "p99": round(values[min(len(values) - 1, int(len(values) * 0.99))], 1),
        "min": round(values[0], 1),
    }


async def run_decisions(gate: VerifyingGate, requests: list[ExecRequest]) -> tuple[list[float], list[float]]:
    cpu, wall = [], []
    for r in requests:
        c0, w0 = time.process_time(), time.perf_counter()
        d = await gate.decide(r)
        c1, w1 = time.process_time(), time.perf_counter()
        if not d.allowed:
            raise SystemExit(f"bench: unexpected refusal: {d.message}")
        cpu.append((c1 - c0) * 1e6)
        wall.append((w1 - w0) * 1e6)
    return cpu, wall


def timed_gate(
    directory: Path, policy: HostPolicy, checkpoint: bytes, requests: list[ExecRequest], journal: bool
) -> tuple[list[float], list[float]]:
    """Decide every request with a store (and a journal file, or an in-memory one) in ``directory``,
    which already holds the requests' checkpoint: the fast path."""
    now = int(time.time())
    v = check_static(requests[0], policy, now)
    assert isinstance(v, Verified)
    store = HeadStore.open(directory / "state")
    store.commit(
        ORIGIN, (v.checkpoint.size, v.checkpoint.root, checkpoint), newest_seq=0, spend=None, now=now
    )
    sink: Journal | MemoryJournal = Journal(directory / "journal.jsonl") if journal else MemoryJournal()
    gate = VerifyingGate(policy, store, NoLog(), sink, Alarm(use_syslog=False), background_refresh=False)
    try:
        return asyncio.run(run_decisions(gate, requests))
    finally:
        store.close()
        if isinstance(sink, Journal):
            sink.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="decisions to time (default %(default)s)")
    parser.add_argument("--size", type=int, default=1 << 16, help="log size (default %(default)s)")
    args = parser.parse_args()
    warm = 20
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        policy, checkpoint, requests = build(args.n + warm, args.size, tmp)
        now = int(time.time())
        static, static_known = [], []
        known = CheckpointCache(policy)
        for r in requests:
            c0 = time.process_time()
            v = check_static(r, policy, now)
            c1 = time.process_time()
            k = check_static(r, policy, now, known)
            c2 = time.process_time()
            assert isinstance(v, Verified) and isinstance(k, Verified)
            static.append((c1 - c0) * 1e6)
            static_known.append((c2 - c1) * 1e6)
        (tmp / "mem").mkdir(mode=0o700)
        (tmp / "disk").mkdir(mode=0o700)
        cpu0, _ = timed_gate(tmp / "mem", policy, checkpoint, requests, journal=False)
        cpu, wall = timed_gate(tmp / "disk", policy, checkpoint, requests, journal=True)
        shm = Path("/dev/shm")
        tmpfs = None
        if shm.is_dir() and os.access(shm, os.W_OK):
            with tempfile.TemporaryDirectory(dir=shm) as m:
                tmpfs, _ = timed_gate(Path(m), policy, checkpoint, requests, journal=True)
    result = {
        "benchmark": "verify_fast_path",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "log_size": args.size,
        "decisions": args.n,
        "check_static_cpu_us": summary(static[warm:]),
        "check_static_cpu_us_known_checkpoint": summary(static_known[warm:]),
        "decide_cpu_us": summary(cpu[warm:]),
        "decide_cpu_us_journal_in_memory": summary(cpu0[warm:]),
        "decide_cpu_us_on_tmpfs": summary(tmpfs[warm:]) if tmpfs else None,
        "decide_wall_us": summary(wall[warm:]),
        "target_cpu_us": 1000,
        "meets_target": statistics.median(cpu[warm:]) <= 1000,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
