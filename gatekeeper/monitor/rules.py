"""Monitor rules: flag suspicious actions, from a TOML file (``examples/monitor-rules.toml``).

A rules file is a list of ``[[rule]]`` tables. Every condition a rule states must hold for the rule
to fire (AND); a list inside one condition matches if any of its items does (OR). A rule with no
condition at all is an error (it would flag everything by accident; write ``command = ""`` to mean
that on purpose)::

    [[rule]]
    name = "root-outside-hours"        # required, unique
    severity = "high"                  # info | low | medium | high | critical (default medium)
    message = "root command outside business hours"
    command = 'rm\\s+-rf|curl .*\\|\\s*sh'  # Python regex, searched in the command
    kinds = ["exec"]                   # action kinds
    hosts = ["db-*", "web-01"]         # shell-style globs on target host names
    accounts = ["root"]                # remote accounts (globs)
    signers = ["SHA256:...", "alice@example.com"]  # key fingerprints, OpenSSH keys or principals
    reason = '^$'                      # regex on the free-text reason (here: no reason given)
    outside_hours = "08:00-18:00"      # fires when not_before is outside this window ...
    hours = "22:00-06:00"              # ... or inside this one (windows may wrap midnight)
    days = ["sat", "sun"]              # days of the week of not_before
    timezone = "Europe/Berlin"         # for hours/days; default UTC
    except_hosts = [...]               # exclusions: the rule does not fire if any matches
    except_accounts = [...]
    except_signers = [...]

The command is matched as text: UTF-8, with undecodable bytes written ``\\xNN``. Times are the
action's ``not_before`` (the moment the submitter signed it; the log itself records no time).

Pure: parsing takes the TOML text; evaluation takes an action and the signer's principals.
Malformed rules raise :class:`~gatekeeper.errors.ConfigError` naming the rule and the field.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gatekeeper.action import Action
from gatekeeper.errors import ConfigError

__all__ = [
    "SEVERITIES",
    "Rule",
    "RuleSet",
    "parse_rules",
    "load_rules",
    "command_text",
    "severity_rank",
]

SEVERITIES = ("info", "low", "medium", "high", "critical")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_KNOWN = {
    "name",
    "severity",
    "message",
    "command",
    "kinds",
    "hosts",
    "accounts",
    "signers",
    "reason",
    "hours",
    "outside_hours",
    "days",
    "timezone",
    "except_hosts",
    "except_accounts",
    "except_signers",
}
_CONDITIONS = _KNOWN - {"name", "severity", "message", "timezone"}
MAX_RULES = 10_000
#: Longest ``command`` / ``reason`` pattern, in characters (a rule is a short expression; the bound
#: keeps a hostile rules file from making :func:`re.compile` work or recurse without end).
MAX_REGEX = 4096


def severity_rank(severity: str) -> int:
    """0 for ``info`` … 4 for ``critical``; raises ``ConfigError`` for an unknown name."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        raise ConfigError(f"unknown severity {severity!r} (one of {', '.join(SEVERITIES)})") from None


def command_text(command: bytes) -> str:
    """The command as text for matching and display (undecodable bytes as ``\\xNN``)."""
    return command.decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class _Window:
    """Minutes since midnight, ``[start, end)``; ``start > end`` wraps past midnight."""

    start: int
    end: int

    def contains(self, minute: int) -> bool:
        if self.start <= self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


@dataclass(frozen=True)
class Rule:
    """One compiled rule. Build with :func:`parse_rules`; match with :meth:`matches`."""

    name: str
    severity: str = "medium"
    message: str = ""
    command: re.Pattern[str] | None = None
    kinds: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()
    signers: tuple[str, ...] = ()
    reason: re.Pattern[str] | None = None
    hours: _Window | None = None
    outside_hours: _Window | None = None
    days: tuple[int, ...] = ()
    tz: _dt.tzinfo = field(default=_dt.UTC)
    except_hosts: tuple[str, ...] = ()
    except_accounts: tuple[str, ...] = ()
    except_signers: tuple[str, ...] = ()

    def matches(self, action: Action, principals: Sequence[str] = (), fingerprint: str = "") -> bool:
        """True when every condition of the rule holds for ``action``.

        ``principals`` are the signer's names from an allowed_signers file (if the monitor has
        one) and ``fingerprint`` the signer key's ``SHA256:`` fingerprint; both are matched by
        ``signers`` / ``except_signers`` together with the OpenSSH key itself.
        """
        if self.kinds and action.kind not in self.kinds:
            return False
        if self.accounts and not _any_glob(self.accounts, (action.account,)):
            return False
        if self.except_accounts and _any_glob(self.except_accounts, (action.account,)):
            return False
        names = [t.name for t in action.targets]
        if self.hosts and not _any_glob(self.hosts, names):
            return False
        if self.except_hosts and _any_glob(self.except_hosts, names):
            return False
        if self.signers or self.except_signers:
            ids = (action.signer, fingerprint, *principals)
            if self.signers and not _any_glob(self.signers, ids):
                return False
            if self.except_signers and _any_glob(self.except_signers, ids):
                return False
        if self.hours or self.outside_hours or self.days:
            when = _dt.datetime.fromtimestamp(action.not_before, self.tz)
            minute = when.hour * 60 + when.minute
            if self.hours and not self.hours.contains(minute):
                return False
            if self.outside_hours and self.outside_hours.contains(minute):
                return False
            if self.days and when.weekday() not in self.days:
                return False
        if self.reason is not None and not self.reason.search(action.reason):
            return False
        if self.command is not None and not self.command.search(command_text(action.command)):
            return False
        return True


