"""``gk monitor`` configuration: a TOML file (every setting has a safe default) or flags.

::

    state = "/var/lib/gk-monitor"          # per-log state (heads, progress); default ./gk-monitor-state
    rules = "/etc/gatekeeper/monitor-rules.toml"
    allowed_signers = "/etc/gatekeeper/allowed_signers"   # optional: flag unknown signers, principals
    interval = 30                          # seconds between rounds in follow mode
    publish = "/srv/gk-gossip"             # optional: publish verified checkpoints here
    peers = ["https://mon2.example.com/gossip", "/mnt/shared/gossip"]   # optional: compare with these
    workers = 2                            # signature-check processes (default: every core)
    save_every = 65536                     # save progress this often (bounds re-checking after a crash)

    [alerts]
    stdout = true                          # JSON lines on stdout
    syslog = false                         # true, or an address: "/dev/log", "loghost:514"
    webhook = "https://hooks.example.com/gatekeeper"
    webhook_retries = 5
    webhook_headers = { Authorization = "Bearer ..." }

    [[log]]
    name = "prod"
    url = "https://log.example.com"        # or: dir = "/srv/log-mirror"
    key = "log.example.com+1a2b3c4d+AQ..." # or: key_file = "/etc/gatekeeper/log.vkey"
    origin = "log.example.com"             # default: the key's name
    opaque = false                         # true: entries are not actions (tree checks only)
    header_file = "/etc/gatekeeper/log-read-token"   # optional: "Authorization: Bearer …" for a
                                                     # protected read path (or headers = {...})

Raises :class:`~gatekeeper.errors.ConfigError` for anything missing or wrong.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatekeeper.errors import ConfigError
from personality.errors import FormatError
from personality.tlog.note import Verifier, parse_vkey

__all__ = [
    "LogSpec",
    "AlertSpec",
    "MonitorConfig",
    "load_config",
    "parse_key_arg",
    "parse_header",
    "log_spec",
    "DEFAULT_STATE",
]

DEFAULT_STATE = "gk-monitor-state"


@dataclass(frozen=True)
class LogSpec:
    name: str
    location: str  # URL or directory
    verifiers: tuple[Verifier, ...]
    origin: str
    opaque: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. Authorization for a protected read path


@dataclass(frozen=True)
class AlertSpec:
    stdout: bool = True
    syslog: str | None = None  # address, or None for off
    webhook: str | None = None
    webhook_retries: int = 5
    webhook_headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MonitorConfig:
    logs: tuple[LogSpec, ...]
    state: Path = Path(DEFAULT_STATE)
    rules: Path | None = None
    allowed_signers: Path | None = None
    interval: float = 30.0
    publish: Path | None = None
    peers: tuple[str, ...] = ()
    workers: int | None = None
    save_every: int = 65536
    alerts: AlertSpec = AlertSpec()


def parse_key_arg(text: str) -> Verifier:
    """A verifier key given inline (``name+hexid+base64``) or as a path to a file holding one."""
    candidate = Path(text)
    if "+" not in text or candidate.is_file():
        try:
            text = candidate.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"log key {candidate}: {exc}") from None
    try:
        return parse_vkey(text.strip())
    except FormatError as exc:
        raise ConfigError(f"log key: {exc}") from None


def parse_header(text: str) -> tuple[str, str]:
    """``"Name: value"`` (e.g. ``"Authorization: Bearer …"``); ``@FILE`` reads the line from a file."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"header file {text[1:]}: {exc}") from None
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(c in text for c in "\r\n"):
        raise ConfigError("a header is written 'Name: value' on one line")
    return name.strip(), value.strip()


def log_spec(
    location: str,
    keys: Sequence[str],
    origin: str | None = None,
    name: str | None = None,
    opaque: bool = False,
    headers: Mapping[str, str] | None = None,
) -> LogSpec:
    if not keys:
        raise ConfigError(f"log {location}: give its verifier key")
    verifiers = tuple(parse_key_arg(k) for k in keys)
    return LogSpec(
        name or location, location, verifiers, origin or verifiers[0].name, opaque, dict(headers or {})
    )


def _get(
    d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = None
) -> Any:
    v = d.get(key, default)
    if v is not None and not isinstance(v, kind):
        raise ConfigError(f"{where}: {key!r} has the wrong type")
    return v


