"""``gk submit`` and ``gk ssh``: the user's side (see docs/client.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gatekeeper.errors import ConfigError

_SUBMIT_EPILOG = """\
The command is the arguments after '--' joined with single spaces, exactly as OpenSSH's
'ssh host ARG...' joins them (no quoting is added or removed: 'ls -l "/tmp/my dir"' is sent as
'ls -l /tmp/my dir'). Use --command-string to give the exact string instead.
The bundle (the GK_BUNDLE value) goes to stdout or --output; the log index to stderr."""

_SSH_EPILOG = """\
Options may come before the destination, or between it and '--'. Without '--', everything after
the destination is the command (like ssh). The action names each host by its HostKeyAlias, else
its HostName, after ~/.ssh/config resolution (lowercased); the host agent's name must be that.
The session logs in with the key that signed the action."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "submit",
        help="sign an action, log it, verify the proof, print the bundle",
        epilog=_SUBMIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_log_options(p)
    p.add_argument("--host", action="append", default=[], metavar="H", help="target host (repeatable)")
    p.add_argument("--account", required=True, metavar="A", help="remote account the command runs as")
    _add_action_options(p)
    p.add_argument("--output", "-o", type=Path, metavar="FILE", help="write the bundle here (mode 0600)")
    p.add_argument("words", nargs=argparse.REMAINDER, help="-- COMMAND...")
    p.set_defaults(func=_submit)

    s = sub.add_parser(
        "ssh",
        help="log a command, then run it over SSH with the bundle",
        usage="gk ssh [options] [user@]host[:port] [options] -- COMMAND...",
        epilog=_SSH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_ssh_options(s)
    s.add_argument("words", nargs=argparse.REMAINDER, help="[user@]host[:port] -- COMMAND...")
    s.set_defaults(func=_ssh)


def _add_log_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        help="client config (default $GK_CONFIG or ~/.config/gatekeeper/client.toml)",
    )
    p.add_argument("--log", metavar="URL", help="the log's base URL")
    p.add_argument("--log-key", metavar="VKEY", help="the log's verifier key (name+hexid+base64)")
    p.add_argument("--origin", help="the log's checkpoint origin (default: the key name)")
    p.add_argument("--state", type=Path, metavar="FILE", help="file holding the newest verified checkpoint")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="HTTP timeout for the log")


def _add_action_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", default="", help="why (ticket, incident); logged permanently")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--key", "-i", type=Path, metavar="FILE", help="sign with this private key file")
    g.add_argument("--agent", action="store_true", help="sign with a key in ssh-agent (SSH_AUTH_SOCK)")
    p.add_argument("--window", type=int, metavar="SECONDS", help="validity window (default 300)")
    p.add_argument("--command-string", metavar="STR", help="the exact command string (instead of -- ARGS)")


def _add_ssh_options(s: argparse.ArgumentParser) -> None:
    _add_log_options(s)
    _add_action_options(s)
    s.add_argument("-H", dest="hosts", metavar="H1,H2,...", help="run on several hosts (one action)")
    s.add_argument("-l", dest="login", metavar="USER", help="remote user")
    s.add_argument("-p", dest="port", type=int, metavar="PORT", help="remote port")
    s.add_argument("-F", dest="ssh_config", type=Path, metavar="FILE", help="ssh config file")
    s.add_argument("-n", dest="no_stdin", action="store_true", help="do not forward stdin")
    s.add_argument("--accept-new", action="store_true", help="add unknown host keys to known_hosts")
    s.add_argument(
        "--pin-host-key",
        action="store_true",
        help="put each host's key fingerprint in the action (only that machine accepts it)",
    )
    s.add_argument("--parallel", type=int, default=1, metavar="N", help="hosts at a time with -H (max 32)")
    s.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS")


def _command(args: argparse.Namespace, words: list[str], strip: bool = True) -> bytes:
    from gatekeeper.client.submit import join_command

    if strip and words and words[0] == "--":
        words = words[1:]
    if args.command_string is not None:
        if words:
            raise ConfigError("give the command either after '--' or with --command-string, not both")
        return os.fsencode(args.command_string)
    if not words:
        raise ConfigError("no command: add -- COMMAND... (or --command-string)")
    return join_command(words)


def _settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from gatekeeper.client.config import load_config
    from gatekeeper.client.submit import LogSettings

    cfg = load_config(args.config).with_overrides(
        log_url=args.log,
        log_key=args.log_key,
        origin=args.origin,
        state_file=args.state,
        window=args.window,
        timeout=args.timeout,
    )
    url, vkey, origin = cfg.require_log()
    return cfg, LogSettings.from_strings(url, vkey, origin, cfg.state_file, cfg.timeout)


