"""gk ssh argument handling: where options may go, what becomes the command (no network)."""

from __future__ import annotations

import argparse

import pytest

from gatekeeper.cli import build_parser
from gatekeeper.cli.client_cmd import _command, _split_ssh_words
from gatekeeper.errors import ConfigError


def parse(*argv: str) -> tuple[argparse.Namespace, list[str], bytes]:
    args = build_parser().parse_args(["ssh", *argv])
    dests, words = _split_ssh_words(args)
    return args, dests, _command(args, words, strip=False)


def test_options_before_destination() -> None:
    args, dests, cmd = parse("--reason", "fix", "-l", "deploy", "web-01", "--", "ls", "-l", "/tmp/my dir")
    assert (dests, cmd, args.reason, args.login) == (["web-01"], b"ls -l /tmp/my dir", "fix", "deploy")


def test_options_between_destination_and_dashdash() -> None:
    args, dests, cmd = parse("web-01", "--reason", "INC-1", "--window", "60", "-n", "--", "uptime")
    assert (dests, cmd, args.reason, args.window, args.no_stdin) == (["web-01"], b"uptime", "INC-1", 60, True)


def test_without_dashdash_everything_after_destination_is_the_command() -> None:
    _, dests, cmd = parse("web-01", "echo", "a", "--", "b")
    assert (dests, cmd) == (["web-01"], b"echo a -- b")


def test_option_after_destination_without_dashdash_is_refused() -> None:
    with pytest.raises(ConfigError, match="the command must follow '--'"):
        parse("web-01", "--reason", "x", "cmd")


def test_dashdash_twice_keeps_the_second() -> None:
    _, _, cmd = parse("web-01", "--", "--", "x")
    assert cmd == b"-- x"


def test_later_dashdash_belongs_to_the_command() -> None:
    _, _, cmd = parse("web-01", "--", "echo", "--", "-x")
    assert cmd == b"echo -- -x"


def test_multi_host() -> None:
    args, dests, cmd = parse("-H", "web-01,web-02, web-03", "--parallel", "4", "--", "uptime")
    assert (dests, cmd, args.parallel) == (["web-01", "web-02", "web-03"], b"uptime", 4)
    _, dests, cmd = parse("-H", "a,b", "uptime")
    assert (dests, cmd) == (["a", "b"], b"uptime")


def test_command_string() -> None:
    _, _, cmd = parse("web-01", "--command-string", "echo 'a  b'")
    assert cmd == b"echo 'a  b'"
    with pytest.raises(ConfigError, match="not both"):
        parse("web-01", "--command-string", "x", "--", "y")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "no destination"),
        (("--", "ls"), "no destination"),
        (("web-01",), "no command"),
        (("web-01", "-n", "stray", "--", "ls"), "unexpected 'stray'"),
        (("-H", ",", "--", "ls"), "at least one host"),
    ],
)
def test_usage_errors(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(*argv)
