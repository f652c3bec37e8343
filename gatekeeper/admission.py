"""Admission at the log: only well-formed actions, signed by a key the log trusts, enter the log.

:class:`ActionAdmission` implements ``personality.log.Admission``. ``check(entry)`` accepts an entry
only if

1. it parses as a ``gatekeeper/action/v1`` entry (body, blank line, armored SSHSIG);
2. the SSHSIG verifies in namespace ``action@gatekeeper`` and was made by the key named in the
   action's ``signer`` field;
3. that key is listed in the log's allowed_signers file for that namespace at the log's current
   time (``valid-after`` / ``valid-before`` honoured);
4. the action has not expired (``now > not_after + skew``) and does not start absurdly far in the
   future (``not_before > now + max_lead``);
5. it carries a reason, if the log requires one.

Anything else raises ``personality.errors.RefusedError`` (HTTP 403) with a sentence the submitter
can act on. The allowed_signers file is re-read whenever its inode, size or mtime changes, so
editing it needs no restart. If the file becomes missing or malformed the log refuses *every*
action with ``personality.errors.ConfigError`` (HTTP 500) until it is fixed: fail closed, never
"keep the old list" (a broken edit may be a revocation).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gatekeeper import action as act
from gatekeeper import errors as gkerrors
from gatekeeper.allowed_signers import AllowedSigners
from gatekeeper.sshsig import fingerprint
from personality.errors import ConfigError, RefusedError

__all__ = ["ActionAdmission", "DEFAULT_SKEW", "DEFAULT_MAX_LEAD"]

#: Clock skew tolerated between submitters and the log, in seconds.
DEFAULT_SKEW = 60
#: How far in the future an action may start (the longest window an action may have).
DEFAULT_MAX_LEAD = act.MAX_WINDOW

_Stamp = tuple[int, int, int, int]


class ActionAdmission:
    """Admission policy for a Gatekeeper log (see the module docstring).

    Construction reads the file and raises ``personality.errors.ConfigError`` if it is missing,
    malformed, or lists no key (a log that can accept nothing is a misconfiguration). Thread-safe.
    """

    def __init__(
        self,
        allowed_signers_path: str | os.PathLike[str],
        clock: Callable[[], float] = time.time,
        *,
        skew: int = DEFAULT_SKEW,
        max_lead: int = DEFAULT_MAX_LEAD,
        require_reason: bool = False,
    ) -> None:
        self.path = Path(allowed_signers_path)
        self._clock = clock
        self.skew = skew
        self.max_lead = max_lead
        self.require_reason = require_reason
        self._lock = threading.Lock()
        self._stamp: _Stamp | None = None
        self._signers: AllowedSigners | None = None
        self._error = ""
        self.reloads = 0
        self._refresh()

    def _stat(self) -> _Stamp | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def _refresh(self) -> AllowedSigners:
        """The current list, re-read if the file changed. Raises ConfigError if it is unusable."""
        with self._lock:
            before = self._stat()
            if before is None or before != self._stamp:
                self._signers, self._stamp = None, None
                try:
                    signers = AllowedSigners.load(self.path)
                    if not signers.signers:
                        raise gkerrors.ConfigError(
                            f"{self.path}: lists no keys, so every action would be refused"
                        )
                except gkerrors.ConfigError as exc:
                    self._error = (
                        f"allowed_signers is unusable, refusing all actions until it is fixed: {exc}"
                    )
                else:
                    self._signers, self._error = signers, ""
                    self.reloads += 1
                    # A file rewritten while we read it is read again on the next check.
                    self._stamp = before if self._stat() == before else None
            if self._signers is None:
                raise ConfigError(self._error)
            return self._signers

    def check(self, entry: bytes) -> None:
        """Admit ``entry`` or raise RefusedError (the submitter's fault) / ConfigError (ours)."""
        signers = self._refresh()
        try:
            signed = act.parse_entry(entry)
        except gkerrors.ActionFormatError as exc:
            raise RefusedError(f"not a valid {act.VERSION} entry: {exc}") from None
        a = signed.action
        try:
            act.verify_entry(signed)
        except gkerrors.SignatureInvalid as exc:
            raise RefusedError(f"signature refused: {exc}") from None
        now = int(self._clock())
        fp = fingerprint(a.signer)
        if not signers.principals_for(a.signer, act.NAMESPACE, now):
            why = signers.why_not(a.signer, act.NAMESPACE, now)
            raise RefusedError(
                f"signer {fp} may not submit actions to this log ({why}); ask the log operator to "
                "add the key to its allowed_signers"
            )
        if now > a.not_after + self.skew:
            raise RefusedError(
                f"action expired at {act.format_time(a.not_after)} (log time {act.format_time(now)}); "
                "sign a new one, and check your clock if this is unexpected"
            )
        if a.not_before > now + self.max_lead:
            raise RefusedError(
                f"action starts at {act.format_time(a.not_before)}, more than {self.max_lead}s after "
                f"the log's time {act.format_time(now)}; check your clock"
            )
        if self.require_reason and not a.reason:
            raise RefusedError("this log requires a reason (a ticket or a sentence): add --reason")
