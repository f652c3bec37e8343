"""The audit index: search correctness on a log of 100,000 signed actions, decoded fields match
the entries, proofs from the index, crash-safe progress, and literal hints for regexes."""

from __future__ import annotations

import random
import re
import sqlite3
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from gatekeeper.action import Action, Target, format_time, parse_entry, verify_entry
from gatekeeper.audit.index import AuditIndex, Query, Row, literal_hint
from gatekeeper.audit.sync import sync
from gatekeeper.errors import ConfigError
from gatekeeper.monitor.alerts import ListSink
from gatekeeper.monitor.scan import DirectorySource
from gatekeeper.monitor.testing import (
    build_index_directly,
    synthetic_chunks,
    synthetic_entries,
    write_static_log,
)
from gatekeeper.sshsig import fingerprint
from personality.tlog import merkle
from personality.tlog.note import generate_signer
from personality.tlog.tiles import pack_entry_bundle, parse_entry_bundle

ORIGIN = "example.com/audit-100k"
N = 100_000
T0 = 1_780_000_000


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AuditIndex, list[bytes], list[Row]]]:
    """100 k valid signed actions (Ed25519 SSHSIG, signed on every core) in an audit index."""
    path = tmp_path_factory.mktemp("big") / "audit.db"
    idx, entries = build_index_directly(path, generate_signer(ORIGIN), synthetic_chunks(N, seed=7))
    rows = list(idx.search(Query()))
    yield idx, entries, rows
    idx.close()


def brute(rows: list[Row], q: Query) -> list[int]:
    fps: set[str] = set()
    for s in q.signers:
        fps.add(s if s.startswith("SHA256:") else fingerprint(s))
    out = []
    for r in rows:
        if q.hosts and not any(fnmatchcase(h, p) for p in q.hosts for h in r.hosts):
            continue
        if q.accounts and not any(fnmatchcase(r.account or "", p) for p in q.accounts):
            continue
        if q.signers and r.signer not in fps:
            continue
        if q.since is not None and (r.not_before is None or r.not_before < q.since):
            continue
        if q.until is not None and (r.not_before is None or r.not_before >= q.until):
            continue
        if q.first is not None and r.index < q.first:
            continue
        if q.last is not None and r.index > q.last:
            continue
        if q.command is not None and not re.search(q.command, r.command or ""):
            continue
        if q.reason is not None and not re.search(q.reason, r.reason or ""):
            continue
        out.append(r.index)
    return out


@pytest.mark.slow
def test_rows_decode_the_entries(big: tuple[AuditIndex, list[bytes], list[Row]]) -> None:
    idx, entries, rows = big
    assert len(rows) == N and idx.size == N and idx.verified_size == N
    assert idx.meta("analyzed_size") == str(N)  # planner statistics, for the searches below
    assert idx.analyze() is False  # not grown since
    assert all(r.status == "ok" and r.verified for r in rows)
    for i in random.Random(3).sample(range(N), 300):
        a = parse_entry(entries[i]).action
        r = rows[i]
        assert (r.index, r.account, r.kind, r.reason) == (i, a.account, a.kind, a.reason)
        assert r.hosts == tuple(t.name for t in a.targets)
        assert r.command == a.command.decode() and r.not_before == a.not_before
        assert r.signer == fingerprint(a.signer)
        assert idx.entry(i) == entries[i]
    for i in random.Random(4).sample(range(N), 50):
        verify_entry(entries[i])  # each generated entry is a validly signed action


@pytest.mark.slow
def test_search_matches_brute_force(big: tuple[AuditIndex, list[bytes], list[Row]]) -> None:
    idx, entries, rows = big
    signer = parse_entry(entries[3]).action.signer
    queries = [
        Query(hosts=["db-03"]),
        Query(hosts=["web-1*"], accounts=["root"]),
        Query(hosts=["bastion", "ci-runner"], command=r"^systemctl (restart|status)"),
        Query(accounts=["postgres"], since=T0 + 30 * 20_000, until=T0 + 30 * 30_000),
        Query(signers=[signer], command="shadow"),
        Query(signers=[fingerprint(signer)], first=50_000, last=50_999),
        Query(command=r"curl -fsS https://deploy\.example\.com/release/\d+ \| sh"),
        Query(command=r"(?i)USERADD"),
        Query(command=r"(wget|curl)\b.*\|\s*(ba|z)?sh\b", accounts=["deploy"]),
        Query(command=r"temp\d+5$"),
        Query(reason=r"^$", hosts=["db-*"]),
        Query(reason=r"INC-\d{3}$"),
        Query(first=99_990),
        Query(hosts=["nowhere"]),
    ]
    for q in queries:
        want = brute(rows, q)
        got = [r.index for r in idx.search(q)]
        assert got == want, q
        assert idx.count(q) == len(want)
    assert len(brute(rows, queries[0])) > 1000  # the queries are not trivially empty
    import gatekeeper.audit.index as index_module

    for probe in (0, 10**9):  # frequent substrings (instr scan) and rare ones (trigram candidates)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(index_module, "FTS_PROBE", probe)
            for q in queries:
                if q.command is not None or q.reason is not None:
                    assert [r.index for r in idx.search(q)] == brute(rows, q), (probe, q)
    newest = [r.index for r in idx.search(Query(hosts=["db-03"], newest_first=True, limit=5))]
    assert newest == sorted(brute(rows, queries[0]), reverse=True)[:5]


