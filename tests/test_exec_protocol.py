"""The local-mode protocol and the parsing of what sshd exposes to a ForceCommand (pure code)."""

from __future__ import annotations

import base64
import struct
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatekeeper.execgate.protocol import (
    MAX_PAYLOAD,
    REASON_STATUS,
    Ack,
    DecideRequest,
    DecisionReply,
    ExitReport,
    LocalProtocolError,
    encode,
    parse_message,
    payload_length,
    reason_from_code,
)
from gatekeeper.execgate.sshinfo import AuthInfoError, classify_command, parse_auth_info
from gatekeeper.gate import Reason

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def roundtrip(message: object) -> object:
    frame = encode(message)  # type: ignore[arg-type]
    assert payload_length(frame[:4]) == len(frame) - 4
    return parse_message(frame[4:])


@given(
    account=st.text(max_size=40),
    command=st.binary(max_size=300),
    bundle=st.none() | st.text(max_size=200),
    kind=st.sampled_from(["exec", "shell", "subsystem", "pty"]),
)
def test_decide_request_roundtrips(account: str, command: bytes, bundle: str | None, kind: str) -> None:
    request = DecideRequest(account, command, ED25519, bundle, "127.0.0.1:5555", kind)
    assert roundtrip(request) == request


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_roundtrips(reason: Reason) -> None:
    reply = DecisionReply(reason, "gk: refused: x", index=None if reason.value[1] else 41, shell="/bin/sh")
    parsed = roundtrip(reply)
    assert parsed == reply
    assert reply.allowed is (reason is Reason.ALLOWED)
    assert parsed.reason is reason and parsed.exit_status == reason.exit_status  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "message", [ExitReport(0), ExitReport(255), ExitReport(None, 9), ExitReport(None), Ack()]
)
def test_exit_and_ack_roundtrip(message: object) -> None:
    assert roundtrip(message) == message


def _field(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _decide(
    kind: bytes = b"exec", account: bytes = b"a", bundle: bytes = b"\x00", tail: bytes = b""
) -> bytes:
    key, peer = _field(ED25519.encode()), _field(b"127.0.0.1:1")
    return b"\x01Q" + _field(kind) + _field(account) + _field(b"true") + key + bundle + peer + tail


def _reply(code: bytes = b"allowed", status: int = 0, index: bytes = b"\x00", tail: bytes = b"") -> bytes:
    rest = _field(b"") + _field(b"/bin/sh") + tail
    return b"\x01R" + _field(code) + bytes([status]) + _field(b"msg") + index + rest


def test_hand_built_frames_parse() -> None:
    assert parse_message(_decide()) == DecideRequest("a", b"true", ED25519, None, "127.0.0.1:1", "exec")
    assert parse_message(_decide(bundle=b"\x01" + _field(b"B"))).bundle == "B"
    assert parse_message(_reply(index=b"\x01" + struct.pack(">Q", 7))) == DecisionReply(
        Reason.ALLOWED, "msg", 7, "", "/bin/sh"
    )
    assert parse_message(b"\x01X\x01\x07\x00") == ExitReport(7)
    assert parse_message(b"\x01K") == Ack()


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x01",
        b"\x02K",  # version
        b"\x01Z",  # type
        b"\x01K\x00",  # trailing byte
        _decide(tail=b"\x00"),
        _decide()[:-1],  # truncated
        _decide(kind=b"x11"),
        _decide(account=b"\xff"),  # not UTF-8
        _decide(bundle=b"\x02"),  # optional flag
        b"\x01Q" + struct.pack(">I", 2**31),  # field longer than the message
        b"\x01Q" + struct.pack(">I", 128 * 1024 + 1) + b"x" * (128 * 1024 + 1),  # field over the limit
        _reply(code=b"maybe"),
        _reply(status=1),  # "allowed" with a non-zero status
        _reply(code=b"replay", status=0),  # a refusal that would exit 0
        _reply(index=b"\x01" + struct.pack(">Q", 2**63)),
        b"\x01X\x02",
        b"\x01X\x00\x01\x00",  # signal 0
        b"\x01X\x00\x01\x80",  # signal 128
        b"\x01X\x01",
    ],
)
def test_malformed_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        parse_message(payload)


def test_reply_needs_a_real_reason() -> None:
    class Fake:
        code = "allowed"
        exit_status = 1

    with pytest.raises(LocalProtocolError):
        DecisionReply(Fake(), "x")
    with pytest.raises(AttributeError):
        DecisionReply(Reason.ALLOWED, "x").code = "replay"  # type: ignore[misc]


