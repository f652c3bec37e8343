"""Inclusion and consistency proof latency of the log at 1 M entries (SQLite store).

Builds a log of N entries (default 1,000,000; ``--quick`` 200,000) with the sequencer, then opens it
again the way ``gk log serve`` does after a restart (cold tile cache) and times, per call:

* ``inclusion``: random index, at the current size (what ``POST /add`` and
  ``GET /proof/inclusion?index=`` compute);
* ``inclusion_by_leaf_hash``: dedupe-index lookup in SQLite plus the proof;
* ``consistency``: random ``m < n`` with ``n`` the current size.

First ``cold`` samples (the first proofs after a restart read their tiles from SQLite), then
``warm`` samples once the tile cache holds the tree (a 1 M tree has ~3,900 full tiles; the
default cache keeps 4,096, about 16 KiB each).

Run: ``.venv/bin/python bench/bench_log_proofs.py [--quick] [--sizes 1000000,10000000]``
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import common

from personality.log import Sequencer
from personality.storage.sqlite import open_sqlite
from personality.tlog.merkle import leaf_hash
from personality.tlog.note import Signer, generate_signer

BATCH = 16384


def build(db: Path, size: int, signer: Signer) -> float:
    seq, tiles = open_sqlite(db)
    s = Sequencer(seq, tiles, signer)
    s.load()
    rnd = random.Random(5)
    t0 = time.perf_counter()
    done = 0
    while done < size:
        n = min(BATCH, size - done)
        entries = [b"%d:" % (done + i) + rnd.randbytes(60) for i in range(n)]
        s.integrate(entries, [leaf_hash(e) for e in entries])
        done += n
        if done % 200_000 < BATCH:
            common.log(f"  built {done}")
    seq.close()
    return time.perf_counter() - t0


def measure(db: Path, size: int, signer: Signer, samples: int) -> dict[str, Any]:
    seq, tiles = open_sqlite(db)
    s = Sequencer(seq, tiles, signer, tile_cache=min(size // 256 + 64, 16384))
    t0 = time.perf_counter()
    state = s.load()
    load_s = time.perf_counter() - t0
    assert state.size == size
    rnd = random.Random(9)
    idx = [rnd.randrange(size) for _ in range(samples)]
    cold = common.summarize(common.latencies(lambda i: s.inclusion_proof(idx[i], size), samples, warmup=0))
    for i in range(0, size, 256):  # warm the cache: every full tile once
        s.inclusion_proof(i, size)
    warm = common.summarize(common.latencies(lambda i: s.inclusion_proof(idx[i], size), samples))
    ms = [rnd.randrange(1, size) for _ in range(samples)]
    cons = common.summarize(common.latencies(lambda i: s.consistency_proof(ms[i], size), samples))
    hashes = [state.getter(s.cache)(0, i) for i in idx]

    def by_hash(i: int) -> None:
        found = seq.lookup([hashes[i]])[hashes[i]]
        s.inclusion_proof(found, size)

    byh = common.summarize(common.latencies(by_hash, samples))
    seq.close()
    return {
        "size": size,
        "load_after_restart_ms": round(load_s * 1000, 1),
        "inclusion": {
            "p50_ms": round(warm["p50"] / 1000, 4),
            "p99_ms": round(warm["p99"] / 1000, 4),
            "us": warm,
        },
        "inclusion_cold": {"p50_ms": round(cold["p50"] / 1000, 4), "us": cold},
        "inclusion_p50_ms": round(warm["p50"] / 1000, 4),
        "consistency": {
            "p50_ms": round(cons["p50"] / 1000, 4),
            "p99_ms": round(cons["p99"] / 1000, 4),
            "us": cons,
        },
        "consistency_p50_ms": round(cons["p50"] / 1000, 4),
        "inclusion_by_leaf_hash": {"p50_ms": round(byh["p50"] / 1000, 4), "us": byh},
    }


def main() -> None:
    p = common.arg_parser(__doc__ or "")
    p.add_argument("--sizes", help="comma-separated log sizes (default 1000000; --quick 200000)")
    p.add_argument("--samples", type=int, default=5000)
    args = p.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else [200_000 if args.quick else 1_000_000]
    signer = generate_signer("bench.example/proofs")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
        for size in sizes:
            db = Path(d) / f"proofs-{size}.db"
            common.log(f"building a log of {size} entries")
            build_s = build(db, size, signer)
            common.log(f"measuring proofs at {size}")
            r = measure(db, size, signer, args.samples)
            r["build_s"] = round(build_s, 1)
            r["database_mib"] = round(
                sum(f.stat().st_size for f in Path(d).glob(f"proofs-{size}.db*")) / 2**20, 1
            )
            out[str(size)] = r
            db.unlink()
    headline = out[str(max(sizes))]
    common.emit(
        {
            "benchmark": "log_proofs",
            "quick": args.quick,
            "machine": common.machine_info(),
            "results": {"proofs": {**headline, "by_size": out}},
            "proofs": out,
            "targets": [
                common.target(
                    f"inclusion proof p50 at {headline['size']}",
                    headline["inclusion"]["p50_ms"],
                    "<=",
                    1.0,
                    "ms",
                    "results.proofs.inclusion.p50_ms",
                ),
                common.target(
                    f"consistency proof p50 at {headline['size']}",
                    headline["consistency"]["p50_ms"],
                    "<=",
                    1.0,
                    "ms",
                    "results.proofs.consistency.p50_ms",
                ),
            ],
            "notes": [
                "Sequencer.inclusion_proof / consistency_proof on a log reopened from SQLite",
                "warm = after every full tile was read once; cold = first proofs after the restart",
            ],
        }
    )


if __name__ == "__main__":
    main()
