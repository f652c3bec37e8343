"""HTTP add throughput and latency of a real ``gk log serve`` with 1, 16 and 64 concurrent clients.

The server runs in its own process (``--accept-any``, a fresh SQLite log). The load comes from
Debian's ``wrk`` (C, epoll; ``bench/wrk_add.lua``) when it is installed, otherwise from separate
Python processes (this script with ``--loadgen``: aiohttp clients). Every request is a fresh
~200-byte entry, ``POST /add`` with the default ``wait=1``: the answer carries the checkpoint and
the inclusion proof, i.e. the entry is durable. Keep-alive connections, one per client. Latency
is measured by the load generator; throughput is acknowledged adds per second over the
measuring window, after a one-second warm-up.

Run: ``.venv/bin/python bench/bench_log_http.py [--quick] [--seconds S] [--clients 1,16,64]
[--loadgen wrk|python]``
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

PY = sys.executable


def _start_server(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    subprocess.run(
        [PY, "-m", "gatekeeper", "log", "init", str(directory), "--origin", "bench.example/http"],
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [PY, "-m", "gatekeeper", "log", "serve", str(directory), "--listen", "127.0.0.1:0", "--accept-any"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=common.REPO,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.1)[0]:
            line = proc.stdout.readline().decode()
            if "listening on " in line:
                return proc, line.split("listening on ", 1)[1].strip()
    proc.kill()
    raise RuntimeError("gk log serve did not start")


async def _loadgen(url: str, clients: int, seconds: float, warmup: float, tag: str) -> dict[str, Any]:
    from aiohttp import ClientSession, ClientTimeout, TCPConnector

    latencies: list[float] = []
    errors = 0
    counter = 0
    t_start = time.perf_counter()
    t_measure = t_start + warmup
    t_end = t_measure + seconds
    done = 0

    async def worker(session: ClientSession, n: int) -> None:
        nonlocal errors, counter, done
        clock = time.perf_counter
        pad = os.urandom(180).hex()[:180]
        while True:
            counter += 1
            body = f"{tag}-{n}-{counter}-{pad}".encode()[:200]
            t0 = clock()
            if t0 >= t_end:
                return
            async with session.post(f"{url}/add", data=body) as r:
                await r.read()
                ok = r.status == 200
            t1 = clock()
            if t0 >= t_measure:
                if ok:
                    latencies.append((t1 - t0) * 1e6)
                    done += 1
                else:
                    errors += 1

    connector = TCPConnector(limit=clients, force_close=False)
    async with ClientSession(connector=connector, timeout=ClientTimeout(total=60)) as session:
        await asyncio.gather(*(worker(session, n) for n in range(clients)))
    return {"done": done, "errors": errors, "seconds": seconds, "latencies_us": latencies}


def _run_load(url: str, clients: int, procs: int, seconds: float, warmup: float) -> dict[str, Any]:
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    children = [
        subprocess.Popen(
            [
                PY,
                __file__,
                "--loadgen",
                url,
                str(c),
                str(seconds),
                str(warmup),
                f"c{clients}p{i}-{time.time_ns()}",
            ],
            stdout=subprocess.PIPE,
            cwd=common.REPO,
        )
        for i, c in enumerate(per)
        if c
    ]
    results = []
    for child in children:
        out, _ = child.communicate(timeout=seconds + warmup + 120)
        results.append(json.loads(out))
    lat = sorted(x for r in results for x in r["latencies_us"])
    done = sum(r["done"] for r in results)
    s = common.summarize(lat)
    return {
        "clients": clients,
        "loadgen": f"{len(children)} Python aiohttp process(es)",
        "entries_per_s": round(done / seconds),
        "errors": sum(r["errors"] for r in results),
        "p50_ms": round(s.get("p50", 0) / 1000, 3),
        "p90_ms": round(s.get("p90", 0) / 1000, 3),
        "p99_ms": round(s.get("p99", 0) / 1000, 3),
        "max_ms": round(s.get("max", 0) / 1000, 3),
        "requests": done,
    }


def _run_wrk(url: str, clients: int, seconds: float, warmup: float) -> dict[str, Any]:
    script = str(Path(__file__).resolve().parent / "wrk_add.lua")
    threads = 1 if clients == 1 else 2

    def wrk(duration: float, tag: str) -> dict[str, Any]:
        argv = [
            "wrk",
            f"-t{threads}",
            f"-c{clients}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "30s",
            "-s",
            script,
            url,
        ]
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration + 120, env=dict(os.environ, WRK_TAG=tag)
        ).stdout
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"wrk printed no summary: {out[-500:]}")
        return dict(json.loads(lines[-1]))

    wrk(warmup, f"warm{clients}-{time.time_ns()}")
    r = wrk(seconds, f"c{clients}-{time.time_ns()}")
    done = r["requests"] - r["status_errors"]
    return {
        "clients": clients,
        "loadgen": f"wrk -t{threads} -c{clients}",
        "entries_per_s": round(done / (r["duration_us"] / 1e6)),
        "errors": r["errors"] + r["status_errors"],
        "p50_ms": round(r["p50_us"] / 1000, 3),
        "p90_ms": round(r["p90_us"] / 1000, 3),
        "p99_ms": round(r["p99_us"] / 1000, 3),
        "max_ms": round(r["max_us"] / 1000, 3),
        "requests": done,
    }


def _metrics(url: str) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {
        k: float(v)
        for k, v in (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    }


def _server_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--loadgen":
        url, clients, seconds, warmup, tag = sys.argv[2:7]
        res = asyncio.run(_loadgen(url, int(clients), float(seconds), float(warmup), tag))
        sys.stdout.write(json.dumps(res))
        return
    p = common.arg_parser(__doc__ or "")
    p.add_argument("--seconds", type=float, help="measuring window per concurrency (default 8, --quick 3)")
    p.add_argument("--clients", default="1,16,64", help="concurrency levels, comma-separated")
    p.add_argument("--loadgen", choices=["wrk", "python"], help="default: wrk if installed")
    args = p.parse_args()
    use_wrk = args.loadgen == "wrk" or (args.loadgen is None and shutil.which("wrk") is not None)
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    levels = [int(c) for c in args.clients.split(",")]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        proc, url = _start_server(Path(d) / "log")
        try:
            for c in levels:
                common.log(f"{c} clients for {seconds}s against {url}")
                cpu0 = _server_cpu(proc.pid)
                m0 = _metrics(url)
                if use_wrk:
                    r = _run_wrk(url, c, seconds, 1.0)
                else:
                    r = _run_load(url, c, 1 if c < 64 else 2, seconds, 1.0)
                r["server_cpu_s_per_1k_adds"] = round(
                    (_server_cpu(proc.pid) - cpu0) / max(1, r["requests"]) * 1000, 3
                )
                m1 = _metrics(url)
                batches = m1["gk_log_batches_total"] - m0["gk_log_batches_total"]
                adds = m1["gk_log_adds_total"] - m0["gk_log_adds_total"]
                r["mean_batch_size"] = round(adds / batches, 1) if batches else None
                results[f"c{c}"] = r
                results[str(c)] = r
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(30)
    c1, c64 = results.get("c1"), results.get("c64")
    common.emit(
        {
            "benchmark": "log_http",
            "quick": args.quick,
            "machine": common.machine_info(),
            "results": {"http": {k: v for k, v in results.items() if k.startswith("c")}},
            "http": {k: v for k, v in results.items() if k.startswith("c")},
            "targets": [
                common.target(
                    "HTTP adds/s at 64 clients",
                    c64 and c64["entries_per_s"],
                    ">=",
                    5000,
                    "entries/s",
                    "http.c64.entries_per_s",
                ),
                common.target("add p50 at 1 client", c1 and c1["p50_ms"], "<=", 2.0, "ms", "http.c1.p50_ms"),
            ],
            "notes": [
                "POST /add with wait=1: latency includes the durable commit, checkpoint and proof",
                "server and load generator share the machine's cores; server CPU per 1k adds shown",
                f"load generator: {'wrk (bench/wrk_add.lua)' if use_wrk else 'Python aiohttp processes'}",
            ],
        }
    )


if __name__ == "__main__":
    main()
