"""The head store: durable, append-only checkpoints, spent nonces, the halted flag."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatekeeper.errors import ConfigError
from gatekeeper.verify.headstore import (
    DB_NAME,
    NONCE_PRUNE_GRACE,
    CommitStatus,
    HeadStore,
    Spend,
)

ORIGIN = "example.com/log"
ROOT_A = b"\xaa" * 32
ROOT_B = b"\xbb" * 32


def cp(size: int, root: bytes = ROOT_A) -> tuple[int, bytes, bytes]:
    return size, root, f"{ORIGIN}\n{size}\n{root.hex()}\n\n— sig\n".encode()


def spend(nonce: bytes = b"n" * 16, index: int = 3, expires_at: int = 2000) -> Spend:
    return Spend(nonce=nonce, signer="SHA256:abc", index=index, expires_at=expires_at)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state: Path) -> Iterator[HeadStore]:
    s = HeadStore.open(state)
    yield s
    s.close()


def test_open_creates_private_dir_and_file(state: Path, store: HeadStore) -> None:
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / DB_NAME).stat().st_mode) == 0o600
    conn = sqlite3.connect(state / DB_NAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert store.newest_head(ORIGIN) is None
    assert store.halted() is None
    assert store.spent_count() == 0


def test_open_refuses_a_directory_others_can_reach(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    with pytest.raises(ConfigError, match="must be 0700"):
        HeadStore.open(d)


def test_open_refuses_a_readable_database(state: Path) -> None:
    HeadStore.open(state).close()
    os.chmod(state / DB_NAME, 0o644)
    with pytest.raises(ConfigError, match="must be 0600"):
        HeadStore.open(state)


def test_commit_stores_head_and_spends_nonce(store: HeadStore) -> None:
    r = store.commit(ORIGIN, cp(5), newest_seq=0, spend=spend(), now=1000)
    assert r.status is CommitStatus.OK
    head = store.newest_head(ORIGIN)
    assert head is not None and head.size == 5 and head.root == ROOT_A and head.stored_at == 1000
    assert head.note == cp(5)[2]
    assert store.spent(b"n" * 16, "SHA256:abc") == (3, 1000)
    assert store.spent_count() == 1


def test_replay_is_refused_and_writes_nothing(store: HeadStore) -> None:
    assert store.commit(ORIGIN, cp(5), newest_seq=0, spend=spend(), now=1000).status is CommitStatus.OK
    head = store.newest_head(ORIGIN)
    assert head is not None
    r = store.commit(ORIGIN, cp(9), newest_seq=head.seq, spend=spend(index=7), now=1001)
    assert r.status is CommitStatus.REPLAY and r.spent == (3, 1000)
    newest = store.newest_head(ORIGIN)
    assert newest is not None and newest.size == 5


def test_same_nonce_other_signer_is_not_a_replay(store: HeadStore) -> None:
    assert store.commit(ORIGIN, None, newest_seq=None, spend=spend(), now=1).status is CommitStatus.OK
    other = Spend(nonce=b"n" * 16, signer="SHA256:other", index=4, expires_at=2000)
    assert store.commit(ORIGIN, None, newest_seq=None, spend=other, now=1).status is CommitStatus.OK


def test_head_moved_is_detected(store: HeadStore) -> None:
    store.commit(ORIGIN, cp(5), newest_seq=0, spend=None, now=1)
    r = store.commit(ORIGIN, cp(8), newest_seq=0, spend=spend(), now=2)
    assert r.status is CommitStatus.HEAD_MOVED
    assert store.spent_count() == 0


def test_same_size_other_root_is_a_conflict(store: HeadStore) -> None:
    store.commit(ORIGIN, cp(5), newest_seq=0, spend=None, now=1)
    r = store.commit(ORIGIN, cp(5, ROOT_B), newest_seq=None, spend=spend(), now=2)
    assert r.status is CommitStatus.CONFLICT
    assert r.stored is not None and r.stored.root == ROOT_A
    assert store.spent_count() == 0


def test_smaller_checkpoint_is_kept_in_history_newest_unchanged(store: HeadStore) -> None:
    store.commit(ORIGIN, cp(8), newest_seq=0, spend=None, now=1)
    store.commit(ORIGIN, cp(3), newest_seq=None, spend=None, now=2)
    assert [h.size for h in store.heads(ORIGIN)] == [3, 8]
    newest = store.newest_head(ORIGIN)
    assert newest is not None and newest.size == 8
    at3 = store.head_at_size(ORIGIN, 3)
    assert at3 is not None and at3.root == ROOT_A


def test_checkpoints_and_evidence_are_append_only(state: Path, store: HeadStore) -> None:
    store.commit(ORIGIN, cp(5), newest_seq=0, spend=None, now=1)
    store.record_halt(kind="fork", origin=ORIGIN, detail="d", known=b"a", conflicting=b"b", now=2)
    conn = sqlite3.connect(state / DB_NAME)
    for sql in (
        "UPDATE checkpoints SET root = x'00'",
        "DELETE FROM checkpoints",
        "DELETE FROM halts",
        "UPDATE halts SET known = x'00'",
    ):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
    conn.close()


def test_halt_survives_reopen_refuses_commits_and_keeps_evidence(state: Path) -> None:
    s = HeadStore.open(state)
    s.commit(ORIGIN, cp(5), newest_seq=0, spend=None, now=1)
    s.record_halt(kind="fork", origin=ORIGIN, detail="roots differ", known=b"K", conflicting=b"C", now=7)
    s.close()
    s = HeadStore.open(state)
    halt = s.halted()
    assert halt is not None
    got = (halt.kind, halt.detail, halt.known, halt.conflicting, halt.at)
    assert got == ("fork", "roots differ", b"K", b"C", 7)
    assert s.commit(ORIGIN, cp(5), newest_seq=None, spend=spend(), now=8).status is CommitStatus.HALTED
    assert s.spent_count() == 0
    s.close()


def test_unhalt_is_journalled_and_a_later_fork_halts_again(store: HeadStore) -> None:
    assert store.unhalt(who="root", note="x", now=1) is None
    store.record_halt(kind="fork", origin=ORIGIN, detail="d", known=b"K", conflicting=b"C", now=2)
    store.record_halt(kind="rollback", origin=ORIGIN, detail="e", known=b"K", conflicting=b"D", now=3)
    u = store.unhalt(who="alice (uid 0)", note="reviewed", now=4)
    assert u is not None and u.through_halt == store.halts()[-1].id
    assert store.halted() is None
    assert [(x.who, x.note, x.at) for x in store.unhalts()] == [("alice (uid 0)", "reviewed", 4)]
    assert len(store.halts()) == 2  # evidence kept
    store.record_halt(kind="fork", origin=ORIGIN, detail="f", known=b"K", conflicting=b"E", now=5)
    halt = store.halted()
    assert halt is not None and halt.detail == "f"


def test_spent_nonces_pruned_only_after_expiry_plus_grace(store: HeadStore) -> None:
    store.commit(ORIGIN, None, newest_seq=None, spend=spend(expires_at=100), now=50)
    assert store.prune_spent(now=100 + NONCE_PRUNE_GRACE) == 0
    assert store.spent(b"n" * 16, "SHA256:abc") is not None
    assert store.prune_spent(now=101 + NONCE_PRUNE_GRACE) == 1
    assert store.spent(b"n" * 16, "SHA256:abc") is None


def test_concurrent_spends_of_one_nonce_only_one_wins(state: Path) -> None:
    stores = [HeadStore.open(state) for _ in range(4)]  # four connections, as four processes would
    results: list[CommitStatus] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker(s: HeadStore) -> None:
        barrier.wait()
        r = s.commit(ORIGIN, None, newest_seq=None, spend=spend(), now=1)
        with lock:
            results.append(r.status)

    threads = [threading.Thread(target=worker, args=(stores[i % 4],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.value for r in results) == ["ok"] + ["replay"] * 7
    for s in stores:
        s.close()


def test_committed_state_survives_a_killed_process(state: Path) -> None:
    code = (
        "import os, sys\n"
        "from gatekeeper.verify.headstore import HeadStore, Spend\n"
        "s = HeadStore.open(sys.argv[1])\n"
        "s.commit('o', (4, b'r' * 32, b'note'), newest_seq=0,"
        " spend=Spend(b'x' * 16, 'SHA256:k', 3, 99), now=5)\n"
        "s.record_halt(kind='fork', origin='o', detail='d', known=b'k', conflicting=b'c', now=6)\n"
        "os._exit(0)\n"  # no close, no checkpointing of the WAL
    )
    subprocess.run([sys.executable, "-c", code, str(state)], check=True)
    with HeadStore.open(state) as s:
        head = s.newest_head("o")
        assert head is not None and head.size == 4
        assert s.spent(b"x" * 16, "SHA256:k") == (3, 5)
        assert s.halted() is not None
