"""Gatekeeper's exception hierarchy (everything on laptops and servers)::

    GatekeeperError                   exit 1
    ├── ActionFormatError             an action or bundle does not parse (exit 65, EX_DATAERR)
    ├── SignatureInvalid              an SSHSIG signature does not verify (exit 77)
    ├── ConfigError                   a config, key or allowed_signers file is wrong (exit 78, EX_CONFIG)
    │   └── ClockSkew                 the local clock and the log's differ by more than the window
    ├── LogUnavailable                the log cannot be reached in time (exit 69, EX_UNAVAILABLE)
    ├── LogMisbehaved                 the log returned something that does not verify (exit 76)
    │   ├── LogFork                   two histories that are not consistent ("LOG FORK DETECTED")
    │   └── monitor.scan.TruncatedLog entries covered by a checkpoint are missing
    ├── Refused                       the log or the gate refused (exit 77; a gate refusal exits
    │                                 with its reason's status, see ``gatekeeper.gate.Reason``)
    ├── SSHError                      connecting, authenticating or running over SSH failed
    │   │                             (exit 255, like ``ssh``)
    │   ├── HostKeyUnknown            the host's key is not in known_hosts (strict checking)
    │   └── HostKeyChanged            the host's key differs from the one in known_hosts
    └── (local mode, defined next to the code that raises them so that ``gk exec`` imports
        little: execgate.protocol.LocalProtocolError (229), execgate.client.LocalUnavailable
        (223), execgate.sshinfo.AuthInfoError)

``personality.errors.PersonalityError`` is the log's own root; the CLI catches both and prints
``diagnostics()``: one line, no traceback. The names once defined elsewhere stay importable from
there (``gatekeeper.client.sshclient.SSHError``, ``gatekeeper.client.submit.ClockSkew``, ...).
"""

from __future__ import annotations

__all__ = [
    "GatekeeperError",
    "ActionFormatError",
    "SignatureInvalid",
    "ConfigError",
    "ClockSkew",
    "LogUnavailable",
    "LogMisbehaved",
    "LogFork",
    "Refused",
    "SSHError",
    "HostKeyUnknown",
    "HostKeyChanged",
]


class GatekeeperError(Exception):
    """Root of every error raised by the ``gatekeeper`` package."""

    exit_code: int = 1

    def diagnostics(self) -> str:
        return f"gk: {self}"


class ActionFormatError(GatekeeperError):
    """An action, entry, bundle, key or signature does not parse (strictly)."""

    exit_code = 65


class SignatureInvalid(GatekeeperError):
    """An SSHSIG signature is malformed, for another namespace, or does not verify."""

    exit_code = 77


class ConfigError(GatekeeperError):
    """A configuration file, key file, option or allowed_signers file is wrong or unusable."""

    exit_code = 78


class ClockSkew(ConfigError):
    """The local clock and the log's clock disagree by more than the action's window."""


class LogUnavailable(GatekeeperError):
    """The log cannot be reached, is overloaded, or did not answer in time."""

    exit_code = 69


class LogMisbehaved(GatekeeperError):
    """Something the log returned does not verify (signature, proof, format)."""

    exit_code = 76


class LogFork(LogMisbehaved):
    """The log presented two histories that are not consistent: evidence is kept."""

    def diagnostics(self) -> str:
        return f"gk: LOG FORK DETECTED: {self}"


class Refused(GatekeeperError):
    """The log's admission or a host's gate refused the action."""

    exit_code = 77


class SSHError(GatekeeperError):
    """Connecting, authenticating or running the command over SSH failed (exit 255, as ``ssh``)."""

    exit_code = 255


class HostKeyUnknown(SSHError):
    """The host's key is not in known_hosts and strict host-key checking is on."""


class HostKeyChanged(SSHError):
    """The host presented a key other than the one known_hosts has for it (never accepted)."""
