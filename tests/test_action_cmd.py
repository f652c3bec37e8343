"""``gk action show``: entries, bare actions and bundles, printed safely."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from pathlib import Path

import pytest
from keys import Key, keygen

from gatekeeper import action as A
from gatekeeper import sshsig
from gatekeeper.bundle import Bundle, encode_bundle
from gatekeeper.cli import main
from personality.tlog.checkpoint import Checkpoint, sign_checkpoint
from personality.tlog.note import generate_signer

T0 = 1795938000


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Key:
    return keygen(tmp_path_factory.mktemp("k"), "ed25519")


def entry(key: Key, command: bytes = b"systemctl restart nginx") -> bytes:
    a = A.new_action(
        targets=[A.Target("web-01", "SHA256:" + "A" * 42 + "E"), "web-02"],
        account="deploy",
        command=command,
        signer=key.public,
        now=T0,
        reason="INC-1234 restart nginx",
    )
    body = A.encode_action(a)
    return A.encode_entry(body, sshsig.sign_file(body, A.NAMESPACE, key.path))


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_show_entry(key: Key, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "entry"
    path.write_bytes(entry(key))
    rc, out, err = run(["action", "show", str(path)], capsys)
    assert rc == 0, err
    assert out.startswith("gatekeeper/action/v1 entry\n")
    assert "host        web-01  host key SHA256:" in out
    assert "            web-02\n" in out
    assert "command     systemctl restart nginx\n" in out
    assert "not-before  2026-11-29T07:40:00Z\n" in out
    assert "(300 s window)" in out
    assert f"signer      ssh-ed25519 {sshsig.fingerprint(key.public)}\n" in out
    assert "reason      INC-1234 restart nginx\n" in out
    assert "signature   valid SSHSIG by the signer" in out


def test_hostile_command_is_escaped(key: Key, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "entry"
    path.write_bytes(entry(key, b"echo \x1b]0;pwned\x07\x1b[2J\r\nrm -rf /\xff"))
    rc, out, _ = run(["action", "show", str(path)], capsys)
    assert rc == 0
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out
    assert "command     echo \\x1b]0;pwned\\x07\\x1b[2J\\r\\nrm -rf /\\xff\n" in out


def test_show_bare_action_and_altered_entry(
    key: Key, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    e = entry(key)
    body = A.parse_entry(e).body
    (tmp_path / "body").write_bytes(body)
    rc, out, _ = run(["action", "show", str(tmp_path / "body")], capsys)
    assert rc == 0
    assert "signature   none (a bare action body)" in out
    (tmp_path / "altered").write_bytes(e.replace(b"account deploy", b"account root"))
    rc, out, _ = run(["action", "show", str(tmp_path / "altered")], capsys)
    assert rc == 0
    assert "signature   INVALID:" in out


def test_show_bundle_from_stdin(key: Key) -> None:
    log = generate_signer("log.example.com")
    cp = sign_checkpoint(Checkpoint("log.example.com", 8, bytes(32)), [log])
    proof = tuple(hashlib.sha256(bytes([i])).digest() for i in range(3))
    text = encode_bundle(Bundle(entry(key), 5, proof, cp))
    proc = subprocess.run(
        [sys.executable, "-m", "gatekeeper", "action", "show", "-"],
        input=f"GK_BUNDLE={text}\n",
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("GK_BUNDLE (c2sp.org/tlog-proof@v1)\n")
    assert "log index   5\n" in proc.stdout
    assert "proof       3 hashes" in proc.stdout
    assert "checkpoint  log.example.com  size 8\n" in proc.stdout
    assert f"signed by   log.example.com  key id {log.key_id.hex()}\n" in proc.stdout
    assert "command     systemctl restart nginx\n" in proc.stdout


def test_malformed_input_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    for data in [b"gatekeeper/action/v1\nkind exec\n", b"not a bundle", b"\xff\xfe"]:
        (tmp_path / "bad").write_bytes(data)
        proc = subprocess.run(
            [sys.executable, "-m", "gatekeeper", "action", "show", str(tmp_path / "bad")],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 65
        assert "Traceback" not in proc.stderr
        assert proc.stderr.startswith("gk: ") and proc.stderr.count("\n") == 1


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["action", "show", str(tmp_path / "nope")], capsys)
    assert rc == 1
    assert "cannot read" in err


def test_show_function_limits() -> None:
    from gatekeeper.cli.action_cmd import show
    from gatekeeper.errors import ActionFormatError

    with pytest.raises(ActionFormatError, match="larger"):
        show(b"x" * 200_000, io.StringIO())
