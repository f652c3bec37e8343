"""``gk audit report --html``: one self-contained page, per host, of what ran, who, why, and whether
it verifies.

Self-contained: inline CSS and SVG, no script, no fonts, no external URL — it can be mailed,
archived, or opened offline. Everything from the log is HTML-escaped (commands and reasons are
attacker-controlled text). Sections: the verified checkpoint the page is based on (and whether its
signature verified with the key given now), totals, then one section per host with a timeline
strip and a table, newest first, at most ``per_host`` rows each (the page says when it cut).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
from collections.abc import Sequence
from dataclasses import dataclass

from gatekeeper.audit.index import AuditIndex, Query, Row
from personality.errors import FormatError, VerificationError
from personality.tlog.checkpoint import open_checkpoint
from personality.tlog.note import NoteVerifier

__all__ = ["render_report"]

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
header{background:#1d2f4f;color:#fff;padding:18px 28px}
header h1{margin:0 0 6px;font-size:22px}
header p{margin:2px 0;opacity:.9}
main{padding:18px 28px}
.cards{display:flex;gap:14px;flex-wrap:wrap;margin-bottom:18px}
.card{background:#fff;border-radius:8px;padding:12px 16px;box-shadow:0 1px 3px #0002;min-width:140px}
.card b{display:block;font-size:24px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px #0002;margin:0 0 18px;padding:14px 18px}
section h2{margin:0 0 8px;font-size:18px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e3e6eb;vertical-align:top}
th{background:#eef1f5}
td.cmd{font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
.ok{color:#0a7a35;font-weight:600}.bad{color:#b3261e;font-weight:700}.pend{color:#8a6d00}
.note{font-family:ui-monospace,monospace;white-space:pre-wrap;background:#eef1f5;padding:8px;border-radius:6px}
svg.tl{width:100%;height:26px;display:block;margin:4px 0 10px}
.cut{color:#8a6d00}
"""


@dataclass(frozen=True)
class _Span:
    lo: int
    hi: int


def _t(ts: int | None) -> str:
    if ts is None:
        return ""
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _status(r: Row) -> str:
    if r.status != "ok":
        return f'<span class="bad" title="{_e(r.error)}">✗ {_e(r.status)}</span>'
    if not r.verified:
        return '<span class="pend">signature ok · awaiting checkpoint</span>'
    return '<span class="ok">✓ signed · in log</span>'


def _timeline(rows: Sequence[Row], span: _Span) -> str:
    width = max(1, span.hi - span.lo)
    ticks = []
    for r in rows:
        if r.not_before is None:
            continue
        x = 1000 * (r.not_before - span.lo) / width
        colour = "#b3261e" if r.status != "ok" else "#1d6fd6"
        ticks.append(f'<rect x="{x:.1f}" y="3" width="2" height="20" fill="{colour}"/>')
    return (
        '<svg class="tl" viewBox="0 0 1002 26" preserveAspectRatio="none" role="img" '
        'aria-label="timeline"><rect x="0" y="12" width="1002" height="2" fill="#c9ced6"/>'
        + "".join(ticks)
        + "</svg>"
    )


