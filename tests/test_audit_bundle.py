"""Offline proof bundles: built from the index, verified with nothing but the log key; every
one-byte change fails; anchored at the auditor's trusted checkpoint; refused across a fork."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gatekeeper.audit import proofs
from gatekeeper.audit.index import AuditIndex
from gatekeeper.audit.sync import sync
from gatekeeper.errors import ActionFormatError, ConfigError, GatekeeperError, LogMisbehaved
from gatekeeper.monitor.alerts import ListSink
from gatekeeper.monitor.scan import DirectorySource
from gatekeeper.monitor.testing import synthetic_entries, write_static_log
from personality.tlog.note import Signer, generate_signer

ORIGIN = "example.com/audit-bundle"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("bundle")
    key = generate_signer(ORIGIN)
    entries, _ = synthetic_entries(700, workers=1)
    log = tmp / "log"
    trusted = write_static_log(log, entries[:300], key)  # the auditor saw the log at size 300
    idx = AuditIndex.open(tmp / "audit.db", ORIGIN)
    assert (
        sync(idx, DirectorySource(log), [key.verifier()], ListSink(), workers=1, progress=False).status
        == "ok"
    )
    write_static_log(log, entries, key)
    assert (
        sync(idx, DirectorySource(log), [key.verifier()], ListSink(), workers=1, progress=False).status
        == "ok"
    )
    idx.close()
    return {
        "tmp": tmp,
        "key": key,
        "entries": entries,
        "log": log,
        "trusted": trusted,
        "db": tmp / "audit.db",
    }


def build(world: dict[str, object], n: int, trusted: bytes | None = None) -> bytes:
    key = world["key"]
    assert isinstance(key, Signer)
    with AuditIndex.open(world["db"], create=False) as idx:  # type: ignore[arg-type]
        return proofs.encode(proofs.build_bundle(idx, n, [key.verifier()], trusted))


def test_bundle_verifies_with_the_log_stopped(world: dict[str, object]) -> None:
    key = world["key"]
    assert isinstance(key, Signer)
    data = build(world, 500, world["trusted"])  # type: ignore[arg-type]
    shutil.rmtree(world["log"])  # type: ignore[arg-type]  # no log any more: verification is offline
    v = proofs.verify_bundle(data, [key.verifier()], trusted=world["trusted"])  # type: ignore[arg-type]
    assert v.index == 500 and v.entry == world["entries"][500]  # type: ignore[index]
    assert v.checkpoint.size == 700 and v.anchor.size == 300
    assert v.signed is not None and v.action_problem == ""


def test_inclusion_directly_under_the_trusted_checkpoint(world: dict[str, object]) -> None:
    key = world["key"]
    assert isinstance(key, Signer)
    data = build(world, 42, world["trusted"])  # type: ignore[arg-type]
    assert b'"consistency":[]' in data
    v = proofs.verify_bundle(data, [key.verifier()], trusted=world["trusted"])  # type: ignore[arg-type]
    assert v.checkpoint.size == v.anchor.size == 300


def test_without_a_trusted_checkpoint(world: dict[str, object]) -> None:
    key = world["key"]
    assert isinstance(key, Signer)
    v = proofs.verify_bundle(build(world, 699), [key.verifier()])
    assert v.checkpoint.size == 700 and v.anchor.size == 700
    with pytest.raises(LogMisbehaved, match="trusted"):
        proofs.verify_bundle(build(world, 699), [key.verifier()], trusted=world["trusted"])  # type: ignore[arg-type]


def test_every_one_byte_change_fails(world: dict[str, object]) -> None:
    key = world["key"]
    assert isinstance(key, Signer)
    data = build(world, 650, world["trusted"])  # type: ignore[arg-type]
    verifiers = [key.verifier()]
    proofs.verify_bundle(data, verifiers, trusted=world["trusted"])  # type: ignore[arg-type]
    survivors = []
    for i in range(len(data)):
        for delta in (1, 0x20):
            mutated = data[:i] + bytes([data[i] ^ delta]) + data[i + 1 :]
            try:
                v = proofs.verify_bundle(mutated, verifiers, trusted=world["trusted"])  # type: ignore[arg-type]
            except GatekeeperError:
                continue
            if v.signed is not None:  # a bundle whose action no longer verifies is a failure too
                survivors.append((i, delta))
    assert survivors == []


def test_wrong_key_and_fork(world: dict[str, object], tmp_path: Path) -> None:
    key = world["key"]
    assert isinstance(key, Signer)
    data = build(world, 10)
    with pytest.raises(LogMisbehaved):
        proofs.verify_bundle(data, [generate_signer(ORIGIN).verifier()])
    # an auditor whose trusted checkpoint is from another history gets no bundle
    entries = world["entries"]
    assert isinstance(entries, list)
    forked = write_static_log(tmp_path / "fork", entries[300:600], key)
    with AuditIndex.open(world["db"], create=False) as idx:  # type: ignore[arg-type]
        with pytest.raises(LogMisbehaved, match="fork"):
            proofs.build_bundle(idx, 10, [key.verifier()], forked)
        newer = write_static_log(tmp_path / "newer", entries + entries[:5], key)
        with pytest.raises(ConfigError, match="sync first"):
            proofs.build_bundle(idx, 10, [key.verifier()], newer)


def test_malformed_bundles(world: dict[str, object]) -> None:
    key = world["key"]
    assert isinstance(key, Signer)
    data = build(world, 1)
    spaced = data.replace(b'","', b'", "', 1)
    for bad, needle in (
        (b"{}", "exactly"),
        (b"\xff", "ASCII JSON"),
        (spaced, "canonical"),
        (data.replace(b"audit-proof/v1", b"audit-proof/v2"), "format"),
        (b"x" * (proofs.MAX_BUNDLE_SIZE + 1), "larger"),
    ):
        with pytest.raises(ActionFormatError, match=needle):
            proofs.verify_bundle(bad, [key.verifier()])
