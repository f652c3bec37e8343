"""The local decision journal: append-only JSON lines, 0600, durable, readable after a torn write."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from gatekeeper.errors import GatekeeperError
from gatekeeper.gate import Decision, ExecRequest, Reason
from gatekeeper.journal import Journal, command_fields, decision_record, read_journal, utc_timestamp

REQUEST = ExecRequest(
    "deploy", b"systemctl restart nginx", "ssh-ed25519 AAAA", "BUNDLE", "10.0.0.5:4242", "agent"
)


def test_append_creates_a_private_file_and_writes_one_line_each(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "journal.jsonl"
    with Journal(path, clock=lambda: 1_700_000_000.25) as journal:
        journal.append({"event": "refused", "reason": "no-bundle"})
        journal.append({"event": "exit", "time": "given"})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    lines = path.read_bytes().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"event": "refused", "reason": "no-bundle", "time": "2023-11-14T22:13:20.250Z"},
        {"event": "exit", "time": "given"},
    ]


def test_append_only_never_rewrites_and_tightens_permissions(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text('{"event":"old"}\n')
    os.chmod(path, 0o644)
    Journal(path).append({"event": "new"})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [r["event"] for r in read_journal(path)] == ["old", "new"]


def test_concurrent_appends_do_not_interleave(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    payload = "x" * 5000

    def worker(n: int) -> None:
        for i in range(50):
            journal.append({"worker": n, "i": i, "pad": payload})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    journal.close()
    records = list(read_journal(path))
    assert len(records) == 200
    assert sorted((r["worker"], r["i"]) for r in records) == [(n, i) for n in range(4) for i in range(50)]


def test_records_must_be_json_objects_of_bounded_size(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    with pytest.raises(TypeError):
        journal.append(["not", "a", "mapping"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        journal.append({"bytes": b"raw"})
    with pytest.raises(ValueError):
        journal.append({"big": "x" * (2 << 20)})
    journal.close()
    assert not (tmp_path / "j").exists() or (tmp_path / "j").read_bytes() == b""


def test_read_skips_only_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    assert list(read_journal(path)) == [{"a": 1}, {"b": 2}]
    path.write_bytes(b'{"a":1}\ngarbage\n{"b":2}\n')
    with pytest.raises(GatekeeperError, match="line 2 is not JSON"):
        list(read_journal(path))
    path.write_bytes(b'[1]\n')
    with pytest.raises(GatekeeperError, match="line 1 is not a JSON object"):
        list(read_journal(path))


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (b"echo hi", {"command": "echo hi"}),
        (b"for i in 1 2; do\n\techo $i\ndone", {"command": "for i in 1 2; do\n\techo $i\ndone"}),
        ("echo é".encode(), {"command": "echo é"}),
        (b"printf '\x1b[31m'", {"command_base64": base64.b64encode(b"printf '\x1b[31m'").decode()}),
        (b"\xff\xfe", {"command_base64": "//4="}),
    ],
)
def test_command_fields(command: bytes, expected: dict[str, str]) -> None:
    assert command_fields(command) == expected


def test_decision_record_for_refusal_allowed_and_exit() -> None:
    refused = Decision(Reason.EXPIRED, "gk: refused: expired", index=12, key_fingerprint="SHA256:k")
    assert decision_record(REQUEST, refused, event="refused") == {
        "event": "refused", "frontend": "agent", "peer": "10.0.0.5:4242", "account": "deploy",
        "key": "SHA256:k", "command": "systemctl restart nginx", "index": 12, "reason": "expired",
        "bundle": True, "exit_status": Reason.EXPIRED.exit_status, "message": "gk: refused: expired",
    }
    allowed = Decision(Reason.ALLOWED, "", index=12, key_fingerprint="SHA256:k")
    rec = decision_record(REQUEST, allowed, event="allowed")
    assert rec["reason"] == "allowed" and "exit_status" not in rec
    rec = decision_record(REQUEST, allowed, event="exit", exit_status=None, signal="KILL")
    assert (rec["exit_status"], rec["signal"]) == (None, "KILL")


def test_utc_timestamp() -> None:
    assert utc_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert utc_timestamp(1_700_000_000.999) == "2023-11-14T22:13:20.999Z"


def test_reopen_after_logrotate_moved_the_file(tmp_path: Path) -> None:
    """logrotate's move-then-signal: records before the move stay in the moved file, records
    between the move and reopen() go there too (the descriptor follows the file), and records
    after reopen() go to a new private file at the original path."""
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.append({"n": 1})
    rotated = tmp_path / "journal.jsonl.1"
    os.rename(path, rotated)
    journal.append({"n": 2})  # before the signal arrives
    assert not path.exists()
    journal.reopen()
    assert path.exists() and stat.S_IMODE(os.stat(path).st_mode) == 0o600  # created at once
    journal.append({"n": 3})
    journal.close()
    assert [r["n"] for r in read_journal(rotated)] == [1, 2]
    assert [r["n"] for r in read_journal(path)] == [3]


def test_reopen_in_place_and_after_close_keeps_appending(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.reopen()  # never appended yet: opens (creates) the file
    journal.append({"n": 1})
    journal.reopen()  # not rotated: the same file, appended to
    journal.append({"n": 2})
    journal.close()
    journal.reopen()  # a closed journal opens again
    journal.append({"n": 3})
    journal.close()
    assert [r["n"] for r in read_journal(path)] == [1, 2, 3]
    assert len(os.listdir(tmp_path)) == 1


def test_failed_reopen_keeps_writing_to_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.append({"n": 1})
    rotated = tmp_path / "journal.jsonl.1"
    os.rename(path, rotated)
    path.mkdir()  # the path cannot be opened as a file
    with pytest.raises(OSError):
        journal.reopen()
    journal.append({"n": 2})  # not lost: still the old descriptor
    journal.close()
    assert [r["n"] for r in read_journal(rotated)] == [1, 2]


def test_reopen_while_other_threads_append_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    done = threading.Event()

    def worker(n: int) -> None:
        for i in range(100):
            journal.append({"worker": n, "i": i})
        done.set()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    generation = 0
    while not done.is_set() and generation < 20:
        if path.exists():  # the workers may not have appended yet
            generation += 1
            os.rename(path, tmp_path / f"journal.jsonl.{generation}")
        journal.reopen()
    for t in threads:
        t.join()
    journal.close()
    records = [r for f in sorted(tmp_path.iterdir()) for r in read_journal(f)]
    assert sorted((r["worker"], r["i"]) for r in records) == [(n, i) for n in range(3) for i in range(100)]
