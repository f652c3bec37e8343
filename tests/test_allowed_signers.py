"""allowed_signers: strict parsing, namespaces, validity windows, agreement with ssh-keygen."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from keys import Key, clean_env, keygen, ssh_keygen_sign

from gatekeeper.allowed_signers import AllowedSigners, match_pattern_list
from gatekeeper.errors import ConfigError

NS = "action@gatekeeper"
JAN1 = 1767225600  # 2026-01-01T00:00:00Z
FEB1 = 1769904000  # 2026-02-01T00:00:00Z


@pytest.fixture(scope="module")
def alice(tmp_path_factory: pytest.TempPathFactory) -> Key:
    return keygen(tmp_path_factory.mktemp("a"), "ed25519", name="alice")


@pytest.fixture(scope="module")
def bob(tmp_path_factory: pytest.TempPathFactory) -> Key:
    return keygen(tmp_path_factory.mktemp("b"), "rsa", name="bob")


def test_principals_namespaces_and_comments(alice: Key, bob: Key) -> None:
    text = (
        "# the log's signers\n"
        "\n"
        f"alice@example.com,ops {alice.public}\n"
        f'  "bob smith" namespaces="action@*,!action@test" {bob.public} trailing comment words\n'
        f'alice2 namespaces="git" {alice.public_nocomment}\n'
    )
    signers = AllowedSigners.parse(text)
    assert len(signers.signers) == 3
    assert signers.principals_for(alice.public, NS, JAN1) == ["alice@example.com", "ops"]
    assert signers.principals_for(alice.public, "git", JAN1) == ["alice@example.com", "ops", "alice2"]
    assert signers.principals_for(bob.public_nocomment, NS, JAN1) == ["bob smith"]
    assert signers.principals_for(bob.public, "action@test", JAN1) == []
    assert signers.principals_for(bob.public, "file", JAN1) == []
    assert "does not allow namespace 'file'" in signers.why_not(bob.public, "file", JAN1)
    assert signers.why_not(alice.public, NS, JAN1) == "allowed"
    assert signers.principals_for("ssh-ed25519 garbage", NS, JAN1) == []
    assert signers.why_not("ssh-ed25519 garbage", NS, JAN1) == "the key is not listed in allowed_signers"


def test_validity_window_boundaries(alice: Key) -> None:
    signers = AllowedSigners.parse(f'alice valid-after="20260101Z",valid-before="20260201Z" {alice.public}\n')
    assert signers.principals_for(alice.public, NS, JAN1 - 1) == []
    assert signers.principals_for(alice.public, NS, JAN1) == ["alice"]
    assert signers.principals_for(alice.public, NS, FEB1) == ["alice"]  # inclusive, like OpenSSH
    assert signers.principals_for(alice.public, NS, FEB1 + 1) == []
    assert "not valid before 2026-01-01T00:00:00Z" in signers.why_not(alice.public, NS, JAN1 - 1)
    assert "expired at 2026-02-01T00:00:00Z" in signers.why_not(alice.public, NS, FEB1 + 1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("20260101Z", JAN1), ("202601010130Z", JAN1 + 5400), ("20260101013005Z", JAN1 + 5405)],
)
def test_time_formats(alice: Key, value: str, expected: int) -> None:
    s = AllowedSigners.parse(f'alice valid-after="{value}" {alice.public}').signers[0]
    assert s.valid_after == expected


def test_agrees_with_ssh_keygen_on_validity(alice: Key, tmp_path: Path) -> None:
    """For the same file and verify-time, ssh-keygen -Y find-principals and we agree."""
    sig = ssh_keygen_sign(alice, NS, b"m", tmp_path)
    (tmp_path / "s.sig").write_bytes(sig)
    text = f'alice valid-after="20260101Z",valid-before="20260201Z" {alice.public}\n'
    (tmp_path / "as").write_text(text)
    signers = AllowedSigners.parse(text)
    for t, stamp in [
        (JAN1 - 1, "20251231235959Z"),
        (JAN1, "20260101000000Z"),
        (FEB1, "20260201000000Z"),
        (FEB1 + 1, "20260201000001Z"),
    ]:
        proc = subprocess.run(
            ["ssh-keygen", "-Y", "find-principals", "-s", "s.sig", "-f", "as", f"-Overify-time={stamp}"],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
        )
        ours = signers.principals_for(alice.public, NS, t)
        assert (proc.returncode == 0) == bool(ours), (stamp, proc.stderr)
        if ours:
            assert proc.stdout.split() == ours


def test_namespace_agrees_with_ssh_keygen(alice: Key, tmp_path: Path) -> None:
    sig = ssh_keygen_sign(alice, NS, b"m", tmp_path)
    (tmp_path / "s.sig").write_bytes(sig)
    for patterns, allowed in [("action@*", True), ("git,file", False), ("*,!action@gatekeeper", False)]:
        text = f'alice namespaces="{patterns}" {alice.public}\n'
        (tmp_path / "as").write_text(text)
        proc = subprocess.run(
            ["ssh-keygen", "-Y", "verify", "-f", "as", "-I", "alice", "-n", NS, "-s", "s.sig"],
            cwd=tmp_path,
            input="m",
            env=clean_env(),
            capture_output=True,
            text=True,
        )
        assert (proc.returncode == 0) is allowed, (patterns, proc.stderr)
        assert bool(AllowedSigners.parse(text).principals_for(alice.public, NS, JAN1)) is allowed


def test_pattern_lists() -> None:
    assert match_pattern_list("action@gatekeeper", ["action@*"])
    assert match_pattern_list("abc", ["a?c"])
    assert not match_pattern_list("abbc", ["a?c"])
    assert not match_pattern_list("action@gatekeeper", ["*", "!action@gatekeeper"])
    assert not match_pattern_list("x", [])
    assert not match_pattern_list("a.c", ["a\\.c"])  # no regex syntax leaks through
    assert match_pattern_list("a.c", ["a.c"])
    assert not match_pattern_list("abc", ["a.c"])


def test_empty_file_allows_nobody(alice: Key) -> None:
    signers = AllowedSigners.parse("# nobody yet\n\n")
    assert signers.signers == ()
    assert signers.principals_for(alice.public, NS, JAN1) == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("alice", "missing public key"),
        ('alice namespaces="x"', "missing public key"),
        ("alice ssh-ed25519", "expected '<type> <base64>"),
        ("alice ssh-ed25519 AAAA!", "base64"),
        ("alice ssh-dss AAAAB3NzaC1kc3MAAAA=", "ssh-dss"),
        ("alice cert-authority {key}", "cert-authority"),
        ('alice cert-authority,namespaces="x" {key}', "cert-authority"),
        ("alice namespaces=x {key}", "quoted value"),
        ('alice namespaces="x {key}', "unterminated quote"),
        ('alice namespaces="" {key}', "empty value"),
        ('alice namespaces="a,,b" {key}', "empty pattern"),
        ('alice namespaces="a\\"b" {key}', "backslash"),
        ('alice namespaces="a",namespaces="b" {key}', "twice"),
        ('alice namespaces="a";x {key}', "unexpected"),
        ('alice no-touch-required,namespaces="a" {key}', "unknown option 'no-touch-required'"),
        ("alice foo=bar {key}", "unknown option 'foo'"),
        ('alice valid-after="20260101" {key}', "trailing 'Z'"),
        ('alice valid-after="2026-01-01Z" {key}', "YYYYMMDD"),
        ('alice valid-after="20261301Z" {key}', "not a valid date"),
        ('alice valid-after="20260201Z",valid-before="20260101Z" {key}', "not later"),
        ('"alice {key}', "unterminated quote"),
        ('"alice",bob {key}', "space after the closing quote"),
        ('al"ice {key}', "stray quote"),
        ("alice,,bob {key}", "empty principal"),
        ("alice {key}\r", "carriage return"),
        ("alice\x00 {key}", "control character"),
    ],
)
def test_malformed_lines(alice: Key, line: str, message: str) -> None:
    text = f"# header\nok {alice.public}\n" + line.format(key=alice.public) + "\n"
    with pytest.raises(ConfigError, match=message) as exc:
        AllowedSigners.parse(text, "signers.txt")
    assert str(exc.value).startswith("signers.txt:3: ")


def test_small_rsa_key_line_is_refused(tmp_path: Path) -> None:
    key = keygen(tmp_path, "rsa1024")
    with pytest.raises(ConfigError, match="1024 bits"):
        AllowedSigners.parse("old " + key.public)


def test_load(tmp_path: Path, alice: Key) -> None:
    path = tmp_path / "allowed_signers"
    path.write_text(f"alice {alice.public}\n")
    assert AllowedSigners.load(path).principals_for(alice.public, NS, JAN1) == ["alice"]
    with pytest.raises(ConfigError, match="cannot read"):
        AllowedSigners.load(tmp_path / "missing")
    path.write_bytes(b"alice \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        AllowedSigners.load(path)
    path.write_bytes(b"#" * (4 * 1024 * 1024 + 1))
    with pytest.raises(ConfigError, match="larger than"):
        AllowedSigners.load(path)
