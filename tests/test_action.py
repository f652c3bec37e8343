"""gatekeeper/action/v1: canonical round trips, malformed input, entries and their signatures."""

from __future__ import annotations

import dataclasses
import operator
import os
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from keys import Key, clean_env, keygen

from gatekeeper import action as A
from gatekeeper import sshsig
from gatekeeper.errors import ActionFormatError, SignatureInvalid

T0 = 1795938000  # 2026-11-29T07:40:00Z


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def ed25519_pub(raw: bytes) -> str:
    return sshsig.PublicKey("ssh-ed25519", _string(b"ssh-ed25519") + _string(raw)).openssh()


SIGNER = ed25519_pub(bytes(range(32)))


def make(**over: object) -> A.Action:
    fields: dict[str, object] = dict(
        kind="exec",
        targets=(A.Target("web-01", "SHA256:" + "A" * 42 + "E"), A.Target("web-02")),
        account="deploy",
        command=b"systemctl restart nginx",
        nonce=bytes(range(16)),
        not_before=T0,
        not_after=T0 + 300,
        signer=SIGNER,
        reason="INC-1234 restart nginx",
    )
    fields.update(over)
    return A.Action(**fields)  # type: ignore[arg-type]


GOLDEN = (
    b"gatekeeper/action/v1\n"
    b"kind exec\n"
    b"host web-01 SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE\n"
    b"host web-02\n"
    b"account deploy\n"
    b"command systemctl restart nginx\n"
    b"nonce 000102030405060708090a0b0c0d0e0f\n"
    b"not-before 2026-11-29T07:40:00Z\n"
    b"not-after 2026-11-29T07:45:00Z\n"
    b"signer " + SIGNER.encode() + b"\n"
    b"reason INC-1234 restart nginx\n"
)


def test_golden_encoding() -> None:
    assert A.encode_action(make()) == GOLDEN
    assert A.parse_action(GOLDEN) == make()


def test_reason_is_omitted_when_empty() -> None:
    body = A.encode_action(make(reason=""))
    assert b"reason" not in body
    assert body == GOLDEN[: GOLDEN.index(b"reason")]
    assert A.parse_action(body).reason == ""


# -- properties -------------------------------------------------------------------------------


def examples(default: int) -> int:
    """Examples per property: ``default`` in the unit suite (bounded, a few seconds in all), the
    ``GK_FUZZ_EXAMPLES`` environment variable when set (``make fuzz``: many more)."""
    return int(os.environ.get("GK_FUZZ_EXAMPLES", default))


def _word(first: str, rest: str, max_rest: int) -> st.SearchStrategy[str]:
    """``[first][rest]{0,max_rest}``: what ``st.from_regex`` would draw, several times cheaper."""
    return st.builds(operator.add, st.sampled_from(first), st.text(rest, max_size=max_rest))


_HOST_FIRST = "abcdefghijklmnopqrstuvwxyz0123456789_:"
_ACCOUNT_FIRST = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"
host_names = _word(_HOST_FIRST, _HOST_FIRST + ".-", 30)
accounts = _word(_ACCOUNT_FIRST, _ACCOUNT_FIRST + ".-", A.MAX_ACCOUNT - 1)
fingerprints = st.binary(min_size=32, max_size=32).map(lambda b: sshsig.PublicKey("x", b).fingerprint())


@st.composite
def targets(draw: st.DrawFn) -> tuple[A.Target, ...]:
    names = draw(st.lists(host_names, min_size=1, max_size=8, unique=True))
    return tuple(A.Target(n, draw(st.none() | fingerprints)) for n in sorted(names))


def valid_reason(text: str) -> bool:
    try:
        A._check_reason(text)
    except ActionFormatError:
        return False
    return True


