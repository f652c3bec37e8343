"""What one host accepts: its identity, the log it trusts, and the limits it enforces.

A :class:`HostPolicy` is validated when it is built: a policy that names no host, no log origin or
no log key, or that carries nonsensical limits, raises :class:`~gatekeeper.errors.ConfigError`, so
an agent cannot start with a policy that would accept everything (deny by default).

:meth:`HostPolicy.from_mapping` builds one from a TOML table (the ``[policy]`` table of the agent
config); every key and its default is documented there and in docs/verification.md. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gatekeeper.errors import ConfigError
from personality.errors import PersonalityError
from personality.tlog.cosig import CosignatureVerifier, parse_cosignature_vkey
from personality.tlog.note import NoteVerifier, Verifier, parse_vkey

__all__ = [
    "DEFAULT_MAX_CLOCK_SKEW",
    "DEFAULT_MAX_WINDOW",
    "DEFAULT_SHELL",
    "WitnessPolicy",
    "HostPolicy",
]

DEFAULT_MAX_CLOCK_SKEW = 60
DEFAULT_MAX_WINDOW = 24 * 3600
DEFAULT_SHELL = "/bin/sh"
MAX_CLOCK_SKEW_LIMIT = 3600
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
_V = TypeVar("_V", Verifier, CosignatureVerifier)
_ACCOUNT = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\$?")


@dataclass(frozen=True)
class WitnessPolicy:
    """Require cosignatures (C2SP ``cosignature/v1``) by at least ``required`` of ``verifiers``.

    The default requires none. This is the hook for the C2SP tlog-policy ``witness``/``group``/
    ``quorum`` syntax, which maps onto it for a single flat group.
    """

    required: int = 0
    verifiers: tuple[NoteVerifier, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.required, int) or self.required < 0:
            raise ConfigError("witness policy: 'required' must be a non-negative integer")
        names = [v.name for v in self.verifiers]
        if len(set(names)) != len(names):
            raise ConfigError("witness policy: two witnesses share a name")
        if self.required > len(self.verifiers):
            raise ConfigError(
                f"witness policy requires {self.required} cosignatures but names only "
                f"{len(self.verifiers)} witnesses"
            )


@dataclass(frozen=True)
class HostPolicy:
    """The checks one host applies. Raises :class:`ConfigError` when built with invalid values."""

    host_name: str
    log_origin: str
    log_verifiers: tuple[Verifier, ...]
    host_key_fingerprint: str | None = None  # SHA256:... of this host's SSH host key
    max_clock_skew: int = DEFAULT_MAX_CLOCK_SKEW  # seconds, both directions
    max_window: int = DEFAULT_MAX_WINDOW  # longest not_after - not_before accepted, seconds
    witnesses: WitnessPolicy = field(default_factory=WitnessPolicy)
    allowed_accounts: frozenset[str] | None = None  # None: any account the front end accepts
    shell: str = DEFAULT_SHELL

    def __post_init__(self) -> None:
        if (
            not isinstance(self.host_name, str)
            or not self.host_name
            or any(c.isspace() or c < " " for c in self.host_name)
        ):
            raise ConfigError("policy: host_name must be a non-empty name without spaces")
        if self.host_name != self.host_name.lower():  # host names are case-insensitive; actions are lowercase
            object.__setattr__(self, "host_name", self.host_name.lower())
        if not isinstance(self.log_origin, str) or not self.log_origin or "\n" in self.log_origin:
            raise ConfigError("policy: log_origin must be the log's checkpoint origin line")
        if not self.log_verifiers or not all(isinstance(v, Verifier) for v in self.log_verifiers):
            raise ConfigError("policy: at least one log verifier key is required (deny by default)")
        if self.host_key_fingerprint is not None and not _FINGERPRINT.fullmatch(self.host_key_fingerprint):
            raise ConfigError("policy: host_key_fingerprint must look like SHA256:<43 base64 characters>")
        if not isinstance(self.max_clock_skew, int) or not 0 <= self.max_clock_skew <= MAX_CLOCK_SKEW_LIMIT:
            raise ConfigError(f"policy: max_clock_skew must be 0..{MAX_CLOCK_SKEW_LIMIT} seconds")
        if not isinstance(self.max_window, int) or self.max_window <= 0:
            raise ConfigError("policy: max_window must be a positive number of seconds")
        if self.allowed_accounts is not None:
            if not self.allowed_accounts:
                raise ConfigError("policy: allowed_accounts is empty: no command could ever run")
            bad = sorted(a for a in self.allowed_accounts if not _ACCOUNT.fullmatch(a))
            if bad:
                raise ConfigError(f"policy: invalid account names in allowed_accounts: {bad}")
        if not isinstance(self.shell, str) or not self.shell.startswith("/") or "\0" in self.shell:
            raise ConfigError("policy: shell must be an absolute path")

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> HostPolicy:
        """Build a policy from a TOML-like table. Keys::

            host_name = "web-01"                       # required
            host_key_fingerprint = "SHA256:..."        # optional
            log_origin = "log.example.com/gatekeeper"  # required
            log_keys = ["name+hexid+base64..."]        # required, C2SP vkeys
            max_clock_skew = 60                        # seconds
            max_window = 86400                         # seconds
            allowed_accounts = ["deploy"]              # optional
            shell = "/bin/sh"
            [witnesses]                                # optional
            required = 2
            keys = ["witness1+hexid+base64(0x04||pub)", ...]

        Unknown keys are an error (a typo must not silently weaken the policy).
        """
        known = {
            "host_name",
            "host_key_fingerprint",
            "log_origin",
            "log_keys",
            "max_clock_skew",
            "max_window",
            "allowed_accounts",
            "shell",
            "witnesses",
        }
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(f"policy: unknown settings {unknown}")
        witnesses = table.get("witnesses", {})
        if not isinstance(witnesses, Mapping) or set(witnesses) - {"required", "keys"}:
            raise ConfigError("policy: [witnesses] takes only 'required' and 'keys'")
        accounts = table.get("allowed_accounts")
        if accounts is not None and not _is_str_list(accounts):
            raise ConfigError("policy: allowed_accounts must be a list of account names")
        return cls(
            host_name=_str(table, "host_name", required=True) or "",
            host_key_fingerprint=_str(table, "host_key_fingerprint"),
            log_origin=_str(table, "log_origin", required=True) or "",
            log_verifiers=tuple(_parse_keys(table.get("log_keys"), "log_keys", parse_vkey)),
            max_clock_skew=_int(table, "max_clock_skew", DEFAULT_MAX_CLOCK_SKEW),
            max_window=_int(table, "max_window", DEFAULT_MAX_WINDOW),
            witnesses=WitnessPolicy(
                required=_int(witnesses, "required", 0),
                verifiers=tuple(
                    _parse_keys(witnesses.get("keys", []), "witnesses.keys", parse_cosignature_vkey)
                ),
            ),
            allowed_accounts=None if accounts is None else frozenset(accounts),
            shell=_str(table, "shell") or DEFAULT_SHELL,
        )


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _str(table: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = table.get(key)
    if value is None:
        if required:
            raise ConfigError(f"policy: '{key}' is required")
        return None
    if not isinstance(value, str):
        raise ConfigError(f"policy: '{key}' must be a string")
    return value


def _int(table: Mapping[str, Any], key: str, default: int) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"policy: '{key}' must be an integer")
    return value


def _parse_keys(value: object, key: str, parse: Callable[[str], _V]) -> Sequence[_V]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"policy: '{key}' must be a list of verifier keys")
    out: list[_V] = []
    for text in value:
        try:
            out.append(parse(text))
        except (PersonalityError, ValueError) as exc:  # ValueError: e.g. a name that is not valid UTF-8
            raise ConfigError(f"policy: {key}: {exc}") from None
    return out
