"""The contract between SSH front ends and the verification core.

A front end (the asyncssh agent, or ``gk exec`` under sshd ForceCommand talking to the root-owned
local agent) turns an SSH exec request into an :class:`ExecRequest` and asks a :class:`Gate` for a
:class:`Decision`. It runs the command only when ``decision.allowed`` is true, and then reports the
exit status (or the signal that killed it) with :meth:`Gate.record_exit`. Everything here is plain
data: no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Reason", "ExecRequest", "Decision", "Gate"]


class Reason(enum.Enum):
    """Why a command was allowed or refused. ``exit_status`` is what the SSH client sees; each
    refusal has its own status so scripts can tell them apart (documented in docs/operations.md)."""

    ALLOWED = ("allowed", 0)
    NO_BUNDLE = ("no-bundle", 210)
    MALFORMED_BUNDLE = ("malformed-bundle", 211)
    BAD_SIGNATURE = ("bad-signature", 212)
    KEY_MISMATCH = ("key-mismatch", 213)
    WRONG_HOST = ("wrong-host", 214)
    WRONG_ACCOUNT = ("wrong-account", 215)
    COMMAND_MISMATCH = ("command-mismatch", 216)
    NOT_YET_VALID = ("not-yet-valid", 217)
    EXPIRED = ("expired", 218)
    REPLAY = ("replay", 219)
    BAD_INCLUSION = ("bad-inclusion-proof", 220)
    BAD_CHECKPOINT = ("bad-checkpoint", 221)
    FORK = ("log-fork", 222)
    LOG_UNAVAILABLE = ("log-unavailable", 223)
    HALTED = ("halted", 224)
    NOT_EXEC = ("not-exec", 225)
    UNKNOWN_ACCOUNT = ("unknown-account", 226)
    WITNESS_QUORUM = ("witness-quorum", 227)
    POLICY = ("policy", 228)
    INTERNAL = ("internal-error", 229)

    def __init__(self, code: str, exit_status: int) -> None:
        self.code = code
        self.exit_status = exit_status


@dataclass(frozen=True)
class ExecRequest:
    """One SSH exec request, as the front end saw it."""

    account: str  # the remote account the session logged in as
    command: bytes  # the exact exec string the client sent
    auth_key: str  # OpenSSH public key ("ssh-ed25519 AAAA...") that authenticated the session
    bundle: str | None  # the GK_BUNDLE value, or None when the client sent none
    peer: str = ""  # remote address, for the journal
    frontend: str = "agent"  # "agent" (asyncssh) or "exec" (sshd ForceCommand)


@dataclass(frozen=True)
class Decision:
    reason: Reason
    message: str  # one line for the user, e.g. "gk: refused: action expired at 2026-...Z"
    index: int | None = None  # log index of the action, when known
    key_fingerprint: str = ""  # SHA256:... of the authenticating key

    @property
    def allowed(self) -> bool:
        return self.reason is Reason.ALLOWED

    @property
    def exit_status(self) -> int:
        return self.reason.exit_status


class Gate(Protocol):
    async def decide(self, request: ExecRequest) -> Decision:
        """Decide run / refuse. Must never raise: any unexpected error is a refusal (INTERNAL).
        An allowed decision has already made the head and the spent nonce durable."""
        ...

    def record_exit(
        self, request: ExecRequest, decision: Decision, exit_status: int | None, *, signal: str | None = None
    ) -> None:
        """Journal the outcome of an allowed command: its ``exit_status``, or ``None`` with the
        ``signal`` that killed it (its name without ``SIG``, e.g. ``"KILL"``), or ``None`` and
        ``None`` when it never completed (not started, the client disconnected, no report)."""
        ...
