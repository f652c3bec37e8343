"""Hostile TOML configs: well-formed TOML with the right keys and wrong values.

Byte-level mutations (tests/test_hostile_parsers.py) mostly produce invalid TOML; the bugs in
config loaders hide behind *valid* TOML whose values have the wrong type or an absurd value:
``window = 1e309``, ``key = "~nosuchuser/x"``, ``keys = [[]]``, ``name = ""``, a table where a
string was expected. These tests generate such documents for every TOML loader -- the agent config
(``gatekeeper.agent.config``), the client config (``gatekeeper.client.config``), the host policy
(``gatekeeper.verify.policy.HostPolicy``) and the monitor rules (``gatekeeper.monitor.rules``) --
and require ``ConfigError`` or a valid config, nothing else.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz import targets as T  # noqa: E402
from gatekeeper.errors import ConfigError  # noqa: E402

EXAMPLES = int(os.environ.get("GK_FUZZ_EXAMPLES", "60"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

STRINGS = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "/",
            "~",
            "~nosuchuser-gkfuzz/id",
            "~/x",
            ".",
            "..",
            "/bin/sh",
            "sh",
            "\x00",
            "\n",
            "a\nb",
            "http://",
            "https://x",
            "ftp://x",
            "127.0.0.1:2222",
            "[::1]:22",
            ":",
            "0.0.0.0:99999",
            "deploy",
            "root",
            "web-01",
            "ssh-ed25519 AAAA",
            "SHA256:" + "A" * 43,
            "sum.golang.org+033de0ae+Ac4zctda",
            "a{4294967296}",
            "(" * 50,
            "Europe/Berlin",
            "../../etc/passwd",
            "22:00-06:00",
            "25:00-01:00",
            "x" * 5000,
            "\u202e",
            "\ufeff",
            "mon",
            "critical",
        ]
    ),
    st.text(max_size=40),
)
SCALARS = st.one_of(
    STRINGS,
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0, 1, -1, 3600, 3601, 2**63 - 1, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(STRINGS, inner, max_size=3)),
    max_leaves=8,
)


def toml_value(v: Any) -> str:
    """Inline TOML for ``v`` (strings via JSON escapes, which TOML basic strings accept)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def _key(k: str) -> str:
    return json.dumps(k, ensure_ascii=False)


def toml_doc(table: dict[str, Any]) -> str | None:
    """A TOML document for ``table``, or None when TOML cannot express it (integers over 64 bits
    are fine for tomllib; duplicate keys cannot happen in a dict)."""
    text = "\n".join(f"{_key(k)} = {toml_value(v)}" for k, v in table.items()) + "\n"
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None
    return text


def keyed(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Tables whose keys are mostly the loader's own (so validation is reached) plus a few others."""
    return st.dictionaries(st.one_of(st.sampled_from(keys), STRINGS), VALUES, max_size=len(keys) + 1)


AGENT_SCHEMA = {
    "agent": [
        "name",
        "listen",
        "host_key",
        "authorized_keys",
        "trusted_user_ca_keys",
        "state_dir",
        "journal",
    ],
    "log": ["url", "keys", "origin"],
    "policy": ["shell", "max_clock_skew", "max_window", "allowed_accounts", "witnesses"],
    "timeouts": ["log_request", "decision", "login", "kill_grace"],
    "alarm": ["webhook"],
}
CLIENT_KEYS = ["log", "log_key", "origin", "key", "agent", "window", "state", "timeout"]
POLICY_KEYS = [
    "host_name",
    "host_key_fingerprint",
    "log_origin",
    "log_keys",
    "max_clock_skew",
    "max_window",
    "allowed_accounts",
    "shell",
    "witnesses",
]
LOG_SCHEMA = {
    "": ["origin", "key_file", "database"],
    "server": ["listen", "admission", "allowed_signers"],
    "sequencer": ["max_pending", "max_pending_bytes", "max_batch", "tile_cache"],
}
RULE_KEYS = [
    "name",
    "severity",
    "message",
    "command",
    "kinds",
    "hosts",
    "accounts",
    "signers",
    "reason",
    "outside_hours",
    "hours",
    "days",
    "timezone",
    "except_hosts",
    "except_accounts",
    "except_signers",
]


@st.composite
def agent_tables(draw: st.DrawFn) -> dict[str, Any]:
    """Start from the valid seed config and overwrite some values with hostile ones."""
    base = tomllib.loads(T.seeds("agent_config")[0])
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from([*AGENT_SCHEMA, "extra"]))
        if section == "extra" or draw(st.booleans()) and draw(st.booleans()):
            base[draw(STRINGS)] = draw(VALUES)
            continue
        table = base.setdefault(section, {})
        if not isinstance(table, dict):
            continue
        key = draw(st.sampled_from(AGENT_SCHEMA[section]))
        if draw(st.integers(0, 5)) == 0:
            table.pop(key, None)
        else:
            table[key] = draw(VALUES)
    return base


