"""Entry checks: the fast signature path agrees with gatekeeper.action.verify_entry on every
one-byte mutation; the process pool gives the same results as inline checking; principals."""

from __future__ import annotations

from gatekeeper.action import Action, Target, verify_entry
from gatekeeper.allowed_signers import AllowedSigners
from gatekeeper.errors import GatekeeperError
from gatekeeper.monitor.check import (
    BAD_SIGNATURE,
    MALFORMED,
    OK,
    UNKNOWN_SIGNER,
    CheckPool,
    EntryChecker,
    SignerPrincipals,
)
from gatekeeper.monitor.rules import parse_rules
from gatekeeper.monitor.testing import FastSigner, synthetic_entries


def canonical_ok(entry: bytes) -> bool:
    try:
        verify_entry(entry)
    except GatekeeperError:
        return False
    return True


def test_fast_path_agrees_with_verify_entry_on_every_byte_flip() -> None:
    user = FastSigner()
    t = 1_780_000_000
    entry = user.entry(
        Action(
            "exec",
            (Target("web-01"),),
            "root",
            b"systemctl restart nginx",
            b"\x01" * 16,
            t,
            t + 300,
            user.public,
            "OPS-7",
        )
    )
    checker = EntryChecker()
    assert checker.check(0, entry).status == OK  # learns the signer: later checks take the fast path
    assert checker.check(1, entry).status == OK
    disagreements = []
    for i in range(len(entry)):
        for delta in (0x01, 0x40):
            mutated = entry[:i] + bytes([entry[i] ^ delta]) + entry[i + 1 :]
            if (checker.check(i, mutated).status == OK) != canonical_ok(mutated):
                disagreements.append((i, delta))
    assert disagreements == []


def test_statuses_and_messages() -> None:
    user, other = FastSigner(), FastSigner()
    t = 1_780_000_000
    a = Action("exec", (Target("web-01"),), "root", b"id", b"\x02" * 16, t, t + 300, user.public)
    good = user.entry(a)
    body = good[: good.index(b"\n\n") + 1]
    wrong_signer = body + b"\n" + other.sign_body(body)  # valid SSHSIG, but not by the named signer
    checker = EntryChecker()
    assert checker.check(0, good).status == OK
    r = checker.check(1, wrong_signer)
    assert r.status == BAD_SIGNATURE and "signer" in r.error and r.summary is not None
    assert r.summary["command"] == "id" and r.signed is None  # the monitor keeps only the summary
    assert checker.check(2, b"hello").status == MALFORMED
    allowed = AllowedSigners.parse(f"alice@example.com {user.public}\n")
    with_principals = EntryChecker(principals=SignerPrincipals(allowed))
    assert with_principals.check(0, good).principals == ("alice@example.com",)
    stranger = other.entry(
        Action("exec", (Target("web-01"),), "root", b"id", b"\x03" * 16, t, t + 300, other.public)
    )
    assert with_principals.check(1, stranger).status == UNKNOWN_SIGNER


def test_pool_matches_inline() -> None:
    entries, _ = synthetic_entries(3000, workers=1)
    entries[1234] = entries[1234].replace(b"kind exec", b"kind exex")
    rules = parse_rules("[[rule]]\nname='shadow'\ncommand='shadow'\n")
    checker = EntryChecker(rules)
    inline = checker.check_batch(0, entries)
    batches = iter([(s, entries[s : s + 256]) for s in range(0, len(entries), 256)])
    with CheckPool(checker, workers=2) as pool:
        pooled = [r for _, _, rs in pool.map(batches) for r in rs]
    assert [(r.index, r.status, r.fired) for r in pooled] == [(r.index, r.status, r.fired) for r in inline]
    assert inline[1234].status == MALFORMED
    assert sum(1 for r in inline if r.fired) > 0