@pytest.mark.slow
def test_proofs_from_the_index(big: tuple[AuditIndex, list[bytes], list[Row]]) -> None:
    idx, entries, _ = big
    cp = idx.latest_checkpoint()
    assert cp is not None and cp.size == N
    for size in (N, 65_536, 70_001, 1):
        get = idx.hash_getter(size)
        root = merkle.subtree_hash(get, 0, size)
        for i in random.Random(size).sample(range(size), min(size, 20)):
            merkle.verify_inclusion(
                i, size, merkle.leaf_hash(entries[i]), merkle.inclusion_proof(i, size, get), root
            )
    get = idx.hash_getter(N)
    assert merkle.subtree_hash(get, 0, N) == cp.root
    proof = merkle.consistency_proof(12_345, N, get)
    merkle.verify_consistency(
        12_345, N, merkle.subtree_hash(idx.hash_getter(12_345), 0, 12_345), cp.root, proof
    )


def test_literal_hints() -> None:
    assert literal_hint(r"rm\s+-rf /") == (("-rf /",), False)
    assert literal_hint(r"curl .*\| *sh") == (("curl ",), False)
    assert literal_hint("curl .*| *sh") is None  # "curl .*" or " *sh": the second has no 3-char literal
    assert literal_hint("(foo|bar)bazz") == (("bazz",), False)
    assert literal_hint("(food|bars)baz") == (("bars", "food"), False)
    assert literal_hint(r"(curl|wget)\b.*\|\s*(ba|z|da)?sh\b") == (("curl", "wget"), False)
    assert literal_hint("a|bcdef") is None
    assert literal_hint("(?:abc)+x") == (("abc",), False)
    assert literal_hint("(?:abc)?x") is None
    assert literal_hint("(?i)ShadoW") == (("ShadoW",), True)
    assert literal_hint("(?i:sh)adow") == (("adow",), True)
    assert literal_hint("ab") is None
    assert literal_hint("[ab]cd") is None
    assert literal_hint("(") is None


def test_bad_regex_and_wrong_origin(tmp_path: Path) -> None:
    with AuditIndex.open(tmp_path / "x.db", "a.example/log") as idx:
        with pytest.raises(ConfigError, match="regular expression"):
            list(idx.search(Query(command="(")))
        assert idx.size == 0 and idx.verified_size == 0 and idx.latest_checkpoint() is None
    with pytest.raises(ConfigError, match="belongs to"):
        AuditIndex.open(tmp_path / "x.db", "b.example/log")
    with pytest.raises(ConfigError, match="no audit index"):
        AuditIndex.open(tmp_path / "missing.db", create=False)


def test_rewrite_discards_unconfirmed_rows_and_resync_recovers(tmp_path: Path) -> None:
    key = generate_signer(ORIGIN)
    entries, _ = synthetic_entries(900, workers=1)
    log = tmp_path / "log"
    write_static_log(log, entries[:400], key)
    with AuditIndex.open(tmp_path / "a.db", ORIGIN) as idx:
        src = DirectorySource(log)
        assert sync(idx, src, [key.verifier()], ListSink(), workers=1, progress=False).status == "ok"
        write_static_log(log, entries, key)
        good = (log / "tile" / "entries" / "002").read_bytes()
        items = parse_entry_bundle(good)
        items[600 - 512] = entries[1]
        (log / "tile" / "entries" / "002").write_bytes(pack_entry_bundle(items))
        sink = ListSink()
        assert sync(idx, src, [key.verifier()], sink, workers=1, progress=False).status == "integrity"
        assert sink.kinds() == ["rewrite"]
        assert idx.size == 400 and idx.verified_size == 400  # nothing unconfirmed kept
        (log / "tile" / "entries" / "002").write_bytes(good)
        assert sync(idx, src, [key.verifier()], ListSink(), workers=1, progress=False).status == "ok"
        assert idx.size == idx.verified_size == 900
        assert format_time(idx.get(899).not_before or 0).startswith("2026")


def test_index_survives_a_torn_write(tmp_path: Path) -> None:
    """Progress and rows commit together: killing a writer mid-transaction leaves the old state."""
    key = generate_signer(ORIGIN)
    entries, _ = synthetic_entries(300, workers=1)
    write_static_log(tmp_path / "log", entries, key)
    with AuditIndex.open(tmp_path / "a.db", ORIGIN) as idx:
        assert (
            sync(
                idx,
                DirectorySource(tmp_path / "log"),
                [key.verifier()],
                ListSink(),
                workers=1,
                progress=False,
            ).status
            == "ok"
        )
    conn = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("DELETE FROM actions WHERE idx >= 100")
    conn.close()  # never committed
    with AuditIndex.open(tmp_path / "a.db", create=False) as idx:
        assert idx.size == 300 and idx.load(ORIGIN).processed.size == 300


def test_case_insensitive_prefilter_keeps_unicode_folds(tmp_path: Path) -> None:
    from gatekeeper.monitor.testing import FastSigner

    user = FastSigner()
    cmds = [b"cat /etc/shadow", b"CAT /ETC/SHADOW", "cat /etc/\u017fhadow".encode(), b"cat /etc/hosts"]
    acts = [
        Action("exec", (Target("web-01"),), "root", c, bytes([i]) * 16, T0, T0 + 60, user.public)
        for i, c in enumerate(cmds)
    ]
    idx, _ = build_index_directly(
        tmp_path / "u.db", generate_signer(ORIGIN), [(0, [user.entry(a) for a in acts], acts)]
    )
    with idx:
        assert [r.index for r in idx.search(Query(command="(?i)SHADOW"))] == [0, 1, 2]
        assert [r.index for r in idx.search(Query(command="shadow"))] == [0]
