"""Admission at the log: forged, altered, expired and unknown-signer actions are refused (403)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from keys import Key, keygen

from gatekeeper import action as A
from gatekeeper import sshsig
from gatekeeper.admission import DEFAULT_SKEW, ActionAdmission
from personality.errors import ConfigError, RefusedError

NOW = 1795938000  # 2026-11-29T07:40:00Z


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    d = tmp_path_factory.mktemp("keys")
    return {name: keygen(d, kind, name=name) for name, kind in [("alice", "ed25519"), ("mallory", "ed25519")]}


@pytest.fixture
def alice(keys: dict[str, Key]) -> Key:
    return keys["alice"]


@pytest.fixture
def mallory(keys: dict[str, Key]) -> Key:
    return keys["mallory"]


def entry_for(
    key: Key, *, signer: str | None = None, now: int = NOW, window: int = 300, reason: str = ""
) -> bytes:
    a = A.new_action(
        targets=["web-01"],
        account="deploy",
        command=b"systemctl restart nginx",
        signer=signer or key.public,
        now=now,
        window=window,
        reason=reason,
    )
    body = A.encode_action(a)
    return A.encode_entry(body, sshsig.sign_file(body, A.NAMESPACE, key.path))


@pytest.fixture
def signers_file(tmp_path: Path, alice: Key) -> Path:
    path = tmp_path / "allowed_signers"
    path.write_text(f'alice@example.com namespaces="action@gatekeeper" {alice.public}\n')
    return path


def test_valid_action_is_admitted(signers_file: Path, alice: Key) -> None:
    adm = ActionAdmission(signers_file, clock=Clock())
    adm.check(entry_for(alice))
    adm.check(entry_for(alice, now=NOW - 300 - DEFAULT_SKEW))  # just inside the skew


def test_forged_signature_is_refused(signers_file: Path, alice: Key, mallory: Key) -> None:
    """Mallory names Alice as signer but signs with her own key."""
    adm = ActionAdmission(signers_file, clock=Clock())
    with pytest.raises(RefusedError, match="signature refused: the action names signer .* but was signed by"):
        adm.check(entry_for(mallory, signer=alice.public))


def test_forged_signature_bytes_are_refused(signers_file: Path, alice: Key) -> None:
    entry = entry_for(alice)
    body, sig = entry.split(b"\n\n", 1)
    blob = bytearray(sshsig.dearmor(sig))
    blob[-5] ^= 0x01  # inside the Ed25519 signature value
    forged = body + b"\n\n" + sshsig.armor(bytes(blob))
    with pytest.raises(RefusedError, match="does not verify") as exc:
        ActionAdmission(signers_file, clock=Clock()).check(forged)
    assert exc.value.http_status == 403


def test_altered_action_is_refused(signers_file: Path, alice: Key) -> None:
    entry = entry_for(alice)
    altered = entry.replace(b"account deploy", b"account deplox")
    assert len(altered) == len(entry) and sum(a != b for a, b in zip(altered, entry, strict=True)) == 1
    with pytest.raises(RefusedError, match="altered"):
        ActionAdmission(signers_file, clock=Clock()).check(altered)


def test_expired_action_is_refused(signers_file: Path, alice: Key) -> None:
    entry = entry_for(alice, now=NOW - 300 - DEFAULT_SKEW - 1)
    with pytest.raises(RefusedError, match="expired at 2026-11-29T07:38:59Z"):
        ActionAdmission(signers_file, clock=Clock()).check(entry)


def test_far_future_action_is_refused(signers_file: Path, alice: Key) -> None:
    adm = ActionAdmission(signers_file, clock=Clock())
    adm.check(entry_for(alice, now=NOW + A.MAX_WINDOW))  # scheduled for tomorrow: fine
    with pytest.raises(RefusedError, match="check your clock"):
        adm.check(entry_for(alice, now=NOW + A.MAX_WINDOW + 1))


def test_unknown_signer_is_refused(signers_file: Path, mallory: Key) -> None:
    with pytest.raises(RefusedError, match="not listed in allowed_signers.*ask the log operator"):
        ActionAdmission(signers_file, clock=Clock()).check(entry_for(mallory))


def test_signer_outside_validity_or_namespace_is_refused(tmp_path: Path, alice: Key) -> None:
    path = tmp_path / "as"
    path.write_text(f'alice valid-before="20261129Z" {alice.public}\n')
    with pytest.raises(RefusedError, match="expired at 2026-11-29T00:00:00Z"):
        ActionAdmission(path, clock=Clock()).check(entry_for(alice))
    path.write_text(f'alice namespaces="git" {alice.public}\n')
    with pytest.raises(RefusedError, match="does not allow namespace"):
        ActionAdmission(path, clock=Clock()).check(entry_for(alice))


def test_malformed_entry_is_refused(signers_file: Path, alice: Key) -> None:
    adm = ActionAdmission(signers_file, clock=Clock())
    for bad in [b"", b"hello\n\nworld", entry_for(alice).replace(b"kind exec", b"kind k8s")]:
        with pytest.raises(RefusedError, match="not a valid gatekeeper/action/v1 entry"):
            adm.check(bad)


def test_reason_required_by_policy(signers_file: Path, alice: Key) -> None:
    adm = ActionAdmission(signers_file, clock=Clock(), require_reason=True)
    with pytest.raises(RefusedError, match="requires a reason"):
        adm.check(entry_for(alice))
    adm.check(entry_for(alice, reason="INC-1234"))


def _touch_later(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_reload_after_edit(signers_file: Path, alice: Key, mallory: Key) -> None:
    adm = ActionAdmission(signers_file, clock=Clock())
    mallory_entry = entry_for(mallory)
    with pytest.raises(RefusedError):
        adm.check(mallory_entry)
    assert adm.reloads == 1
    # the operator adds mallory (rewrite in place)
    signers_file.write_text(signers_file.read_text() + f"mallory {mallory.public}\n")
    _touch_later(signers_file)
    adm.check(mallory_entry)
    assert adm.reloads == 2
    adm.check(mallory_entry)
    assert adm.reloads == 2  # unchanged file: not re-read
    # ... and revokes alice by atomically replacing the file (new inode)
    new = signers_file.with_suffix(".new")
    new.write_text(f"mallory {mallory.public}\n")
    os.replace(new, signers_file)
    with pytest.raises(RefusedError, match="not listed"):
        adm.check(entry_for(alice))


def test_broken_file_refuses_everything_until_fixed(signers_file: Path, alice: Key) -> None:
    adm = ActionAdmission(signers_file, clock=Clock())
    good = signers_file.read_text()
    entry = entry_for(alice)
    signers_file.write_text(good + "bob ssh-ed25519 AAAA-broken\n")
    _touch_later(signers_file)
    with pytest.raises(ConfigError, match="unusable.*:2:") as exc:
        adm.check(entry)
    assert exc.value.http_status == 500
    signers_file.unlink()
    with pytest.raises(ConfigError, match="cannot read"):
        adm.check(entry)
    signers_file.write_text(good)
    adm.check(entry)


def test_construction_fails_on_unusable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        ActionAdmission(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.write_text("# nobody\n")
    with pytest.raises(ConfigError, match="lists no keys"):
        ActionAdmission(empty)


def test_log_refuses_through_admission(signers_file: Path, alice: Key, mallory: Key) -> None:
    """Wired into the personality's Log: admitted entries get an index, refused ones a 403."""
    from personality.log import Log
    from personality.storage.memory import MemorySequencingStore, MemoryTileStore
    from personality.tlog.note import generate_signer

    async def run() -> None:
        log = Log(
            MemorySequencingStore(),
            MemoryTileStore(),
            generate_signer("log.example"),
            admission=ActionAdmission(signers_file),
        )
        await log.start()
        try:
            import time

            now = int(time.time())
            result = await log.add(entry_for(alice, now=now))
            assert result.index == 0
            with pytest.raises(RefusedError):
                await log.add(entry_for(mallory, now=now))
        finally:
            await log.close()

    asyncio.run(run())
