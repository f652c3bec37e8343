import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gatekeeper.cli import _command_word, build_parser, main

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_log_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "log" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "no-such-command"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- only the subcommand being run is built ---------------------------------------------------------

def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_top_level_help_is_the_same_without_building_the_subcommands() -> None:
    full = build_parser()
    lazy = build_parser(["--help"])
    assert lazy.format_help() == full.format_help()  # every group, its one-line help, same order
    assert list(_subparsers(lazy)) == list(_subparsers(full))
    assert all(not p._actions for p in _subparsers(lazy).values())  # placeholders only


@pytest.mark.parametrize("name", list(_subparsers(build_parser())))
def test_the_subcommand_run_gets_its_full_parser(name: str) -> None:
    full, lazy = build_parser(), build_parser([name, "--help"])
    assert _subparsers(lazy)[name].format_help() == _subparsers(full)[name].format_help()
    assert lazy.format_help() == full.format_help()


@pytest.mark.parametrize(
    ("argv", "word"),
    [(["log", "serve"], "log"), (["--help", "audit"], "audit"), (["--", "ssh", "h"], "ssh"), (["-h"], None),
     ([], None), (["-"], "-")],
)
def test_command_word(argv: list[str], word: str | None) -> None:
    assert _command_word(argv) == word


_IMPORTS = (
    "import json, sys\n"
    "from gatekeeper.cli import main\n"
    "try:\n"
    "    code = main(json.loads(sys.argv[1]))\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "print(json.dumps([code, sorted(m for m in sys.modules if m.startswith('gatekeeper.cli.'))]),"
    " file=sys.stderr)\n"
)


def _help_run(*argv: str) -> tuple[int, str, list[str]]:
    """``gk ARGV`` (expected to print help) in a fresh interpreter: exit status, stdout, and the
    gatekeeper.cli submodules it imported."""
    proc = subprocess.run([sys.executable, "-c", _IMPORTS, json.dumps(list(argv))], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    code, modules = json.loads(proc.stderr.strip().splitlines()[-1])
    return code, proc.stdout, modules


def test_gk_help_lists_every_group_and_imports_no_subcommand_module() -> None:
    code, out, modules = _help_run("--help")
    assert code == 0
    for name in ("log", "action", "agent", "exec", "submit", "ssh", "monitor", "audit"):
        assert f"\n    {name} " in out, out
    assert "run and inspect the verifiable log service" in out
    assert modules == []


def test_gk_log_help_builds_only_the_log_group() -> None:
    code, out, modules = _help_run("log", "--help")
    assert code == 0
    assert out.startswith("usage: gk log [-h] SUBCOMMAND ...")
    assert "serve" in out and "init" in out
    assert modules == ["gatekeeper.cli.log_cmd"]


def test_gk_ssh_help_builds_the_client_group() -> None:
    code, out, modules = _help_run("ssh", "--help")
    assert code == 0
    assert out.startswith("usage: gk ssh [options] [user@]host[:port]")
    assert modules == ["gatekeeper.cli.client_cmd"]
