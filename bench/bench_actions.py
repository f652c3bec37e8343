"""Benchmark: actions signed and verified per second, and GK_BUNDLE sizes at 1 M and 10 M entries.

Run: ``.venv/bin/python bench/bench_actions.py [--seconds S]``; prints one JSON object.

- ``sign_file_per_s``: build + encode an action, sign it with an Ed25519 key *file* (read and
  parsed on every call, as ``gk submit --key`` does) and assemble the entry.
- ``verify_entry_per_s``: parse an entry and verify its SSHSIG against its signer field.
- ``admission_per_s``: the log's full ``ActionAdmission.check`` (stat of allowed_signers, parse,
  verify, allowed_signers lookup, window checks).
- ``bundle_*``: GK_BUNDLE encode/parse rates and sizes for a typical entry, one log signature
  plus 0 or 2 witness cosignatures, with the longest inclusion proof of a 1 M / 10 M log (20 / 24
  hashes; the newest entry's proof is shorter).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatekeeper import action as A  # noqa: E402
from gatekeeper import sshsig  # noqa: E402
from gatekeeper.admission import ActionAdmission  # noqa: E402
from gatekeeper.bundle import Bundle, encode_bundle, parse_bundle  # noqa: E402
from personality.tlog.checkpoint import Checkpoint, sign_checkpoint  # noqa: E402
from personality.tlog.note import generate_signer  # noqa: E402


def rate(fn: Callable[[], object], seconds: float) -> float:
    fn()  # warm up
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        fn()
        n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def proof_length(size: int) -> int:
    """Inclusion proof length for the last leaf of a tree of ``size`` (RFC 9162 §2.1.3)."""
    index, last, n = size - 1, size - 1, 0
    while last > 0:
        if index % 2 == 1 or index < last:
            n += 1
        index //= 2
        last //= 2
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        key_path = Path(tmp) / "id_ed25519"
        key = asyncssh.generate_private_key("ssh-ed25519")
        key.write_private_key(str(key_path))
        os.chmod(key_path, 0o600)
        public = key.export_public_key().decode().strip()
        signers_path = Path(tmp) / "allowed_signers"
        signers_path.write_text(f'bench@example.com namespaces="action@gatekeeper" {public}\n')

        def sign_one() -> bytes:
            a = A.new_action(
                targets=["web-01"],
                account="deploy",
                command=b"systemctl restart nginx",
                signer=public,
                now=time.time(),
                reason="INC-1234 restart nginx",
            )
            body = A.encode_action(a)
            return A.encode_entry(body, sshsig.sign_file(body, A.NAMESPACE, key_path))

        entry = sign_one()
        admission = ActionAdmission(signers_path)
        results: dict[str, object] = {
            "benchmark": "actions",
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "entry_bytes": len(entry),
            "sign_file_per_s": round(rate(sign_one, args.seconds)),
            "verify_entry_per_s": round(rate(lambda: A.verify_entry(entry), args.seconds)),
            "admission_per_s": round(rate(lambda: admission.check(entry), args.seconds)),
            "encode_parse_action_per_s": round(
                rate(lambda: A.parse_action(A.parse_entry(entry).body), args.seconds)
            ),
        }

    log = generate_signer("log.example.com")
    witnesses = [generate_signer(f"witness-{i}.example.org") for i in range(2)]
    sizes: dict[str, dict[str, int]] = {}
    for label, size in (("1M", 1_000_000), ("10M", 10_000_000)):
        n = (size - 1).bit_length()  # the longest inclusion proof in a tree of this size
        proof = tuple(hashlib.sha256(i.to_bytes(2, "big")).digest() for i in range(n))
        row = {"proof_hashes_worst": n, "proof_hashes_last_entry": proof_length(size)}
        for cosigs in (0, 2):
            cp = sign_checkpoint(Checkpoint("log.example.com", size, bytes(32)), [log, *witnesses[:cosigs]])
            b = Bundle(entry, size - 1, proof, cp)
            row[f"gk_bundle_chars_{cosigs}_cosig"] = len(encode_bundle(b))
        sizes[label] = row
    results["bundle_sizes"] = sizes
    big = Bundle(entry, 9_999_999, proof, cp)
    text = encode_bundle(big)
    results["bundle_encode_per_s"] = round(rate(lambda: encode_bundle(big), args.seconds))
    results["bundle_parse_per_s"] = round(rate(lambda: parse_bundle(text), args.seconds))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
