"""Bugs the hostile-input suite found in other modules: open ones first, one strict xfail each;
fixed ones after, as regression tests.

Each test states the contract (the module's own error class with a clear message, never another
exception). An open bug's test fails today with the exception named in its reason; when a fuzz
target reaches it, it also has an entry in ``fuzz.targets.KNOWN_BUGS`` (which keeps the generic
fuzz tests from tripping over it meanwhile). When the owner fixes it the strict xfail turns red:
then delete the ``xfail`` marker, move the test below, and delete any ``KNOWN_BUGS`` entry.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz import targets as T  # noqa: E402
from gatekeeper.errors import ConfigError  # noqa: E402
from personality.errors import FormatError  # noqa: E402


def test_known_bugs_each_have_a_test() -> None:
    """Every entry of fuzz.targets.KNOWN_BUGS is demonstrated above (keeps the list honest)."""
    here = Path(__file__).read_text()
    for bug in T.KNOWN_BUGS:
        assert bug.exc_type.__name__ in here, bug
        assert bug.report.split(" ")[0].rstrip(":") in here, bug


# -- fixed by their owners: kept as regression tests --------------------------------------------


@pytest.mark.parametrize("data", [b"[" * 100_000, b'{"format": ' + b"[" * 100_000])
def test_audit_proof_bundle_deeply_nested(data: bytes) -> None:
    """gatekeeper/audit/proofs.py decode() (found in c39a35c): json.loads raised RecursionError
    for a bundle nested 100,000 deep (well under MAX_BUNDLE_SIZE; only ValueError was caught);
    now an ActionFormatError, and verify_bundle refuses it the same way."""
    from gatekeeper.audit.proofs import decode, verify_bundle
    from gatekeeper.errors import ActionFormatError
    from personality.tlog.note import generate_signer

    with pytest.raises(ActionFormatError, match="^proof bundle is JSON nested too deeply$"):
        decode(data)
    with pytest.raises(ActionFormatError, match="^proof bundle is JSON nested too deeply$"):
        verify_bundle(data, [generate_signer(T.ORIGIN).verifier()])


@pytest.mark.parametrize("setting", ["key", "state"])
def test_client_config_unknown_user_home(tmp_path: Path, setting: str) -> None:
    """gatekeeper/client/config.py _path (fixed in db3dd8f): '~nosuchuser/...' made
    Path.expanduser() raise RuntimeError; now a ConfigError naming the setting."""
    from gatekeeper.client.config import load_config

    path = tmp_path / "client.toml"
    path.write_text(f'{setting} = "~nosuchuser-gkfuzz/id_ed25519"\n')
    with pytest.raises(ConfigError, match=f"{setting} '~nosuchuser-gkfuzz/id_ed25519': cannot expand '~'"):
        load_config(path, env={})


@pytest.mark.parametrize("port", ["\u00b2", "8\u2460"])
def test_agent_listen_with_unicode_digit(port: str) -> None:
    """gatekeeper/agent/config.py parse_listen (fixed in db3dd8f): a Unicode digit passed
    str.isdigit() and int() raised ValueError; now a ConfigError."""
    from gatekeeper.agent.config import parse_listen

    with pytest.raises(ConfigError, match="is not ADDRESS:PORT"):
        parse_listen("127.0.0.1:" + port)


@pytest.mark.parametrize("port", ["\u00b2", "8\u2460"])
def test_log_listen_with_unicode_digit(port: str) -> None:
    """personality/config.py parse_listen (fixed in a4cab79): a Unicode digit is a ConfigError."""
    from personality.config import parse_listen
    from personality.errors import ConfigError as LogConfigError

    with pytest.raises(LogConfigError):
        parse_listen("127.0.0.1:" + port)


def test_log_config_not_utf8(tmp_path: Path) -> None:
    """personality/config.py load_config (fixed in a4cab79): a non-UTF-8 log.toml is a ConfigError."""
    from personality.config import CONFIG_NAME, load_config
    from personality.errors import ConfigError as LogConfigError

    (tmp_path / CONFIG_NAME).write_bytes(b'origin = "caf\xe9"\n')
    with pytest.raises(LogConfigError):
        load_config(tmp_path)


def test_log_server_client_gone_mid_body(tmp_path: Path) -> None:
    """personality/server.py (fixed in a4cab79): a client that closes its connection in the middle
    of a POST /add body is not logged as an internal error, and the server keeps serving."""
    import socket
    import time

    from conftest import LogServer

    server = LogServer.create(tmp_path / "log", "--accept-any")
    try:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        for _ in range(3):
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(b"POST /add HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b")
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(4096):
                    pass
        time.sleep(0.2)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")
    finally:
        server.stop()
    assert "unhandled error" not in server.stderr(), server.stderr()[-3000:]
    assert "Traceback" not in server.stderr(), server.stderr()[-3000:]


def test_monitor_rule_huge_repeat() -> None:
    """gatekeeper/monitor/rules.py _regex: a repeat count >= 2**32 made re.compile raise
    OverflowError (only re.error was caught); now a ConfigError naming the rule and the field."""
    from gatekeeper.monitor.rules import parse_rules

    with pytest.raises(ConfigError, match=r"rule 1 \('r'\): 'command' is not a valid regular expression"):
        parse_rules('[[rule]]\nname = "r"\ncommand = "a{4294967296}"\n')


@pytest.mark.parametrize("depth", [600, 2000])
def test_monitor_rule_deep_regex(depth: int) -> None:
    """gatekeeper/monitor/rules.py _regex: deeply nested groups made re.compile raise
    RecursionError; now a ConfigError."""
    from gatekeeper.monitor.rules import parse_rules

    with pytest.raises(ConfigError, match=r"'reason' is nested too deeply"):
        parse_rules('[[rule]]\nname = "r"\nreason = "' + "(" * depth + ")" * depth + '"\n')


def test_monitor_rule_regex_length_bound() -> None:
    """gatekeeper/monitor/rules.py _regex: a pattern longer than MAX_REGEX is refused before
    re.compile sees it; one at the bound compiles."""
    from gatekeeper.monitor.rules import MAX_REGEX, parse_rules

    ok = parse_rules('[[rule]]\nname = "r"\ncommand = "' + "a" * MAX_REGEX + '"\n')
    assert ok.rules[0].command is not None
    with pytest.raises(ConfigError, match=f"'command' is longer than {MAX_REGEX} characters"):
        parse_rules('[[rule]]\nname = "r"\ncommand = "' + "a" * (MAX_REGEX + 1) + '"\n')


@pytest.mark.parametrize("call", ["add", "inclusion_proof", "inclusion_proof_by_hash", "consistency_proof"])
def test_log_client_deeply_nested_json(call: str) -> None:
    """personality/client.py _json: a hostile log answering ``[[[[...`` 100,000 deep made
    json.loads raise RecursionError (only ValueError was caught); now a FormatError."""
    from personality.client import LogClient
    from personality.tlog import merkle

    client = LogClient(T._OneAnswer(b"[" * 100_000))
    with pytest.raises(FormatError, match="nested too deeply"):
        if call == "add":
            client.add(b"entry")
        elif call == "inclusion_proof":
            client.inclusion_proof(3, 7)
        elif call == "inclusion_proof_by_hash":
            client.inclusion_proof_by_hash(merkle.leaf_hash(b"entry"), 7)
        else:
            client.consistency_proof(3, 7)


def test_log_client_deeply_nested_error_body() -> None:
    """personality/client.py HTTPTransport: an error answer whose body is deeply nested JSON is
    reported with the status's error class and the raw text, not a RecursionError."""
    import requests
    from requests.adapters import BaseAdapter

    from personality.client import HTTPTransport

    body = b'{"message": ' + b"[" * 100_000

    class Hostile(BaseAdapter):
        def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
                 verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
            resp = requests.Response()
            resp.status_code = 400
            resp.headers["Content-Type"] = "application/json"
            resp.raw = io.BytesIO(body)
            resp.request = request
            resp.url = request.url or ""
            return resp

        def close(self) -> None:
            pass

    session = requests.Session()
    session.mount("http://", Hostile())
    with HTTPTransport("http://log.invalid", session=session) as transport:
        with pytest.raises(FormatError, match=r"GET checkpoint: HTTP 400: \{\"message\": \[\[\["):
            transport.get("checkpoint")


def _with_surrogates(text: str) -> str:
    """``text`` with the log's and the witness's key names holding a lone surrogate (as argv or
    environ text decoded with surrogateescape would)."""
    hostile = text.replace("fuzz.example", "\udce6uzz.example").replace("witness.example", "w\udcffitness")
    assert hostile != text
    return hostile


@pytest.mark.parametrize("kind", ["vkey", "skey", "cosig_vkey"])
def test_key_name_with_surrogate(kind: str) -> None:
    """personality/tlog/note.py key_id: a key name holding a lone surrogate made
    name.encode('utf-8') raise UnicodeEncodeError; valid_key_name now refuses it -> FormatError."""
    from personality.tlog.cosig import parse_cosignature_vkey
    from personality.tlog.note import parse_vkey, signer_from_skey, valid_key_name

    m = T.material()
    valid = {"vkey": m.signer.verifier().vkey(), "skey": m.signer.skey(),
             "cosig_vkey": m.cosigner.verifier().vkey()}[kind]
    parse = {"vkey": parse_vkey, "skey": signer_from_skey, "cosig_vkey": parse_cosignature_vkey}[kind]
    with pytest.raises(FormatError, match="not UTF-8"):
        parse(_with_surrogates(valid))
    assert not valid_key_name("\udce6uzz.example/log")
    assert not valid_key_name("\ud800")
    assert valid_key_name("caf\u00e9.example/log") and valid_key_name("\U0001f511.example")


@pytest.mark.parametrize("name", ["agent_config", "policy_toml"])
def test_config_key_name_with_surrogate(name: str) -> None:
    """The same key names reached through the agent config and a HostPolicy table: a ConfigError
    saying which key, not a UnicodeEncodeError."""
    target = T.TARGETS[name]
    with pytest.raises(ConfigError, match=r"keys.*not UTF-8"):
        target.run(_with_surrogates(T.seeds(name)[0]))


@pytest.mark.parametrize("data", [b"[" * 100_000, b'{"version": ' + b"[" * 100_000])
def test_monitor_progress_deeply_nested(tmp_path: Path, data: bytes) -> None:
    """gatekeeper/monitor/state.py load_scan_state: a progress.json nested 100,000 deep made
    json.loads raise RecursionError (only ValueError and friends were caught); now the same
    'damaged' GatekeeperError as any other unreadable progress file."""
    from gatekeeper.errors import GatekeeperError
    from gatekeeper.monitor.state import PROGRESS_FILE, load_scan_state

    (tmp_path / PROGRESS_FILE).write_bytes(data)
    damaged = r"progress\.json is damaged \(JSON nested too deeply\); move it away"
    with pytest.raises(GatekeeperError, match=damaged):
        load_scan_state(tmp_path, T.ORIGIN)


@pytest.mark.parametrize("line", [b"[" * 100_000, b'{"event": ' + b"[" * 100_000])
def test_journal_line_deeply_nested(tmp_path: Path, line: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    """gatekeeper/journal.py read_journal: a journal line nested 100,000 deep made json.loads raise
    RecursionError (only ValueError was caught); now a GatekeeperError naming the line, and
    ``gk audit reconcile`` prints it as one line instead of a traceback."""
    from gatekeeper.cli import main
    from gatekeeper.errors import GatekeeperError
    from gatekeeper.journal import read_journal

    journal = tmp_path / "journal.jsonl"
    journal.write_bytes(b'{"event": "allowed"}\n' + line + b"\n")
    with pytest.raises(GatekeeperError, match=r"journal\.jsonl: line 2 is JSON nested too deeply$"):
        list(read_journal(journal))
    rc = main(["audit", "reconcile", str(journal), "--index", str(tmp_path / "a.db"), "--host", "web-01"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "line 2 is JSON nested too deeply" in err and "Traceback" not in err, err
