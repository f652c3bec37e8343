"""``gk agent``: the host-side enforcer (asyncssh server, local mode for sshd).

One ``_register_*`` function and one ``cmd_*`` handler per subcommand; ``register`` only calls the
``_register_*`` functions. ``init`` and ``serve`` belong to the SSH front end
(gatekeeper.agent.wiring); ``status`` and ``unhalt`` belong to the verification core and are added
next to them by their own ``_register_*`` functions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("agent", help="run the host agent that refuses unlogged commands")
    agent_sub = p.add_subparsers(dest="agent_command", metavar="SUBCOMMAND", required=True)
    _register_init(agent_sub)
    _register_serve(agent_sub)
    _register_status(agent_sub)
    _register_unhalt(agent_sub)


def _register_init(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "init",
        help="write agent.toml, an Ed25519 host key, authorized_keys and the state directory",
        description="Create a new agent directory. Never overwrites an existing file.",
    )
    p.add_argument("directory", type=Path, help="directory to create the files in (created 0700)")
    p.add_argument("--name", required=True, help="this host's name, as actions name their targets")
    p.add_argument("--log", required=True, dest="log_url", help="the log's base URL")
    p.add_argument("--log-key", required=True, action="append", dest="log_keys", metavar="VKEY",
                   help="the log's verifier key (name+hexid+base64); repeat for several")
    p.add_argument("--origin", help="the log's checkpoint origin (default: the first key's name)")
    p.add_argument("--listen", default="127.0.0.1:2222",
                   help='ADDRESS:PORT of the SSH listener, "" for none (default %(default)s)')
    p.add_argument("--local-socket", default="", metavar="PATH",
                   help="also answer gk exec (sshd ForceCommand) on this Unix socket ([local] socket)")
    p.set_defaults(func=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    from gatekeeper.agent.wiring import host_key_fingerprint, init_agent_dir, load_host_key

    written = init_agent_dir(args.directory, name=args.name, log_url=args.log_url, log_keys=args.log_keys,
                             origin=args.origin, listen=args.listen, local_socket=args.local_socket)
    for path in written:
        print(f"wrote {path}")
    fingerprint = host_key_fingerprint(load_host_key(written[1]))
    print(f"host key fingerprint: {fingerprint}")
    print(f"next: add users' public keys to {written[3]}, then: gk agent serve --config {written[0]}")
    return 0


def _register_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the agent (SSH server and/or local mode for sshd) in the foreground",
        description="Serve SSH exec requests, running only commands proven to be in the log, and, "
        "with a [local] section, answer gk exec (sshd ForceCommand) on a Unix socket with the same "
        "gate. Prints 'listening on HOST:PORT' and/or 'local mode listening on PATH' once ready; "
        "stops on SIGTERM or SIGINT.",
    )
    p.add_argument("--config", required=True, type=Path, help="the agent.toml to use")
    p.add_argument("-v", "--verbose", action="store_true", help="log SSH protocol details too")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from gatekeeper.agent.config import load_config
    from gatekeeper.agent.wiring import serve

    config = load_config(args.config)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s gk-agent %(levelname)s %(message)s")
    logging.getLogger("asyncssh").setLevel(logging.INFO if args.verbose else logging.WARNING)
    return serve(config)


def _state_args(p: argparse.ArgumentParser) -> None:
    """``--config FILE`` (the agent.toml: its state_dir and journal) or ``--state-dir DIR``."""
    where = p.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path, default=Path("/etc/gatekeeper/agent.toml"),
                       help="the agent.toml whose state_dir and journal to use (default %(default)s)")
    where.add_argument("--state-dir", type=Path, help="the agent's state directory (instead of --config)")


def _open_state(args: argparse.Namespace) -> tuple[Path, Path]:
    """(state_dir, journal path) from ``--state-dir`` or the config file."""
    if args.state_dir is not None:
        return args.state_dir, args.state_dir / "journal.jsonl"
    from gatekeeper.agent.config import load_config

    config = load_config(args.config)
    return config.state_dir, config.journal


def _register_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        help="show whether this host is halted, its newest log head and spent nonce count",
        description="Read the agent's head store. Exit status 0 when running normally, 1 when halted "
        "(the evidence is printed).",
    )
    _state_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from gatekeeper.verify.admin import format_status, status
    from gatekeeper.verify.headstore import HeadStore

    state_dir, _ = _open_state(args)
    with HeadStore.open(state_dir) as store:
        report = status(store)
    print(json.dumps(report, indent=2) if args.json else format_status(report), end="\n" if args.json else "")
    return 1 if report["halted"] else 0


def _register_unhalt(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "unhalt",
        help="clear the halted state after a fork, once the evidence was reviewed",
        description="Clear the halted state (the evidence and stored heads are kept). The act is "
        "recorded, with who did it and when, in the head store and in the journal.",
    )
    _state_args(p)
    p.add_argument("--evidence-reviewed", action="store_true",
                   help="required: confirms that both checkpoints shown by 'gk agent status' were reviewed")
    p.add_argument("--note", default="", help="why it is safe to resume (recorded with the act)")
    p.set_defaults(func=cmd_unhalt)


def cmd_unhalt(args: argparse.Namespace) -> int:
    from gatekeeper.journal import Journal
    from gatekeeper.verify.admin import operator_identity, unhalt
    from gatekeeper.verify.headstore import HeadStore

    if not args.evidence_reviewed:
        print("gk: refusing to unhalt without --evidence-reviewed: review the evidence shown by "
              "'gk agent status' first", file=sys.stderr)
        return 2
    state_dir, journal_path = _open_state(args)
    with HeadStore.open(state_dir) as store, Journal(journal_path) as journal:
        record = unhalt(store, journal, who=operator_identity(), note=args.note)
    if record is None:
        print("not halted: nothing to do")
        return 0
    print(f"unhalted (cleared halts up to #{record.through_halt}); recorded as unhalt #{record.id} "
          f"by {record.who}")
    return 0
