"""``gk``: one console command, with subcommands registered by the ``gatekeeper.cli`` modules listed in
``_COMMANDS``.

Each module defines ``register(subparsers)`` which adds its subcommands and sets ``func`` on them;
``func(args) -> int`` returns the exit status. Only this module calls ``sys.exit``; errors from either
package are printed as one line (``diagnostics()``), never as a traceback.

A run imports and builds only the module of the subcommand it runs (the first word of argv that is
not an option); every other subcommand is a placeholder carrying its one-line help, which is all
``gk --help`` and argparse's "invalid choice" message need. That help is repeated in ``_COMMANDS``
for this reason; tests/test_cli.py checks it against what each module registers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gatekeeper.errors import GatekeeperError
from personality.errors import PersonalityError

#: (subcommand, its module in gatekeeper.cli, one-line help), in ``gk --help`` order; the rows of a
#: module are contiguous and in the order its ``register`` adds them.
_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("log", "log_cmd", "run and inspect the verifiable log service"),
    ("action", "action_cmd", "inspect actions and bundles"),
    ("agent", "agent_cmd", "run the host agent that refuses unlogged commands"),
    (
        "exec",
        "exec_cmd",
        "sshd ForceCommand: run SSH_ORIGINAL_COMMAND only if the local agent verified it was logged",
    ),
    ("submit", "client_cmd", "sign an action, log it, verify the proof, print the bundle"),
    ("ssh", "client_cmd", "log a command, then run it over SSH with the bundle"),
    ("monitor", "monitor_cmd", "verify logs stay append-only, check every action, alert on rules"),
    ("audit", "audit_cmd", "search, show, prove and export logged actions"),
)


def _command_word(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names: its first word that is not an option (``gk`` itself has no
    option taking a value), or the word after ``--``; None if there is none."""
    for i, word in enumerate(argv):
        if word == "--":
            return argv[i + 1] if i + 1 < len(argv) else None
        if not word.startswith("-") or word == "-":
            return word
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``gk`` parser. Without ``argv``, every subcommand's full parser (every module is
    imported). With ``argv``, only the module of the subcommand it runs registers its parsers;
    the others are placeholders with their one-line help (they take no arguments and have no
    ``func``). Either way ``gk --help`` lists every subcommand, in the same order."""
    parser = argparse.ArgumentParser(
        prog="gk",
        description="Gatekeeper: no command runs on a server unless it was first written into a "
        "verifiable, append-only log.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    word = None if argv is None else _command_word(argv)
    wanted = {module for name, module, _ in _COMMANDS if argv is None or name == word}
    registered: set[str] = set()
    for name, module, help_text in _COMMANDS:
        if module not in wanted:
            sub.add_parser(name, help=help_text, add_help=False)
        elif module not in registered:
            importlib.import_module(f"gatekeeper.cli.{module}").register(sub)
            registered.add(module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(words).parse_args(words)
    if getattr(args, "func", None) is None:  # a placeholder was chosen: never guess, build them all
        args = build_parser().parse_args(words)
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
