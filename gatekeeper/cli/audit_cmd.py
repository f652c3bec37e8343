"""``gk audit``: review, search, prove and export what the log recorded. See docs/audit.md.

    gk audit sync --index DB --log URL|DIR --log-key VKEY
    gk audit list|search --index DB [--host H] [--account A] [--signer S] [--since T] [--until T]
                         [--command RE] [--reason RE] [--from N] [--to N] [--status S] [--json]
    gk audit show N --index DB
    gk audit prove N --index DB [--trusted CHECKPOINT] [-o FILE]
    gk audit verify-bundle FILE --log-key VKEY [--trusted CHECKPOINT]
    gk audit verify --log URL|DIR --log-key VKEY [--index DB]
    gk audit export --index DB --format jsonl|csv [-o FILE] [filters]
    gk audit report --index DB --html FILE [filters]
    gk audit reconcile JOURNAL --index DB --host NAME

Exit statuses: 0 fine; 76 the log misbehaved (fork, rewrite, a proof that does not verify, a
command that ran without being logged); 77 an action's signature is bad; 65 a malformed bundle;
78 usage or configuration; 69 the log is unreachable.
"""

from __future__ import annotations

import argparse
import calendar
import json
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from gatekeeper.errors import ConfigError

__all__ = ["register", "parse_when"]

DEFAULT_INDEX = "gk-audit.sqlite3"
_WHEN = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?Z?")
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def parse_when(text: str) -> int:
    """``2026-11-17``, ``2026-11-17T10:00[:00][Z]`` (UTC) or Unix seconds."""
    if text.isdigit():
        return int(text)
    m = _WHEN.fullmatch(text.strip())
    if not m:
        raise ConfigError(f"time {text!r}: use YYYY-MM-DD[THH:MM[:SS]] (UTC) or Unix seconds")
    y, mo, d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    try:
        import datetime

        datetime.datetime(y, mo, d, h, mi, s)
    except ValueError as exc:
        raise ConfigError(f"time {text!r}: {exc}") from None
    return calendar.timegm((y, mo, d, h, mi, s))


def _safe(text: str) -> str:
    """Terminal-safe: control and bidi characters as escapes (log content is attacker-controlled)."""
    return _UNSAFE.sub(
        lambda m: f"\\u{ord(m.group()):04x}" if ord(m.group()) > 0xFF else f"\\x{ord(m.group()):02x}", text
    )


def _filters(p: argparse.ArgumentParser) -> None:
    f = p.add_argument_group("filters (all given must match; repeat an option for OR)")
    f.add_argument("--host", action="append", default=[], help="target host name or glob (web-*)")
    f.add_argument("--account", action="append", default=[], help="remote account or glob")
    f.add_argument(
        "--signer", action="append", default=[], help="SHA256 fingerprint, public key or principal"
    )
    f.add_argument("--since", help="not-before at or after (YYYY-MM-DD[THH:MM], UTC)")
    f.add_argument("--until", help="not-before before this time")
    f.add_argument("--command", metavar="REGEX", help="regex searched in the command")
    f.add_argument("--reason", metavar="REGEX", help="regex searched in the reason")
    f.add_argument("--from", dest="first", type=int, metavar="N", help="first log index")
    f.add_argument("--to", dest="last", type=int, metavar="N", help="last log index (inclusive)")
    f.add_argument(
        "--status", action="append", default=[], help="ok, bad-signature, malformed, unknown-signer"
    )
    f.add_argument("--kind", action="append", default=[], help="action kind (exec)")


