"""VerifyingGate against real log services (``gk log serve`` subprocesses on 127.0.0.1): the allowed
path, replay, a forked log (a second log with the same key and origin but other entries), a
rolled-back log, a stopped log, a forged checkpoint signature, and unhalting."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import LogServer, init_log
from test_verify_support import World, make_world

from gatekeeper.bundle import Bundle, encode_bundle
from gatekeeper.cli import main
from gatekeeper.gate import Decision, ExecRequest, Reason
from gatekeeper.journal import Journal, read_journal
from gatekeeper.verify.alarm import Alarm
from gatekeeper.verify.gate import VerifyingGate
from gatekeeper.verify.headstore import HeadStore
from gatekeeper.verify.policy import HostPolicy
from personality.client import ConsistencyFetcher, LogClient
from personality.tlog.note import generate_signer, parse_note, parse_vkey, sign_note

ORIGIN = "test.example/forkable"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[Callable[..., list[LogServer]]]:
    """``start(*names)``: fresh logs with origin ORIGIN. With several names they are twins: one
    ``gk log init``, copied before any entry, so they share the signing key, the origin and the
    empty beginning — two histories under one identity once they are fed different entries."""
    servers: list[LogServer] = []

    def start(*names: str) -> list[LogServer]:
        first = tmp_path / names[0]
        init_log(first, ORIGIN)
        for name in names[1:]:
            shutil.copytree(first, tmp_path / name)
        started = [LogServer(tmp_path / n, ORIGIN, ("--accept-any",), "127.0.0.1:0") for n in names]
        servers.extend(started)
        return [s.start() for s in started]

    yield start
    for s in servers:
        s.stop()


class Host:
    """A host's verification state (store + journal) and a gate talking to one log URL."""

    def __init__(self, world: World, tmp: Path, log: LogServer, on_loop: bool = False) -> None:
        self.world = world
        self.on_loop = on_loop  # consistency proofs fetched on the event loop (as the agent does)
        self.tmp = tmp
        self.policy = HostPolicy(host_name="web-01", log_origin=ORIGIN, log_verifiers=(parse_vkey(log.vkey),))
        self.stderr = io.StringIO()
        self.journal = Journal(tmp / "state" / "journal.jsonl")
        self.store = HeadStore.open(tmp / "state")
        self.connect(log)

    def connect(self, log: LogServer) -> None:
        """Point the gate at ``log`` (what the host sees when the log operator swaps histories)."""
        self.gate = VerifyingGate(
            self.policy,
            self.store,
            LogClient.http(log.url, timeout=(2.0, 2.0)),
            self.journal,
            Alarm(use_syslog=False, stream=self.stderr),
            fetch_timeout=2.0,
            proof_fetcher=ConsistencyFetcher(log.url, timeout=2.0) if self.on_loop else None,
        )

    def reopen(self, log: LogServer) -> None:
        self.store.close()
        self.store = HeadStore.open(self.tmp / "state")
        self.connect(log)

    def decide(self, request: ExecRequest) -> Decision:
        async def run() -> Decision:
            d = await self.gate.decide(request)
            await self.gate.wait_refresh()
            if isinstance(self.gate.proof_fetcher, ConsistencyFetcher):
                await self.gate.proof_fetcher.aclose()  # later decisions: one connection per proof
            return d

        return asyncio.run(run())

    def close(self) -> None:
        self.store.close()
        self.journal.close()


@pytest.fixture(params=[False, True], ids=["proofs-in-thread", "proofs-on-loop"])
def host_factory(
    world: World, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[LogServer], Host]]:
    hosts: list[Host] = []

    def make(log: LogServer) -> Host:
        h = Host(world, tmp_path / f"host{len(hosts)}", log, on_loop=request.param)
        hosts.append(h)
        return h

    yield make
    for h in hosts:
        h.close()


def fill(log: LogServer, *entries: bytes) -> None:
    client = LogClient.http(log.url)
    for e in entries:
        client.add(e)


def submit(world: World, log: LogServer) -> ExecRequest:
    """Sign a fresh action, add it to ``log`` and return the request carrying its bundle."""
    now = int(time.time())
    action = world.action(not_before=now - 10, not_after=now + 300)
    entry = world.entry(action)
    r = LogClient.http(log.url).add(entry)
    assert r.checkpoint is not None and r.inclusion_proof is not None
    bundle = Bundle(entry, r.index, r.inclusion_proof, r.checkpoint)
    return world.request(encode_bundle(bundle), action)


FILLERS = [b"filler entry %d\n" % i for i in range(8)]


def test_allowed_replay_and_the_head_moving_forward(
    world: World, logs: Callable[..., list[LogServer]], host_factory: Callable[[LogServer], Host]
) -> None:
    (log,) = logs("a")
    fill(log, *FILLERS[:3])
    host = host_factory(log)
    r1 = submit(world, log)
    d1 = host.decide(r1)
    assert d1.allowed, d1.message
    assert d1.index == 3
    host.gate.record_exit(r1, d1, 0)
    head = host.store.newest_head(ORIGIN)
    assert head is not None and head.size == 4
    assert host.decide(r1).reason is Reason.REPLAY
    fill(log, *FILLERS[3:5])
    r2 = submit(world, log)
    d2 = host.decide(r2)
    assert d2.allowed, d2.message
    head = host.store.newest_head(ORIGIN)
    assert head is not None and head.size == 7  # proven consistent with size 4 by the log
    events = [(r["event"], r["reason"], r.get("exit_status")) for r in read_journal(host.journal.path)]
    assert events == [
        ("allowed", "allowed", None),
        ("exit", "allowed", 0),
        ("refused", "replay", 219),
        ("allowed", "allowed", None),
    ]