def load_config(path: str | Path) -> MonitorConfig:
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {p}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    known = {
        "state",
        "rules",
        "allowed_signers",
        "interval",
        "publish",
        "peers",
        "workers",
        "save_every",
        "alerts",
        "log",
    }
    unknown = set(doc) - known
    if unknown:
        raise ConfigError(f"{p}: unknown settings {sorted(unknown)}")
    base = p.parent

    def rel(v: str | None) -> Path | None:
        return None if v is None else (base / v if not Path(v).is_absolute() else Path(v))

    logs = []
    raw_logs = doc.get("log", [])
    if not isinstance(raw_logs, list) or not raw_logs:
        raise ConfigError(f"{p}: at least one [[log]] table is needed")
    for i, t in enumerate(raw_logs):
        where = f"{p}: log {i + 1}"
        if not isinstance(t, dict):
            raise ConfigError(f"{where}: must be a table")
        extra = set(t) - {
            "name",
            "url",
            "dir",
            "key",
            "key_file",
            "origin",
            "opaque",
            "headers",
            "header_file",
        }
        if extra:
            raise ConfigError(f"{where}: unknown keys {sorted(extra)}")
        url, d = _get(t, "url", str, where), _get(t, "dir", str, where)
        if (url is None) == (d is None):
            raise ConfigError(f"{where}: give exactly one of url or dir")
        location = url if url is not None else str(rel(d))
        key = _get(t, "key", str, where)
        key_file = _get(t, "key_file", str, where)
        if (key is None) == (key_file is None):
            raise ConfigError(f"{where}: give exactly one of key or key_file")
        keys = [key] if key is not None else [str(rel(key_file))]
        headers = dict(_get(t, "headers", dict, where, {}))
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise ConfigError(f"{where}: headers must map names to strings")
        header_file = _get(t, "header_file", str, where)
        if header_file is not None:  # a secret kept out of the config file, e.g. a bearer token
            name_, value = parse_header("@" + str(rel(header_file)))
            headers[name_] = value
        logs.append(
            log_spec(
                location,
                keys,
                _get(t, "origin", str, where),
                _get(t, "name", str, where),
                bool(_get(t, "opaque", bool, where, False)),
                headers,
            )
        )
    names = [lg.name for lg in logs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{p}: two logs share a name")
    a = _get(doc, "alerts", dict, str(p), {})
    extra = set(a) - {"stdout", "syslog", "webhook", "webhook_retries", "webhook_headers"}
    if extra:
        raise ConfigError(f"{p}: [alerts] unknown keys {sorted(extra)}")
    syslog = _get(a, "syslog", (bool, str), f"{p}: [alerts]", False)
    alerts = AlertSpec(
        stdout=bool(_get(a, "stdout", bool, f"{p}: [alerts]", True)),
        syslog=("/dev/log" if syslog is True else syslog or None),
        webhook=_get(a, "webhook", str, f"{p}: [alerts]"),
        webhook_retries=int(_get(a, "webhook_retries", int, f"{p}: [alerts]", 5)),
        webhook_headers=dict(_get(a, "webhook_headers", dict, f"{p}: [alerts]", {})),
    )
    interval = _get(doc, "interval", (int, float), str(p), 30)
    if interval <= 0:
        raise ConfigError(f"{p}: interval must be positive")
    peers = _get(doc, "peers", list, str(p), [])
    if not all(isinstance(x, str) for x in peers):
        raise ConfigError(f"{p}: peers must be a list of directories or URLs")
    workers = _get(doc, "workers", int, str(p))
    if workers is not None and workers < 1:
        raise ConfigError(f"{p}: workers must be at least 1")
    save_every = _get(doc, "save_every", int, str(p), 65536)
    if save_every < 1:
        raise ConfigError(f"{p}: save_every must be at least 1")
    return MonitorConfig(
        logs=tuple(logs),
        save_every=save_every,
        state=rel(_get(doc, "state", str, str(p))) or Path(DEFAULT_STATE),
        rules=rel(_get(doc, "rules", str, str(p))),
        allowed_signers=rel(_get(doc, "allowed_signers", str, str(p))),
        interval=float(interval),
        publish=rel(_get(doc, "publish", str, str(p))),
        peers=tuple(peers),
        workers=workers,
        alerts=alerts,
    )