def _index_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--index", type=Path, default=Path(DEFAULT_INDEX), help=f"audit index (default {DEFAULT_INDEX})"
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("audit", help="search, show, prove and export logged actions")
    asub = p.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)

    s = asub.add_parser("sync", help="fetch, verify and index new entries of a log")
    _index_arg(s)
    s.add_argument("--log", required=True, metavar="URL|DIR")
    s.add_argument("--log-key", required=True, metavar="VKEY")
    s.add_argument("--origin", help="checkpoint origin (default: the key name)")
    s.add_argument(
        "--log-header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'|@FILE",
        help="HTTP header for the log (e.g. Authorization for a protected read path)",
    )
    s.add_argument("--allowed-signers", type=Path, help="record principals, flag unknown signers")
    s.add_argument("--workers", type=int)
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=_sync)

    for name, helptext in (("list", "the most recent actions"), ("search", "actions matching filters")):
        ls = asub.add_parser(name, help=helptext)
        _index_arg(ls)
        _filters(ls)
        ls.add_argument("--json", action="store_true", help="JSON lines instead of a table")
        ls.add_argument("--limit", type=int, default=50 if name == "list" else None)
        ls.add_argument("--newest-first", action="store_true", default=name == "list")
        ls.add_argument("--count", action="store_true", help="print only the number of matches")
        ls.set_defaults(func=_search)

    sh = asub.add_parser("show", help="one action, decoded, with its inclusion proof verified")
    _index_arg(sh)
    sh.add_argument("n", type=int, metavar="N")
    sh.add_argument(
        "--log-key", metavar="VKEY", help="re-verify with this key (default: the key used at sync)"
    )
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=_show)

    pr = asub.add_parser("prove", help="write an offline proof bundle for one action")
    _index_arg(pr)
    pr.add_argument("n", type=int, metavar="N")
    pr.add_argument(
        "--trusted", type=Path, metavar="CHECKPOINT", help="a checkpoint the auditor already trusts"
    )
    pr.add_argument("--log-key", metavar="VKEY")
    pr.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    pr.set_defaults(func=_prove)

    vb = asub.add_parser("verify-bundle", help="verify an offline proof bundle (no network, no log)")
    vb.add_argument("bundle", type=Path)
    vb.add_argument("--log-key", required=True, action="append", metavar="VKEY")
    vb.add_argument("--origin")
    vb.add_argument("--trusted", type=Path, metavar="CHECKPOINT", help="require the chain to start here")
    vb.add_argument("--json", action="store_true")
    vb.set_defaults(func=_verify_bundle)

    v = asub.add_parser("verify", help="full-log audit: rebuild the tree from every entry")
    v.add_argument("--log", required=True, metavar="URL|DIR")
    v.add_argument("--log-key", required=True, metavar="VKEY")
    v.add_argument("--origin")
    v.add_argument("--log-header", action="append", default=[], metavar="'NAME: VALUE'|@FILE")
    v.add_argument("--index", type=Path, help="also check the index against the log")
    v.add_argument("--workers", type=int)
    v.add_argument("--no-progress", action="store_true")
    v.set_defaults(func=_verify)

    e = asub.add_parser("export", help="export actions as JSON lines or CSV")
    _index_arg(e)
    _filters(e)
    e.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    e.add_argument("-o", "--output", type=Path, help="file (default: stdout)")
    e.add_argument("--no-entries", action="store_true", help="JSON lines without the raw entries")
    e.set_defaults(func=_export)

    r = asub.add_parser("report", help="a self-contained HTML report, per host")
    _index_arg(r)
    _filters(r)
    r.add_argument("--html", type=Path, required=True, metavar="FILE")
    r.add_argument("--log-key", metavar="VKEY")
    r.add_argument("--title", default="Gatekeeper audit report")
    r.add_argument("--per-host", type=int, default=2000)
    r.set_defaults(func=_report)

    rc = asub.add_parser("reconcile", help="a host's journal against the log")
    _index_arg(rc)
    rc.add_argument("journal", type=Path)
    rc.add_argument("--host", required=True, help="the host the journal belongs to (its name in actions)")
    rc.add_argument("--since")
    rc.add_argument("--until")
    rc.add_argument("--all", action="store_true", help="also list entries logged but never run")
    rc.set_defaults(func=_reconcile)


# -- helpers ------------------------------------------------------------------------------------


def _query(args: argparse.Namespace, **extra: Any) -> Any:
    from gatekeeper.audit.index import Query

    return Query(
        hosts=args.host,
        accounts=args.account,
        signers=args.signer,
        since=parse_when(args.since) if args.since else None,
        until=parse_when(args.until) if args.until else None,
        command=args.command,
        reason=args.reason,
        first=args.first,
        last=args.last,
        status=args.status,
        kinds=args.kind,
        **extra,
    )


