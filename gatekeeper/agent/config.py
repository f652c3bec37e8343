"""The agent's TOML configuration: every setting defaulted, typed and validated.

Layout (``gk agent init`` writes a commented copy; docs/agent.md is the reference)::

    [agent]      name, listen, host_key, authorized_keys, trusted_user_ca_keys, state_dir, journal
    [log]        url, keys, origin
    [policy]     shell, max_clock_skew, max_window, allowed_accounts, [policy.witnesses]
    [timeouts]   log_request, decision, login, kill_grace
    [alarm]      webhook
    [local]      socket, mode, group   (local mode for sshd + ``gk exec``; off unless ``socket`` is set)

``[agent] listen = ""`` turns the SSH listener off (a host where sshd is the only front end); then
``[local] socket`` is required, since an agent that serves nothing is a configuration error.

Relative paths are relative to the directory of the config file. An unknown section or key, a value
of the wrong type or out of range is a :class:`~gatekeeper.errors.ConfigError` naming the file and
the key: a typo must never silently fall back to a default. ``[policy]`` is handed to the
verification core's ``HostPolicy`` (which owns its semantics); the keys it accepts are checked here
for type so that a bad file fails at load time. Pure apart from reading the file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatekeeper.errors import ConfigError

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_SHELL",
    "DEFAULT_LOCAL_SOCKET",
    "DEFAULT_LOCAL_MODE",
    "LogSettings",
    "Timeouts",
    "AgentConfig",
    "load_config",
    "parse_config",
    "parse_listen",
]

DEFAULT_LISTEN = "127.0.0.1:2222"
DEFAULT_SHELL = "/bin/sh"
DEFAULT_LOG_URL = "http://127.0.0.1:8080"
DEFAULT_LOCAL_SOCKET = "/run/gatekeeper/local.sock"  # the path the docs and the sshd snippet use
DEFAULT_LOCAL_MODE = 0o666  # every local user may ask; the kernel tells the agent who asks
MAX_SOCKET_PATH = 107  # bytes: sun_path is 108 bytes on Linux, including the final NUL
MAX_CONFIG_BYTES = 1 << 20
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
_VKEY_SHAPE = re.compile(r"[^\s+]+\+[0-9a-f]{8}\+[A-Za-z0-9+/=]+")
_ACCOUNT = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\$?")
_GROUP = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_OCTAL_MODE = re.compile(r"0?[0-7]{3}")

# section -> key -> expected kind. Kinds: str, path, opt_path, float, int, str_list, table.
_SCHEMA: dict[str, dict[str, str]] = {
    "agent": {
        "name": "str",
        "listen": "str",
        "host_key": "path",
        "authorized_keys": "path",
        "trusted_user_ca_keys": "opt_path",
        "state_dir": "path",
        "journal": "opt_path",
    },
    "log": {"url": "str", "keys": "str_list", "origin": "str"},
    "policy": {
        "shell": "str",
        "max_clock_skew": "int",
        "max_window": "int",
        "allowed_accounts": "str_list",
        "witnesses": "table",
    },
    "timeouts": {"log_request": "float", "decision": "float", "login": "float", "kill_grace": "float"},
    "alarm": {"webhook": "str"},
    "local": {"socket": "opt_path", "mode": "str", "group": "str"},
}


@dataclass(frozen=True)
class LogSettings:
    """Where the log is and which checkpoint signatures to trust."""

    url: str
    keys: tuple[str, ...]  # C2SP verifier keys, ``name+hexid+base64``
    origin: str  # checkpoint origin line; defaults to the first key's name


@dataclass(frozen=True)
class Timeouts:
    """Seconds. ``log_request``: one request to the log; ``decision``: the whole verification of one
    command (a backstop around the gate); ``login``: SSH key exchange and authentication;
    ``kill_grace``: SIGTERM → SIGKILL delay for a child whose client disconnected."""

    log_request: float = 3.0
    decision: float = 15.0
    login: float = 30.0
    kill_grace: float = 2.0


@dataclass(frozen=True)
class AgentConfig:
    """A validated agent configuration. All paths are absolute."""

    name: str
    listen_host: str  # "" when the SSH listener is off (``listen = ""``); see :attr:`serves_ssh`
    listen_port: int
    host_key: Path
    authorized_keys: Path
    trusted_user_ca_keys: Path | None
    state_dir: Path
    journal: Path
    log: LogSettings
    policy: Mapping[str, Any] = field(default_factory=dict)  # the raw [policy] table (type-checked)
    timeouts: Timeouts = field(default_factory=Timeouts)
    webhook: str | None = None
    source: Path | None = None  # the file this came from
    local_socket: Path | None = None  # local mode's Unix socket; None = local mode off
    local_mode: int = DEFAULT_LOCAL_MODE  # the socket's permission bits
    local_group: str | None = None  # group owning the socket (with mode 0660: only its members ask)

    @property
    def serves_ssh(self) -> bool:
        """Whether the SSH listener runs (``[agent] listen`` is not empty)."""
        return bool(self.listen_host)

    @property
    def shell(self) -> str:
        """The shell that runs every allowed command as ``[shell, "-c", command]``."""
        value = self.policy.get("shell", DEFAULT_SHELL)
        return value if isinstance(value, str) else DEFAULT_SHELL

    def policy_table(self, host_key_fingerprint: str | None) -> dict[str, Any]:
        """The mapping for ``gatekeeper.verify.policy.HostPolicy.from_mapping``: host identity and
        log trust from this config, plus the ``[policy]`` table."""
        table: dict[str, Any] = {
            "host_name": self.name,
            "log_origin": self.log.origin,
            "log_keys": list(self.log.keys),
        }
        if host_key_fingerprint is not None:
            table["host_key_fingerprint"] = host_key_fingerprint
        table.update(self.policy)
        return table


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate ``path``. Raises :class:`ConfigError` (never a traceback-worthy error)."""
    file = Path(path).absolute()
    try:
        with open(file, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read agent config: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{file}: agent config is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: agent config is not UTF-8") from None
    return parse_config(text, base_dir=file.parent, source=file)


def parse_config(text: str, *, base_dir: Path, source: Path | None = None) -> AgentConfig:
    """Validate TOML ``text``; relative paths are resolved against ``base_dir``."""
    where = str(source) if source else "agent config"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML: {exc}") from None
    values = _check_schema(doc, where)
    agent, log, policy = values["agent"], values["log"], values["policy"]
    timeouts_t, alarm = values["timeouts"], values["alarm"]

    name = agent.get("name") or _default_name()
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: [agent] name {name!r} must be a host name (letters, digits, . _ -)")
    listen = agent.get("listen", DEFAULT_LISTEN)
    host, port = "", 0
    if listen:
        try:
            host, port = parse_listen(listen)
        except ConfigError as exc:
            raise ConfigError(f"{where}: [agent] listen: {exc}") from None

    def resolve(value: str) -> Path:
        return (base_dir / value).absolute() if not Path(value).is_absolute() else Path(value)

    state_dir = resolve(agent.get("state_dir", "state"))
    journal = agent.get("journal") or ""
    ca = agent.get("trusted_user_ca_keys") or ""

    keys = tuple(log.get("keys", []))
    if not keys:
        raise ConfigError(f"{where}: [log] keys is empty: at least one log verifier key is required")
    for key in keys:
        if not _VKEY_SHAPE.fullmatch(key):
            raise ConfigError(f"{where}: [log] keys: {key!r} is not a verifier key (name+hexid+base64)")
    origin = log.get("origin") or keys[0].split("+", 1)[0]
    if "\n" in origin:
        raise ConfigError(f"{where}: [log] origin must be one line")
    url = log.get("url", DEFAULT_LOG_URL)
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: [log] url must be an http:// or https:// URL")
    webhook = alarm.get("webhook") or None
    if webhook is not None and not webhook.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: [alarm] webhook must be an http:// or https:// URL (or empty)")

    _check_policy(policy, where)
    local_socket, local_mode, local_group = _check_local(values["local"], where, resolve)
    if not host and local_socket is None:
        raise ConfigError(
            f"{where}: [agent] listen is empty and [local] socket is not set: the agent would serve nothing"
        )
    timeouts = Timeouts(**timeouts_t)
    for key, value in timeouts_t.items():
        if not 0 < value <= 3600:
            raise ConfigError(f"{where}: [timeouts] {key} must be > 0 and <= 3600 seconds")

    return AgentConfig(
        name=name,
        listen_host=host,
        listen_port=port,
        host_key=resolve(agent.get("host_key", "host_key")),
        authorized_keys=resolve(agent.get("authorized_keys", "authorized_keys")),
        trusted_user_ca_keys=resolve(ca) if ca else None,
        state_dir=state_dir,
        journal=resolve(journal) if journal else state_dir / "journal.jsonl",
        log=LogSettings(url=url.rstrip("/"), keys=keys, origin=origin),
        policy=policy,
        timeouts=timeouts,
        webhook=webhook,
        source=source,
        local_socket=local_socket,
        local_mode=local_mode,
        local_group=local_group,
    )


def parse_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:2222"``, ``"[::1]:2222"`` or ``"0.0.0.0:0"`` → (address, port). Port 0 = any."""
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
        if ":" in host:
            raise ConfigError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:2222")
    if not sep or not host or not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
        raise ConfigError(f"{text!r} is not ADDRESS:PORT")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{host!r} is not an IP address") from None
    port = int(port_text)
    if port > 65535:
        raise ConfigError(f"port {port} is out of range")
    return host, port


def _default_name() -> str:
    return socket.gethostname().split(".", 1)[0] or "localhost"


def _check_schema(doc: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    unknown = sorted(set(doc) - set(_SCHEMA))
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {unknown}; known: {sorted(_SCHEMA)}")
    for section, keys in _SCHEMA.items():
        table = doc.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [{section}] must be a table")
        bad = sorted(set(table) - set(keys))
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {bad} in [{section}]; known: {sorted(keys)}")
        checked: dict[str, Any] = {}
        for key, value in table.items():
            checked[key] = _check_value(value, keys[key], f"{where}: [{section}] {key}")
        out[section] = checked
    return out


def _check_value(value: Any, kind: str, what: str) -> Any:
    if kind in ("str", "path", "opt_path"):
        if not isinstance(value, str) or "\0" in value:
            raise ConfigError(f"{what} must be a string")
        if kind == "path" and not value:
            raise ConfigError(f"{what} must not be empty")
        return value
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{what} must be an integer")
        return value
    if kind == "float":
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{what} must be a number of seconds")
        return float(value)
    if kind == "str_list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{what} must be a list of strings")
        return list(value)
    if kind == "table":
        if not isinstance(value, dict):
            raise ConfigError(f"{what} must be a table")
        return dict(value)
    raise AssertionError(kind)  # pragma: no cover


def _check_local(
    local: Mapping[str, Any], where: str, resolve: Callable[[str], Path]
) -> tuple[Path | None, int, str | None]:
    """``[local]`` → (socket path or None when local mode is off, mode bits, group or None)."""
    mode_text = local.get("mode", f"{DEFAULT_LOCAL_MODE:04o}")
    if not _OCTAL_MODE.fullmatch(mode_text):
        raise ConfigError(f'{where}: [local] mode must be octal permission bits as a string, e.g. "0660"')
    group = local.get("group") or None
    if group is not None and not _GROUP.fullmatch(group):
        raise ConfigError(f"{where}: [local] group {group!r} is not a group name")
    socket_text = local.get("socket") or ""
    if not socket_text:
        return None, DEFAULT_LOCAL_MODE, None
    path = resolve(socket_text)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ConfigError(f"{where}: [local] socket path is longer than {MAX_SOCKET_PATH} bytes: {path}")
    return path, int(mode_text, 8), group


def _check_policy(policy: Mapping[str, Any], where: str) -> None:
    shell = policy.get("shell", DEFAULT_SHELL)
    if not shell.startswith("/"):
        raise ConfigError(f"{where}: [policy] shell must be an absolute path")
    skew = policy.get("max_clock_skew", 0)
    if not 0 <= skew <= 3600:
        raise ConfigError(f"{where}: [policy] max_clock_skew must be 0..3600 seconds")
    if policy.get("max_window", 1) <= 0:
        raise ConfigError(f"{where}: [policy] max_window must be a positive number of seconds")
    accounts = policy.get("allowed_accounts")
    if accounts is not None:
        if not accounts:
            raise ConfigError(f"{where}: [policy] allowed_accounts is empty: no command could ever run")
        bad = [a for a in accounts if not _ACCOUNT.fullmatch(a)]
        if bad:
            raise ConfigError(f"{where}: [policy] allowed_accounts: invalid account names {bad}")
    witnesses = policy.get("witnesses", {})
    unknown = sorted(set(witnesses) - {"required", "keys"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown} in [policy.witnesses]; known: ['keys', 'required']"
        )
    required = witnesses.get("required", 0)
    if not isinstance(required, int) or isinstance(required, bool) or required < 0:
        raise ConfigError(f"{where}: [policy.witnesses] required must be a non-negative integer")
    wkeys = witnesses.get("keys", [])
    if not isinstance(wkeys, list) or not all(isinstance(k, str) for k in wkeys):
        raise ConfigError(f"{where}: [policy.witnesses] keys must be a list of witness verifier keys")
    if required > len(wkeys):
        raise ConfigError(
            f"{where}: [policy.witnesses] requires {required} cosignatures but lists {len(wkeys)} keys"
        )
