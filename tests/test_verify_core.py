"""The pure verification core: one test per refusal reason, with real keys, real SSHSIG signatures,
real signed checkpoints and real inclusion proofs; and properties over one-byte changes."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_verify_support import HOST, HOST_FP, NOW, ORIGIN, World, examples, fake_fingerprint, make_world

from gatekeeper import sshsig
from gatekeeper.action import NAMESPACE, Target, encode_action, encode_entry
from gatekeeper.bundle import encode_bundle, parse_bundle
from gatekeeper.gate import Decision, Reason
from gatekeeper.verify.core import Verified, check_static
from gatekeeper.verify.policy import WitnessPolicy
from personality.tlog.cosig import generate_cosigner
from personality.tlog.merkle import leaf_hash
from personality.tlog.note import Note, NoteSignature, format_note, generate_signer, parse_note, sign_note


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("world"))


def refused(result: Verified | Decision, reason: Reason) -> Decision:
    assert isinstance(result, Decision), f"expected {reason}, got Verified"
    assert result.reason is reason, result.message
    assert not result.allowed
    assert result.message.startswith(f"gk: refused ({reason.code}): ")
    assert "\n" not in result.message
    return result


def test_allowed(world: World) -> None:
    action = world.action()
    text = world.bundle_text(action)
    v = check_static(world.request(text, action), world.policy(), NOW)
    assert isinstance(v, Verified)
    assert v.action == action and v.nonce == action.nonce
    assert v.index == len(world.tree.entries) - 1
    assert v.checkpoint.size == len(world.tree.entries) and v.checkpoint.origin == ORIGIN
    assert v.leaf_hash == leaf_hash(parse_bundle(text).entry)
    assert v.fingerprint == sshsig.fingerprint(world.user.public)
    assert v.expires_at == action.not_after + 60


def test_auth_key_comment_does_not_matter(world: World) -> None:
    action = world.action()
    text = world.bundle_text(action)
    key = " ".join(world.user.public.split()[:2]) + " some other comment"
    assert isinstance(check_static(world.request(text, action, auth_key=key), world.policy(), NOW), Verified)


@pytest.mark.parametrize("bundle", [None, "", "  "])
def test_no_bundle(world: World, bundle: str | None) -> None:
    d = refused(check_static(world.request(bundle), world.policy(), NOW), Reason.NO_BUNDLE)
    assert d.key_fingerprint == sshsig.fingerprint(world.user.public)


@pytest.mark.parametrize("text", ["not base64!", base64.b64encode(b"hello").decode(), "A" * 300_000])
def test_malformed_bundle(world: World, text: str) -> None:
    refused(check_static(world.request(text), world.policy(), NOW), Reason.MALFORMED_BUNDLE)


def test_bad_signature(world: World) -> None:
    action = world.action()
    body = encode_action(action)
    sig = sshsig.sign_file(body + b"x", NAMESPACE, world.user.path)  # a signature over other bytes
    text = encode_bundle(world.log_entry(encode_entry(body, sig)))
    d = refused(check_static(world.request(text, action), world.policy(), NOW), Reason.BAD_SIGNATURE)
    assert d.index == len(world.tree.entries) - 1


def test_wrong_namespace_is_a_bad_signature(world: World) -> None:
    action = world.action()
    body = encode_action(action)
    sig = sshsig.sign_file(body, "file", world.user.path)
    text = encode_bundle(world.log_entry(encode_entry(body, sig)))
    refused(check_static(world.request(text, action), world.policy(), NOW), Reason.BAD_SIGNATURE)


def test_signed_by_another_key_than_the_signer_field(world: World) -> None:
    action = world.action()  # names the user as signer
    text = world.bundle_text(action, key=world.other)  # but the other key signs it
    refused(check_static(world.request(text, action), world.policy(), NOW), Reason.KEY_MISMATCH)


def test_session_key_differs_from_signer(world: World) -> None:
    action = world.action(key=world.other)
    text = world.bundle_text(action, key=world.other)  # a valid action by "other"...
    d = refused(check_static(world.request(text, action), world.policy(), NOW), Reason.KEY_MISMATCH)
    assert sshsig.fingerprint(world.other.public) in d.message  # ...used by the user's session
    refused(
        check_static(world.request(text, action, auth_key="garbage"), world.policy(), NOW),
        Reason.KEY_MISMATCH,
    )


def test_wrong_host(world: World) -> None:
    action = world.action(targets=(Target("db-01"), Target("web-02")))
    text = world.bundle_text(action)
    d = refused(check_static(world.request(text, action), world.policy(), NOW), Reason.WRONG_HOST)
    assert "db-01" in d.message and HOST in d.message


def test_host_key_pin(world: World) -> None:
    pinned = world.action(targets=(Target(HOST, HOST_FP),))
    text = world.bundle_text(pinned)
    assert isinstance(check_static(world.request(text, pinned), world.policy(), NOW), Verified)
    other = world.action(targets=(Target(HOST, fake_fingerprint(b"another host key")),))
    text = world.bundle_text(other)
    refused(check_static(world.request(text, other), world.policy(), NOW), Reason.WRONG_HOST)
    text = world.bundle_text(pinned)
    unknown = world.policy(host_key_fingerprint=None)
    refused(check_static(world.request(text, pinned), unknown, NOW), Reason.WRONG_HOST)


def test_one_of_several_hosts(world: World) -> None:
    action = world.action(targets=(Target("db-01"), Target(HOST), Target("zz-99")))
    text = world.bundle_text(action)
    assert isinstance(check_static(world.request(text, action), world.policy(), NOW), Verified)


def test_wrong_account(world: World) -> None:
    action = world.action()
    text = world.bundle_text(action)
    refused(
        check_static(world.request(text, action, account="root"), world.policy(), NOW), Reason.WRONG_ACCOUNT
    )


def test_account_not_allowed_by_policy(world: World) -> None:
    action = world.action()
    text = world.bundle_text(action)
    policy = world.policy(allowed_accounts=frozenset({"backup"}))
    refused(check_static(world.request(text, action), policy, NOW), Reason.POLICY)


def test_command_mismatch(world: World) -> None:
    action = world.action()
    text = world.bundle_text(action)
    for command in (b"echo hello ", b"echo hellp", b"echo hello; rm -rf /", b""):
        refused(
            check_static(world.request(text, action, command=command), world.policy(), NOW),
            Reason.COMMAND_MISMATCH,
        )


def test_window_with_skew(world: World) -> None:
    action = world.action(not_before=NOW + 100, not_after=NOW + 400)
    text = world.bundle_text(action)
    req = world.request(text, action)
    policy = world.policy(max_clock_skew=60)
    refused(check_static(req, policy, NOW + 39), Reason.NOT_YET_VALID)
    assert isinstance(check_static(req, policy, NOW + 40), Verified)  # within the skew
    assert isinstance(check_static(req, policy, NOW + 460), Verified)
    d = refused(check_static(req, policy, NOW + 461), Reason.EXPIRED)
    assert "expired at" in d.message


def test_window_longer_than_policy(world: World) -> None:
    action = world.action()
    text = world.bundle_text(action)
    refused(check_static(world.request(text, action), world.policy(max_window=299), NOW), Reason.POLICY)


def test_checkpoint_signed_by_another_key(world: World) -> None:
    action = world.action()
    b = world.log_entry(world.entry(action))
    forged = world.checkpoint(signers=[generate_signer(ORIGIN)])  # same name, other key
    text = encode_bundle(dataclasses.replace(b, checkpoint=forged))
    refused(check_static(world.request(text, action), world.policy(), NOW), Reason.BAD_CHECKPOINT)


def test_checkpoint_with_a_forged_signature(world: World) -> None:
    action = world.action()
    b = world.log_entry(world.entry(action))
    note = parse_note(b.checkpoint)
    bad = dataclasses.replace(note.signatures[0], signature=bytes(64))
    text = encode_bundle(dataclasses.replace(b, checkpoint=format_note(Note(note.body, (bad,)))))
    refused(check_static(world.request(text, action), world.policy(), NOW), Reason.BAD_CHECKPOINT)


def test_checkpoint_for_another_origin(world: World) -> None:
    action = world.action()
    b = world.log_entry(world.entry(action))
    body = parse_note(b.checkpoint).body.replace(ORIGIN.encode(), b"other.example/log")
    text = encode_bundle(dataclasses.replace(b, checkpoint=sign_note(body, [world.log_signer])))
    d = refused(check_static(world.request(text, action), world.policy(), NOW), Reason.BAD_CHECKPOINT)
    assert "other.example/log" in d.message


def test_witness_quorum(world: World) -> None:
    w1, w2, w3 = (generate_cosigner(f"witness-{i}") for i in range(3))
    policy = world.policy(witnesses=WitnessPolicy(2, (w1.verifier(), w2.verifier(), w3.verifier())))
    action = world.action()
    b = world.log_entry(world.entry(action))
    body = parse_note(b.checkpoint).body

    def with_cosigs(*cosigners: object) -> str:
        sigs = [world.log_signer] + [_AtTime(c, NOW) for c in cosigners]
        return encode_bundle(dataclasses.replace(b, checkpoint=sign_note(body, sigs)))

    refused(check_static(world.request(with_cosigs(), action), policy, NOW), Reason.WITNESS_QUORUM)
    refused(check_static(world.request(with_cosigs(w1), action), policy, NOW), Reason.WITNESS_QUORUM)
    unknown = generate_cosigner("witness-9")
    refused(check_static(world.request(with_cosigs(w1, unknown), action), policy, NOW), Reason.WITNESS_QUORUM)
    assert isinstance(check_static(world.request(with_cosigs(w1, w3), action), policy, NOW), Verified)
    # an unknown witness with a configured name (other key) is ignored, not counted
    stranger = _AtTime(generate_cosigner("witness-1"), NOW)
    text = encode_bundle(dataclasses.replace(b, checkpoint=sign_note(body, [world.log_signer, stranger])))
    refused(check_static(world.request(text, action), policy, NOW), Reason.WITNESS_QUORUM)
    # a bad cosignature by a configured witness rejects the checkpoint, even with a quorum besides
    good = sign_note(body, [world.log_signer, _AtTime(w1, NOW), _AtTime(w2, NOW)])
    note = parse_note(good)
    broken = NoteSignature(w3.name, w3.key_id, NOW.to_bytes(8, "big") + bytes(64))
    text = encode_bundle(
        dataclasses.replace(b, checkpoint=format_note(Note(body, (*note.signatures, broken))))
    )
    d = refused(check_static(world.request(text, action), policy, NOW), Reason.WITNESS_QUORUM)
    assert "witness-2" in d.message


class _AtTime:
    """A cosigner as a NoteSigner, at a fixed timestamp."""

    def __init__(self, cosigner: object, timestamp: int) -> None:
        self._c = cosigner
        self._t = timestamp

    @property
    def name(self) -> str:
        return self._c.name  # type: ignore[attr-defined,no-any-return]

    @property
    def key_id(self) -> bytes:
        return self._c.key_id  # type: ignore[attr-defined,no-any-return]

    def sign(self, body: bytes):  # type: ignore[no-untyped-def]
        return self._c.cosign(body, self._t)  # type: ignore[attr-defined]


def test_bad_inclusion(world: World) -> None:
    action = world.action()
    b = world.log_entry(world.entry(action))
    wrong_index = dataclasses.replace(b, index=b.index - 1)
    refused(
        check_static(world.request(encode_bundle(wrong_index), action), world.policy(), NOW),
        Reason.BAD_INCLUSION,
    )
    beyond = dataclasses.replace(b, index=b.index + 5)
    refused(
        check_static(world.request(encode_bundle(beyond), action), world.policy(), NOW), Reason.BAD_INCLUSION
    )
    bad_hash = dataclasses.replace(b, proof=(bytes(32),) + b.proof[1:])
    refused(
        check_static(world.request(encode_bundle(bad_hash), action), world.policy(), NOW),
        Reason.BAD_INCLUSION,
    )
    # a validly signed checkpoint of an older tree that does not contain the entry
    old = dataclasses.replace(b, checkpoint=world.checkpoint(b.index), proof=())
    refused(
        check_static(world.request(encode_bundle(old), action), world.policy(), NOW), Reason.BAD_INCLUSION
    )


def test_check_order_first_failure_decides(world: World) -> None:
    """An expired action for another host and account: the host check comes first."""
    action = world.action(
        targets=(Target("db-01"),), account="root", not_before=NOW - 1000, not_after=NOW - 900
    )
    text = world.bundle_text(action)
    refused(check_static(world.request(text, action), world.policy(), NOW), Reason.WRONG_HOST)


# -- properties: any one-byte change is refused ---------------------------------------------------


@pytest.fixture(scope="module")
def good(world: World) -> tuple[World, str, bytes]:
    action = world.action()
    text = world.bundle_text(action)
    assert isinstance(check_static(world.request(text, action), world.policy(), NOW), Verified)
    return world, text, action.command


@settings(
    max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_one_byte_change_to_the_bundle_is_refused(
    good: tuple[World, str, bytes], data: st.DataObject
) -> None:
    world, text, command = good
    raw = bytearray(base64.b64decode(text))
    pos = data.draw(st.integers(0, len(raw) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda v: v != raw[pos]))
    raw[pos] = value
    mutated = base64.b64encode(bytes(raw)).decode()
    result = check_static(world.request(mutated, command=command), world.policy(), NOW)
    assert isinstance(result, Decision) and not result.allowed


@settings(
    max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_one_character_change_to_the_bundle_text_is_refused(
    good: tuple[World, str, bytes], data: st.DataObject
) -> None:
    world, text, command = good
    pos = data.draw(st.integers(0, len(text) - 1))
    ch = data.draw(st.characters(codec="ascii").filter(lambda c: c != text[pos]))
    mutated = text[:pos] + ch + text[pos + 1 :]
    result = check_static(world.request(mutated, command=command), world.policy(), NOW)
    assert isinstance(result, Decision) and not result.allowed


@settings(
    max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_one_byte_change_to_the_command_is_refused(
    good: tuple[World, str, bytes], data: st.DataObject
) -> None:
    world, text, command = good
    cmd = bytearray(command)
    op = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    pos = data.draw(st.integers(0, len(cmd) - 1))
    if op == "replace":
        cmd[pos] = data.draw(st.integers(0, 255).filter(lambda v: v != command[pos]))
    elif op == "insert":
        cmd.insert(pos, data.draw(st.integers(0, 255)))
    else:
        del cmd[pos]
    result = check_static(world.request(text, command=bytes(cmd)), world.policy(), NOW)
    assert isinstance(result, Decision) and result.reason is Reason.COMMAND_MISMATCH


def test_checkpoint_cache_is_per_policy(world: World) -> None:
    from gatekeeper.verify.core import CheckpointCache

    action = world.action()
    text = world.bundle_text(action)
    policy = world.policy()
    cache = CheckpointCache(policy)
    first = check_static(world.request(text, action), policy, NOW, cache)
    again = check_static(world.request(text, action), policy, NOW, cache)  # a hit
    assert isinstance(first, Verified) and isinstance(again, Verified)
    assert again.checkpoint == first.checkpoint
    # another policy (another log key) must not trust what the first one verified
    other = world.policy(log_verifiers=(generate_signer(ORIGIN).verifier(),))
    refused(check_static(world.request(text, action), other, NOW, cache), Reason.BAD_CHECKPOINT)
    small = CheckpointCache(policy, maxsize=1)
    check_static(world.request(text, action), policy, NOW, small)
    check_static(world.request(world.bundle_text(action), action), policy, NOW, small)
    assert len(small._items) == 1