def _open(path: Path) -> Any:
    from gatekeeper.audit.index import AuditIndex

    return AuditIndex.open(path, create=False)


def _keys(index: Any, given: str | None) -> list[Any]:
    from gatekeeper.monitor.config import parse_key_arg

    text = given or index.meta("vkey")
    if not text:
        raise ConfigError("no log key: give --log-key (the index has none recorded)")
    return [parse_key_arg(text)]


def _out(path: Path | None) -> TextIO:
    if path is None:
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from None


# -- commands -----------------------------------------------------------------------------------


def _sync(args: argparse.Namespace) -> int:
    from gatekeeper.allowed_signers import AllowedSigners
    from gatekeeper.audit.index import AuditIndex
    from gatekeeper.audit.sync import sync
    from gatekeeper.monitor.alerts import StreamSink
    from gatekeeper.monitor.check import SignerPrincipals
    from gatekeeper.monitor.config import parse_header, parse_key_arg
    from gatekeeper.monitor.scan import ClientSource

    verifier = parse_key_arg(args.log_key)
    origin = args.origin or verifier.name
    principals = SignerPrincipals(AllowedSigners.load(args.allowed_signers)) if args.allowed_signers else None
    with AuditIndex.open(args.index, origin) as index:
        index.set_meta("vkey", verifier.vkey())
        res = sync(
            index,
            ClientSource.at(args.log, headers=dict(parse_header(h) for h in args.log_header)),
            [verifier],
            StreamSink(sys.stderr),
            principals=principals,
            workers=args.workers,
            progress=not args.no_progress,
        )
        print(
            f"gk audit sync: {res.status}; log size {res.size}, verified {index.verified_size}, "
            f"checked {res.checked} new entries",
            file=sys.stderr,
        )
    return {"ok": 0, "unavailable": 69}.get(res.status, 76)


def _table(rows: list[Any]) -> None:
    from gatekeeper.action import format_time

    print(f"{'#':>8}  {'time (UTC)':20}  {'hosts':16}  {'account':10}  {'who':24}  {'check':5}  command")
    for r in rows:
        who = ",".join(r.principals) if r.principals else (r.signer or "")[:24]
        check = "ok" if r.status == "ok" and r.verified else ("pend" if r.status == "ok" else "BAD")
        when = format_time(r.not_before) if r.not_before is not None else ""
        cmd = r.command if r.command is not None else f"<{r.status}: {r.error}>"
        print(
            f"{r.index:>8}  {when:20}  {_safe(','.join(r.hosts))[:16]:16}  {_safe(r.account or '')[:10]:10}  "
            f"{_safe(who)[:24]:24}  {check:5}  {_safe(cmd)[:100]}"
        )


def _search(args: argparse.Namespace) -> int:
    with _open(args.index) as index:
        q = _query(args, limit=args.limit, newest_first=args.newest_first)
        if args.count:
            print(index.count(_query(args)))
            return 0
        rows = list(index.search(q))
        if args.json:
            for r in rows:
                print(json.dumps(r.to_json(), ensure_ascii=False))
        else:
            _table(rows)
            print(
                f"{len(rows)} actions (index size {index.size}, verified {index.verified_size})",
                file=sys.stderr,
            )
    return 0


