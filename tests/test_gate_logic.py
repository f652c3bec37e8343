"""VerifyingGate decision logic against an in-memory log (fault injection): heads, forks, rollbacks,
replays, timeouts, journalling. The same paths against a real log service: tests/test_gate_log.py."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from test_verify_support import NOW, ORIGIN, Tree, World, make_world

from gatekeeper.gate import Decision, ExecRequest, Reason
from gatekeeper.journal import Journal, read_journal
from gatekeeper.verify.alarm import Alarm
from gatekeeper.verify.gate import VerifyingGate
from gatekeeper.verify.headstore import HeadStore
from personality.errors import NotFoundError, UnavailableError


class FakeLog:
    """Serves checkpoints and consistency proofs of ``world.tree`` (or of ``tree`` when set)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.tree: Tree | None = None
        self.calls: list[tuple[Any, ...]] = []
        self.fail: Exception | None = None
        self.delay = 0.0
        self.latest_size: int | None = None  # serve an older latest checkpoint (rollback)

    def _tree(self) -> Tree:
        return self.tree or self.world.tree

    def checkpoint(self) -> bytes:
        self.calls.append(("checkpoint",))
        self._misbehave()
        t = self._tree()
        n = len(t.entries) if self.latest_size is None else self.latest_size
        return self.world.checkpoint(n, root=t.root(n))

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        self.calls.append(("consistency", size1, size2))
        self._misbehave()
        t = self._tree()
        limit = len(t.entries) if self.latest_size is None else self.latest_size
        if not 0 <= size1 <= size2 <= limit:
            raise NotFoundError(f"no consistency proof from {size1} to {size2}")
        return t.consistency(size1, size2)

    def _misbehave(self) -> None:
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("world"))


class Env:
    def __init__(self, world: World, tmp: Path) -> None:
        self.world = world
        self.tmp = tmp
        self.log = FakeLog(world)
        self.stderr = io.StringIO()
        self.alarm = Alarm(use_syslog=False, stream=self.stderr)
        self.journal_path = tmp / "journal.jsonl"
        self.journal = Journal(self.journal_path)
        self.now = float(NOW)
        self.open()

    def open(self, **kw: Any) -> None:
        self.store = HeadStore.open(self.tmp / "state")
        self.gate = VerifyingGate(
            self.world.policy(), self.store, self.log, self.journal, self.alarm, clock=lambda: self.now, **kw
        )

    def reopen(self, **kw: Any) -> None:
        self.store.close()
        self.open(**kw)

    def decide(self, request: ExecRequest) -> Decision:
        async def run() -> Decision:
            d = await self.gate.decide(request)
            await self.gate.wait_refresh()
            return d

        return asyncio.run(run())

    def run_new(self) -> tuple[Decision, ExecRequest]:
        """Log a fresh action and ask the gate about it."""
        action = self.world.action()
        request = self.world.request(self.world.bundle_text(action), action)
        return self.decide(request), request

    def records(self) -> list[dict[str, Any]]:
        return list(read_journal(self.journal_path))


@pytest.fixture
def env(world: World, tmp_path: Path) -> Env:
    e = Env(world, tmp_path)
    yield e  # type: ignore[misc]
    e.store.close()
    e.journal.close()


def test_allowed_stores_the_first_head_and_journals(env: Env) -> None:
    d, request = env.run_new()
    assert d.allowed, d.message
    assert d.index == len(env.world.tree.entries) - 1
    head = env.store.newest_head(ORIGIN)
    assert head is not None and head.size == len(env.world.tree.entries)
    assert env.store.spent_count() == 1
    # trust on first use: nothing to prove against before deciding; afterwards the background
    # refresh compares it with the log's latest checkpoint (the same one here)
    assert env.log.calls == [("checkpoint",)]
    (rec,) = env.records()
    assert rec["event"] == "allowed" and rec["index"] == d.index and rec["reason"] == "allowed"
    env.gate.record_exit(request, d, 3)
    assert env.records()[-1]["event"] == "exit" and env.records()[-1]["exit_status"] == 3
    assert "signal" not in env.records()[-1]


