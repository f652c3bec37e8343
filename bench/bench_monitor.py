"""Benchmark: monitor rates (issue 6) — tree rebuild from entry bundles, and the full check with
every action's SSHSIG verified on both cores.

Run: ``.venv/bin/python bench/bench_monitor.py [--quick]``; prints one JSON object.

- ``rebuild_entries_per_s``: ``scan_entries`` over a static tlog-tiles log of 200-byte opaque
  entries (read bundles, leaf hashes, tree rebuilt to the signed root, compared); median of 3.
- ``monitor_opaque_entries_per_s``: the same through a whole ``LogMonitor.poll`` (checkpoint
  verified, head store, progress saved), one round from empty state.
- ``verify_entries_per_s``: ``LogMonitor.poll`` over a static log of distinct, validly signed
  actions, every SSHSIG verified, on every core (``workers`` = cores); also
  ``verify_1worker_entries_per_s`` (one checking process) and ``verify_rules_entries_per_s`` (every
  core, with examples/monitor-rules.toml; on this synthetic log about half the actions fire a
  rule, far more alerts than a real log would produce).
- ``check_us_per_entry`` / ``check_cpu_us_per_entry[_no_rules]``: one process checking entries
  (parse, SSHSIG verify, rules), wall clock and CPU time per entry; ``verify_cpu_bound_entries_per_s``
  = cores / CPU time per entry: the ceiling on an otherwise idle machine.
- ``rebuild_entries_per_cpu_s``: the rebuild per second of CPU time (independent of other load).
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

from common import REPO, arg_parser, emit, log, machine_info, target  # noqa: E402

from gatekeeper.monitor.alerts import ListSink  # noqa: E402
from gatekeeper.monitor.check import CheckPool, EntryChecker  # noqa: E402
from gatekeeper.monitor.monitor import LogMonitor, LogTarget  # noqa: E402
from gatekeeper.monitor.rules import load_rules  # noqa: E402
from gatekeeper.monitor.scan import DirectorySource, scan_entries  # noqa: E402
from gatekeeper.monitor.testing import synthetic_entries, write_static_log  # noqa: E402
from personality.tlog import merkle  # noqa: E402
from personality.tlog.note import generate_signer  # noqa: E402


def main() -> None:
    args = arg_parser(__doc__ or "").parse_args()
    n_rebuild = 200_000 if args.quick else 1_000_000
    n_verify = 20_000 if args.quick else 100_000
    cores = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="gk-bench-monitor-"))
    key = generate_signer("bench.example/log")
    results: dict[str, object] = {"cores": cores, "rebuild_entries": n_rebuild, "verify_entries": n_verify}
    try:
        log(f"writing a static log of {n_rebuild:,} opaque entries")
        opaque = [os.urandom(200) for _ in range(n_rebuild)]
        write_static_log(tmp / "opaque", opaque, key)
        src = DirectorySource(tmp / "opaque")
        runs, cpu_runs = [], []
        with CheckPool(EntryChecker(opaque=True), workers=1) as pool:
            for _ in range(3):
                t, c = time.perf_counter(), time.process_time()
                edge = scan_entries(src, merkle.CompactRange(), n_rebuild, pool, lambda b: None)
                runs.append(n_rebuild / (time.perf_counter() - t))
                cpu_runs.append(n_rebuild / (time.process_time() - c))
        assert edge.size == n_rebuild
        results["rebuild_entries_per_s"] = round(statistics.median(runs))
        results["rebuild_runs_per_s"] = [round(r) for r in runs]
        # per second of this process's CPU time: what a machine with a free core gives (load-independent)
        results["rebuild_entries_per_cpu_s"] = round(statistics.median(cpu_runs))
        log(f"rebuild: {results['rebuild_entries_per_s']:,}/s")

        target_ = LogTarget("bench", src, key.name, [key.verifier()])
        with LogMonitor(target_, tmp / "state-opaque", ListSink(), opaque=True, progress=False) as mon:
            t = time.perf_counter()
            r = mon.poll()
            results["monitor_opaque_entries_per_s"] = round(n_rebuild / (time.perf_counter() - t))
        assert r.status == "ok" and r.processed == n_rebuild, r
        del opaque

        log(f"signing {n_verify:,} actions")
        t = time.perf_counter()
        entries, _ = synthetic_entries(n_verify, seed=5)
        results["generate_signed_entries_per_s"] = round(n_verify / (time.perf_counter() - t))
        write_static_log(tmp / "actions", entries, key)
        rules = load_rules(REPO / "examples" / "monitor-rules.toml")
        checker = EntryChecker(rules)
        sample = entries[:3000]
        checker.check_batch(0, sample[:10])
        t, c = time.perf_counter(), time.process_time()
        checker.check_batch(0, sample)
        results["check_us_per_entry"] = round((time.perf_counter() - t) / len(sample) * 1e6, 1)
        cpu_us = (time.process_time() - c) / len(sample) * 1e6
        results["check_cpu_us_per_entry"] = round(cpu_us, 1)
        plain = EntryChecker()
        plain.check_batch(0, sample[:10])
        c = time.process_time()
        plain.check_batch(0, sample)
        plain_cpu_us = (time.process_time() - c) / len(sample) * 1e6
        results["check_cpu_us_per_entry_no_rules"] = round(plain_cpu_us, 1)
        # the ceiling with every core checking and nothing else running (estimate from CPU time)
        results["verify_cpu_bound_entries_per_s"] = round(cores * 1e6 / plain_cpu_us)
        for workers, key_name, with_rules in (
            (cores, "verify_entries_per_s", False),
            (1, "verify_1worker_entries_per_s", False),
            (cores, "verify_rules_entries_per_s", True),
        ):
            sink = ListSink()
            tgt = LogTarget("bench", DirectorySource(tmp / "actions"), key.name, [key.verifier()])
            use = rules if with_rules else None
            state = tmp / f"state-{key_name}"
            with LogMonitor(tgt, state, sink, rules=use, workers=workers, progress=False) as mon:
                t = time.perf_counter()
                r = mon.poll()
                results[key_name] = round(n_verify / (time.perf_counter() - t))
            assert r.status == "ok" and r.processed == n_verify, r
            if with_rules:
                results["rule_alerts"] = len(sink.alerts)
            log(f"verify with {workers} worker(s): {results[key_name]:,}/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    emit(
        {
            "benchmark": "monitor",
            "quick": args.quick,
            "machine": machine_info(),
            "results": results,
            "targets": [
                target(
                    "tree rebuild from entry bundles (issue 6)",
                    results["rebuild_entries_per_s"],
                    ">=",
                    500_000,
                    "entries/s",
                    "issue 6",
                ),
                target(
                    "monitor with every action's signature verified, both cores (issue 6)",
                    results["verify_entries_per_s"],
                    ">=",
                    20_000,
                    "entries/s",
                    "issue 6",
                ),
            ],
            "notes": [
                "static tlog-tiles logs in a temporary directory (page cache warm after writing)",
                "rebuild: opaque 200-byte entries; median of 3 full scans from an empty edge",
                "verify: distinct Ed25519-signed actions, examples/monitor-rules.toml, one poll from "
                "empty state (forkserver start-up of the checking processes included)",
                "wall clock; the load average at the start is in machine.loadavg",
            ],
        }
    )


if __name__ == "__main__":
    main()
