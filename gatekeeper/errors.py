"""Gatekeeper's exception hierarchy (everything on laptops and servers)::

    GatekeeperError                   exit 1
    ├── ActionFormatError             an action or bundle does not parse (exit 65, EX_DATAERR)
    ├── SignatureInvalid              an SSHSIG signature does not verify (exit 77)
    ├── ConfigError                   a config, key or allowed_signers file is wrong (exit 78, EX_CONFIG)
    ├── LogUnavailable                the log cannot be reached in time (exit 69, EX_UNAVAILABLE)
    ├── LogMisbehaved                 the log returned something that does not verify (exit 76)
    └── Refused                       the gate refused to run a command (exit per reason, see
                                      ``gatekeeper.verify.decision.Reason``)

``personality.errors.PersonalityError`` is the log's own root; the CLI catches both and prints
``diagnostics()``: one line, no traceback.
"""

from __future__ import annotations

__all__ = [
    "GatekeeperError",
    "ActionFormatError",
    "SignatureInvalid",
    "ConfigError",
    "LogUnavailable",
    "LogMisbehaved",
    "Refused",
]


class GatekeeperError(Exception):
    """Root of every error raised by the ``gatekeeper`` package."""

    exit_code: int = 1

    def diagnostics(self) -> str:
        return f"gk: {self}"


class ActionFormatError(GatekeeperError):
    exit_code = 65


class SignatureInvalid(GatekeeperError):
    exit_code = 77


class ConfigError(GatekeeperError):
    exit_code = 78


class LogUnavailable(GatekeeperError):
    exit_code = 69


class LogMisbehaved(GatekeeperError):
    exit_code = 76


class Refused(GatekeeperError):
    exit_code = 77