def test_reason_table_matches_the_gate_contract() -> None:
    assert REASON_STATUS == {r.code: r.exit_status for r in Reason}


@given(st.binary(max_size=200))
def test_random_payloads_never_escape_as_other_errors(data: bytes) -> None:
    try:
        message = parse_message(data)
    except LocalProtocolError:
        return
    assert parse_message(encode(message)[4:]) == message


@pytest.mark.parametrize("length", [0, MAX_PAYLOAD + 1, 2**32 - 1])
def test_frame_length_limits(length: int) -> None:
    with pytest.raises(LocalProtocolError):
        payload_length(struct.pack(">I", length))
    with pytest.raises(LocalProtocolError):
        payload_length(b"\x00\x01")


def test_oversized_message_cannot_be_encoded() -> None:
    with pytest.raises(LocalProtocolError):
        encode(DecideRequest("a", b"x" * MAX_PAYLOAD, ED25519, None))


def test_reason_codes_are_unique_and_resolvable() -> None:
    assert len({r.code for r in Reason}) == len(Reason)
    assert reason_from_code("log-fork") is Reason.FORK
    with pytest.raises(LocalProtocolError):
        reason_from_code("allowed ")


# -- SSH_USER_AUTH ------------------------------------------------------------------------------


def test_auth_info_single_key() -> None:
    assert parse_auth_info(f"publickey {ED25519}\n".encode()) == ED25519


def test_auth_info_ignores_other_methods_and_repeats_of_the_same_key() -> None:
    data = f"keyboard-interactive\npublickey {ED25519}\npublickey {ED25519}\n".encode()
    assert parse_auth_info(data) == ED25519


def test_auth_info_matches_ssh_keygen_output(tmp_path: object) -> None:
    from pathlib import Path

    key = Path(str(tmp_path)) / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(key)], check=True)
    public = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    assert parse_auth_info(f"publickey {public}\n".encode()) == public


def _other_key() -> str:
    blob = base64.b64decode(ED25519.split()[1])
    return "ssh-ed25519 " + base64.b64encode(blob[:-1] + b"\x00").decode()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"password\n",
        b"publickey\n",
        b"publickey ssh-ed25519\n",
        f"publickey {ED25519} comment\n".encode(),
        f"publickey  {ED25519}\n".encode(),
        b"publickey ssh-ed25519 !!!!\n",
        b"publickey ssh-ed25519 AAAA\n",
        b"publickey ssh-dss AAAAB3NzaC1kc3M=\n",
        b"publickey ssh-ed25519-cert-v01@openssh.com AAAA\n",
        ("publickey ssh-rsa " + ED25519.split()[1] + "\n").encode(),
        f"publickey {ED25519}\npublickey {_other_key()}\n".encode(),
        "publickey ssh-ed25519 AAAA\u00e9\n".encode(),
        b"publickey " + b"A" * 70000,
        f"publickey {ED25519}=\n".encode(),  # not canonical
    ],
)
def test_auth_info_refuses_anything_but_one_plain_key(data: bytes) -> None:
    with pytest.raises(AuthInfoError):
        parse_auth_info(data)


@pytest.mark.parametrize(
    ("original", "kind"),
    [
        (None, "shell"),
        (b"", "exec"),
        (b"true", "exec"),
        (b"internal-sftp", "subsystem"),
        (b"/usr/lib/openssh/sftp-server", "subsystem"),
        (b"  /usr/lib/openssh/sftp-server -l INFO", "subsystem"),
        (b"sftp-server-backup.sh", "exec"),
        (b"echo sftp-server", "exec"),
        (b"scp -t /tmp", "exec"),
    ],
)
def test_classify_command(original: bytes | None, kind: str) -> None:
    assert classify_command(original) == kind


def test_execgate_imports_only_the_standard_library() -> None:
    """The ForceCommand must start fast and must not depend on third-party packages."""
    code = (
        "import sys; before = set(sys.modules); import gatekeeper.execgate.program; "
        "print('\\n'.join(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], check=True, capture_output=True, text=True)
    loaded = {name.split(".")[0] for name in out.stdout.split()}
    stdlib = set(sys.stdlib_module_names) | {"gatekeeper"}
    assert loaded <= stdlib, sorted(loaded - stdlib)
    assert "gatekeeper.execgate.program" in out.stdout
    # Start-up cost: none of the heavy standard modules on the ForceCommand's path.
    heavy = {"argparse", "subprocess", "json", "re", "typing", "dataclasses", "base64", "gatekeeper.gate"}
    assert heavy.isdisjoint(out.stdout.split())