def test_exit_by_signal_is_journalled(env: Env) -> None:
    d, request = env.run_new()
    assert d.allowed, d.message
    env.gate.record_exit(request, d, None, signal="KILL")
    env.gate.record_exit(request, d, None)  # never completed: neither status nor signal
    killed, lost = env.records()[-2:]
    assert (killed["event"], killed["exit_status"], killed["signal"], killed["index"]) == (
        "exit",
        None,
        "KILL",
        d.index,
    )
    assert lost["event"] == "exit" and lost["exit_status"] is None and "signal" not in lost


def test_record_exit_never_raises(env: Env) -> None:
    d, request = env.run_new()
    env.journal.close()
    env.journal_path.unlink()
    env.journal_path.mkdir()  # the journal cannot be written any more
    env.gate.record_exit(request, d, None, signal="TERM")
    assert "cannot journal the exit status" in env.stderr.getvalue()


def test_newer_checkpoint_is_proven_consistent_and_becomes_the_head(env: Env) -> None:
    assert env.run_new()[0].allowed
    first = env.store.newest_head(ORIGIN)
    assert first is not None
    env.log.calls.clear()
    d, _ = env.run_new()
    assert d.allowed, d.message
    assert env.log.calls == [("consistency", first.size, first.size + 1)]
    head = env.store.newest_head(ORIGIN)
    assert head is not None and head.size == first.size + 1


def test_fast_path_needs_no_fetch_then_refreshes_in_background(env: Env) -> None:
    w = env.world
    a1, a2 = w.action(), w.action()
    b1 = w.log_entry(w.entry(a1))
    b2 = w.log_entry(w.entry(a2))
    from dataclasses import replace

    from gatekeeper.bundle import encode_bundle

    # both bundles under the same (latest) checkpoint
    b1 = replace(b1, proof=tuple(w.tree.inclusion(b1.index, b2.index + 1)), checkpoint=b2.checkpoint)
    env.gate.background_refresh = False
    assert env.decide(w.request(encode_bundle(b2), a2)).allowed
    env.log.calls.clear()
    env.gate.background_refresh = True
    w.log_entry(b"someone else's entry\n")  # the log moved on meanwhile
    d = env.decide(w.request(encode_bundle(b1), a1))
    assert d.allowed, d.message
    # no consistency fetch before deciding; the refresh afterwards moved the view forward
    assert env.log.calls[0] == ("checkpoint",)
    head = env.store.newest_head(ORIGIN)
    assert head is not None and head.size == len(w.tree.entries)


def test_replay_is_refused(env: Env) -> None:
    d, request = env.run_new()
    assert d.allowed
    again = env.decide(request)
    assert again.reason is Reason.REPLAY and again.exit_status == 219
    env.reopen()
    assert env.decide(request).reason is Reason.REPLAY  # durable
    assert env.records()[-1]["event"] == "refused" and env.records()[-1]["reason"] == "replay"


def test_older_consistent_checkpoint_is_allowed(env: Env) -> None:
    w = env.world
    action = w.action()
    old_text = w.bundle_text(action)  # logged now, handed to the host later
    assert env.run_new()[0].allowed  # another command moves the head forward
    head = env.store.newest_head(ORIGIN)
    assert head is not None
    env.log.calls.clear()
    d = env.decide(w.request(old_text, action))
    assert d.allowed, d.message
    assert ("consistency", head.size - 1, head.size) in env.log.calls
    newest = env.store.newest_head(ORIGIN)
    assert newest is not None and newest.size == head.size  # the head is not replaced
    assert [h.size for h in env.store.heads(ORIGIN)][-2:] == [head.size - 1, head.size]


def _forked_tree(world: World, common: int) -> Tree:
    t = Tree(list(world.tree.entries[:common]))
    t.append(b"the forked history's own entry\n")
    return t