def _run(name: str, text: str | bytes) -> None:
    try:
        T.check(name, text)
    except Exception as exc:  # noqa: BLE001 - the finding, unless a known, reported bug
        if T.known_bug(name, exc) is None:
            raise


@FUZZ
@given(agent_tables())
def test_agent_config_values(table: dict[str, Any]) -> None:
    text = toml_doc(table)
    if text is not None:
        _run("agent_config", text)


@FUZZ
@given(st.data())
def test_log_config_values(data: st.DataObject) -> None:
    base = tomllib.loads(T.seeds("log_config")[0].decode())
    for _ in range(data.draw(st.integers(1, 4))):
        section = data.draw(st.sampled_from(sorted(LOG_SCHEMA)))
        table = base if section == "" else base.setdefault(section, {})
        key = data.draw(st.one_of(st.sampled_from(LOG_SCHEMA[section]), STRINGS))
        table[key] = data.draw(VALUES)
    text = toml_doc(base)
    if text is not None:
        _run("log_config", text.encode())


@FUZZ
@given(keyed(CLIENT_KEYS))
def test_client_config_values(table: dict[str, Any]) -> None:
    text = toml_doc(table)
    if text is not None:
        _run("client_config", text.encode())


@FUZZ
@given(st.data())
def test_host_policy_values(data: st.DataObject) -> None:
    base = tomllib.loads(T.seeds("policy_toml")[0])
    for _ in range(data.draw(st.integers(1, 4))):
        key = data.draw(st.one_of(st.sampled_from(POLICY_KEYS), STRINGS))
        base[key] = data.draw(VALUES)
    from gatekeeper.verify.policy import HostPolicy

    try:
        HostPolicy.from_mapping(base)  # the mapping itself, as the agent hands it over
    except ConfigError:
        pass


@FUZZ
@given(st.lists(keyed(RULE_KEYS), min_size=1, max_size=3))
def test_monitor_rule_values(rules: list[dict[str, Any]]) -> None:
    text = "".join("[[rule]]\n" + (toml_doc(r) or "") for r in rules)
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    _run("monitor_rules", text)


@pytest.mark.parametrize(
    "name, text",
    [
        ("client_config", b"window = 1e309\n"),
        ("client_config", b"timeout = nan\n"),
        ("client_config", b"timeout = inf\n"),
        ("client_config", b"window = 99999999999999999999999999\n"),
        ("client_config", b'log = "http://\\u0000"\n'),
        ("agent_config", "[timeouts]\nlog_request = nan\n"),
        ("agent_config", "[policy]\nmax_window = 99999999999999999999999999\n"),
        ("agent_config", '[policy.witnesses]\nrequired = 1\nkeys = ["x"]\n'),
        ("agent_config", '[agent]\nlisten = "[::1]:99999"\n'),
        ("agent_config", '[agent]\nstate_dir = "\\u0000"\n'),
        ("monitor_rules", '[[rule]]\nname = "r"\nhours = "23:59-23:59"\n'),
        ("monitor_rules", '[[rule]]\nname = "r"\ntimezone = "../../../etc/passwd"\ncommand = ""\n'),
        ("monitor_rules", '[[rule]]\nname = "r"\ntimezone = "zone.tab"\ncommand = ""\n'),
        ("policy_toml", 'host_name = "h"\nlog_origin = "o"\nlog_keys = []\n'),
        ("policy_toml", 'host_name = "h"\nlog_origin = "o"\nlog_keys = ["a+00000000+AQ=="]\n'),
    ],
)
def test_hostile_config_examples(name: str, text: str | bytes) -> None:
    """Hand-picked values at the edges: each is refused with ConfigError (or accepted)."""
    if name == "agent_config":
        # the required [log] keys, so that the value under test is what gets checked
        assert isinstance(text, str)
        text += '\n[log]\nkeys = ["' + T.material().signer.verifier().vkey() + '"]\n'
    T.check(name, text)