def _show(args: argparse.Namespace) -> int:
    from gatekeeper.action import parse_entry
    from gatekeeper.errors import LogMisbehaved
    from personality.errors import FormatError, ProofError, VerificationError
    from personality.tlog import merkle
    from personality.tlog.checkpoint import open_checkpoint

    with _open(args.index) as index:
        verifiers = _keys(index, args.log_key)
        row = index.get(args.n)
        entry = index.entry(args.n)
        cp = index.latest_checkpoint()
        proof_status = "not under a verified checkpoint yet (sync)"
        proof: list[bytes] = []
        if cp is not None and args.n < cp.size:
            try:
                cp = open_checkpoint(cp.raw, index.origin, verifiers)
                proof = merkle.inclusion_proof(args.n, cp.size, index.hash_getter(cp.size))
                merkle.verify_inclusion(args.n, cp.size, merkle.leaf_hash(entry), proof, cp.root)
            except (FormatError, VerificationError, ProofError) as exc:
                raise LogMisbehaved(f"entry {args.n}: inclusion does not verify: {exc}") from None
            proof_status = (
                f"verified: included in the checkpoint of size {cp.size} signed by {verifiers[0].name}"
            )
        doc = row.to_json()
        doc["inclusion"] = proof_status
        doc["leaf_hash"] = merkle.leaf_hash(entry).hex()
        if args.json:
            import base64

            doc["proof"] = [base64.b64encode(h).decode() for h in proof]
            doc["checkpoint"] = cp.raw.decode("utf-8") if cp is not None else None
            doc["entry"] = entry.decode("utf-8", "replace")
            print(json.dumps(doc, ensure_ascii=False, indent=1))
            return 0
        for k in (
            "index",
            "status",
            "error",
            "kind",
            "hosts",
            "account",
            "command",
            "signer",
            "principals",
            "reason",
            "not_before",
            "not_after",
            "leaf_hash",
            "inclusion",
        ):
            v = doc[k]
            if isinstance(v, list):
                v = ", ".join(v)
            if v in ("", None):
                continue
            print(f"{k:>11}: {_safe(str(v))}")
        if row.status == "ok":
            print(f"{'signature':>11}: verified (SSHSIG, namespace action@gatekeeper)")
        try:
            parse_entry(entry)
        except Exception:  # noqa: BLE001 - show the raw bytes of anything that does not parse
            print(f"{'raw entry':>11}: {_safe(entry.decode('utf-8', 'replace'))}")
    return 0 if row.status == "ok" else 77


def _prove(args: argparse.Namespace) -> int:
    from gatekeeper.audit.proofs import build_bundle, encode

    trusted = None
    if args.trusted is not None:
        try:
            trusted = args.trusted.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {args.trusted}: {exc}") from None
    with _open(args.index) as index:
        bundle = build_bundle(index, args.n, _keys(index, args.log_key), trusted)
    data = encode(bundle)
    if args.output is None:
        sys.stdout.write(data.decode("ascii"))
    else:
        try:
            args.output.write_bytes(data)
        except OSError as exc:
            raise ConfigError(f"cannot write {args.output}: {exc}") from None
        print(f"gk audit prove: wrote {args.output} ({len(data)} bytes)", file=sys.stderr)
    return 0


def _verify_bundle(args: argparse.Namespace) -> int:
    from gatekeeper.action import escape_command, format_time
    from gatekeeper.audit.proofs import verify_bundle
    from gatekeeper.monitor.config import parse_key_arg
    from gatekeeper.sshsig import fingerprint

    try:
        data = args.bundle.read_bytes()
        trusted = args.trusted.read_bytes() if args.trusted else None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc}") from None
    verifiers = [parse_key_arg(k) for k in args.log_key]
    v = verify_bundle(data, verifiers, origin=args.origin, trusted=trusted)
    doc: dict[str, Any] = {
        "index": v.index,
        "checkpoint_size": v.checkpoint.size,
        "anchor_size": v.anchor.size,
        "anchored_at_trusted": trusted is not None,
        "action_valid": v.signed is not None,
        "action_problem": v.action_problem,
    }
    if v.signed is not None:
        a = v.signed.action
        doc.update(
            hosts=[t.name for t in a.targets],
            account=a.account,
            command=escape_command(a.command),
            signer=fingerprint(a.signer),
            reason=a.reason,
            not_before=format_time(a.not_before),
            not_after=format_time(a.not_after),
        )
    if args.json:
        print(json.dumps(doc, ensure_ascii=False))
    else:
        print(f"entry {v.index}: included in the checkpoint of size {v.checkpoint.size} (signature verified)")
        if v.anchor.size != v.checkpoint.size:
            print(
                f"consistent with the checkpoint of size {v.anchor.size}"
                + (" (your trusted checkpoint)" if trusted else "")
            )
        elif trusted:
            print("proven directly against your trusted checkpoint")
        if v.signed is not None:
            for k in ("hosts", "account", "command", "signer", "reason", "not_before", "not_after"):
                val = doc[k]
                print(f"{k:>11}: {_safe(', '.join(val) if isinstance(val, list) else str(val))}")
            print(f"{'action':>11}: signature verified")
        else:
            print(f"{'action':>11}: {_safe(v.action_problem)}")
    return 0 if v.signed is not None else 77


