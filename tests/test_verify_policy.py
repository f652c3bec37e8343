"""HostPolicy: invalid or empty policies are errors (deny by default)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gatekeeper.errors import ConfigError
from gatekeeper.verify.policy import DEFAULT_MAX_CLOCK_SKEW, HostPolicy, WitnessPolicy
from personality.tlog.cosig import generate_cosigner
from personality.tlog.note import generate_signer

LOG = generate_signer("log.example")
FP = "SHA256:" + "A" * 43


def table(**over: Any) -> dict[str, Any]:
    t: dict[str, Any] = {
        "host_name": "web-01",
        "log_origin": "log.example/gk",
        "log_keys": [LOG.verifier().vkey()],
    }
    t.update(over)
    return {k: v for k, v in t.items() if v is not None}


def test_from_mapping_defaults() -> None:
    p = HostPolicy.from_mapping(table())
    assert p.host_name == "web-01" and p.log_origin == "log.example/gk"
    assert p.log_verifiers == (LOG.verifier(),)
    assert p.max_clock_skew == DEFAULT_MAX_CLOCK_SKEW and p.shell == "/bin/sh"
    assert p.witnesses.required == 0 and p.allowed_accounts is None and p.host_key_fingerprint is None


def test_from_mapping_all_settings() -> None:
    w1, w2 = generate_cosigner("w1"), generate_cosigner("w2")
    p = HostPolicy.from_mapping(
        table(
            host_key_fingerprint=FP,
            max_clock_skew=5,
            max_window=600,
            allowed_accounts=["deploy"],
            shell="/bin/bash",
            witnesses={"required": 1, "keys": [w1.verifier().vkey(), w2.verifier().vkey()]},
        )
    )
    assert p.host_key_fingerprint == FP and p.max_clock_skew == 5 and p.max_window == 600
    assert p.allowed_accounts == frozenset({"deploy"}) and p.shell == "/bin/bash"
    assert p.witnesses.required == 1 and p.witnesses.verifiers == (w1.verifier(), w2.verifier())


@pytest.mark.parametrize(
    "over, match",
    [
        ({"host_name": None}, "host_name"),
        ({"host_name": ""}, "host_name"),
        ({"host_name": "a b"}, "host_name"),
        ({"log_origin": None}, "log_origin"),
        ({"log_keys": []}, "at least one log verifier"),
        ({"log_keys": None}, "log_keys"),
        ({"log_keys": ["not a key"]}, "log_keys"),
        ({"log_keys": [generate_cosigner("w").verifier().vkey()]}, "log_keys"),
        ({"host_key_fingerprint": "MD5:aa"}, "host_key_fingerprint"),
        ({"max_clock_skew": -1}, "max_clock_skew"),
        ({"max_clock_skew": 99999}, "max_clock_skew"),
        ({"max_clock_skew": "60"}, "max_clock_skew"),
        ({"max_window": 0}, "max_window"),
        ({"allowed_accounts": []}, "allowed_accounts is empty"),
        ({"allowed_accounts": ["Bad Name"]}, "invalid account"),
        ({"shell": "sh"}, "absolute"),
        ({"witnesses": {"required": 1}}, "requires 1 cosignatures"),
        ({"witnesses": {"quorum": 1}}, "witnesses"),
        ({"typo_setting": 1}, "unknown settings"),
    ],
)
def test_invalid_policies_are_errors(over: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        HostPolicy.from_mapping(table(**over))


def test_direct_construction_validates() -> None:
    p = HostPolicy.from_mapping(table())
    with pytest.raises(ConfigError):
        dataclasses.replace(p, log_verifiers=())
    with pytest.raises(ConfigError, match="share a name"):
        WitnessPolicy(1, (generate_cosigner("w").verifier(), generate_cosigner("w").verifier()))


def test_host_name_is_case_insensitive() -> None:
    assert HostPolicy.from_mapping(table(host_name="Web-01")).host_name == "web-01"


def test_key_with_a_lone_surrogate_is_a_config_error() -> None:
    name = "log\udcff"
    with pytest.raises(ConfigError, match="log_keys"):
        HostPolicy.from_mapping(
            table(log_keys=[f"{name}+01234567+AfFDdta63lE80QRWzz7AQU8Q8BlIFxguqiw5dYI7K0MK"])
        )