@st.composite
def actions(draw: st.DrawFn) -> A.Action:
    not_before = draw(st.integers(0, 253402300799 - A.MAX_WINDOW))
    return A.Action(
        kind="exec",
        targets=draw(targets()),
        account=draw(accounts),
        command=draw(
            st.binary(min_size=1, max_size=200)
            | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1).map(str.encode)
            | st.sampled_from([b" leading", b"trailing ", b"a\nb", b"\x00", b"caf\xc3\xa9", b"\xff\xfe"])
        ),
        nonce=draw(st.binary(min_size=A.MIN_NONCE, max_size=A.MAX_NONCE)),
        not_before=not_before,
        not_after=not_before + draw(st.integers(1, A.MAX_WINDOW)),
        signer=ed25519_pub(draw(st.binary(min_size=32, max_size=32))),
        reason=draw(st.text(max_size=80).filter(valid_reason)),
    )


@settings(max_examples=examples(150))
@given(actions())
def test_round_trip(a: A.Action) -> None:
    body = A.encode_action(a)
    assert A.parse_action(body) == a
    assert A.encode_action(A.parse_action(body)) == body


@settings(max_examples=examples(100))
@given(st.binary(min_size=1, max_size=A.MAX_COMMAND))
@example(b"ls -l")
@example(b"echo \x1b[31mred")
@example(b"\xff")
@example(b"rm -rf / \xe2\x80\xae")
def test_command_bytes_round_trip_in_exactly_one_form(command: bytes) -> None:
    body = A.encode_action(make(command=command))
    assert A.parse_action(body).command == command
    plain = (
        all(0x20 <= b <= 0x7E for b in command)
        and not command.startswith(b" ")
        and not command.endswith(b" ")
    )
    assert (b"\ncommand " in body) is plain
    assert (b"\ncommand-base64 " in body) is not plain
    # the body outside a base64 command is printable: no control characters reach an auditor's terminal
    assert all(b == 0x0A or 0x20 <= b for b in body if b < 0x80)


MUTATIONS_PER_ACTION = 8


