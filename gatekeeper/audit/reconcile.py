"""``gk audit reconcile``: the host's journal against the log.

The agent journals every decision (:mod:`gatekeeper.journal`). For one host:

- **ran, not logged** (must be none): a journal record ``"event": "allowed"`` whose log index is
  missing, not in the verified log, or whose logged action differs from what ran (another
  command, account or signer key, or the host is not a target, or its signature is bad).
- **logged, never ran**: verified log entries naming the host, signed inside the journal's time
  span, that the journal never allowed (expired unused, refused, or meant for another target).
  Informational.
- **not yet verified**: allowed records whose index is beyond the index's verified checkpoint
  (sync, then reconcile again).
"""

from __future__ import annotations

import base64
import binascii
import calendar
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gatekeeper.action import MAX_WINDOW, parse_entry
from gatekeeper.audit.index import AuditIndex, Query, Row

__all__ = ["Finding", "Reconciliation", "reconcile"]

_TS = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?Z")


def _when(record: Mapping[str, Any]) -> int | None:
    m = _TS.fullmatch(str(record.get("time", "")))
    if not m:
        return None
    y, mo, d, h, mi, s = (int(g) for g in m.groups())
    return calendar.timegm((y, mo, d, h, mi, s))


def _command(record: Mapping[str, Any]) -> bytes | None:
    if isinstance(record.get("command"), str):
        return str(record["command"]).encode("utf-8")
    if isinstance(record.get("command_base64"), str):
        try:
            return base64.b64decode(record["command_base64"], validate=True)
        except (binascii.Error, ValueError):
            return None
    return None


@dataclass(frozen=True)
class Finding:
    kind: str  # ran-not-logged | logged-not-run | not-yet-verified
    index: int | None
    detail: str
    record: Mapping[str, Any] | None = None
    row: Row | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "index": self.index,
            "detail": self.detail,
            "journal": dict(self.record) if self.record is not None else None,
            "log": self.row.to_json() if self.row is not None else None,
        }


@dataclass
class Reconciliation:
    host: str
    allowed: int = 0
    matched: int = 0
    findings: list[Finding] = field(default_factory=list)

    def of(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    @property
    def ok(self) -> bool:
        return not self.of("ran-not-logged")


def reconcile(
    index: AuditIndex,
    records: Iterable[Mapping[str, Any]],
    host: str,
    *,
    since: int | None = None,
    until: int | None = None,
) -> Reconciliation:
    """Compare ``records`` (one host's journal, in order) with the index (see module docstring).

    ``since``/``until`` bound the "logged, never ran" search (default: the journal's time span,
    widened by the longest validity window before its start).
    """
    out = Reconciliation(host)
    verified = index.verified_size
    ran: set[int] = set()
    first: int | None = None
    last: int | None = None
    for rec in records:
        t = _when(rec)
        if t is not None:
            first = t if first is None else min(first, t)
            last = t if last is None else max(last, t)
        if rec.get("event") != "allowed":
            continue
        out.allowed += 1
        n = rec.get("index")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            out.findings.append(Finding("ran-not-logged", None, "allowed without a log index", rec))
            continue
        if n >= verified:
            out.findings.append(
                Finding("not-yet-verified", n, f"index {n} is beyond the verified size {verified}: sync", rec)
            )
            continue
        row = index.get(n)
        problems = []
        if row.status != "ok":
            problems.append(f"the logged entry is {row.status}")
        if host not in row.hosts:
            problems.append(f"the logged action is for {', '.join(row.hosts) or 'no host'}, not {host}")
        if rec.get("account") != row.account:
            problems.append(f"ran as {rec.get('account')!r}, logged for {row.account!r}")
        cmd = _command(rec)
        logged = parse_entry(index.entry(n)).action.command if row.status == "ok" else None
        if cmd is None or cmd != logged:
            problems.append("the command that ran differs from the logged one")
        if rec.get("key") and rec.get("key") != row.signer:
            problems.append(f"authenticated with {rec.get('key')}, logged signer {row.signer}")
        if problems:
            out.findings.append(Finding("ran-not-logged", n, "; ".join(problems), rec, row))
            continue
        out.matched += 1
        ran.add(n)
    lo = since if since is not None else (first - MAX_WINDOW if first is not None else None)
    hi = until if until is not None else (last + 1 if last is not None else None)
    if lo is not None or hi is not None:
        q = Query(hosts=[host], since=lo, until=hi, last=verified - 1 if verified else -1)
        for row in index.search(q):
            if row.index not in ran and row.status == "ok":
                out.findings.append(
                    Finding("logged-not-run", row.index, "logged for this host, never ran here", None, row)
                )
    return out
