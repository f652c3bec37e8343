"""The log's configuration: ``log.toml`` in the log directory, every setting with a safe default.

``gk log init`` writes a commented file (:data:`TEMPLATE`); :func:`load_config` reads it strictly:
unknown keys and wrong types are errors (a typo must not silently fall back to a default).
Relative paths are relative to the log directory. Timeouts are seconds from
:data:`MIN_TIMEOUT` to :data:`MAX_TIMEOUT`. Raises :class:`ConfigError` with the file and
key at fault.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personality.errors import ConfigError

__all__ = [
    "CONFIG_NAME",
    "LogConfig",
    "MAX_TIMEOUT",
    "MIN_TIMEOUT",
    "ServerConfig",
    "SequencerConfig",
    "TEMPLATE",
    "load_config",
    "parse_listen",
]

CONFIG_NAME = "log.toml"

TEMPLATE = """\
# Configuration of a Gatekeeper log (personality), written by `gk log init`.
# Every setting has a safe default: delete a line to get the default back.
# Relative paths are relative to this directory.

# The log's name. It is the first line of every checkpoint and the name of the signing key;
# verifiers are configured with it. Never change it once the log is in use.
origin = {origin}

# Ed25519 note signing key (PRIVATE+KEY+... format), readable only by the log's user (0600).
key_file = "log.key"

# The SQLite database holding checkpoints, the dedupe index, tiles and entry bundles.
database = "log.db"

[server]
# Address to listen on. Keep 127.0.0.1 and put a TLS-terminating reverse proxy in front.
listen = "127.0.0.1:8080"

# Who may add entries:
#   "allowed-signers"  only gatekeeper actions signed by a key in allowed_signers (the default)
#   "accept-any"       any bytes at all: for generic use and tests; logged loudly at start
admission = "allowed-signers"
# OpenSSH allowed_signers file for admission = "allowed-signers".
allowed_signers = "allowed_signers"

# Read timeouts in seconds (1 to 86400), against slow or stalled clients (slowloris).
# A connection idle, or still sending its request line and headers, this long after it opened
# or after its last answer is closed. Keep it above the reverse proxy's upstream keep-alive.
idle_timeout = 75
# A POST /add body not complete this long after the server starts reading it gets a 408.
body_timeout = 30

[sequencer]
# Entries waiting for integration before adds are refused with 503 + Retry-After.
max_pending = 65536
# The same bound in bytes.
max_pending_bytes = 67108864
# Most entries integrated (and committed) in one batch.
max_batch = 4096
# Full hash tiles kept in memory for proofs (about 16 KiB each).
tile_cache = 4096
"""


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:8080"
    admission: str = "allowed-signers"
    allowed_signers: Path | None = None
    #: Seconds; None means the server's default (``personality.server.IDLE_TIMEOUT``, 75 s).
    idle_timeout: float | None = None
    #: Seconds; None means the server's default (``personality.server.BODY_TIMEOUT``, 30 s).
    body_timeout: float | None = None


@dataclass(frozen=True)
class SequencerConfig:
    max_pending: int = 65536
    max_pending_bytes: int = 64 << 20
    max_batch: int = 4096
    tile_cache: int = 4096


@dataclass(frozen=True)
class LogConfig:
    directory: Path
    origin: str
    key_file: Path
    database: Path
    server: ServerConfig = field(default_factory=ServerConfig)
    sequencer: SequencerConfig = field(default_factory=SequencerConfig)


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:port``); port 0 picks a free port. Raises ConfigError."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or len(port) > 5 or int(port) > 65535:
        raise ConfigError(f"listen address {text!r} must be HOST:PORT, e.g. 127.0.0.1:8080")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _take(table: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    if key not in table:
        return default
    value = table.pop(key)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ConfigError(f"{where}: {key} must be a positive integer, not {value!r}")
    if kind is str and (not isinstance(value, str) or not value):
        raise ConfigError(f"{where}: {key} must be a non-empty string, not {value!r}")
    return value


#: Bounds of the read timeouts, in seconds: a second at least, a day at most.
MIN_TIMEOUT = 1
MAX_TIMEOUT = 86400


def _take_seconds(table: dict[str, Any], key: str, where: str) -> float | None:
    """A timeout in seconds (integer or float, MIN_TIMEOUT..MAX_TIMEOUT), or None if absent."""
    if key not in table:
        return None
    value = table.pop(key)
    # bool is an int subclass; nan and inf fail the range check.
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
        raise ConfigError(
            f"{where}: {key} must be a number of seconds from {MIN_TIMEOUT} to {MAX_TIMEOUT}, not {value!r}"
        )
    return float(value)


def _no_extra(table: dict[str, Any], where: str) -> None:
    if table:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(table))}; see `gk log init --help`")


def load_config(directory: str | Path) -> LogConfig:
    """Read ``DIR/log.toml``; raises :class:`ConfigError` if it is missing or wrong."""
    d = Path(directory)
    path = d / CONFIG_NAME
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(
            f"{path} not found: is {d} a log directory? Create one with `gk log init`"
        ) from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    where = str(path)
    origin = _take(data, "origin", str, None, where)
    if origin is None:
        raise ConfigError(f"{where}: origin is required (the log's name)")
    key_file = d / _take(data, "key_file", str, "log.key", where)
    database = d / _take(data, "database", str, "log.db", where)

    server = data.pop("server", {})
    sequencer = data.pop("sequencer", {})
    if not isinstance(server, dict) or not isinstance(sequencer, dict):
        raise ConfigError(f"{where}: [server] and [sequencer] must be tables")
    _no_extra(data, where)
    sw, qw = f"{where} [server]", f"{where} [sequencer]"
    listen = _take(server, "listen", str, ServerConfig.listen, sw)
    parse_listen(listen)
    admission = _take(server, "admission", str, ServerConfig.admission, sw)
    if admission not in ("allowed-signers", "accept-any"):
        raise ConfigError(f'{sw}: admission must be "allowed-signers" or "accept-any", not {admission!r}')
    signers = _take(server, "allowed_signers", str, "allowed_signers", sw)
    idle_timeout = _take_seconds(server, "idle_timeout", sw)
    body_timeout = _take_seconds(server, "body_timeout", sw)
    _no_extra(server, sw)
    seq = SequencerConfig(
        max_pending=_take(sequencer, "max_pending", int, SequencerConfig.max_pending, qw),
        max_pending_bytes=_take(sequencer, "max_pending_bytes", int, SequencerConfig.max_pending_bytes, qw),
        max_batch=_take(sequencer, "max_batch", int, SequencerConfig.max_batch, qw),
        tile_cache=_take(sequencer, "tile_cache", int, SequencerConfig.tile_cache, qw),
    )
    _no_extra(sequencer, qw)
    return LogConfig(
        directory=d,
        origin=origin,
        key_file=key_file,
        database=database,
        server=ServerConfig(
            listen=listen,
            admission=admission,
            allowed_signers=d / signers,
            idle_timeout=idle_timeout,
            body_timeout=body_timeout,
        ),
        sequencer=seq,
    )
