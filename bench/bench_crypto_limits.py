"""Benchmark: the machine's limits, for context -- what no Python code on this box can beat.

Run: ``.venv/bin/python bench/bench_crypto_limits.py [--quick]``; prints one JSON object.

- ``sha256_node_per_s``: ``hashlib.sha256(0x01 || l || r).digest()`` on 65-byte inputs (one
  RFC 6962 interior node, including the Python bytes concatenation the tree code does);
  ``sha256_leaf_per_s``: ``sha256(0x00 || entry)`` of a 200-byte entry.
- ``ed25519_sign_per_s`` / ``ed25519_verify_per_s``: ``cryptography`` over a ~100-byte
  checkpoint body; ``ecdsa_p256_*``: the same with ECDSA P-256 / SHA-256.
- ``sshsig_verify_ed25519_per_s`` / ``sshsig_verify_p256_per_s``: ``gatekeeper.sshsig.verify`` of
  a ~600-byte action (dearmor, parse, asyncssh key decode, hash, verify) -- the per-entry cost
  of the log's admission and of the agent.
- ``sqlite_*``: SQLite 200-byte rows, WAL + ``synchronous=FULL`` in a temporary directory:
  single-row commits per second and rows per second in 256-row transactions (the fsync cost the
  log's batching amortises).

Throughputs are the median of 5 repeats of a fixed number of calls.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import emit, log, machine_info, rate  # noqa: E402


def _loop_rate(n: int, repeats: int, body: str, setup: dict[str, object]) -> float:
    """Rate of the statement ``body`` run ``n`` times in a plain ``for`` loop (no call overhead)."""
    import statistics
    import timeit

    timer = timeit.Timer(body, globals=setup)
    times = timer.repeat(repeat=repeats, number=n)
    return n / statistics.median(times)


def _hashing(scale: int) -> dict[str, float]:
    import hashlib

    env = {"sha": hashlib.sha256, "l": os.urandom(32), "r": os.urandom(32), "e": os.urandom(200)}
    n = 400_000 // scale
    node = _loop_rate(n, 5, "sha(b'\\x01' + l + r).digest()", env)
    leaf = _loop_rate(n, 5, "sha(b'\\x00' + e).digest()", env)
    return {
        "sha256_node_per_s": round(node),
        "sha256_node_us": round(1e6 / node, 3),
        "sha256_leaf_per_s": round(leaf),
        "sha256_leaf_us": round(1e6 / leaf, 3),
    }


def _signatures(scale: int) -> dict[str, float]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    body = b"log.example.org/gatekeeper\n1048576\n" + os.urandom(32).hex().encode() + b"\n"
    n = 4000 // scale
    ed = Ed25519PrivateKey.generate()
    ed_pub = ed.public_key()
    ed_sig = ed.sign(body)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_pub = ec_key.public_key()
    alg = ec.ECDSA(hashes.SHA256())
    ec_sig = ec_key.sign(body, alg)
    return {
        "ed25519_sign_per_s": round(rate(lambda: ed.sign(body), n)),
        "ed25519_verify_per_s": round(rate(lambda: ed_pub.verify(ed_sig, body), n)),
        "ecdsa_p256_sign_per_s": round(rate(lambda: ec_key.sign(body, alg), n)),
        "ecdsa_p256_verify_per_s": round(rate(lambda: ec_pub.verify(ec_sig, body, alg), n)),
    }


def _sshsig(scale: int, tmp: Path) -> dict[str, float]:
    import asyncssh

    from gatekeeper import sshsig

    message = b"gatekeeper/action/v1\n" + b"x" * 580 + b"\n"
    out: dict[str, float] = {}
    for name, alg in (("ed25519", "ssh-ed25519"), ("p256", "ecdsa-sha2-nistp256")):
        key = asyncssh.generate_private_key(alg)
        path = tmp / f"id_{name}"
        key.write_private_key(str(path))
        os.chmod(path, 0o600)
        armored = sshsig.sign_file(message, "action@gatekeeper", path)
        n = 1500 // scale

        def verify(a: bytes = armored) -> str:
            return sshsig.verify(message, a, "action@gatekeeper")

        out[f"sshsig_verify_{name}_per_s"] = round(rate(verify, n))
    return out


def _sqlite(scale: int, tmp: Path) -> dict[str, float]:
    db = tmp / "rows.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)")
    row = os.urandom(200)
    k = 0

    def single() -> None:
        nonlocal k
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (?, ?)", (k, row))
        conn.execute("COMMIT")
        k += 1

    single_rate = rate(single, 300 // scale)
    batch = 256
    batches = 200 // scale
    rows = [(k + i, row) for i in range(batch * (batches + 1) * 6)]
    pos = 0

    def one_batch() -> None:
        nonlocal pos
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES (?, ?)", rows[pos : pos + batch])
        conn.execute("COMMIT")
        pos += batch

    batch_rate = rate(one_batch, batches) * batch
    conn.close()
    return {
        "sqlite_single_row_commits_per_s": round(single_rate),
        "sqlite_256_row_batch_rows_per_s": round(batch_rate),
    }


def main() -> int:
    args = common.arg_parser(__doc__.split("\n\n")[0]).parse_args()
    scale = 4 if args.quick else 1
    results: dict[str, float] = {}
    log("hashing")
    results.update(_hashing(scale))
    log("signatures")
    results.update(_signatures(scale))
    with tempfile.TemporaryDirectory(prefix="gk-bench-") as d:
        log("sshsig")
        results.update(_sshsig(scale, Path(d)))
        log("sqlite")
        results.update(_sqlite(scale, Path(d)))
    reference = {  # FIELD-NOTES figures measured while planning, for comparison
        "sha256_node_us": "0.30-0.36",
        "sha256_leaf_us": "~0.35",
        "ed25519_sign_per_s": "~40,000 (25 µs)",
        "ed25519_verify_per_s": "~12,300 (81 µs)",
        "ecdsa_p256_sign_per_s": "~52,600 (19 µs)",
        "ecdsa_p256_verify_per_s": "~17,500 (57 µs)",
        "sqlite_single_row_commits_per_s": "4,300-6,000",
        "sqlite_256_row_batch_rows_per_s": "450,000-520,000",
    }
    emit(
        {
            "benchmark": "crypto_limits",
            "quick": args.quick,
            "machine": machine_info(),
            "results": results,
            "targets": [],
            "reference": reference,
            "tables": [
                {
                    "title": "Machine limits (one thread) and the FIELD-NOTES figures",
                    "columns": ["measure", "here", "FIELD-NOTES"],
                    "rows": [[k, v, reference.get(k, "")] for k, v in results.items()],
                }
            ],
            "notes": [
                "median of 5 repeats of a fixed number of calls; wall clock; one thread",
                "SQLite in a temporary directory on the same disk as the repository",
            ],
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
