"""``gk log``: run and inspect the verifiable log (the personality)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("log", help="run and inspect the verifiable log service")
    p.add_subparsers(dest="log_command", metavar="SUBCOMMAND", required=True)