def _identity(args: argparse.Namespace, cfg, candidates: tuple[Path, ...] = ()):  # type: ignore[no-untyped-def]
    from gatekeeper.client import identity

    if args.key is not None:
        return identity.from_file(args.key)
    if args.agent:
        return identity.from_agent()
    if cfg.key_file is not None:
        return identity.from_file(cfg.key_file)
    if cfg.agent:
        return identity.from_agent()
    return identity.default_identity(candidates)


def _submit(args: argparse.Namespace) -> int:
    from gatekeeper.client.submit import build_action, submit_action

    command = _command(args, list(args.words))
    if not args.host:
        raise ConfigError("no target: add --host H (repeatable)")
    cfg, log = _settings(args)
    ident = _identity(args, cfg)
    action = build_action(ident, args.host, args.account, command, window=cfg.window, reason=args.reason)
    result = submit_action(log, ident, action)
    if args.output is not None:
        _write_private(args.output, result.bundle + "\n")
    else:
        sys.stdout.write(result.bundle + "\n")
        sys.stdout.flush()
    print(f"gk: logged as index {result.index} (checkpoint size {result.checkpoint.size})", file=sys.stderr)
    return 0


def _write_private(path: Path, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


def _split_ssh_words(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(destinations, command words). After the destination: '--' starts the command; words that
    start with '-' are options up to '--' (parsed here); any other word starts the command (like
    ``ssh host cmd args``)."""
    words = list(args.words)
    dests: list[str] = []
    if args.hosts is None:
        if not words or words[0] == "--":
            raise ConfigError("no destination: gk ssh [user@]host[:port] -- COMMAND...")
        dests.append(words.pop(0))
    if words and words[0] == "--":
        words = words[1:]
    elif words and words[0].startswith("-"):
        cut = words.index("--") if "--" in words else len(words)
        middle, words = words[:cut], words[cut + 1 :]
        extra = argparse.ArgumentParser(prog="gk ssh", add_help=False)
        _add_ssh_options(extra)
        defaults = {a.dest: a.default for a in extra._actions}
        parsed, rest = extra.parse_known_args(middle)
        if rest:
            raise ConfigError(
                f"unexpected {' '.join(rest)!r}: when options follow the destination, the command "
                "must follow '--'"
            )
        for name, value in vars(parsed).items():
            if value != defaults.get(name):
                setattr(args, name, value)
    if args.hosts is not None:
        dests = [h.strip() for h in args.hosts.split(",") if h.strip()]
        if not dests:
            raise ConfigError("-H needs at least one host")
    return dests, words


def _ssh(args: argparse.Namespace) -> int:
    from gatekeeper.client import sshclient
    from gatekeeper.client.run import reason_for_status, run_on_hosts

    dests, words = _split_ssh_words(args)
    args.words = words
    command = _command(args, words, strip=False)
    if len(dests) != len(set(dests)):
        raise ConfigError("a host is named twice in -H")
    cfg, log = _settings(args)
    resolver = sshclient.Resolver([args.ssh_config] if args.ssh_config else None)
    specs = [resolver.resolve(d, user=args.login, port=args.port, identity=args.key) for d in dests]
    ident = _identity(args, cfg, specs[0].identity_files)
    if not 1 <= args.parallel <= 32:
        raise ConfigError("--parallel must be between 1 and 32")

    def logged(result) -> None:  # type: ignore[no-untyped-def]
        print(f"gk: logged as index {result.index}", file=sys.stderr, flush=True)

    report = run_on_hosts(
        specs=specs,
        identity=ident,
        log=log,
        command=command,
        window=cfg.window,
        reason=args.reason,
        resolver=resolver,
        accept_new=args.accept_new,
        pin_host_keys=args.pin_host_key,
        stdin=None if args.no_stdin or sys.stdin is None else sys.stdin.buffer,
        parallel=args.parallel,
        connect_timeout=args.connect_timeout,
        on_logged=logged,
    )
    if len(report.results) == 1:
        r = report.results[0]
        if r.error:
            print(f"gk: {r.error}", file=sys.stderr)
        if r.status == 141:  # stdout was closed (| head): keep Python's final flush quiet, like ssh
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return r.status
    failed = [r for r in report.results if r.status != 0]
    print(
        f"gk: {len(report.results)} hosts, {len(failed)} failed (log index {report.submit.index})",
        file=sys.stderr,
    )
    for r in report.results:
        why = r.error
        if not why and r.status:
            refusal = reason_for_status(r.status)
            why = f"exit {r.status}" + (f" (gate refusal status: {refusal.code})" if refusal else "")
        print(f"gk:   [{r.label}] {why or 'ok'}", file=sys.stderr)
    return report.exit_status