@settings(max_examples=examples(100))
@given(actions(), st.data())
def test_mutations_never_yield_a_second_encoding(a: A.Action, data: st.DataObject) -> None:
    """Whatever a byte-level change produces either fails with ActionFormatError or is itself the
    canonical encoding of what it parses to (encode(parse(b)) == b). Several independent one-byte
    changes per generated action: generating an action costs far more than parsing one."""
    original = A.encode_action(a)
    for _ in range(MUTATIONS_PER_ACTION):
        body = bytearray(original)
        op = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        pos = data.draw(st.integers(0, len(body) - 1))
        if op == "replace":
            body[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            body.insert(pos, data.draw(st.sampled_from(b" \n\r\t\x00a0-=Z\xff\xc3")))
        else:
            del body[pos]
        try:
            parsed = A.parse_action(bytes(body))
        except ActionFormatError:
            continue
        assert A.encode_action(parsed) == bytes(body)


@settings(max_examples=examples(100))
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_action_format_error(data: bytes) -> None:
    try:
        parsed = A.parse_action(data)
    except ActionFormatError:
        return
    assert A.encode_action(parsed) == data  # pragma: no cover - random bytes essentially never parse


@settings(max_examples=examples(100))
@given(st.text(max_size=40))
def test_reason_text(reason: str) -> None:
    a = make(reason=reason)
    if valid_reason(reason):
        assert A.parse_action(A.encode_action(a)) == a
    else:
        with pytest.raises(ActionFormatError):
            A.encode_action(a)


# -- malformed bodies -------------------------------------------------------------------------


def _sub(old: bytes, new: bytes) -> bytes:
    assert old in GOLDEN
    return GOLDEN.replace(old, new, 1)


MALFORMED = {
    "empty": (b"", "newline"),
    "crlf": (GOLDEN.replace(b"\n", b"\r\n"), "CRLF"),
    "no final newline": (GOLDEN[:-1], "newline"),
    "trailing bytes": (GOLDEN + b"x", "newline"),
    "trailing line": (GOLDEN + b"extra 1\n", "unknown field"),
    "trailing blank line": (GOLDEN + b"\n", "expected '<field> <value>'"),
    "version": (_sub(b"action/v1", b"action/v2"), "unsupported version"),
    "no version": (GOLDEN[GOLDEN.index(b"\n") + 1 :], "line 1"),
    "unknown field": (_sub(b"account deploy\n", b"account deploy\nuser root\n"), "unknown field 'user'"),
    "duplicate field": (_sub(b"account deploy\n", b"account deploy\naccount root\n"), "repeats"),
    "two command forms": (_sub(b"command sys", b"command-base64 eA==\ncommand sys"), "repeats"),
    "wrong order": (_sub(b"account deploy\n", b"") + b"account deploy\n", "must come before"),
    "missing field": (_sub(b"account deploy\n", b""), "missing field 'account'"),
    "missing hosts": (
        _sub(b"host web-02\n", b"").replace(b"host web-01 SHA256:" + b"A" * 42 + b"E\n", b""),
        "host",
    ),
    "reserved kind": (_sub(b"kind exec", b"kind approval"), "reserved"),
    "unknown kind": (_sub(b"kind exec", b"kind shell"), "unknown kind"),
    "double space": (_sub(b"account deploy", b"account  deploy"), "account"),
    "tab separator": (_sub(b"account deploy", b"account\tdeploy"), "expected '<field> <value>'"),
    "unsorted hosts": (_sub(b"host web-02", b"host web-00"), "sorted"),
    "duplicate hosts": (_sub(b"host web-02", b"host web-01"), "twice"),
    "uppercase host": (_sub(b"host web-02", b"host web-0Z"), "lowercase"),
    "host with space": (_sub(b"host web-02", b"host web-02 a b"), "host <name>"),
    "bad fingerprint": (_sub(b"AE\n", b"A\n"), "43 base64"),
    "fingerprint stray bits": (_sub(b"AE\n", b"AB\n"), "canonical"),
    "bad account": (_sub(b"account deploy", b"account -deploy"), "account"),
    "long account": (_sub(b"account deploy", b"account " + b"a" * 65), "account"),
    "command needs base64": (_sub(b"command systemctl", b"command  systemctl"), "command-base64"),
    "non-ascii plain command": (_sub(b"command systemctl", "command café".encode()), "command-base64"),
    "plain command in base64": (_sub(b"command systemctl restart nginx", b"command-base64 bHM="), "plain"),
    "bad base64": (_sub(b"command systemctl restart nginx", b"command-base64 bHM"), "base64"),
    "base64 stray bits": (_sub(b"command systemctl restart nginx", b"command-base64 AB=="), "canonical"),
    "empty command": (_sub(b"command systemctl restart nginx", b"command "), "1..16384"),
    "empty base64 command": (_sub(b"command systemctl restart nginx", b"command-base64 "), "1..16384"),
    "short nonce": (_sub(b"0e0f\n", b"0e\n"), "16..32 bytes"),
    "odd nonce": (_sub(b"0e0f\n", b"0e0\n"), "hexadecimal"),
    "uppercase nonce": (_sub(b"0e0f\n", b"0E0F\n"), "lowercase"),
    "fractional time": (_sub(b"07:40:00Z", b"07:40:00.5Z"), "YYYY"),
    "offset time": (_sub(b"07:40:00Z", b"07:40:00+00:00"), "YYYY"),
    "impossible date": (_sub(b"2026-11-29T07:40", b"2026-02-30T07:40"), "valid date"),
    "leap second": (_sub(b"07:40:00Z", b"23:59:60Z"), "valid date"),
    "before 1970": (_sub(b"not-before 2026", b"not-before 1969"), "1970"),
    "empty window": (_sub(b"not-after 2026-11-29T07:45:00Z", b"not-after 2026-11-29T07:40:00Z"), "later"),
    "window too long": (_sub(b"not-after 2026-11-29", b"not-after 2026-11-30"), "maximum"),
    "signer comment": (_sub(SIGNER.encode(), SIGNER.encode() + b" me@laptop"), "no comment"),
    "signer type": (_sub(b"signer ssh-ed25519", b"signer ssh-rsa"), "signer"),
    "empty reason": (_sub(b"reason INC-1234 restart nginx", b"reason "), "empty reason"),
    "reason trailing space": (_sub(b"nginx\n", b"nginx \n"), "space"),
    "reason control char": (_sub(b"INC-1234", b"INC\x1b1234"), r"U\+001B"),
    "reason bidi override": (_sub(b"INC-1234", "INC\u202e1234".encode()), r"U\+202E"),
    "reason not utf-8": (_sub(b"INC-1234", b"INC\xff1234"), "UTF-8"),
    "non-utf-8 elsewhere": (_sub(b"account deploy", b"account d\xc3\xa9ploy"), "account"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed(name: str) -> None:
    data, message = MALFORMED[name]
    with pytest.raises(ActionFormatError, match=message):
        A.parse_action(data)


def test_oversize_fields() -> None:
    A.encode_action(make(command=b"x" * A.MAX_COMMAND))
    A.encode_action(make(reason="é" * (A.MAX_REASON // 2)))
    many = tuple(A.Target(f"h{i:03d}") for i in range(A.MAX_TARGETS))
    A.parse_action(A.encode_action(make(targets=many)))
    with pytest.raises(ActionFormatError, match="16384"):
        A.encode_action(make(command=b"x" * (A.MAX_COMMAND + 1)))
    with pytest.raises(ActionFormatError, match="1026 bytes"):
        A.encode_action(make(reason="é" * (A.MAX_REASON // 2 + 1)))
    with pytest.raises(ActionFormatError, match="1..64 hosts"):
        A.encode_action(make(targets=(*many, A.Target("zzz"))))
    with pytest.raises(ActionFormatError, match="1..253"):
        A.encode_action(make(targets=(A.Target("a" * 254),)))
    with pytest.raises(ActionFormatError, match="16..32 bytes"):
        A.encode_action(make(nonce=bytes(33)))
    # the same limits when parsing
    big = _sub(b"command systemctl restart nginx", b"command " + b"x" * (A.MAX_COMMAND + 1))
    with pytest.raises(ActionFormatError, match="line 6"):
        A.parse_action(big)
    with pytest.raises(ActionFormatError, match="65535"):
        A.parse_action(b"x" * 65536)


def test_encode_rejects_what_parse_rejects() -> None:
    for bad in [
        make(kind="k8s"),
        make(targets=()),
        make(targets=(A.Target("b"), A.Target("a"))),
        make(targets=(A.Target("Web"),)),
        make(targets=(A.Target("web", "SHA256:short"),)),
        make(account=""),
        make(command=b""),
        make(nonce=bytes(15)),
        make(not_after=T0),
        make(not_before=-1),
        make(not_after=T0 + A.MAX_WINDOW + 1),
        make(signer=SIGNER + " comment"),
        make(reason=" padded"),
        make(reason="bad\ud800surrogate"),
        make(command="text"),  # not bytes
        make(not_before=True),
    ]:
        with pytest.raises(ActionFormatError):
            A.encode_action(bad)


def test_times() -> None:
    assert A.format_time(0) == "1970-01-01T00:00:00Z"
    assert A.format_time(253402300799) == "9999-12-31T23:59:59Z"
    assert A.parse_time("2026-11-29T07:40:00Z") == T0
    for bad in [253402300800, -1, 1.5]:
        with pytest.raises(ActionFormatError):
            A.format_time(bad)  # type: ignore[arg-type]
    for text in [
        "2026-11-29 07:40:00Z",
        "2026-11-29T07:40:00z",
        "２０２６-11-29T07:40:00Z",
        "2026-11-29T24:00:00Z",
    ]:
        with pytest.raises(ActionFormatError):
            A.parse_time(text)


# -- new_action -------------------------------------------------------------------------------


def test_new_action() -> None:
    a = A.new_action(
        targets=["Web-02", A.Target("web-01")],
        account="deploy",
        command="systemctl restart nginx",
        signer=SIGNER + " alice@laptop",
        now=T0 + 0.9,
        reason="INC-1234",
    )
    assert [t.name for t in a.targets] == ["web-01", "web-02"]
    assert a.command == b"systemctl restart nginx"
    assert (a.not_before, a.not_after) == (T0, T0 + A.DEFAULT_WINDOW)
    assert a.signer == SIGNER
    assert len(a.nonce) == 16
    b = A.new_action(targets=["web-01"], account="deploy", command=b"ls", signer=SIGNER, now=T0)
    assert b.nonce != a.nonce  # fresh randomness each time
    fixed = A.new_action(targets=["h"], account="a", command=b"ls", signer=SIGNER, now=T0, nonce=b"n" * 16)
    assert fixed.nonce == b"n" * 16
    for window in (0, A.MAX_WINDOW + 1):
        with pytest.raises(ActionFormatError, match="window"):
            A.new_action(targets=["h"], account="a", command=b"ls", signer=SIGNER, now=T0, window=window)
    with pytest.raises(ActionFormatError, match="twice"):
        A.new_action(targets=["h", "H"], account="a", command=b"ls", signer=SIGNER, now=T0)


def test_escape_command() -> None:
    assert A.escape_command(b"ls -l") == "ls -l"
    assert A.escape_command(b"a\\b\n\t\r\x1b[31m\xff") == "a\\\\b\\n\\t\\r\\x1b[31m\\xff"
    assert A.escape_command("é".encode()) == "\\xc3\\xa9"


# -- entries: body + blank line + SSHSIG ------------------------------------------------------


@pytest.fixture(scope="module")
def signer_key(tmp_path_factory: pytest.TempPathFactory) -> Key:
    return keygen(tmp_path_factory.mktemp("k"), "ed25519")


@pytest.fixture(scope="module")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> Key:
    return keygen(tmp_path_factory.mktemp("k2"), "ed25519")


def signed_entry(key: Key, signer: str | None = None, **over: object) -> bytes:
    a = make(signer=signer or key.public_nocomment, **over)
    body = A.encode_action(a)
    return A.encode_entry(body, sshsig.sign_file(body, A.NAMESPACE, key.path))


def test_entry_round_trip_and_verify(signer_key: Key) -> None:
    entry = signed_entry(signer_key)
    signed = A.parse_entry(entry)
    assert signed.action == make(signer=signer_key.public_nocomment)
    assert entry == signed.body + b"\n" + signed.signature
    assert A.encode_entry(signed.body, signed.signature) == entry
    assert A.verify_entry(entry) == signed
    assert A.verify_entry(signed) == signed


def test_signer_field_must_be_the_signing_key(signer_key: Key, other_key: Key) -> None:
    entry = signed_entry(other_key, signer=signer_key.public_nocomment)
    A.parse_entry(entry)  # well-formed
    with pytest.raises(SignatureInvalid, match="names signer .* but was signed by"):
        A.verify_entry(entry)


def test_altered_entry_byte_is_refused(signer_key: Key) -> None:
    entry = signed_entry(signer_key)
    altered = entry.replace(b"command systemctl restart nginx", b"command systemctl restart nginy")
    with pytest.raises(SignatureInvalid, match="altered"):
        A.verify_entry(altered)


def test_wrong_namespace_is_refused(signer_key: Key) -> None:
    body = A.encode_action(make(signer=signer_key.public_nocomment))
    entry = A.encode_entry(body, sshsig.sign_file(body, "git", signer_key.path))
    with pytest.raises(SignatureInvalid, match="namespace"):
        A.verify_entry(entry)


def test_malformed_entries(signer_key: Key) -> None:
    entry = signed_entry(signer_key)
    body, sig = entry.split(b"\n\n", 1)
    for bad, message in [
        (body + b"\n" + sig, "blank line"),
        (body + b"\n\n\n" + sig, "BEGIN"),
        (entry + b"\n", "END"),
        (entry + b"trailing", "END"),
        (body + b"\n\n", "BEGIN"),
        (entry.replace(b"kind exec", b"kind exec "), "kind"),
        (entry.replace(b"\n", b"\r\n"), "CRLF|carriage"),
        (entry + b"x" * 65536, "65535"),
    ]:
        with pytest.raises(ActionFormatError, match=message):
            A.parse_entry(bad)
    with pytest.raises(ActionFormatError):
        A.encode_entry(body + b"\n", b"not a signature")


def test_auditor_verifies_an_entry_with_stock_openssh(signer_key: Key, tmp_path: Path) -> None:
    """The commands documented in docs/formats-action.md, run as written."""
    entry = signed_entry(signer_key)
    (tmp_path / "entry").write_bytes(entry)
    (tmp_path / "allowed_signers").write_text(f'alice namespaces="action@gatekeeper" {signer_key.public}\n')
    script = (
        "sed '/^$/,$d' entry > body && sed '1,/^$/d' entry > body.sig && "
        "ssh-keygen -Y verify -f allowed_signers -I alice -n action@gatekeeper -s body.sig < body"
    )
    ok = subprocess.run(["sh", "-c", script], cwd=tmp_path, env=clean_env(), capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert 'Good "action@gatekeeper" signature for alice' in ok.stdout
    assert (tmp_path / "body").read_bytes() == A.parse_entry(entry).body
    (tmp_path / "entry").write_bytes(entry.replace(b"account deploy", b"account root"))
    bad = subprocess.run(["sh", "-c", script], cwd=tmp_path, env=clean_env(), capture_output=True, text=True)
    assert bad.returncode != 0


def test_dataclasses_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        make().account = "root"  # type: ignore[misc]


def test_largest_possible_entry_fits_in_an_entry_bundle() -> None:
    """Every limit at its maximum, an RSA-16384 signer and a signature of matching size: the entry
    still fits the 65535-byte C2SP entry-bundle limit."""
    n = (1 << 16383) | 1
    e_raw, n_raw = (65537).to_bytes(3, "big"), b"\x00" + n.to_bytes(2048, "big")
    rsa = sshsig.PublicKey("ssh-rsa", _string(b"ssh-rsa") + _string(e_raw) + _string(n_raw))
    a = A.Action(
        kind="exec",
        targets=tuple(A.Target(f"{i:02d}" + "h" * 251, "SHA256:" + "A" * 42 + "E") for i in range(64)),
        account="a" * A.MAX_ACCOUNT,
        command=b"\x00" * A.MAX_COMMAND,
        nonce=bytes(A.MAX_NONCE),
        not_before=T0,
        not_after=T0 + A.MAX_WINDOW,
        signer=rsa.openssh(),
        reason="r" * A.MAX_REASON,
    )
    body = A.encode_action(a)
    assert len(body) < 48 * 1024
    blob = (
        b"SSHSIG"
        + struct.pack(">I", 1)
        + _string(rsa.blob)
        + _string(A.NAMESPACE.encode())
        + _string(b"")
        + _string(b"sha512")
        + _string(_string(b"rsa-sha2-512") + _string(bytes(2048)))
    )
    armored = sshsig.armor(blob)
    assert len(armored) < 6 * 1024
    entry = A.encode_entry(body, armored)
    assert len(entry) <= A.MAX_ENTRY
    assert A.parse_entry(entry).action == a
