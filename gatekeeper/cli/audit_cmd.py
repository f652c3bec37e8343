"""``gk audit``: review, search, prove and export what the log recorded."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("audit", help="search, show, prove and export logged actions")
    p.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)
