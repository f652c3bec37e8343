"""Exports of the audit index: JSON lines (complete, verifiable) and CSV (for spreadsheets).

JSON lines: one object per entry with every field of :meth:`Row.to_json
<gatekeeper.audit.index.Row.to_json>` plus ``leaf_hash`` and ``entry`` (base64 of the exact log
entry: anyone can re-check the SSHSIG with ``ssh-keygen -Y verify`` and the leaf hash).

CSV: :data:`CSV_FIELDS`, one row per entry, RFC 4180 quoting (commands may hold commas, quotes
and newlines), lists joined with spaces, times ``YYYY-MM-DDTHH:MM:SSZ``, UTF-8. Cells that a
spreadsheet would run as a formula (starting with ``= + - @`` or a tab/CR) are prefixed with
``'`` — the JSON lines export is the exact one.
"""

from __future__ import annotations

import base64
import csv
import json
from typing import TextIO

from gatekeeper.audit.index import AuditIndex, Query

__all__ = ["CSV_FIELDS", "export_jsonl", "export_csv", "csv_cell"]

CSV_FIELDS = (
    "index",
    "status",
    "verified",
    "not_before",
    "not_after",
    "hosts",
    "account",
    "command",
    "signer",
    "principals",
    "reason",
    "kind",
    "error",
    "leaf_hash",
)


def export_jsonl(index: AuditIndex, q: Query, out: TextIO, *, entries: bool = True) -> int:
    """Write matching rows as JSON lines; returns how many."""
    n = 0
    for row, leaf, entry in index.search_full(q):
        doc = row.to_json()
        doc["leaf_hash"] = base64.b64encode(leaf).decode("ascii")
        if entries:
            doc["entry"] = base64.b64encode(entry).decode("ascii")
        out.write(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n")
        n += 1
    return n


def csv_cell(value: str) -> str:
    """Neutralise spreadsheet formulas (CWE-1236) without losing the text."""
    if value and value[0] in "=+-@\t\r":
        return "'" + value
    return value


def export_csv(index: AuditIndex, q: Query, out: TextIO) -> int:
    """Write matching rows as CSV with a header line; returns how many rows."""
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(CSV_FIELDS)
    n = 0
    for row, leaf, _ in index.search_full(q):
        d = row.to_json()
        w.writerow(
            [
                d["index"],
                d["status"],
                "yes" if d["verified"] else "no",
                d["not_before"] or "",
                d["not_after"] or "",
                " ".join(d["hosts"]),
                d["account"] or "",
                csv_cell(d["command"] or ""),
                d["signer"] or "",
                " ".join(d["principals"]),
                csv_cell(d["reason"] or ""),
                d["kind"] or "",
                csv_cell(d["error"]),
                base64.b64encode(leaf).decode("ascii"),
            ]
        )
        n += 1
    return n
