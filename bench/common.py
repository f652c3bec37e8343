"""Shared helpers for the benchmark scripts in ``bench/`` (imported as ``common`` from a script).

Every ``bench/bench_*.py`` script prints exactly one JSON object on stdout and nothing else there
(progress goes to stderr). Scripts written with these helpers use this shape::

    {"benchmark": "<name>", "quick": bool, "machine": {...}, "results": {...},
     "targets": [{"name": ..., "value": ..., "target": ..., "op": ">=", "unit": ..., "met": bool}],
     "notes": ["how it was measured", ...]}

``bench/run_all.py`` also accepts scripts that print any other JSON object.

Measuring rules used throughout (see docs/benchmarks.md):

- throughput (``*_per_s``): the operation in a tight loop for a fixed number of calls, timed with
  ``time.perf_counter``; repeated and the *median* repeat reported (not the best, so a figure is
  what one should expect, not a lucky run);
- latency (``*_us``): every call timed on its own, p50 / p90 / p99 / max over all samples after a
  warm-up;
- wall clock everywhere; CPU time only where a script says so.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sqlite3
import ssl
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

__all__ = [
    "REPO",
    "arg_parser",
    "machine_info",
    "rate",
    "latencies",
    "summarize",
    "target",
    "emit",
    "rss_kib",
    "peak_rss_kib",
    "log",
    "Stopwatch",
]


def arg_parser(description: str) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the common ``--quick`` flag (a fast mode for ``make bench``)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="smaller sizes and shorter runs")
    return p


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_kib() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001 - a missing distribution is just "unknown"
        return None


def _loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, Python, SQLite, OpenSSL and library versions, date (UTC)."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "mem_total_mib": (m // 1024) if (m := _mem_total_kib()) else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "openssl": ssl.OPENSSL_VERSION,
        "cryptography": _version("cryptography"),
        "aiohttp": _version("aiohttp"),
        "asyncssh": _version("asyncssh"),
        "pymerkle": _version("pymerkle"),
        "loadavg": _loadavg(),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def rate(fn: Callable[[], object], calls: int, repeats: int = 5) -> float:
    """Calls per second of ``fn``: ``calls`` calls per repeat, median over ``repeats`` repeats."""
    fn()  # warm up (imports, caches)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        rates.append(calls / (time.perf_counter() - t0))
    return statistics.median(rates)


def latencies(fn: Callable[[int], object], samples: int, warmup: int = 20) -> list[float]:
    """Per-call wall-clock latencies of ``fn(i)`` in microseconds (after ``warmup`` calls)."""
    for i in range(warmup):
        fn(i)
    out = []
    clock = time.perf_counter
    for i in range(samples):
        t0 = clock()
        fn(i)
        out.append((clock() - t0) * 1e6)
    return out


def summarize(values_us: Sequence[float]) -> dict[str, float]:
    """p50 / p90 / p99 / max / mean (and n) of a list of microsecond latencies, rounded."""
    v = sorted(values_us)
    if not v:
        return {"n": 0}

    def pct(p: float) -> float:
        return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]

    digits = 2 if v[len(v) // 2] < 100 else 1
    return {
        "n": len(v),
        "p50": round(pct(50), digits),
        "p90": round(pct(90), digits),
        "p99": round(pct(99), digits),
        "max": round(v[-1], digits),
        "mean": round(statistics.fmean(v), digits),
    }


def target(
    name: str, value: float | None, op: str, threshold: float, unit: str, source: str = ""
) -> dict[str, Any]:
    """One target line for the report. ``op`` is ``">="`` or ``"<="``; ``value=None`` = not measured."""
    if op not in (">=", "<="):
        raise ValueError(op)
    met = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
    return {"name": name, "value": value, "op": op, "target": threshold, "unit": unit, "met": met,
            "source": source}


def emit(obj: dict[str, Any]) -> None:
    """Print the one JSON object of a benchmark script on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def rss_kib(pid: int | None = None) -> int | None:
    """Resident set size of ``pid`` (default: this process) in KiB, from /proc; ``None`` if gone."""
    try:
        status = Path(f"/proc/{pid or 'self'}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def peak_rss_kib(pid: int | None = None) -> int | None:
    """Peak resident set size (VmHWM) of ``pid`` in KiB."""
    try:
        status = Path(f"/proc/{pid or 'self'}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def log(msg: str) -> None:
    """Progress for a person watching: stderr, never stdout."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
