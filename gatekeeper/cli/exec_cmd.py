"""``gk exec``: the sshd ForceCommand (see docs/openssh.md).

In sshd_config prefer the isolated form ``/path/to/venv/bin/python3 -I -m gatekeeper.execgate``:
the ``gk`` console script starts Python without ``-I``, so the SSH user's site-packages
(``usercustomize``, ``.pth`` files) would run before the gate. This subcommand is the same program,
for manual use and for the authorized_keys ``command="gk exec"`` spelling behind a ``-I`` wrapper.
"""

from __future__ import annotations

import argparse

from gatekeeper.execgate import program


def _run(args: argparse.Namespace) -> int:
    argv = ["--socket", args.socket, "--timeout", str(args.timeout)]
    return program.run(argv)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "exec",
        help="sshd ForceCommand: run SSH_ORIGINAL_COMMAND only if the local agent verified it was logged",
        description=program.__doc__.split("\n\n")[0] if program.__doc__ else None,
    )
    program.build_parser(p)
    p.set_defaults(func=_run)
