"""The client's configuration: ``~/.config/gatekeeper/client.toml``.

Every setting has a safe default and every ``gk submit`` / ``gk ssh`` flag overrides the file. The
file is looked up as: ``--config PATH``, else ``$GK_CONFIG``, else
``$XDG_CONFIG_HOME/gatekeeper/client.toml`` (``~/.config/...``). An explicitly named file must exist;
the default one may be absent. Unknown keys are an error (a typo must not silently weaken a setting).

Example::

    log = "https://log.example.org"              # the log's base URL
    log_key = "log.example.org+1a2b3c4d+AV7m..." # the log's note verifier key
    origin = "log.example.org"                   # checkpoint origin line (default: the key's name)
    key = "~/.ssh/id_ed25519"                    # signing key file ...
    agent = false                                # ... or true: sign with a key in ssh-agent
    window = 300                                 # seconds the action stays valid (max 3600)
    state = "~/.local/state/gatekeeper/checkpoint-log.example.org"
    timeout = 10                                 # seconds for each HTTP request to the log

Loading does no network I/O; it raises :class:`~gatekeeper.errors.ConfigError` for anything wrong.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gatekeeper.errors import ConfigError

__all__ = [
    "DEFAULT_WINDOW",
    "MAX_WINDOW",
    "ClientConfig",
    "default_config_path",
    "default_state_path",
    "load_config",
]

DEFAULT_WINDOW = 300
MAX_WINDOW = 3600
DEFAULT_TIMEOUT = 10.0
_MAX_CONFIG_SIZE = 64 * 1024

_KEYS: dict[str, type | tuple[type, ...]] = {
    "log": str,
    "log_key": str,
    "origin": str,
    "key": str,
    "agent": bool,
    "window": int,
    "state": str,
    "timeout": (int, float),
}


@dataclass(frozen=True)
class ClientConfig:
    """Resolved client settings. ``None`` means "not configured" (the command decides the default
    or raises :class:`ConfigError` when the setting is required)."""

    log_url: str | None = None
    log_key: str | None = None
    origin: str | None = None
    key_file: Path | None = None
    agent: bool = False
    window: int = DEFAULT_WINDOW
    state_file: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    source: Path | None = None  # the file these settings came from, for messages

    def with_overrides(self, **overrides: Any) -> ClientConfig:
        """A copy with every non-``None`` override applied and the result re-validated."""
        cfg = replace(self, **{k: v for k, v in overrides.items() if v is not None})
        _validate(cfg)
        return cfg

    def require_log(self) -> tuple[str, str, str | None]:
        """``(log_url, log_key, origin)``; raises :class:`ConfigError` if the URL or key is missing."""
        if not self.log_url:
            raise ConfigError(f'no log URL: pass --log URL or set log = "..." in {self._where()}')
        if not self.log_key:
            raise ConfigError(
                f'no log verifier key: pass --log-key VKEY or set log_key = "..." in {self._where()}'
            )
        return self.log_url, self.log_key, self.origin

    def _where(self) -> str:
        return str(self.source) if self.source else str(default_config_path(os.environ))


def default_config_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gatekeeper" / "client.toml"


def default_state_path(origin: str, env: Mapping[str, str] | None = None) -> Path:
    """Where the newest verified checkpoint of the log ``origin`` is kept by default:
    ``$XDG_STATE_HOME/gatekeeper/checkpoint-<origin, unsafe characters replaced>-<hash of origin>``."""
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", origin)[:100]
    digest = hashlib.sha256(origin.encode("utf-8")).hexdigest()[:12]  # distinct origins, distinct files
    return Path(base) / "gatekeeper" / f"checkpoint-{slug}-{digest}"


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> ClientConfig:
    """Read the client config. ``path`` (``--config``) wins over ``$GK_CONFIG`` over the default
    location. Raises :class:`ConfigError` for a missing explicit file, bad TOML, unknown keys,
    wrong types, or out-of-range values."""
    env = os.environ if env is None else env
    explicit = path if path is not None else env.get("GK_CONFIG") or None
    file = Path(explicit) if explicit is not None else default_config_path(env)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        if explicit is not None:
            raise ConfigError(f"config file {file} does not exist") from None
        return ClientConfig()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
    if len(data) > _MAX_CONFIG_SIZE:
        raise ConfigError(f"config file {file} is larger than {_MAX_CONFIG_SIZE} bytes")
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    return _from_table(table, file)


def _from_table(table: dict[str, Any], file: Path) -> ClientConfig:
    for name, value in table.items():
        expected = _KEYS.get(name)
        if expected is None:
            raise ConfigError(f"{file}: unknown setting {name!r} (known: {', '.join(sorted(_KEYS))})")
        # bool is an int subclass; never accept true/false where a number is meant
        if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
            raise ConfigError(f"{file}: setting {name!r} has the wrong type ({type(value).__name__})")
    cfg = ClientConfig(
        log_url=table.get("log"),
        log_key=table.get("log_key"),
        origin=table.get("origin"),
        key_file=_path(table.get("key"), f"{file}: key"),
        agent=bool(table.get("agent", False)),
        window=int(table.get("window", DEFAULT_WINDOW)),
        state_file=_path(table.get("state"), f"{file}: state"),
        timeout=float(table.get("timeout", DEFAULT_TIMEOUT)),
        source=file,
    )
    try:
        _validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    return cfg


def _path(value: str | None, what: str) -> Path | None:
    if not value:
        return None
    try:
        return Path(value).expanduser()
    except RuntimeError:  # "~someone/..." for an unknown user
        raise ConfigError(f"{what} {value!r}: cannot expand '~' (no such user)") from None


def _validate(cfg: ClientConfig) -> None:
    if not 1 <= cfg.window <= MAX_WINDOW:
        raise ConfigError(f"window must be between 1 and {MAX_WINDOW} seconds, not {cfg.window}")
    if not 0 < cfg.timeout <= 600:
        raise ConfigError(f"timeout must be between 0 and 600 seconds, not {cfg.timeout}")
    if cfg.log_url is not None and not re.match(r"^https?://[^\s/]+", cfg.log_url):
        raise ConfigError(f"log URL must start with http:// or https://, not {cfg.log_url!r}")
    if cfg.key_file is not None and cfg.agent:
        raise ConfigError("choose one signing key source: a key file or the ssh-agent, not both")
