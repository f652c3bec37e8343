"""``gk audit reconcile``: a host's journal (written by gatekeeper.journal, as the agent does)
against the log: what ran unlogged, what was logged but never ran, what is not verified yet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gatekeeper.action import Action, Target
from gatekeeper.audit.index import AuditIndex
from gatekeeper.audit.reconcile import reconcile
from gatekeeper.audit.sync import sync
from gatekeeper.cli import main
from gatekeeper.gate import Decision, ExecRequest, Reason
from gatekeeper.journal import Journal, decision_record, read_journal
from gatekeeper.monitor.alerts import ListSink
from gatekeeper.monitor.scan import DirectorySource
from gatekeeper.monitor.testing import FastSigner, write_static_log
from gatekeeper.sshsig import fingerprint
from personality.tlog.note import generate_signer

ORIGIN = "example.com/reconcile"
T = 1_780_000_000


def test_reconcile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    user = FastSigner()
    key = generate_signer(ORIGIN)

    def act(i: int, host: str, cmd: bytes, account: str = "deploy") -> Action:
        return Action(
            "exec",
            (Target(host),),
            account,
            cmd,
            bytes([i]) * 16,
            T + 60 * i,
            T + 60 * i + 300,
            user.public,
            "OPS-1",
        )

    logged = [
        act(0, "web-01", b"uptime"),  # ran
        act(1, "web-01", b"df -h"),  # ran
        act(2, "web-02", b"id"),  # another host
        act(3, "web-01", b"reboot"),  # logged for web-01, never ran
        act(4, "web-01", b"ls \xff"),  # ran (non-UTF-8 command)
    ]
    write_static_log(tmp_path / "log", [user.entry(a) for a in logged], key)
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

    now = [float(T + 30)]
    journal = Journal(tmp_path / "journal.jsonl", clock=lambda: now[0])
    fp = fingerprint(user.public)

    def ran(index: int | None, cmd: bytes, account: str = "deploy", event: str = "allowed") -> None:
        req = ExecRequest(account, cmd, user.public, "bundle", "10.0.0.9:5555", "agent")
        reason = Reason.ALLOWED if event == "allowed" else Reason.REPLAY
        journal.append(decision_record(req, Decision(reason, "", index, fp), event=event))
        now[0] += 60

    ran(0, b"uptime")
    ran(1, b"df -h")
    ran(1, b"df -h", event="refused")  # a replay attempt, refused: not a run
    ran(4, b"ls \xff")
    ran(2, b"id")  # an action for web-02 ran on web-01: not logged for this host
    ran(0, b"uptime; rm -rf /")  # another command than the logged one
    ran(1, b"df -h", account="root")  # another account
    ran(None, b"whoami")  # no index at all
    ran(99, b"uptime")  # beyond the verified log
    journal.close()
    records = list(read_journal(tmp_path / "journal.jsonl"))

    with AuditIndex.open(tmp_path / "a.db", create=False) as idx:
        res = reconcile(idx, records, "web-01")
    assert (res.allowed, res.matched) == (8, 3)
    bad = res.of("ran-not-logged")
    assert [f.index for f in bad] == [2, 0, 1, None]
    assert "not web-01" in bad[0].detail and "differs" in bad[1].detail and "'root'" in bad[2].detail
    assert [f.index for f in res.of("not-yet-verified")] == [99]
    assert [f.index for f in res.of("logged-not-run")] == [3]
    assert not res.ok

    rc = main(
        [
            "audit",
            "reconcile",
            str(tmp_path / "journal.jsonl"),
            "--index",
            str(tmp_path / "a.db"),
            "--host",
            "web-01",
            "--all",
        ]
    )
    out = capsys.readouterr()
    assert rc == 76
    kinds = [json.loads(line)["kind"] for line in out.out.splitlines()]
    assert kinds.count("ran-not-logged") == 4 and kinds.count("logged-not-run") == 1
    assert "4 ran but not logged" in out.err


def test_clean_journal_is_ok(tmp_path: Path) -> None:
    user = FastSigner()
    key = generate_signer(ORIGIN)
    a = Action("exec", (Target("db-01"),), "postgres", b"vacuumdb -a", b"\x07" * 16, T, T + 300, user.public)
    write_static_log(tmp_path / "log", [user.entry(a)], key)
    with AuditIndex.open(tmp_path / "a.db", ORIGIN) as idx:
        sync(idx, DirectorySource(tmp_path / "log"), [key.verifier()], ListSink(), workers=1, progress=False)
        record = {
            "event": "allowed",
            "index": 0,
            "account": "postgres",
            "command": "vacuumdb -a",
            "key": fingerprint(user.public),
            "time": "2026-05-28T20:27:00.000Z",
        }
        res = reconcile(idx, [record, {"event": "exit", "index": 0, "exit_status": 0}], "db-01")
    assert res.ok and res.matched == 1 and res.findings == []
