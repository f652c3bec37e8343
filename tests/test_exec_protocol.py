"""The local-mode protocol and the parsing of what sshd exposes to a ForceCommand (pure code)."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatekeeper.execgate.protocol import (
    MAX_PAYLOAD,
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
    assert roundtrip(reply) == reply
    assert reply.allowed is (reason is Reason.ALLOWED)


@pytest.mark.parametrize(
    "message", [ExitReport(0), ExitReport(255), ExitReport(None, 9), ExitReport(None), Ack()]
)
def test_exit_and_ack_roundtrip(message: object) -> None:
    assert roundtrip(message) == message


def _payload(**fields: object) -> bytes:
    obj = {"v": 1, "type": "exit", "status": 0, "signal": None}
    obj.update(fields)
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b'"exit"',
        b"{",
        b'{"v":1,"type":"exit","status":0,"signal":null} x',
        b'{"v":1,"type":"exit","status":0,"signal":null,"status":1}',
        b'{"v":1,"type":"exit","status":NaN,"signal":null}',
        _payload(v=2),
        _payload(v=True),
        _payload(v="1"),
        _payload(type="nope"),
        _payload(status=True),
        _payload(status=256),
        _payload(status=-1),
        _payload(status=1.0),
        _payload(signal=0),
        _payload(extra=1),
        json.dumps({"v": 1, "type": "exit", "status": 0}).encode(),
        json.dumps({"v": 1, "type": "decision", "reason": "maybe", "message": "", "index": None,
                    "key_fingerprint": "", "shell": "/bin/sh"}).encode(),
        json.dumps({"v": 1, "type": "decide", "kind": "exec", "account": "a", "command": "!!",
                    "auth_key": "", "bundle": None, "peer": ""}).encode(),
        json.dumps({"v": 1, "type": "decide", "kind": "x11", "account": "a", "command": "",
                    "auth_key": "", "bundle": None, "peer": ""}).encode(),
        json.dumps({"v": 1, "type": "decide", "kind": "exec", "account": 5, "command": "",
                    "auth_key": "", "bundle": None, "peer": ""}).encode(),
        json.dumps({"v": 1, "type": "decide", "kind": "exec", "account": "a", "command": "",
                    "auth_key": "", "bundle": "x" * (128 * 1024 + 1), "peer": ""}).encode(),
        b"[" * 100000,
    ],
)
def test_malformed_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        parse_message(payload)


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
