"""``[server] idle_timeout`` / ``body_timeout`` in log.toml: the template's values, defaults when
absent, and clear ConfigErrors (never a traceback) for zero, negative, out-of-range or mistyped ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import init_log

from gatekeeper.cli import main
from personality.config import MAX_TIMEOUT, load_config
from personality.errors import ConfigError


def _log_with(tmp_path: Path, server: str) -> Path:
    d = tmp_path / "log"
    init_log(d, "t.example/log")
    (d / "log.toml").write_text(f'origin = "t.example/log"\n[server]\n{server}')
    return d


def test_template_sets_the_server_defaults(tmp_path: Path) -> None:
    d = tmp_path / "log"
    init_log(d, "t.example/log")
    text = (d / "log.toml").read_text()
    assert "\nidle_timeout = 75\n" in text and "\nbody_timeout = 30\n" in text
    cfg = load_config(d)
    assert cfg.server.idle_timeout == 75.0 and cfg.server.body_timeout == 30.0


def test_absent_timeouts_mean_the_server_defaults(tmp_path: Path) -> None:
    cfg = load_config(_log_with(tmp_path, ""))
    assert cfg.server.idle_timeout is None and cfg.server.body_timeout is None


@pytest.mark.parametrize(
    ("text", "idle", "body"),
    [
        ("idle_timeout = 1\nbody_timeout = 86400\n", 1.0, 86400.0),
        ("idle_timeout = 2.5\n", 2.5, None),
        ("body_timeout = 120\n", None, 120.0),
    ],
)
def test_valid_timeouts(tmp_path: Path, text: str, idle: float | None, body: float | None) -> None:
    cfg = load_config(_log_with(tmp_path, text))
    assert cfg.server.idle_timeout == idle and cfg.server.body_timeout == body
    assert cfg.server.listen == "127.0.0.1:8080"  # the rest keeps its defaults


@pytest.mark.parametrize(
    "text",
    [
        "idle_timeout = 0\n",
        "body_timeout = -5\n",
        "idle_timeout = 0.5\n",
        f"body_timeout = {MAX_TIMEOUT + 1}\n",
        'idle_timeout = "75"\n',
        "body_timeout = true\n",
        "idle_timeout = nan\n",
        "body_timeout = inf\n",
        "idle_timeout = [75]\n",
    ],
)
def test_bad_timeouts_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    d = _log_with(tmp_path, text)
    key = text.split()[0]
    with pytest.raises(ConfigError, match=rf"\[server\]: {key} must be a number of seconds from 1 to 86400"):
        load_config(d)
    assert main(["log", "serve", str(d), "--accept-any"]) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err


def test_unknown_server_key_is_still_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting.*read_timeout"):
        load_config(_log_with(tmp_path, "idle_timeout = 10\nread_timeout = 10\n"))
