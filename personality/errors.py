"""The personality's exception hierarchy. Every error a caller can act on derives from one root::

    PersonalityError              (exit 1, HTTP 500)
    ├── FormatError               malformed input: notes, checkpoints, tile paths, proofs,
    │                             entry bundles, request bodies          (HTTP 400)
    ├── VerificationError         well-formed but not valid: a proof that does not verify,
    │   │                         a signature that does not match       (HTTP 422)
    │   ├── ProofError            inclusion / consistency proof rejected
    │   │   └── ForkError         the log showed two views that cannot both be true (a smaller
    │   │                         or inconsistent checkpoint); carries both checkpoints
    │   └── SignatureError        note signature missing or invalid
    ├── NotFoundError             index, size, tile or leaf hash not in the log (HTTP 404)
    ├── RefusedError              the log refuses an entry (admission policy)  (HTTP 403)
    ├── OverloadedError           the sequencing queue is full; retry later    (HTTP 503)
    ├── UnavailableError          the log could not be reached: connection refused, timeout,
    │                             server error; nothing is known about the request (HTTP 503)
    ├── ConflictError             compare-and-swap on the checkpoint lost      (HTTP 409)
    ├── StorageError              the storage layer failed; nothing was acknowledged
    └── ConfigError               a config file or key file is missing or wrong

Messages are written for the person reading them: say what was wrong and, where it helps, what to do.
Parsers never let ``ValueError``, ``binascii.Error`` or ``IndexError`` escape; they raise ``FormatError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from personality.tlog.checkpoint import SignedCheckpoint

__all__ = [
    "PersonalityError",
    "FormatError",
    "VerificationError",
    "ProofError",
    "ForkError",
    "SignatureError",
    "NotFoundError",
    "RefusedError",
    "OverloadedError",
    "UnavailableError",
    "ConflictError",
    "StorageError",
    "ConfigError",
]


class PersonalityError(Exception):
    """Root of every error raised by the ``personality`` package."""

    http_status: int = 500
    exit_code: int = 1

    def diagnostics(self) -> str:
        """One line for a person: what went wrong."""
        return f"{type(self).__name__}: {self}"


class FormatError(PersonalityError):
    http_status = 400


class VerificationError(PersonalityError):
    http_status = 422


class ProofError(VerificationError):
    pass


class ForkError(ProofError):
    """Evidence that the log forked: keep ``old`` and ``new`` (their ``raw`` bytes are signed).

    ``old`` is the checkpoint held before, ``new`` the one that contradicts it (smaller size, same
    size with another root, or no valid consistency proof from ``old`` to ``new``).
    """

    def __init__(self, message: str, old: SignedCheckpoint, new: SignedCheckpoint) -> None:
        super().__init__(message)
        self.old = old
        self.new = new


class SignatureError(VerificationError):
    pass


class NotFoundError(PersonalityError):
    http_status = 404


class RefusedError(PersonalityError):
    http_status = 403


class OverloadedError(PersonalityError):
    http_status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnavailableError(PersonalityError):
    http_status = 503


class ConflictError(PersonalityError):
    http_status = 409


class StorageError(PersonalityError):
    pass


class ConfigError(PersonalityError):
    exit_code = 2