def test_fork_halts_keeps_evidence_refuses_and_survives_restart(env: Env) -> None:
    w = env.world
    assert env.run_new()[0].allowed
    head = env.store.newest_head(ORIGIN)
    assert head is not None
    # a second history with the same key and origin: the common prefix, then other entries
    fork = _forked_tree(w, head.size - 1)
    action = w.action()
    from gatekeeper.bundle import Bundle, encode_bundle

    entry = w.entry(action)
    index = fork.append(entry)
    fork.append(b"padding\n")
    size = len(fork.entries)
    forked_cp = w.checkpoint(size, root=fork.root(size))
    bundle = encode_bundle(Bundle(entry, index, tuple(fork.inclusion(index, size)), forked_cp))
    env.log.tree = fork  # the log serves the forked view to this host
    d = env.decide(w.request(bundle, action))
    assert d.reason is Reason.FORK and d.exit_status == 222, d.message
    halt = env.store.halted()
    assert halt is not None and halt.kind == "fork"
    assert halt.known == head.note and halt.conflicting == forked_cp
    assert "ALARM fork" in env.stderr.getvalue()
    assert any(
        r["event"] == "halt" and r["conflicting_checkpoint"] == forked_cp.decode() for r in env.records()
    )
    # refuses everything afterwards, also after a restart
    env.log.tree = None
    assert env.run_new()[0].reason is Reason.HALTED
    env.reopen()
    d2, _ = env.run_new()
    assert d2.reason is Reason.HALTED and "unhalt --evidence-reviewed" in d2.message
    assert env.store.spent_count() == 1


def test_same_size_other_root_is_a_fork_without_fetching(env: Env) -> None:
    assert env.run_new()[0].allowed
    head = env.store.newest_head(ORIGIN)
    assert head is not None
    w = env.world
    action = w.action()
    entry = w.entry(action)
    fork = Tree(list(w.tree.entries[: head.size - 1]))
    index = fork.append(entry)
    from gatekeeper.bundle import Bundle, encode_bundle

    cp = w.checkpoint(head.size, root=fork.root())
    env.log.calls.clear()
    d = env.decide(
        w.request(encode_bundle(Bundle(entry, index, tuple(fork.inclusion(index, head.size)), cp)), action)
    )
    assert d.reason is Reason.FORK
    assert env.log.calls == []


def test_rollback_older_checkpoint_the_log_cannot_extend_halts(env: Env) -> None:
    w = env.world
    old_action = w.action()
    old_text = w.bundle_text(old_action)
    assert env.run_new()[0].allowed
    assert env.run_new()[0].allowed  # the host holds a head two entries further
    head = env.store.newest_head(ORIGIN)
    assert head is not None
    env.log.latest_size = head.size - 2  # the log was rolled back
    d = env.decide(w.request(old_text, old_action))
    assert d.reason is Reason.FORK, d.message
    halt = env.store.halted()
    assert halt is not None and halt.kind == "rollback" and halt.known == head.note


def test_refresh_detects_a_rollback_of_the_latest_checkpoint(env: Env) -> None:
    assert env.run_new()[0].allowed
    assert env.run_new()[0].allowed
    env.log.latest_size = len(env.world.tree.entries) - 1

    async def refresh() -> None:
        await env.gate.refresh()

    from gatekeeper.errors import LogMisbehaved

    with pytest.raises(LogMisbehaved):
        asyncio.run(refresh())
    halt = env.store.halted()
    assert halt is not None and halt.kind == "rollback"


@pytest.mark.parametrize(
    "failure", [UnavailableError("connection refused"), OSError("network is unreachable"), "slow"]
)
def test_log_unavailable_fails_closed(env: Env, failure: object) -> None:
    assert env.run_new()[0].allowed
    if failure == "slow":
        env.reopen(fetch_timeout=0.2)
        env.log.delay = 0.6  # the decision returns at 0.2 s; asyncio.run then waits for the thread
    else:
        assert isinstance(failure, Exception)
        env.log.fail = failure
    d, request = env.run_new()
    assert d.reason is Reason.LOG_UNAVAILABLE and d.exit_status == 223, d.message
    assert env.store.halted() is None and env.store.spent_count() == 1  # nothing spent
    env.log.fail, env.log.delay = None, 0.0
    assert env.decide(request).allowed  # the same action works once the log is back


def test_newer_checkpoint_the_log_cannot_prove_is_unavailable_not_a_fork(env: Env) -> None:
    assert env.run_new()[0].allowed
    env.log.latest_size = len(env.world.tree.entries)  # the log lags behind the bundle it signed
    d, _ = env.run_new()
    assert d.reason is Reason.LOG_UNAVAILABLE and env.store.halted() is None


def test_decide_never_raises(env: Env) -> None:
    env.store.close()  # any use of the store now fails
    d, _ = env.run_new()
    assert d.reason is Reason.INTERNAL and d.exit_status == 229
    assert "internal error" in env.stderr.getvalue()
    env.open()


