"""``gk action``: build, sign and inspect actions."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("action", help="build, sign and inspect actions and bundles")
    p.add_subparsers(dest="action_command", metavar="SUBCOMMAND", required=True)