def render_report(
    index: AuditIndex,
    q: Query | None = None,
    *,
    verifiers: Sequence[NoteVerifier] = (),
    title: str = "Gatekeeper audit report",
    per_host: int = 2000,
    now: float | None = None,
) -> str:
    """The HTML page (a ``str``; write it as UTF-8). ``q`` filters the actions shown."""
    q = q or Query()
    cp = index.latest_checkpoint()
    cp_status = "no verified checkpoint yet"
    if cp is not None:
        if verifiers:
            try:
                open_checkpoint(cp.raw, index.origin, verifiers)
                names = ", ".join(v.name for v in verifiers)
                cp_status = f'<span class="ok">signature verified now with key {_e(names)}</span>'
            except (FormatError, VerificationError) as exc:
                cp_status = f'<span class="bad">signature does NOT verify: {_e(exc)}</span>'
        else:
            cp_status = "signature verified when the index was synced (give --log-key to re-check)"
    by_host: dict[str, list[Row]] = {}
    counts = {"total": 0, "bad": 0}
    signers: set[str] = set()
    lo: int | None = None
    hi: int | None = None
    for r in index.search(Query(**{**q.__dict__, "newest_first": True, "limit": None})):
        counts["total"] += 1
        counts["bad"] += r.status != "ok"
        if r.signer:
            signers.add(r.signer)
        if r.not_before is not None:
            lo = r.not_before if lo is None else min(lo, r.not_before)
            hi = r.not_before if hi is None else max(hi, r.not_before)
        for h in r.hosts or ("(unparsed entries)",):
            if q.hosts and h not in q.hosts and not any(_glob(h, p) for p in q.hosts):
                continue
            by_host.setdefault(h, []).append(r)
    span = _Span(lo or 0, hi or 0)
    stamp = _dt.datetime.fromtimestamp(
        now if now is not None else _dt.datetime.now(_dt.UTC).timestamp(), _dt.UTC
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{_e(title)}</h1>",
        f"<p>Log <b>{_e(index.origin)}</b> · generated {stamp.strftime('%Y-%m-%d %H:%M:%SZ')}</p>",
    ]
    if cp is not None:
        root = base64.b64encode(cp.root).decode("ascii")
        parts.append(f"<p>Verified checkpoint: size {cp.size:,} · root {_e(root)} · {cp_status}</p>")
    else:
        parts.append(f"<p>{cp_status}</p>")
    parts.append("</header><main>")
    parts.append('<div class="cards">')
    for label, value in (
        ("actions", counts["total"]),
        ("hosts", len(by_host)),
        ("signers", len(signers)),
        ("failed checks", counts["bad"]),
        ("from", _t(span.lo) if lo is not None else "–"),
        ("to", _t(span.hi) if hi is not None else "–"),
    ):
        parts.append(f'<div class="card">{_e(label)}<b>{_e(value)}</b></div>')
    parts.append("</div>")
    if cp is not None:
        parts.append(
            '<section><h2>Checkpoint</h2><div class="note">'
            + _e(cp.raw.decode("utf-8", "replace"))
            + "</div></section>"
        )
    if by_host:
        links = " · ".join(
            f'<a href="#host-{_e(h)}">{_e(h)}</a> ({len(by_host[h]):,})' for h in sorted(by_host)
        )
        parts.append(f"<section><h2>Hosts</h2><p>{links}</p></section>")
    for host in sorted(by_host):
        rows = by_host[host]
        shown = rows[:per_host]
        parts.append(
            f'<section id="host-{_e(host)}"><h2>{_e(host)} <small>({len(rows):,} actions)</small></h2>'
        )
        parts.append(_timeline(shown, span))
        if len(rows) > per_host:
            parts.append(f'<p class="cut">Showing the newest {per_host:,} of {len(rows):,}.</p>')
        parts.append(
            "<table><thead><tr><th>#</th><th>time (UTC)</th><th>account</th><th>who</th><th>command</th>"
            "<th>why</th><th>verification</th></tr></thead><tbody>"
        )
        for r in shown:
            who = ", ".join(r.principals) if r.principals else (r.signer or "")
            parts.append(
                f"<tr><td>{r.index}</td><td>{_e(_t(r.not_before))}</td><td>{_e(r.account or '')}</td>"
                f'<td title="{_e(r.signer or "")}">{_e(who)}</td><td class="cmd">{_e(r.command or "")}</td>'
                f"<td>{_e(r.reason or '')}</td><td>{_status(r)}</td></tr>"
            )
        parts.append("</tbody></table></section>")
    if not by_host:
        parts.append("<section><h2>No actions</h2><p>Nothing matched.</p></section>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _glob(name: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(name, pattern)