def test_journal_failure_refuses_an_allowed_command(env: Env, tmp_path: Path) -> None:
    class Broken:
        def append(self, record: object) -> None:
            raise OSError("disk full")

    env.gate.journal = Broken()
    d, _ = env.run_new()
    assert d.reason is Reason.INTERNAL and "journal" in d.message


def test_unhalt_clears_and_commands_run_again(env: Env) -> None:
    env.store.record_halt(kind="fork", origin=ORIGIN, detail="test", known=b"a", conflicting=b"b", now=NOW)
    assert env.run_new()[0].reason is Reason.HALTED
    env.store.unhalt(who="tester", note="reviewed", now=NOW)
    assert env.run_new()[0].allowed


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_fork_alarm_posts_the_webhook(env: Env) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env.gate.alarm = Alarm(
            webhook=f"http://127.0.0.1:{server.server_port}/hook",
            use_syslog=False,
            stream=env.stderr,
            webhook_timeout=2,
        )
        assert env.run_new()[0].allowed
        head = env.store.newest_head(ORIGIN)
        assert head is not None
        w = env.world
        fork = _forked_tree(w, head.size - 1)
        action = w.action()
        from gatekeeper.bundle import Bundle, encode_bundle

        entry = w.entry(action)
        index = fork.append(entry)
        cp = w.checkpoint(len(fork.entries), root=fork.root())
        env.log.tree = fork
        d = env.decide(
            w.request(
                encode_bundle(Bundle(entry, index, tuple(fork.inclusion(index, index + 1)), cp)), action
            )
        )
        assert d.reason is Reason.FORK
        assert env.gate.alarm.wait(5)
        (payload,) = _Hook.received
        assert payload["event"] == "fork" and payload["details"]["conflicting_checkpoint"] == cp.decode()
    finally:
        server.shutdown()
        server.server_close()


def test_concurrent_uses_of_one_action_run_once(env: Env) -> None:
    assert env.run_new()[0].allowed
    w = env.world
    action = w.action()
    request = w.request(w.bundle_text(action), action)  # newer checkpoint: both await a proof

    async def both() -> list[Decision]:
        return list(await asyncio.gather(env.gate.decide(request), env.gate.decide(request)))

    reasons = sorted(d.reason.code for d in asyncio.run(both()))
    assert reasons == ["allowed", "replay"]


def test_concurrent_newer_checkpoints_reverify_against_the_moved_head(env: Env) -> None:
    assert env.run_new()[0].allowed
    head = env.store.newest_head(ORIGIN)
    assert head is not None
    w = env.world
    a1, a2 = w.action(), w.action()
    r1 = w.request(w.bundle_text(a1), a1)  # size head+1
    r2 = w.request(w.bundle_text(a2), a2)  # size head+2
    env.log.calls.clear()

    async def both() -> list[Decision]:
        return list(await asyncio.gather(env.gate.decide(r2), env.gate.decide(r1)))

    decisions = asyncio.run(both())
    assert all(d.allowed for d in decisions), [d.message for d in decisions]
    newest = env.store.newest_head(ORIGIN)
    assert newest is not None and newest.size == head.size + 2
    # whichever committed second was verified again against the head the first one stored
    assert [h.size for h in env.store.heads(ORIGIN)][-3:] == [head.size, head.size + 1, head.size + 2]
    # in either order, the smaller checkpoint was proven against the larger one stored first
    assert ("consistency", head.size + 1, head.size + 2) in env.log.calls, env.log.calls


def test_many_concurrent_newer_checkpoints_all_run(env: Env) -> None:
    """Head advancement is serialised: no valid command is refused because the head kept moving."""
    assert env.run_new()[0].allowed
    w = env.world
    requests = []
    for _ in range(30):
        action = w.action()
        requests.append(w.request(w.bundle_text(action), action))  # 30 different, growing checkpoints

    async def all_at_once() -> list[Decision]:
        return list(await asyncio.gather(*(env.gate.decide(r) for r in reversed(requests))))

    decisions = asyncio.run(all_at_once())
    assert [d.reason for d in decisions] == [Reason.ALLOWED] * 30, {d.message for d in decisions}
    newest = env.store.newest_head(ORIGIN)
    assert newest is not None and newest.size == len(w.tree.entries)
