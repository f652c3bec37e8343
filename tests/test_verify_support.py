"""Shared helpers for the verification tests: real SSH keys (ssh-keygen), real SSHSIG signatures
(gatekeeper.sshsig), real checkpoints signed with personality.tlog.note, and a small in-memory
Merkle tree that produces the inclusion and consistency proofs a log would."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from keys import Key, keygen

from gatekeeper import sshsig
from gatekeeper.action import NAMESPACE, Action, encode_action, encode_entry, new_action
from gatekeeper.bundle import Bundle, encode_bundle
from gatekeeper.gate import ExecRequest
from gatekeeper.verify.policy import HostPolicy
from personality.tlog.checkpoint import Checkpoint, sign_checkpoint
from personality.tlog.merkle import (
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
)
from personality.tlog.note import NoteSigner, Signer, generate_signer

ORIGIN = "log.example/gatekeeper"
HOST = "web-01"
ACCOUNT = "deploy"
NOW = 1_800_000_000


def examples(default: int) -> int:
    """Hypothesis examples per property: ``default`` in the unit suite, the ``GK_FUZZ_EXAMPLES``
    environment variable when set (``make fuzz``: many more)."""
    return int(os.environ.get("GK_FUZZ_EXAMPLES", default))


def fake_fingerprint(seed: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(seed).digest()).decode().rstrip("=")


HOST_FP = fake_fingerprint(b"host key of web-01")


@dataclass
class Tree:
    """An append-only list of entries with RFC 6962 proofs (what a log computes)."""

    entries: list[bytes] = field(default_factory=list)

    def append(self, entry: bytes) -> int:
        self.entries.append(entry)
        return len(self.entries) - 1

    def _get(self, level: int, index: int) -> bytes:
        hashes = [leaf_hash(e) for e in self.entries[index << level : (index + 1) << level]]
        assert len(hashes) == 1 << level
        return root_from_leaf_hashes(hashes)

    def root(self, size: int | None = None) -> bytes:
        n = len(self.entries) if size is None else size
        return root_from_leaf_hashes([leaf_hash(e) for e in self.entries[:n]])

    def inclusion(self, index: int, size: int) -> list[bytes]:
        return inclusion_proof(index, size, self._get)

    def consistency(self, size1: int, size2: int) -> list[bytes]:
        return consistency_proof(size1, size2, self._get)


class World:
    """One log (key, tree) and users with SSH keys, for building real bundles."""

    def __init__(self, tmp: Path, user: Key, other: Key) -> None:
        self.tmp = tmp
        self.user = user
        self.other = other
        self.log_signer: Signer = generate_signer(ORIGIN)
        self.tree = Tree()
        for i in range(5):  # some history before our entries
            self.tree.append(b"filler entry %d\n" % i)

    def policy(self, **over: object) -> HostPolicy:
        p = HostPolicy(
            host_name=HOST,
            log_origin=ORIGIN,
            log_verifiers=(self.log_signer.verifier(),),
            host_key_fingerprint=HOST_FP,
        )
        return dataclasses.replace(p, **over)  # type: ignore[arg-type]

    def action(self, key: Key | None = None, **over: object) -> Action:
        a = new_action(
            targets=[HOST],
            account=ACCOUNT,
            command=b"echo hello",
            now=NOW - 10,
            signer=(key or self.user).public,
            window=300,
            reason="test",
        )
        return dataclasses.replace(a, **over)  # type: ignore[arg-type]

    def entry(self, action: Action, key: Key | None = None) -> bytes:
        body = encode_action(action)
        return encode_entry(body, sshsig.sign_file(body, NAMESPACE, (key or self.user).path))

    def checkpoint(
        self, size: int | None = None, signers: list[NoteSigner] | None = None, root: bytes | None = None
    ) -> bytes:
        n = len(self.tree.entries) if size is None else size
        cp = Checkpoint(ORIGIN, n, self.tree.root(n) if root is None else root)
        return sign_checkpoint(cp, signers or [self.log_signer])

    def log_entry(self, entry: bytes) -> Bundle:
        """Append ``entry`` and return its bundle under the current tree."""
        index = self.tree.append(entry)
        size = len(self.tree.entries)
        return Bundle(entry, index, tuple(self.tree.inclusion(index, size)), self.checkpoint(size))

    def bundle_text(self, action: Action | None = None, key: Key | None = None) -> str:
        return encode_bundle(self.log_entry(self.entry(action or self.action(), key)))

    def request(self, bundle: str | None, action: Action | None = None, **over: object) -> ExecRequest:
        r = ExecRequest(
            account=ACCOUNT,
            command=(action.command if action else b"echo hello"),
            auth_key=self.user.public,
            bundle=bundle,
            peer="127.0.0.1:5555",
        )
        return dataclasses.replace(r, **over)  # type: ignore[arg-type]


def make_world(tmp: Path) -> World:
    return World(tmp, keygen(tmp, "ed25519", name="user"), keygen(tmp, "ed25519", name="other"))


def test_tree_proofs_are_consistent() -> None:
    t = Tree()
    for i in range(11):
        t.append(bytes([i]))
    verify_consistency(3, 11, t.root(3), t.root(11), t.consistency(3, 11))
    assert t.root(11) != t.root(10)


__all__ = ["ORIGIN", "HOST", "ACCOUNT", "NOW", "HOST_FP", "Tree", "World", "make_world", "fake_fingerprint"]
