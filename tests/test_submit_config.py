"""Client config (client.toml): lookup order, strictness, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatekeeper.client.config import (
    DEFAULT_WINDOW,
    MAX_WINDOW,
    ClientConfig,
    default_state_path,
    load_config,
)
from gatekeeper.errors import ConfigError

VKEY = "log.example+01020304+AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAh"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_missing_default_file_gives_defaults(tmp_path: Path) -> None:
    cfg = load_config(None, env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert cfg == ClientConfig()
    assert cfg.window == DEFAULT_WINDOW


def test_default_location_is_xdg(tmp_path: Path) -> None:
    write(tmp_path / "gatekeeper" / "client.toml", 'log = "http://127.0.0.1:1"\nwindow = 60\n')
    cfg = load_config(None, env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert cfg.log_url == "http://127.0.0.1:1"
    assert cfg.window == 60
    assert cfg.source == tmp_path / "gatekeeper" / "client.toml"


def test_gk_config_env_wins_over_default_and_flag_over_env(tmp_path: Path) -> None:
    a = write(tmp_path / "a.toml", "window = 10\n")
    b = write(tmp_path / "b.toml", "window = 20\n")
    env = {"XDG_CONFIG_HOME": str(tmp_path / "nothing"), "GK_CONFIG": str(a)}
    assert load_config(None, env=env).window == 10
    assert load_config(b, env=env).window == 20


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_all_settings(tmp_path: Path) -> None:
    f = write(
        tmp_path / "c.toml",
        f'log = "https://log.example"\nlog_key = "{VKEY}"\norigin = "log.example"\n'
        'key = "~/.ssh/id_ed25519"\nwindow = 120\nstate = "/tmp/x/state"\ntimeout = 2.5\n',
    )
    cfg = load_config(f, env={})
    assert cfg.require_log() == ("https://log.example", VKEY, "log.example")
    assert cfg.key_file == Path.home() / ".ssh" / "id_ed25519"
    assert cfg.state_file == Path("/tmp/x/state")
    assert cfg.timeout == 2.5
    assert cfg.agent is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("windw = 3\n", "unknown setting 'windw'"),
        ('window = "300"\n', "wrong type"),
        ("agent = 1\n", "wrong type"),
        ("window = true\n", "wrong type"),
        (f"window = {MAX_WINDOW + 1}\n", "window must be between"),
        ("window = 0\n", "window must be between"),
        ('log = "ftp://x"\n', "http"),
        ('key = "/k"\nagent = true\n', "not both"),
        ("timeout = 0\n", "timeout"),
        ("log = \n", "not valid TOML"),
        ('key = "~nosuchuser-gk/id"\n', r"key '~nosuchuser-gk/id': cannot expand '~' \(no such user\)"),
        ('state = "~nosuchuser-gk/st"\n', "state '~nosuchuser-gk/st': cannot expand"),
    ],
)
def test_bad_files_are_refused_with_a_reason(tmp_path: Path, text: str, message: str) -> None:
    f = write(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError, match=message) as exc:
        load_config(f, env={})
    assert str(f) in str(exc.value)


def test_non_utf8_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_bytes(b'log = "\xff"\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(f, env={})


def test_overrides_apply_and_revalidate() -> None:
    cfg = ClientConfig(window=60)
    assert cfg.with_overrides(window=None).window == 60
    assert cfg.with_overrides(window=90).window == 90
    with pytest.raises(ConfigError):
        cfg.with_overrides(window=MAX_WINDOW + 1)


def test_require_log_names_the_missing_setting() -> None:
    with pytest.raises(ConfigError, match="--log URL"):
        ClientConfig().require_log()
    with pytest.raises(ConfigError, match="--log-key"):
        ClientConfig(log_url="http://x").require_log()


def test_default_state_path_is_per_origin_and_safe(tmp_path: Path) -> None:
    p = default_state_path("example.org/log ../x", env={"XDG_STATE_HOME": str(tmp_path)})
    assert p.parent == tmp_path / "gatekeeper"
    assert "/" not in p.name and " " not in p.name
    assert p != default_state_path("other.org/log", env={"XDG_STATE_HOME": str(tmp_path)})


def test_default_state_path_does_not_collide_on_slugs(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path)}
    assert default_state_path("example.org/log", env=env) != default_state_path("example.org_log", env=env)
