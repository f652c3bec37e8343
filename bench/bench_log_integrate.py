"""In-process integration throughput of the log, durable (SQLite, WAL, synchronous=FULL).

Measures ``Sequencer.integrate`` on batches of 4096 fresh 200-byte entries: dedupe lookup, leaf
and node hashing, tiles, one signed checkpoint and one durable commit per batch -- everything an
add costs except HTTP. Also the same through the asyncio ``Log.add`` (queue, futures, batching by
the integrator task), and the proof latency at the size reached (see bench_log_proofs.py for the
1 M-entry figures).

Run: ``.venv/bin/python bench/bench_log_integrate.py [--quick] [--entries N]``
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
from pathlib import Path

import common

from personality.log import Log, Sequencer
from personality.storage.sqlite import open_sqlite
from personality.tlog.merkle import leaf_hash
from personality.tlog.note import generate_signer

BATCH = 4096


def integrate(entries: int, directory: Path) -> dict[str, object]:
    seq, tiles = open_sqlite(directory / "integrate.db")
    s = Sequencer(seq, tiles, generate_signer("bench.example/log"))
    s.load()
    rnd = random.Random(1)
    batches = [[rnd.randbytes(200) for _ in range(BATCH)] for _ in range(entries // BATCH)]
    hashes = [[leaf_hash(e) for e in b] for b in batches]
    per_window: list[float] = []
    window = max(1, len(batches) // 5)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    t = time.perf_counter()
    for i, (b, h) in enumerate(zip(batches, hashes, strict=True)):
        s.integrate(b, h)
        if (i + 1) % window == 0:
            now = time.perf_counter()
            per_window.append(window * BATCH / (now - t))
            t = now
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    n = len(batches) * BATCH
    seq.close()
    db = directory / "integrate.db"
    return {
        "entries": n,
        "batch": BATCH,
        "seconds": round(wall, 2),
        "entries_per_s": round(n / wall),
        "cpu_entries_per_s": round(n / cpu),
        "entries_per_s_by_fifth": [round(x) for x in per_window],
        "database_mib": round(sum(p.stat().st_size for p in directory.glob("integrate.db*")) / 2**20, 1),
        "note": f"leaf hashes precomputed; {db.name}: tiles, bundles and dedupe index in one file",
    }


def via_log(entries: int, directory: Path) -> dict[str, object]:
    async def main() -> dict[str, object]:
        seq, tiles = open_sqlite(directory / "log.db")
        log = Log(seq, tiles, generate_signer("bench.example/log"), max_pending=1 << 20, max_batch=BATCH)
        await log.start()
        rnd = random.Random(2)
        data = [rnd.randbytes(200) for _ in range(entries)]
        t0 = time.perf_counter()
        chunk = 16384
        for i in range(0, entries, chunk):
            await asyncio.gather(*(log.add(e, wait=False) for e in data[i : i + chunk]))
        wall = time.perf_counter() - t0
        await log.close()
        return {"entries": entries, "entries_per_s": round(entries / wall), "seconds": round(wall, 2)}

    return asyncio.run(main())


def main() -> None:
    p = common.arg_parser(__doc__ or "")
    p.add_argument("--entries", type=int, help="entries to integrate (default 1 M, --quick 200 k)")
    args = p.parse_args()
    n = args.entries or (200_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
        common.log(f"integrating {n} entries in batches of {BATCH}")
        res = integrate(n, Path(d))
        common.log(f"asyncio Log.add, {n // 4} entries")
        res_log = via_log(n // 4, Path(d))
    common.emit(
        {
            "benchmark": "log_integrate",
            "quick": args.quick,
            "machine": common.machine_info(),
            "results": {"integrate": res, "log_add_in_process": res_log},
            "targets": [
                common.target(
                    "entries integrated per second, durable SQLite",
                    res["entries_per_s"],
                    ">=",
                    100_000,
                    "entries/s",
                    "results.integrate.entries_per_s",
                )
            ],
            "notes": [
                "wall clock over the whole run, from an empty log; cpu_entries_per_s uses process CPU time",
                "each batch: dedupe lookup, CompactRange, tiles, Ed25519 checkpoint, one fsync'd commit",
                "the machine is shared: compare loadavg in machine",
            ],
        }
    )


if __name__ == "__main__":
    main()
