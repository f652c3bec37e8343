"""Benchmark: the audit index (issue 6) — search latency at 1 M actions, index size, proofs.

Run: ``.venv/bin/python bench/bench_audit.py [--quick]``; prints one JSON object.

Builds an index of N distinct, validly signed actions (1 M; 100 k with ``--quick``) straight from
freshly signed entries (``build_index_directly``: rows, tree nodes, a signed checkpoint), then:

- ``search.<query>``: latency of typical ``gk audit search`` queries (first page of 50 rows, index
  order, as the CLI runs them) and of counting every match, p50/p90/max over repeats, warm cache;
- ``search_p50_max_ms``: the slowest query's p50 (the headline: "well under a second");
- ``prove_ms`` / ``verify_bundle_ms``: ``gk audit prove`` (inclusion + consistency from the index)
  and the offline verification of the bundle, p50;
- ``build_entries_per_s``, ``index_bytes``, ``bytes_per_action``;
- ``sync_entries_per_s``: a sync through the full pipeline (checkpoint, rebuild, every signature
  checked on every core) of 50 k (quick: 10 k) actions from a static mirror.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import arg_parser, emit, log, machine_info, target  # noqa: E402

from gatekeeper.audit.index import AuditIndex, Query  # noqa: E402
from gatekeeper.audit.proofs import build_bundle, encode, verify_bundle  # noqa: E402
from gatekeeper.audit.sync import sync  # noqa: E402
from gatekeeper.monitor.alerts import ListSink  # noqa: E402
from gatekeeper.monitor.scan import DirectorySource  # noqa: E402
from gatekeeper.monitor.testing import (  # noqa: E402
    build_index_directly,
    synthetic_chunks,
    synthetic_entries,
    write_static_log,
)
from personality.tlog.checkpoint import Checkpoint, sign_checkpoint  # noqa: E402
from personality.tlog.note import generate_signer  # noqa: E402

T0 = 1_780_000_000


def timed(fn: object, repeats: int) -> dict[str, float]:
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p90_ms": round(samples[int(0.9 * (len(samples) - 1))], 2),
        "max_ms": round(samples[-1], 2),
    }


def main() -> None:
    args = arg_parser(__doc__ or "").parse_args()
    n = 100_000 if args.quick else 1_000_000
    n_sync = 10_000 if args.quick else 50_000
    tmp = Path(tempfile.mkdtemp(prefix="gk-bench-audit-"))
    key = generate_signer("bench.example/audit")
    results: dict[str, object] = {"actions": n}
    try:
        log(f"signing {n:,} actions and indexing them")
        t = time.perf_counter()
        idx, entries = build_index_directly(tmp / "audit.db", key, synthetic_chunks(n, seed=3))
        results["build_entries_per_s"] = round(n / (time.perf_counter() - t))
        idx.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = sum(p.stat().st_size for p in tmp.glob("audit.db*"))
        results["index_bytes"] = size
        results["bytes_per_action"] = round(size / n)
        signer = idx.get(3).signer or ""
        mid = T0 + 30 * (n // 2)
        queries = {
            "host": Query(hosts=["db-03"]),
            "host_glob_account": Query(hosts=["web-1*"], accounts=["root"]),
            "signer": Query(signers=[signer]),
            "time_range_1h": Query(since=mid, until=mid + 3600),
            "time_range_account_1d": Query(accounts=["postgres"], since=mid, until=mid + 86_400),
            "command_regex_literal": Query(
                command=r"curl -fsS https://deploy\.example\.com/release/\d+ \| sh"
            ),
            "command_regex_rare": Query(command=r"release/4242\b"),
            "command_regex_ignorecase_rare": Query(command=r"(?i)USERADD\s+temp9{3}"),
            "host_and_regex": Query(hosts=["bastion"], command=r"^systemctl (restart|stop)"),
            "reason_regex": Query(reason=r"INC-1234\d$"),
            "index_range": Query(first=n // 3, last=n // 3 + 999),
            "newest_first_host": Query(hosts=["ci-runner"], newest_first=True),
        }
        search: dict[str, object] = {}
        for name, q in queries.items():
            page = Query(**{**q.__dict__, "limit": 50})
            list(idx.search(page))  # warm
            search[name] = {
                "first_page": timed(lambda page=page: list(idx.search(page)), 7),
                "count": timed(lambda q=q: idx.count(q), 3),
                "matches": idx.count(q),
            }
            log(f"search {name}: {search[name]}")
        results["search"] = search
        worst_page = max(v["first_page"]["p50_ms"] for v in search.values())  # type: ignore[index]
        worst_count = max(v["count"]["p50_ms"] for v in search.values())  # type: ignore[index]
        results["search_p50_max_ms"] = worst_page
        results["count_p50_max_ms"] = worst_count

        cp_old = sign_checkpoint(Checkpoint(key.name, n // 2, _root(idx, n // 2)), [key])
        results["prove_ms"] = timed(lambda: build_bundle(idx, n - 7, [key.verifier()], cp_old), 20)
        bundle = encode(build_bundle(idx, n - 7, [key.verifier()], cp_old))
        results["bundle_bytes"] = len(bundle)
        results["verify_bundle_ms"] = timed(
            lambda: verify_bundle(bundle, [key.verifier()], trusted=cp_old), 50
        )
        idx.close()
        del entries

        log(f"sync of {n_sync:,} actions through the full pipeline")
        sync_entries, _ = synthetic_entries(n_sync, seed=4)
        write_static_log(tmp / "log", sync_entries, key)
        with AuditIndex.open(tmp / "sync.db", key.name) as sidx:
            t = time.perf_counter()
            res = sync(sidx, DirectorySource(tmp / "log"), [key.verifier()], ListSink(), progress=False)
            results["sync_entries_per_s"] = round(n_sync / (time.perf_counter() - t))
        assert res.status == "ok" and res.processed == n_sync, res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    emit(
        {
            "benchmark": "audit",
            "quick": args.quick,
            "machine": machine_info(),
            "results": results,
            "targets": [
                target(
                    f"search latency at {n:,} actions, slowest typical query, first page p50 (issue 6: well "
                    "under a second)",
                    results["search_p50_max_ms"],
                    "<=",
                    250,
                    "ms",
                    "issue 6",
                ),
                target(
                    f"count of all matches at {n:,} actions, slowest typical query, p50",
                    results["count_p50_max_ms"],
                    "<=",
                    1000,
                    "ms",
                    "issue 6",
                ),
            ],
            "notes": [
                "distinct Ed25519-signed actions over 28 hosts, 5 accounts, 5 signers, one every ~30 s",
                "warm page cache; latencies per call, wall clock, including building Row objects",
                "regexes with a literal part are pre-filtered by SQLite instr(); others run Python re "
                "on every row that passes the other filters",
                f"cpu count {os.cpu_count()}",
            ],
        }
    )


def _root(idx: AuditIndex, size: int) -> bytes:
    from personality.tlog import merkle

    return merkle.subtree_hash(idx.hash_getter(size), 0, size)


if __name__ == "__main__":
    main()
