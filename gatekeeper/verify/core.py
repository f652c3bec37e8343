"""The pure checks: does this bundle authorise this exec request on this host, now?

:func:`check_static` applies every check that needs no state and no network, in a fixed order
(documented with their reasons and exit statuses in docs/verification.md); the first failure
decides, with its own :class:`~gatekeeper.gate.Reason` and one line for the user. What it cannot
decide alone (nonce never spent here, checkpoint consistent with the stored heads) is left to
:class:`gatekeeper.verify.gate.VerifyingGate`, which uses the :class:`Verified` result.

Pure: no I/O, no clock (``now`` is a parameter), no randomness. Never raises for any request or
bundle content; an exception escaping from here is a bug (the gate turns it into an INTERNAL
refusal).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from gatekeeper import sshsig
from gatekeeper.action import NAMESPACE, Action
from gatekeeper.bundle import parse_bundle_entry
from gatekeeper.errors import GatekeeperError
from gatekeeper.gate import Decision, ExecRequest, Reason
from gatekeeper.verify.policy import HostPolicy
from personality.errors import PersonalityError, ProofError
from personality.tlog.checkpoint import SignedCheckpoint, open_checkpoint
from personality.tlog.merkle import leaf_hash, verify_inclusion
from personality.tlog.note import verified_signatures

__all__ = ["Verified", "CheckpointCache", "check_static", "refusal", "one_line"]

_MAX_MESSAGE = 300


@dataclass(frozen=True)
class Verified:
    """A request that passed every stateless check."""

    action: Action
    entry: bytes  # the log entry, verbatim
    leaf_hash: bytes
    index: int
    checkpoint: SignedCheckpoint  # verified: log signature, origin, witness quorum
    nonce: bytes
    fingerprint: str  # SHA256:... of the key that signed the action and authenticated the session
    expires_at: int  # not_after + clock skew: after this the action can never pass again


def one_line(text: str) -> str:
    """``text`` made safe for one terminal line: control characters escaped, length bounded."""
    out = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
    return out if len(out) <= _MAX_MESSAGE else out[: _MAX_MESSAGE - 3] + "..."


def refusal(reason: Reason, why: str, *, index: int | None = None, fingerprint: str = "") -> Decision:
    """A refusal with the standard ``gk: refused (<code>): <why>`` line."""
    return Decision(reason, one_line(f"gk: refused ({reason.code}): {why}"), index, fingerprint)


def _when(t: int) -> str:
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(t)


@lru_cache(maxsize=1024)
def _key(public_key: str) -> tuple[sshsig.PublicKey, str] | None:
    """The parsed key and its fingerprint, or None when ``public_key`` is not a usable key. A pure
    function of the exact text, so results are cached (bounded): a host sees few distinct keys."""
    try:
        key = sshsig.parse_public_key(public_key)
    except GatekeeperError:
        return None
    return key, key.fingerprint()


class CheckpointCache:
    """Checkpoints that already passed steps 9 and 10 under one policy, by their exact bytes (LRU,
    bounded). Identical bytes verify identically under the same keys, so a hit skips the note
    signature and witness checks. Create one per policy; not thread-safe."""

    def __init__(self, policy: HostPolicy, maxsize: int = 256) -> None:
        self.policy = policy
        self.maxsize = maxsize
        self._items: OrderedDict[bytes, SignedCheckpoint] = OrderedDict()

    def get(self, raw: bytes) -> SignedCheckpoint | None:
        sc = self._items.get(raw)
        if sc is not None:
            self._items.move_to_end(raw)
        return sc

    def put(self, raw: bytes, sc: SignedCheckpoint) -> None:
        self._items[raw] = sc
        self._items.move_to_end(raw)
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)


def _check_checkpoint(raw: bytes, policy: HostPolicy) -> SignedCheckpoint | tuple[Reason, str]:
    """Steps 9 and 10: the verified checkpoint, or the refusal reason and why."""
    try:
        checkpoint = open_checkpoint(raw, policy.log_origin, policy.log_verifiers)
    except PersonalityError as exc:
        return Reason.BAD_CHECKPOINT, f"checkpoint: {exc}"
    witnesses = policy.witnesses
    if witnesses.required:
        try:
            cosigned = verified_signatures(checkpoint.note, witnesses.verifiers)
        except PersonalityError as exc:
            return Reason.WITNESS_QUORUM, f"witness cosignature: {exc}"
        if len({s.name for s in cosigned}) < witnesses.required:
            return Reason.WITNESS_QUORUM, (
                f"the checkpoint has {len(cosigned)} of the "
                f"{witnesses.required} required witness cosignatures"
            )
    return checkpoint


def check_static(
    request: ExecRequest, policy: HostPolicy, now: int, known: CheckpointCache | None = None
) -> Verified | Decision:
    """Check ``request`` against its bundle and ``policy`` at time ``now`` (Unix seconds).

    Returns :class:`Verified` when every stateless check passes, otherwise the refusing
    :class:`~gatekeeper.gate.Decision` of the first check that failed, in this order: NO_BUNDLE,
    MALFORMED_BUNDLE (bundle, then entry), NOT_EXEC, BAD_SIGNATURE, KEY_MISMATCH, WRONG_HOST,
    WRONG_ACCOUNT, POLICY (account not allowed here), COMMAND_MISMATCH, NOT_YET_VALID, EXPIRED,
    POLICY (window too long), BAD_CHECKPOINT, WITNESS_QUORUM, BAD_INCLUSION.

    ``known``, if given, remembers checkpoints that passed the signature and witness checks under
    ``policy`` (a cache hit skips them; the result is the same). It must belong to ``policy``.
    """
    if known is not None and known.policy is not policy:
        known = None
    auth = _key(request.auth_key)
    fp = auth[1] if auth is not None else ""

    # 1. a bundle at all
    text = request.bundle
    if text is None or not text.strip():
        return refusal(
            Reason.NO_BUNDLE,
            "no GK_BUNDLE was sent with this command; log it first (gk ssh HOST -- COMMAND)",
            fingerprint=fp,
        )
    # 2. it parses, and its entry parses as an action
    try:
        bundle, signed = parse_bundle_entry(text)
    except (GatekeeperError, PersonalityError) as exc:
        return refusal(Reason.MALFORMED_BUNDLE, f"GK_BUNDLE does not parse: {exc}", fingerprint=fp)
    index = bundle.index
    action = signed.action
    if action.kind != "exec":
        return refusal(
            Reason.NOT_EXEC,
            f"the action is a {action.kind!r} action, not 'exec'",
            index=index,
            fingerprint=fp,
        )

    # 3. the SSHSIG verifies
    try:
        sig_key = sshsig.verify(signed.body, signed.signature, NAMESPACE)
    except GatekeeperError as exc:
        return refusal(Reason.BAD_SIGNATURE, f"action signature: {exc}", index=index, fingerprint=fp)

    # 4. signature key == action.signer == the key that authenticated this session
    signature_key, signer = _key(sig_key), _key(action.signer)
    if signature_key is None or signer is None or signature_key[0].blob != signer[0].blob:
        return refusal(
            Reason.KEY_MISMATCH,
            "the action was signed by another key than the signer it names",
            index=index,
            fingerprint=fp,
        )
    if auth is None or auth[0].blob != signer[0].blob:
        return refusal(
            Reason.KEY_MISMATCH,
            f"the action was signed by {signer[1]} but this session authenticated with "
            f"{fp or 'no usable key'}",
            index=index,
            fingerprint=fp,
        )

    # 5. this host (and its host key, when the action pins one)
    target = next((t for t in action.targets if t.name == policy.host_name), None)
    if target is None:
        names = ", ".join(t.name for t in action.targets[:5])
        more = ", ..." if len(action.targets) > 5 else ""
        return refusal(
            Reason.WRONG_HOST,
            f"the action is for {names}{more}, this host is {policy.host_name}",
            index=index,
            fingerprint=fp,
        )
    if target.host_key is not None and target.host_key != policy.host_key_fingerprint:
        return refusal(
            Reason.WRONG_HOST,
            f"the action pins host key {target.host_key}; this host's key is "
            f"{policy.host_key_fingerprint or 'not configured'}",
            index=index,
            fingerprint=fp,
        )

    # 6. the account
    if action.account != request.account:
        return refusal(
            Reason.WRONG_ACCOUNT,
            f"the action is for account {action.account!r}, the session is {request.account!r}",
            index=index,
            fingerprint=fp,
        )
    if policy.allowed_accounts is not None and request.account not in policy.allowed_accounts:
        return refusal(
            Reason.POLICY,
            f"account {request.account!r} is not allowed on this host",
            index=index,
            fingerprint=fp,
        )

    # 7. exactly the signed bytes
    if action.command != request.command:
        return refusal(
            Reason.COMMAND_MISMATCH,
            "the command sent differs from the logged command (bytes must be identical)",
            index=index,
            fingerprint=fp,
        )

    # 8. the validity window, with bounded clock skew
    skew = policy.max_clock_skew
    if now + skew < action.not_before:
        return refusal(
            Reason.NOT_YET_VALID,
            f"the action is valid from {_when(action.not_before)} (now {_when(now)})",
            index=index,
            fingerprint=fp,
        )
    if now - skew > action.not_after:
        return refusal(
            Reason.EXPIRED,
            f"the action expired at {_when(action.not_after)} (now {_when(now)})",
            index=index,
            fingerprint=fp,
        )
    if action.not_after - action.not_before > policy.max_window:
        return refusal(
            Reason.POLICY,
            f"the action's validity window is longer than this host's limit of {policy.max_window}s",
            index=index,
            fingerprint=fp,
        )

    # 9. the checkpoint: signed by the log's key, for the log's origin; 10. witness quorum
    checkpoint = known.get(bundle.checkpoint) if known is not None else None
    if checkpoint is None:
        checked = _check_checkpoint(bundle.checkpoint, policy)
        if isinstance(checked, tuple):
            return refusal(checked[0], checked[1], index=index, fingerprint=fp)
        checkpoint = checked
        if known is not None:
            known.put(bundle.checkpoint, checkpoint)

    # 11. the entry is in the tree the checkpoint commits to
    leaf = leaf_hash(bundle.entry)
    try:
        verify_inclusion(index, checkpoint.size, leaf, list(bundle.proof), checkpoint.root)
    except ProofError as exc:
        return refusal(
            Reason.BAD_INCLUSION,
            f"inclusion proof for index {index} under the checkpoint of size {checkpoint.size}: {exc}",
            index=index,
            fingerprint=fp,
        )

    return Verified(
        action=action,
        entry=bundle.entry,
        leaf_hash=leaf,
        index=index,
        checkpoint=checkpoint,
        nonce=action.nonce,
        fingerprint=fp,
        expires_at=action.not_after + skew,
    )
