"""Operator actions on a host's head store: ``gk agent status`` and ``gk agent unhalt``.

:func:`status` summarises the store (halted?, evidence, newest heads, spent nonces);
:func:`unhalt` clears the halted state, recording who did it, when and with which note both in the
head store (``unhalts`` table) and in the host's journal. Both work while the agent runs: the agent
reads the halted flag from the store on every decision.
"""

from __future__ import annotations

import base64
import getpass
import os
import pwd
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gatekeeper.verify.gate import JournalSink
from gatekeeper.verify.headstore import HaltRecord, HeadStore, UnhaltRecord

__all__ = ["status", "format_status", "unhalt", "operator_identity"]


def _when(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _halt_dict(h: HaltRecord) -> dict[str, Any]:
    return {
        "id": h.id,
        "at": _when(h.at),
        "kind": h.kind,
        "origin": h.origin,
        "detail": h.detail,
        "known_checkpoint": h.known.decode("utf-8", "replace"),
        "conflicting_checkpoint": h.conflicting.decode("utf-8", "replace"),
    }


def status(store: HeadStore) -> dict[str, Any]:
    """A JSON-able summary: ``halted`` (the open halt with both checkpoints, or None), ``heads``
    (newest per origin), ``checkpoints`` (count), ``spent_nonces``, ``halts``, ``unhalts``."""
    heads = []
    count = 0
    for origin in store.origins():
        history = store.heads(origin)
        count += len(history)
        newest = history[-1]
        heads.append(
            {
                "origin": origin,
                "size": newest.size,
                "root": base64.b64encode(newest.root).decode("ascii"),
                "stored_at": _when(newest.stored_at),
            }
        )
    halt = store.halted()
    unhalts = store.unhalts()
    return {
        "store": str(store.path),
        "halted": None if halt is None else _halt_dict(halt),
        "heads": heads,
        "checkpoints": count,
        "spent_nonces": store.spent_count(),
        "halts": len(store.halts()),
        "unhalts": [
            {"id": u.id, "at": _when(u.at), "who": u.who, "note": u.note, "through_halt": u.through_halt}
            for u in unhalts
        ],
    }


def format_status(report: dict[str, Any]) -> str:
    """The human-readable form of :func:`status` (several lines, ending with a newline)."""
    lines = [f"store: {report['store']}"]
    halt = report["halted"]
    if halt is None:
        lines.append("halted: no")
    else:
        lines += [
            f"halted: YES since {halt['at']} (halt #{halt['id']}, {halt['kind']}): {halt['detail']}",
            "evidence: the checkpoint this host held:",
            *("    " + line for line in halt["known_checkpoint"].splitlines()),
            "evidence: the checkpoint that contradicts it:",
            *("    " + line for line in halt["conflicting_checkpoint"].splitlines()),
            "after reviewing the evidence: gk agent unhalt --evidence-reviewed",
        ]
    if not report["heads"]:
        lines.append("newest head: none stored yet")
    for h in report["heads"]:
        lines.append(
            f"newest head: {h['origin']} size {h['size']} root {h['root']} (stored {h['stored_at']})"
        )
    lines.append(f"stored checkpoints: {report['checkpoints']}")
    lines.append(f"spent nonces: {report['spent_nonces']}")
    lines.append(f"halts recorded: {report['halts']}, unhalts: {len(report['unhalts'])}")
    if report["unhalts"]:
        last = report["unhalts"][-1]
        lines.append(
            f"last unhalt: {last['at']} by {last['who']}" + (f": {last['note']}" if last["note"] else "")
        )
    return "\n".join(lines) + "\n"


def operator_identity() -> str:
    """Who is acting: the effective user, and the user behind sudo when there is one."""
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = getpass.getuser()
    who = f"{name} (uid {uid})"
    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user and sudo_user != name:
        who += f" via sudo by {sudo_user}"
    return who


def unhalt(
    store: HeadStore,
    journal: JournalSink,
    *,
    who: str,
    note: str = "",
    clock: Callable[[], float] = time.time,
) -> UnhaltRecord | None:
    """Clear the halted state after the evidence was reviewed. Returns None (writing nothing) when the
    store is not halted. The act is journalled in the store and in ``journal`` with the halt it
    clears and both checkpoints; stored heads and evidence are kept. Raises what the store or the
    journal raise (the store's record is written first: it is the authoritative one)."""
    if store.halted() is None:
        return None
    record = store.unhalt(who=who, note=note, now=int(clock()))
    if record is None:  # cleared concurrently
        return None
    halt = next(h for h in store.halts() if h.id == record.through_halt)
    journal.append(
        {
            "event": "unhalt",
            "who": who,
            "note": note,
            "unhalt_id": record.id,
            **{f"halt_{k}": v for k, v in _halt_dict(halt).items()},
        }
    )
    return record
