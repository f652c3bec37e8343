"""Benchmark: the pure Merkle code (``personality.tlog.merkle``) at 1 M and 10 M leaves.

Run: ``.venv/bin/python bench/bench_merkle.py [--quick] [--sizes 1000000,10000000]``; prints one
JSON object. ``--quick`` measures 1 M only.

For each size N:

- ``leaf_hash_per_s``: ``merkle.leaf_hash`` of 200-byte entries;
- ``append_per_s``: ``CompactRange.append`` one leaf hash at a time, keeping every completed
  subtree hash (what a log stores), from 0 to N; ``extend_per_s``: the same with
  ``CompactRange.extend`` on chunks of 4096 (the log's batch size);
- ``root_us``: ``CompactRange.root()`` at N;
- ``inclusion_proof_us`` / ``consistency_proof_us``: generation from the stored hashes (a
  ``HashGetter`` over in-memory lists: no storage cost, the pure algorithm), random leaf index /
  random old size, p50/p90/p99/max;
- ``verify_inclusion_us`` / ``verify_consistency_us``: ``merkle.verify_*`` of those proofs.

Memory: every complete subtree hash of N leaves is kept (2N hashes; ~1.6 GB of Python objects at
10 M). ``peak_rss_mib`` is the process high-water mark after that size.
"""

from __future__ import annotations

import gc
import hashlib
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import emit, latencies, log, machine_info, peak_rss_kib, summarize, target  # noqa: E402

from personality.tlog import merkle  # noqa: E402
from personality.tlog.merkle import CompactRange  # noqa: E402

CHUNK = 4096


def leaf_hashes(n: int) -> list[bytes]:
    """N distinct leaf hashes (of 8-byte counters: cheap to make, same cost to integrate)."""
    sha = hashlib.sha256
    return [sha(b"\x00" + i.to_bytes(8, "big")).digest() for i in range(n)]


def build(hashes: list[bytes], *, per_leaf: bool) -> tuple[list[list[bytes]], CompactRange, float]:
    """Append every hash, storing completed subtrees per level; return (levels, range, seconds)."""
    levels: list[list[bytes]] = [[] for _ in range(64)]
    cr = CompactRange()
    t0 = time.perf_counter()
    if per_leaf:
        append = cr.append
        for h in hashes:
            for level, _index, node in append(h):
                levels[level].append(node)
    else:
        for start in range(0, len(hashes), CHUNK):
            for level, _index, node in cr.extend(hashes[start : start + CHUNK]):
                levels[level].append(node)
    return levels, cr, time.perf_counter() - t0


def measure_size(n: int, samples: int) -> dict[str, object]:
    rng = random.Random(n)
    log(f"N={n:,}: leaf hashes")
    hashes = leaf_hashes(n)
    out: dict[str, object] = {"size": n}

    entries = [os.urandom(200) for _ in range(20_000)]
    t0 = time.perf_counter()
    for _ in range(5):
        for e in entries:
            merkle.leaf_hash(e)
    out["leaf_hash_per_s"] = round(5 * len(entries) / (time.perf_counter() - t0))

    log(f"N={n:,}: append one at a time")
    seconds = build(hashes, per_leaf=True)[2]
    out["append_per_s"] = round(n / seconds)
    gc.collect()
    log(f"N={n:,}: extend in chunks of {CHUNK}")
    levels, cr, seconds = build(hashes, per_leaf=False)
    out["extend_per_s"] = round(n / seconds)
    out["extend_chunk"] = CHUNK

    def get(level: int, index: int) -> bytes:
        return levels[level][index]

    out["root_us"] = summarize(latencies(lambda _i: cr.root(), 200))
    root = cr.root()
    assert root == merkle.CompactRange.from_getter(n, get).root()

    log(f"N={n:,}: proofs")
    idx = [rng.randrange(n) for _ in range(samples + 20)]
    proofs: list[list[bytes]] = []
    out["inclusion_proof_us"] = summarize(
        latencies(lambda i: proofs.append(merkle.inclusion_proof(idx[i], n, get)), samples, warmup=0)
    )
    out["inclusion_proof_hashes"] = round(sum(len(p) for p in proofs) / len(proofs), 1)
    out["verify_inclusion_us"] = summarize(
        latencies(lambda i: merkle.verify_inclusion(idx[i], n, hashes[idx[i]], proofs[i], root), samples, 0)
    )
    olds = [rng.randrange(1, n) for _ in range(samples)]
    # Roots of the old sizes, computed once (not timed) from the stored hashes.
    old_roots = [CompactRange.from_getter(m, get).root() for m in olds]
    cproofs: list[list[bytes]] = []
    out["consistency_proof_us"] = summarize(
        latencies(lambda i: cproofs.append(merkle.consistency_proof(olds[i], n, get)), samples, warmup=0)
    )
    out["consistency_proof_hashes"] = round(sum(len(p) for p in cproofs) / len(cproofs), 1)
    out["verify_consistency_us"] = summarize(
        latencies(lambda i: merkle.verify_consistency(olds[i], n, old_roots[i], root, cproofs[i]), samples, 0)
    )
    rss = peak_rss_kib()
    out["peak_rss_mib"] = rss // 1024 if rss else None
    return out  # the hashes are freed with this frame


def main() -> int:
    p = common.arg_parser(__doc__.split("\n\n")[0])
    p.add_argument("--sizes", help="comma-separated tree sizes (default 1000000,10000000; quick: 1000000)")
    p.add_argument("--samples", type=int, default=2000, help="proofs timed per size")
    args = p.parse_args()
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    else:
        sizes = [1_000_000] if args.quick else [1_000_000, 10_000_000]
    samples = min(args.samples, 500) if args.quick else args.samples
    started = time.perf_counter()
    per_size = []
    for n in sizes:
        per_size.append(measure_size(n, samples))
        gc.collect()
    at_1m = next((r for r in per_size if r["size"] == 1_000_000), None)

    def p50(key: str) -> float | None:
        return at_1m[key]["p50"] if at_1m else None  # type: ignore[index]

    emit(
        {
            "benchmark": "merkle",
            "quick": args.quick,
            "machine": machine_info(),
            "results": {"sizes": per_size, "seconds": round(time.perf_counter() - started, 1)},
            "targets": [
                target("pure inclusion proof generation p50 at 1 M (issue 2: proofs p50 <= 1 ms)",
                       p50("inclusion_proof_us"), "<=", 1000, "µs", "issue 2"),
                target("pure consistency proof generation p50 at 1 M (issue 2: proofs p50 <= 1 ms)",
                       p50("consistency_proof_us"), "<=", 1000, "µs", "issue 2"),
            ],
            "notes": [
                "hashes held in Python lists: this is the algorithm's cost, without storage; the "
                "log's proofs (tiles from SQLite) are in bench_vs_pymerkle and bench_log*",
                "proof latencies are per call, wall clock, random indexes / old sizes",
            ],
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
