"""One exception hierarchy for the gatekeeper package (gatekeeper/errors.py), drawn in its docstring,
with the exit statuses the CLI returns; names once defined elsewhere are still importable there."""

from __future__ import annotations

import pytest

import gatekeeper.errors as errors
from gatekeeper.cli import main
from gatekeeper.client import sshclient, submit


def test_every_public_error_is_drawn_in_the_module_docstring() -> None:
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        assert f" {name} " in doc or f"── {name}" in doc, name
        cls = getattr(errors, name)
        assert issubclass(cls, errors.GatekeeperError)
        assert cls.__doc__, f"{name} has no docstring"


@pytest.mark.parametrize(
    ("cls", "parent", "exit_code"),
    [
        (errors.ClockSkew, errors.ConfigError, 78),
        (errors.LogFork, errors.LogMisbehaved, 76),
        (errors.SSHError, errors.GatekeeperError, 255),
        (errors.HostKeyUnknown, errors.SSHError, 255),
        (errors.HostKeyChanged, errors.SSHError, 255),
    ],
)
def test_moved_classes_keep_their_place_and_exit_status(
    cls: type[errors.GatekeeperError], parent: type[errors.GatekeeperError], exit_code: int
) -> None:
    assert issubclass(cls, parent)
    assert cls.exit_code == exit_code


def test_old_import_locations_are_the_same_classes() -> None:
    assert sshclient.SSHError is errors.SSHError
    assert sshclient.HostKeyUnknown is errors.HostKeyUnknown
    assert sshclient.HostKeyChanged is errors.HostKeyChanged
    assert submit.ClockSkew is errors.ClockSkew
    assert submit.LogFork is errors.LogFork
    for module, names in ((sshclient, ("SSHError", "HostKeyUnknown", "HostKeyChanged")),
                          (submit, ("ClockSkew", "LogFork"))):
        assert set(names) <= set(module.__all__)


def test_log_fork_diagnostics_are_loud() -> None:
    assert errors.LogFork("checkpoints 5 and 3 disagree").diagnostics() == (
        "gk: LOG FORK DETECTED: checkpoints 5 and 3 disagree"
    )


def test_cli_prints_one_line_and_the_exit_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An SSHError from a handler becomes exit 255 and one ``gk:`` line (no traceback)."""
    from gatekeeper.cli import client_cmd

    def fail(_args: object) -> int:
        raise errors.HostKeyChanged("host key for web-01 changed")

    monkeypatch.setattr(client_cmd, "_ssh", fail)
    assert main(["ssh", "web-01", "--", "true"]) == 255
    assert capsys.readouterr().err == "gk: host key for web-01 changed\n"
