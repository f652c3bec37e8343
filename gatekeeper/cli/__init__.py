"""``gk``: one console command, with subcommands registered by the modules listed in ``_COMMANDS``.

Each module defines ``register(subparsers)`` which adds its subcommands and sets ``func`` on them;
``func(args) -> int`` returns the exit status. Only this module calls ``sys.exit``; errors from either
package are printed as one line (``diagnostics()``), never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gatekeeper.errors import GatekeeperError
from personality.errors import PersonalityError

_COMMANDS = (
    "gatekeeper.cli.log_cmd",
    "gatekeeper.cli.action_cmd",
    "gatekeeper.cli.agent_cmd",
    "gatekeeper.cli.exec_cmd",
    "gatekeeper.cli.client_cmd",
    "gatekeeper.cli.monitor_cmd",
    "gatekeeper.cli.audit_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gk",
        description="Gatekeeper: no command runs on a server unless it was first written into a "
        "verifiable, append-only log.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = int(args.func(args))
    except (GatekeeperError, PersonalityError) as exc:
        print(exc.diagnostics(), file=sys.stderr)
        rc = exc.exit_code
    except KeyboardInterrupt:
        print("gk: interrupted", file=sys.stderr)
        rc = 130
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