def _verify(args: argparse.Namespace) -> int:
    from gatekeeper.audit.sync import full_verify
    from gatekeeper.monitor.config import parse_header, parse_key_arg
    from gatekeeper.monitor.scan import ClientSource

    verifier = parse_key_arg(args.log_key)
    index = _open(args.index) if args.index else None
    try:
        rep = full_verify(
            ClientSource.at(args.log, headers=dict(parse_header(h) for h in args.log_header)),
            args.origin or verifier.name,
            [verifier],
            index=index,
            workers=args.workers,
            progress=not args.no_progress,
        )
    finally:
        if index is not None:
            index.close()
    for idx, status, error in rep.bad_entries:
        print(json.dumps({"index": idx, "status": status, "error": error}), file=sys.stderr)
    for p in rep.problems:
        print(f"gk audit verify: PROBLEM: {p}", file=sys.stderr)
    if rep.index_mismatches:
        print(
            f"gk audit verify: PROBLEM: {len(rep.index_mismatches)} entries changed since they were indexed, "
            f"first {rep.index_mismatches[:10]}",
            file=sys.stderr,
        )
    counts = ", ".join(f"{k} {v}" for k, v in sorted(rep.status_counts.items()))
    rate = rep.checked / rep.seconds if rep.seconds > 0 else 0.0
    print(
        f"gk audit verify: {'OK' if rep.ok else 'FAILED'}: size {rep.size}, root "
        f"{'matches' if rep.root_ok else 'DOES NOT match'}, {counts or 'no entries'}; "
        f"{rep.checked} entries in {rep.seconds:.1f}s ({rate:,.0f}/s)",
        file=sys.stderr,
    )
    if not rep.ok:
        return 76
    return 77 if any(k != "ok" for k in rep.status_counts) else 0


def _export(args: argparse.Namespace) -> int:
    from gatekeeper.audit.export import export_csv, export_jsonl

    with _open(args.index) as index:
        out = _out(args.output)
        try:
            q = _query(args)
            n = (
                export_csv(index, q, out)
                if args.format == "csv"
                else export_jsonl(index, q, out, entries=not args.no_entries)
            )
        finally:
            if out is not sys.stdout:
                out.close()
    print(f"gk audit export: {n} actions", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from gatekeeper.audit.report import render_report

    with _open(args.index) as index:
        page = render_report(
            index,
            _query(args),
            verifiers=_keys(index, args.log_key) if (args.log_key or index.meta("vkey")) else [],
            title=args.title,
            per_host=args.per_host,
        )
    try:
        args.html.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {args.html}: {exc}") from None
    print(f"gk audit report: wrote {args.html} ({len(page):,} bytes)", file=sys.stderr)
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from gatekeeper.audit.reconcile import reconcile
    from gatekeeper.journal import read_journal

    try:
        records = list(read_journal(args.journal))
    except OSError as exc:
        raise ConfigError(f"cannot read journal {args.journal}: {exc}") from None
    with _open(args.index) as index:
        res = reconcile(
            index,
            records,
            args.host,
            since=parse_when(args.since) if args.since else None,
            until=parse_when(args.until) if args.until else None,
        )
    for f in res.findings:
        if f.kind == "logged-not-run" and not args.all:
            continue
        print(json.dumps(f.to_json(), ensure_ascii=False))
    print(
        f"gk audit reconcile: {args.host}: {res.allowed} allowed in the journal, {res.matched} match; "
        f"{len(res.of('ran-not-logged'))} ran but not logged, {len(res.of('not-yet-verified'))} not yet "
        f"verified, {len(res.of('logged-not-run'))} logged but never ran here",
        file=sys.stderr,
    )
    return 0 if res.ok else 76
