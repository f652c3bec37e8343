"""``gk action``: inspect actions and bundles.

``gk action show [FILE|-]`` pretty-prints a log entry (action + SSHSIG), a bare action body, or a
``GK_BUNDLE`` value (auto-detected; a leading ``GK_BUNDLE=`` is accepted). The command is shown
with control and non-ASCII bytes escaped, so printing a hostile entry cannot drive the terminal;
times are UTC. The signature is checked for *consistency* (made by the key in ``signer``); whether
that key is trusted, and whether a bundle's proof and checkpoint verify, is not shown here.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

from gatekeeper.errors import ActionFormatError, GatekeeperError, SignatureInvalid

if TYPE_CHECKING:  # imported where used: registering the command must stay cheap for every gk run
    from gatekeeper import action as act
    from gatekeeper.bundle import Bundle

_MAX_INPUT = 65535 + 16384 + 64  # action.MAX_ENTRY + bundle.MAX_BUNDLE + 64 (tests pin the sum)


def _read(path: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read(_MAX_INPUT + 1)
        with open(path, "rb") as f:
            return f.read(_MAX_INPUT + 1)
    except OSError as exc:
        raise GatekeeperError(f"cannot read {path}: {exc.strerror or exc}") from None


def _rows(out: TextIO, rows: list[tuple[str, str]]) -> None:
    for label, value in rows:
        out.write(f"{label:<12}{value}\n")


def _describe_action(a: act.Action) -> list[tuple[str, str]]:
    from gatekeeper import action as act
    from gatekeeper import sshsig

    rows = [("kind", a.kind)]
    for i, t in enumerate(a.targets):
        rows.append(("host" if i == 0 else "", t.name + (f"  host key {t.host_key}" if t.host_key else "")))
    rows += [
        ("account", a.account),
        ("command", act.escape_command(a.command)),
        ("nonce", a.nonce.hex()),
        ("not-before", act.format_time(a.not_before)),
        ("not-after", f"{act.format_time(a.not_after)}  ({a.not_after - a.not_before} s window)"),
        ("signer", f"{a.signer.split()[0]} {sshsig.fingerprint(a.signer)}"),
        ("reason", a.reason or "(none)"),
    ]
    return rows


def _describe_signature(signed: act.SignedAction) -> str:
    from gatekeeper import action as act

    try:
        act.verify_entry(signed)
    except SignatureInvalid as exc:
        return f"INVALID: {exc}"
    return f"valid SSHSIG by the signer ({act.NAMESPACE}); trust in the key not checked"


def _describe_bundle(b: Bundle) -> list[tuple[str, str]]:
    from personality.errors import FormatError
    from personality.tlog.checkpoint import parse_signed_checkpoint

    try:
        sc = parse_signed_checkpoint(b.checkpoint)
    except FormatError as exc:  # pragma: no cover - parse_bundle already checked it
        raise ActionFormatError(f"bundle checkpoint: {exc}") from None
    rows = [
        ("log index", str(b.index)),
        ("proof", f"{len(b.proof)} hashes (not verified here)"),
        ("checkpoint", f"{sc.origin}  size {sc.size}"),
    ]
    for i, s in enumerate(sc.note.signatures):
        rows.append(("signed by" if i == 0 else "", f"{s.name}  key id {s.key_id.hex()}"))
    return rows


def show(data: bytes, out: TextIO) -> None:
    """Print a description of an entry, action body or bundle. Raises ActionFormatError."""
    from gatekeeper import action as act
    from gatekeeper.bundle import parse_bundle

    if len(data) > _MAX_INPUT:
        raise ActionFormatError(f"input larger than {_MAX_INPUT} bytes")
    rows: list[tuple[str, str]] = []
    if data.startswith(b"gatekeeper/action/"):
        if b"\n\n" in data:
            signed = act.parse_entry(data)
            rows = _describe_action(signed.action) + [("signature", _describe_signature(signed))]
        else:
            rows = _describe_action(act.parse_action(data)) + [("signature", "none (a bare action body)")]
        header = act.VERSION + (" entry" if b"\n\n" in data else " action")
    else:
        text = data.strip().decode("ascii", errors="replace")
        text = text.removeprefix("GK_BUNDLE=")
        bundle = parse_bundle(text)
        signed = act.parse_entry(bundle.entry)
        rows = (
            _describe_action(signed.action)
            + [("signature", _describe_signature(signed))]
            + _describe_bundle(bundle)
        )
        header = "GK_BUNDLE (c2sp.org/tlog-proof@v1)"
    out.write(header + "\n")
    _rows(out, rows)


def _show(args: argparse.Namespace) -> int:
    show(_read(args.file), sys.stdout)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("action", help="inspect actions and bundles")
    group = p.add_subparsers(dest="action_command", metavar="SUBCOMMAND", required=True)
    s = group.add_parser(
        "show",
        help="pretty-print an action entry or a GK_BUNDLE (auto-detected)",
        description="Pretty-print a log entry, an action body or a GK_BUNDLE value. Commands are "
        "shown with control bytes escaped; times are UTC.",
    )
    s.add_argument("file", nargs="?", default="-", metavar="FILE", help="file to read, or - for stdin")
    s.set_defaults(func=_show)