def test_forked_log_halts_keeps_evidence_and_stays_halted(
    world: World,
    logs: Callable[..., list[LogServer]],
    host_factory: Callable[[LogServer], Host],
    capsys: pytest.CaptureFixture[str],
) -> None:
    honest, forked = logs("honest", "forked")
    fill(honest, *FILLERS[:2])
    host = host_factory(honest)
    assert host.decide(submit(world, honest)).allowed
    held = host.store.newest_head(ORIGIN)
    assert held is not None and held.size == 3
    # the same identity (key and origin) serving another history
    fill(forked, b"a different past\n", *FILLERS[2:6])
    request = submit(world, forked)
    host.connect(forked)
    d = host.decide(request)
    assert d.reason is Reason.FORK and d.exit_status == 222, d.message
    halt = host.store.halted()
    assert halt is not None and halt.kind == "fork"
    assert halt.known == held.note  # both checkpoints, verbatim
    assert halt.conflicting == parse_bundle_checkpoint(request)
    assert "ALARM fork" in host.stderr.getvalue()
    # refuses everything afterwards, from either log, and after a restart
    host.connect(honest)
    assert host.decide(submit(world, honest)).reason is Reason.HALTED
    host.reopen(honest)
    refused = host.decide(submit(world, honest))
    assert refused.reason is Reason.HALTED and refused.exit_status == 224
    state = str(host.tmp / "state")
    assert main(["agent", "status", "--state-dir", state]) == 1
    assert "halted: YES" in capsys.readouterr().out
    # unhalting is an explicit, journalled act; the evidence stays
    assert main(["agent", "unhalt", "--state-dir", state, "--evidence-reviewed", "--note", "test"]) == 0
    capsys.readouterr()
    assert host.store.halted() is None and len(host.store.halts()) == 1
    assert [r for r in read_journal(host.journal.path) if r["event"] == "unhalt"][0]["note"] == "test"
    assert host.decide(submit(world, honest)).allowed  # the honest history is still consistent
    host.connect(forked)
    assert host.decide(submit(world, forked)).reason is Reason.FORK  # and the fork halts again


def parse_bundle_checkpoint(request: ExecRequest) -> bytes:
    from gatekeeper.bundle import parse_bundle

    assert request.bundle is not None
    return parse_bundle(request.bundle).checkpoint


def test_rolled_back_log_halts(
    world: World, logs: Callable[..., list[LogServer]], host_factory: Callable[[LogServer], Host]
) -> None:
    log, restored = logs("a", "restored")
    fill(log, *FILLERS[:5])
    host = host_factory(log)
    assert host.decide(submit(world, log)).allowed
    held = host.store.newest_head(ORIGIN)
    assert held is not None and held.size == 6
    # the same log restored from an old backup: the first 3 entries, then new ones
    fill(restored, *FILLERS[:3])
    request = submit(world, restored)  # a checkpoint of size 4, smaller than the stored head
    host.connect(restored)
    d = host.decide(request)
    assert d.reason is Reason.FORK, d.message
    halt = host.store.halted()
    assert halt is not None and halt.kind == "rollback" and halt.known == held.note
    assert b"\n4\n" in halt.conflicting  # the log's latest checkpoint, size 4, signed


def test_refresh_detects_a_smaller_latest_checkpoint(
    world: World, logs: Callable[..., list[LogServer]], host_factory: Callable[[LogServer], Host]
) -> None:
    log, restored = logs("a", "restored")
    fill(log, *FILLERS[:4])
    host = host_factory(log)
    assert host.decide(submit(world, log)).allowed
    fill(restored, *FILLERS[:2])
    host.connect(restored)
    from gatekeeper.errors import LogMisbehaved

    async def refresh() -> None:
        await host.gate.refresh()

    with pytest.raises(LogMisbehaved):
        asyncio.run(refresh())
    halt = host.store.halted()
    assert halt is not None and halt.kind == "rollback"


def test_stopped_log_is_unavailable_and_nothing_is_spent(
    world: World, logs: Callable[..., list[LogServer]], host_factory: Callable[[LogServer], Host]
) -> None:
    (log,) = logs("a")
    host = host_factory(log)
    assert host.decide(submit(world, log)).allowed
    request = submit(world, log)  # a newer checkpoint: its consistency must be fetched
    log.stop()
    d = host.decide(request)
    assert d.reason is Reason.LOG_UNAVAILABLE and d.exit_status == 223, d.message
    assert host.store.halted() is None and host.store.spent_count() == 1
    log.start()  # back (maybe on another port)
    host.connect(log)
    assert host.decide(request).allowed


def test_forged_checkpoint_signature(
    world: World, logs: Callable[..., list[LogServer]], host_factory: Callable[[LogServer], Host]
) -> None:
    (log,) = logs("a")
    host = host_factory(log)
    request = submit(world, log)
    assert request.bundle is not None
    from gatekeeper.bundle import parse_bundle

    b = parse_bundle(request.bundle)
    note = parse_note(b.checkpoint)
    impostor = sign_note(note.body, [generate_signer(ORIGIN)])  # same name, another key
    sig = note.signatures[0]
    tampered = dataclasses.replace(sig, signature=bytes([sig.signature[0] ^ 1]) + sig.signature[1:])
    from personality.tlog.note import Note, format_note

    for forged in (impostor, format_note(Note(note.body, (tampered,)))):
        forged_request = dataclasses.replace(
            request, bundle=encode_bundle(dataclasses.replace(b, checkpoint=forged))
        )
        d = host.decide(forged_request)
        assert d.reason is Reason.BAD_CHECKPOINT and d.exit_status == 221, d.message
    assert host.store.newest_head(ORIGIN) is None and host.store.spent_count() == 0
    assert host.decide(request).allowed  # the genuine bundle still works