def _any_glob(patterns: Iterable[str], values: Iterable[str]) -> bool:
    vals = [v for v in values if v]
    return any(fnmatch.fnmatchcase(v, p) for p in patterns for v in vals)


@dataclass(frozen=True)
class RuleSet:
    """An ordered set of rules; :meth:`evaluate` returns those that fire."""

    rules: tuple[Rule, ...] = ()

    def evaluate(self, action: Action, principals: Sequence[str] = (), fingerprint: str = "") -> list[Rule]:
        return [r for r in self.rules if r.matches(action, principals, fingerprint)]

    def __len__(self) -> int:
        return len(self.rules)


def load_rules(path: str | Path) -> RuleSet:
    """Read and compile a rules file; raises ``ConfigError`` (unreadable file, bad TOML, bad rule)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read rules file {path}: {exc}") from None
    return parse_rules(text, source=str(path))


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    """Compile the rules in ``text`` (TOML). Raises ``ConfigError`` for anything wrong."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    extra = set(doc) - {"rule"}
    if extra:
        raise ConfigError(f"{source}: unknown top-level keys {sorted(extra)} (rules are [[rule]] tables)")
    raw = doc.get("rule", [])
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise ConfigError(f"{source}: 'rule' must be an array of tables ([[rule]])")
    if len(raw) > MAX_RULES:
        raise ConfigError(f"{source}: more than {MAX_RULES} rules")
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, table in enumerate(raw):
        rule = _parse_rule(table, f"{source}: rule {i + 1}")
        if rule.name in seen:
            raise ConfigError(f"{source}: duplicate rule name {rule.name!r}")
        seen.add(rule.name)
        rules.append(rule)
    return RuleSet(tuple(rules))


def _parse_rule(t: dict[str, Any], where: str) -> Rule:
    unknown = set(t) - _KNOWN
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    name = t.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: 'name' must be a non-empty string")
    where = f"{where} ({name!r})"
    if not set(t) & _CONDITIONS:
        raise ConfigError(f'{where}: no condition (write command = "" to match every action)')
    severity = _str(t, "severity", where, "medium")
    if severity not in SEVERITIES:
        raise ConfigError(f"{where}: severity must be one of {', '.join(SEVERITIES)}")
    tz: _dt.tzinfo = _dt.UTC
    if "timezone" in t:
        tzname = _str(t, "timezone", where, "UTC")
        try:
            tz = ZoneInfo(tzname)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"{where}: unknown timezone {tzname!r}") from None
    days: tuple[int, ...] = ()
    if "days" in t:
        names = _strs(t, "days", where)
        bad = [d for d in names if d.lower()[:3] not in _DAYS]
        if bad:
            raise ConfigError(f"{where}: unknown days {bad} (mon … sun)")
        days = tuple(sorted({_DAYS.index(d.lower()[:3]) for d in names}))
    return Rule(
        name=name,
        severity=severity,
        message=_str(t, "message", where, ""),
        command=_regex(t, "command", where),
        kinds=_strs(t, "kinds", where),
        hosts=_strs(t, "hosts", where),
        accounts=_strs(t, "accounts", where),
        signers=_strs(t, "signers", where),
        reason=_regex(t, "reason", where),
        hours=_window(t, "hours", where),
        outside_hours=_window(t, "outside_hours", where),
        days=days,
        tz=tz,
        except_hosts=_strs(t, "except_hosts", where),
        except_accounts=_strs(t, "except_accounts", where),
        except_signers=_strs(t, "except_signers", where),
    )


def _str(t: dict[str, Any], key: str, where: str, default: str) -> str:
    v = t.get(key, default)
    if not isinstance(v, str):
        raise ConfigError(f"{where}: {key!r} must be a string")
    return v


def _strs(t: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    v = t.get(key, [])
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ConfigError(f"{where}: {key!r} must be a list of non-empty strings")
    if key in t and not v:
        raise ConfigError(f"{where}: {key!r} is empty (it would never match)")
    return tuple(v)


def _regex(t: dict[str, Any], key: str, where: str) -> re.Pattern[str] | None:
    if key not in t:
        return None
    pattern = _str(t, key, where, "")
    if len(pattern) > MAX_REGEX:
        raise ConfigError(f"{where}: {key!r} is longer than {MAX_REGEX} characters")
    try:
        return re.compile(pattern)
    except (re.error, OverflowError, ValueError) as exc:
        # OverflowError: a repeat count past the engine's limit ("a{4294967296}")
        raise ConfigError(f"{where}: {key!r} is not a valid regular expression: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{where}: {key!r} is nested too deeply to compile") from None


_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def _window(t: dict[str, Any], key: str, where: str) -> _Window | None:
    if key not in t:
        return None
    text = _str(t, key, where, "")
    parts = text.split("-")
    ms = [_HHMM.fullmatch(p.strip()) for p in parts]
    if len(parts) != 2 or not all(ms):
        raise ConfigError(f'{where}: {key!r} must look like "22:00-06:00"')
    start, end = (int(m.group(1)) * 60 + int(m.group(2)) for m in ms if m)
    if start == end:
        raise ConfigError(f"{where}: {key!r} is an empty window")
    return _Window(start, end)
