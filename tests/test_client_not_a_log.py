"""A URL with no log behind it (a plain web server answering 404 to everything): the client and
``gk submit`` say so in one clear line instead of "the log's answer does not verify", while a
404 to anything else (a proof, a tile) is still "not found"."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import asyncssh
import pytest

from gatekeeper.client import identity as ident
from gatekeeper.client.submit import LogSettings, build_action, submit_action
from gatekeeper.errors import ConfigError as GkConfigError
from personality.client import LogClient
from personality.errors import ConfigError, NotFoundError
from personality.tlog.note import generate_signer


class _NotFound(BaseHTTPRequestHandler):
    """Any web server at the wrong URL: HTML 404 for every request."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b"<html><body><h1>404 Not Found</h1></body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/some/prefix"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(path))
    return path


def test_add_to_a_non_log_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as exc:
        LogClient.http(url).add(b"entry")
    assert str(exc.value) == (
        f"no Gatekeeper log at {url} (HTTP 404 for POST /add): check --log / the log URL"
    )


def test_checkpoint_from_a_non_log_keeps_not_found_with_a_clear_message(url: str) -> None:
    with pytest.raises(NotFoundError) as exc:
        LogClient.http(url).checkpoint()
    assert str(exc.value) == (
        f"no Gatekeeper log at {url} (HTTP 404 for GET /checkpoint): check --log / the log URL"
    )


def test_other_404s_are_still_not_found(url: str) -> None:
    client = LogClient.http(url)
    with pytest.raises(NotFoundError) as exc:
        client.inclusion_proof(0, 5)
    assert "no Gatekeeper log" not in str(exc.value)
    assert str(exc.value).startswith("GET proof/inclusion: HTTP 404")
    with pytest.raises(NotFoundError, match="HTTP 404"):
        client.transport.get("tile/0/000")


def test_submit_to_a_non_log_is_a_config_error(url: str, tmp_path: Path, key: Path) -> None:
    vkey = generate_signer("fake.example/log").verifier().vkey()
    log = LogSettings.from_strings(url, vkey, None, tmp_path / "state", timeout=5)
    me = ident.from_file(key)
    action = build_action(me, ["web-01"], "deploy", b"true", window=300)
    with pytest.raises(GkConfigError) as exc:
        submit_action(log, me, action)
    assert exc.value.exit_code == 78
    assert "does not verify" not in str(exc.value)
    assert str(exc.value).startswith(f"no Gatekeeper log at {url} (HTTP 404 for POST /add)")
    assert not (tmp_path / "state").exists()


def test_cli_submit_to_a_non_log_is_one_line(url: str, tmp_path: Path, key: Path) -> None:
    vkey = generate_signer("fake.example/log").verifier().vkey()
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "GK_CONFIG")}
    argv = ["submit", "--log", url, "--log-key", vkey, "--state", str(tmp_path / "s"), "--key", str(key)]
    p = subprocess.run(
        [sys.executable, "-m", "gatekeeper", *argv, "--host", "h", "--account", "a", "--", "true"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    lines = p.stderr.decode().strip().splitlines()
    assert p.returncode == 78, p.stderr
    assert lines == [f"gk: no Gatekeeper log at {url} (HTTP 404 for POST /add): check --log / the log URL"]
