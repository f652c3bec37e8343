"""``gk agent``: the host-side enforcer (asyncssh server, local mode for sshd)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("agent", help="run the host agent that refuses unlogged commands")
    p.add_subparsers(dest="agent_command", metavar="SUBCOMMAND", required=True)
