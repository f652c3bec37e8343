"""From a config file to a running agent: host key, gate, journal, server; and ``gk agent init``.

:func:`build_gate` is the only place that knows how the verification core is assembled
(``gatekeeper.verify``: policy, head store, log client, journal, alarm); it is imported lazily so
that the SSH front end can be tested on its own with a fixture gate. :func:`run_agent` serves until
asked to stop; :func:`serve` is the blocking entry point of ``gk agent serve``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import asyncssh

from gatekeeper.agent.authkeys import KeyRing
from gatekeeper.agent.config import DEFAULT_LISTEN, DEFAULT_LOCAL_SOCKET, AgentConfig, parse_listen
from gatekeeper.agent.server import AgentListener, start_agent
from gatekeeper.agent.session import AgentSettings
from gatekeeper.errors import ConfigError
from gatekeeper.gate import Gate
from gatekeeper.journal import Journal

if TYPE_CHECKING:
    from gatekeeper.agent.local import LocalServer
    from personality.client import ConsistencyFetcher

__all__ = [
    "load_host_key",
    "host_key_fingerprint",
    "build_gate",
    "agent_settings",
    "run_agent",
    "serve",
    "init_agent_dir",
    "config_template",
]

log = logging.getLogger("gatekeeper.agent")


def load_host_key(path: Path) -> asyncssh.SSHKey:
    """The agent's Ed25519 host key. Refuses a key readable by group or others, or another type."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"host key {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"host key {path} is accessible by group or others; chmod 600 it")
    try:
        key = asyncssh.read_private_key(str(path))
    except (OSError, asyncssh.KeyImportError, ValueError) as exc:
        raise ConfigError(f"host key {path}: cannot read it ({exc})") from None
    if key.algorithm != b"ssh-ed25519":
        raise ConfigError(f"host key {path} is {key.algorithm.decode()}, not ssh-ed25519")
    return key


def host_key_fingerprint(key: asyncssh.SSHKey) -> str:
    """``SHA256:...`` as OpenSSH prints it: the host identity actions may be bound to."""
    return key.get_fingerprint("sha256")


def agent_settings(config: AgentConfig) -> AgentSettings:
    t = config.timeouts
    return AgentSettings(
        shell=config.shell,
        decision_timeout=t.decision,
        login_timeout=t.login,
        kill_grace=t.kill_grace,
    )


def build_gate(config: AgentConfig, *, journal: Journal | None = None,
               host_key: asyncssh.SSHKey | None = None,
               proof_fetcher: ConsistencyFetcher | None = None) -> Gate:
    """The verifying gate for ``config`` (``gatekeeper.verify.gate.VerifyingGate``): host policy
    from the config (host name and host key fingerprint, log origin and keys, ``[policy]``), the
    head store in ``state_dir``, an HTTP client for the log bounded by ``timeouts.log_request``
    (consistency proofs are fetched on the event loop, without a thread hop),
    ``journal`` (opened from ``config.journal`` if None) and the fork alarm (webhook optional).
    ``proof_fetcher`` (a keep-alive :class:`~personality.client.ConsistencyFetcher` the caller
    closes) fetches consistency proofs; without it each proof takes one short connection
    (:func:`~personality.client.fetch_consistency_proof`), which needs no closing.
    Raises :class:`ConfigError` for anything the verification core rejects."""
    from gatekeeper.verify.alarm import Alarm
    from gatekeeper.verify.gate import VerifyingGate
    from gatekeeper.verify.headstore import HeadStore
    from gatekeeper.verify.policy import HostPolicy
    from personality.client import LogClient, fetch_consistency_proof

    key = host_key if host_key is not None else load_host_key(config.host_key)
    policy = HostPolicy.from_mapping(config.policy_table(host_key_fingerprint(key)))
    timeout = config.timeouts.log_request
    log_client = LogClient.http(config.log.url, timeout=(timeout, timeout))
    return VerifyingGate(
        policy,
        HeadStore.open(config.state_dir),
        log_client,
        journal if journal is not None else Journal(config.journal),
        Alarm(webhook=config.webhook),
        fetch_timeout=timeout,
        proof_fetcher=(
            proof_fetcher or functools.partial(fetch_consistency_proof, config.log.url, timeout=timeout)
        ),
    )


async def run_agent(
    config: AgentConfig,
    *,
    gate: Gate | None = None,
    ready: Callable[[str, int], None] | None = None,
    stop: asyncio.Event | None = None,
    settings: AgentSettings | None = None,
    local_ready: Callable[[Path], None] | None = None,
) -> None:
    """Serve ``config`` until ``stop`` is set (forever if None).

    The front ends configured are started with **one** gate (``gate``, default
    :func:`build_gate`), so that they share one head store, spent-nonce set and halted flag: the
    SSH listener unless ``[agent] listen`` is empty, then local mode
    (:func:`gatekeeper.agent.local.start_local`, for sshd + ``gk exec``) when ``[local] socket``
    is set. ``ready(host, port)`` is called once the SSH socket listens, ``local_ready(path)`` once
    the local socket does; both are called after every front end started. On stop, both are
    closed (the local socket is removed) before the journal. Raises :class:`ConfigError` if a
    socket cannot be created (nothing is left listening).

    While it serves, ``SIGHUP`` reopens the journal at its path (log rotation: see
    :func:`_reopen`); the handler is installed only when running in the main thread, and removed
    on stop."""
    host_key = load_host_key(config.host_key)
    journal = Journal(config.journal)
    listener: AgentListener | None = None
    local: LocalServer | None = None
    fetcher: ConsistencyFetcher | None = None  # only for the gate built here
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, _reopen, journal)
        reopen_on_hup = True
    except (RuntimeError, ValueError):  # not the main thread: signals are the caller's business
        reopen_on_hup = False
    try:
        keyring: KeyRing | None = None
        if config.serves_ssh:
            warnings: list[str] = []
            keyring = KeyRing(config.authorized_keys, config.trusted_user_ca_keys, warn=warnings.append)
            for line in warnings:
                log.warning("%s", line)
            if keyring.key_count == 0 and config.trusted_user_ca_keys is None:
                log.warning("%s authorizes no key and no CA is trusted: nobody can log in",
                            config.authorized_keys)
        if gate is None:
            from personality.client import ConsistencyFetcher

            fetcher = ConsistencyFetcher(config.log.url, timeout=config.timeouts.log_request)
            gate = build_gate(config, journal=journal, host_key=host_key, proof_fetcher=fetcher)
        if config.local_socket is not None:
            from gatekeeper.agent.local import start_local

            try:
                local = await start_local(gate, config.local_socket, mode=config.local_mode,
                                          group=config.local_group, shell=config.shell, journal=journal)
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen on {config.local_socket}: {exc.strerror or exc}"
                ) from None
        if keyring is not None:
            try:
                listener = await start_agent(
                    gate=gate,
                    host_key=host_key,
                    keyring=keyring,
                    settings=settings or agent_settings(config),
                    journal=journal,
                    host=config.listen_host,
                    port=config.listen_port,
                )
            except OSError as exc:
                where = f"{config.listen_host}:{config.listen_port}"
                raise ConfigError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        fingerprint = host_key_fingerprint(host_key)
        if listener is not None:
            log.info("agent %s (%s) listening on %s:%d", config.name, fingerprint, listener.host,
                     listener.port)
            if ready is not None:
                ready(listener.host, listener.port)
        if local is not None:
            log.info("agent %s (%s) answering gk exec on %s", config.name, fingerprint, local.socket_path)
            if local_ready is not None:
                local_ready(local.socket_path)
        await (stop or asyncio.Event()).wait()
    finally:
        if reopen_on_hup:
            loop.remove_signal_handler(signal.SIGHUP)
        if listener is not None:
            listener.close()
        if local is not None:
            local.close()
        if listener is not None:
            await listener.wait_closed()
        if local is not None:
            await local.wait_closed()
        if fetcher is not None:
            await fetcher.aclose()
        journal.close()


def _reopen(journal: Journal) -> None:
    """``SIGHUP``: write the journal to whatever file is at its path from now on (logrotate renamed
    it). If the path cannot be opened, one line is logged and records keep going to the old file
    (:meth:`Journal.reopen`); the agent keeps serving."""
    try:
        journal.reopen()
    except OSError as exc:
        log.error("SIGHUP: cannot reopen the journal %s (%s); still appending to the old file",
                  journal.path, exc.strerror or exc)
    else:
        log.info("SIGHUP: journal reopened at %s", journal.path)


def serve(config: AgentConfig, *, gate: Gate | None = None, out: TextIO | None = None) -> int:
    """Run the agent in the foreground until SIGTERM or SIGINT (SIGHUP reopens the journal). Once
    every front end is ready, prints (flushed) to ``out``: ``listening on HOST:PORT`` for the SSH
    listener, then ``local mode listening on PATH`` for local mode. Returns the exit status (0
    after a signal)."""
    stream = out or sys.stdout

    def ready(host: str, port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        print(f"listening on {shown}:{port}", file=stream, flush=True)

    def local_ready(path: Path) -> None:
        print(f"local mode listening on {path}", file=stream, flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_agent(config, gate=gate, ready=ready, stop=stop, local_ready=local_ready)

    asyncio.run(main())
    return 0


def config_template(*, name: str, log_url: str, log_keys: list[str], origin: str | None = None,
                    listen: str = DEFAULT_LISTEN, local_socket: str = "") -> str:
    """A commented agent.toml with every setting at its default (local mode on when
    ``local_socket`` is given)."""
    keys = ",\n".join(f'    "{k}"' for k in log_keys)
    origin_line = f'origin = "{origin}"' if origin else '# origin = ""  # default: the first key name'
    return f'''# Gatekeeper agent configuration (gk agent serve --config THIS_FILE).
# Relative paths are relative to this file's directory. Reference: docs/agent.md.

[agent]
name = "{name}"                  # this host's name, as written in actions' targets
listen = "{listen}"          # ADDRESS:PORT; 127.0.0.1 unless you mean it; "" = no SSH listener
host_key = "host_key"            # Ed25519, 0600; its SHA256 fingerprint binds actions to this host
authorized_keys = "authorized_keys"   # OpenSSH format; options other than restrictions/from= are refused
trusted_user_ca_keys = ""        # optional: file of user-CA public keys (like sshd TrustedUserCAKeys)
state_dir = "state"              # heads, spent nonces, halted flag (0700)
journal = ""                     # default: <state_dir>/journal.jsonl

[log]
url = "{log_url}"
keys = [
{keys},
]
{origin_line}

[policy]
shell = "/bin/sh"                # every command runs as [shell, "-c", command]
max_clock_skew = 60              # seconds tolerated around not_before / not_after
max_window = 86400               # longest validity window accepted, seconds
# allowed_accounts = ["deploy"]  # default: any account that exists here

[policy.witnesses]               # k-of-n witness cosignatures on checkpoints; 0 = none required
required = 0
keys = []

[timeouts]                       # seconds
log_request = 3.0                # one request to the log
decision = 15.0                  # the whole verification of one command
login = 30.0                     # SSH key exchange and authentication
kill_grace = 2.0                 # SIGTERM -> SIGKILL for a command whose client went away

[alarm]
webhook = ""                     # optional URL that receives a JSON POST when the log forks

[local]                          # local mode: answer gk exec under sshd's ForceCommand (docs/openssh.md)
# socket: the Unix socket, e.g. "{DEFAULT_LOCAL_SOCKET}" (its directory: root's, 0755); "" = off
socket = "{local_socket}"
mode = "0666"                    # socket permissions: every local user may ask (the kernel says who)
group = ""                       # with mode = "0660": only this group's members may ask
'''


def init_agent_dir(directory: Path, *, name: str, log_url: str, log_keys: list[str],
                   origin: str | None = None, listen: str = DEFAULT_LISTEN,
                   local_socket: str = "") -> list[Path]:
    """Create ``agent.toml``, ``host_key`` (+ ``.pub``), an empty ``authorized_keys`` and ``state/``
    in ``directory`` (created 0700 if missing). Never overwrites: if any of them exists, nothing is
    written and :class:`ConfigError` names it. Returns the paths written."""
    from personality.errors import PersonalityError
    from personality.tlog.note import parse_vkey

    if not log_keys:
        raise ConfigError("at least one --log-key is required")
    for key in log_keys:
        try:
            parse_vkey(key)
        except PersonalityError as exc:
            raise ConfigError(f"--log-key {key!r}: {exc}") from None
    if listen:
        parse_listen(listen)
    if '"' in local_socket or "\\" in local_socket or "\n" in local_socket:
        raise ConfigError(f"--local-socket {local_socket!r}: quotes, backslashes, newlines are not supported")
    text = config_template(name=name, log_url=log_url, log_keys=log_keys, origin=origin, listen=listen,
                           local_socket=local_socket)
    from gatekeeper.agent.config import parse_config

    parse_config(text, base_dir=directory)  # the template must be valid for these values
    targets = [directory / n for n in ("agent.toml", "host_key", "host_key.pub", "authorized_keys", "state")]
    existing = [str(p) for p in targets if p.exists() or p.is_symlink()]
    if existing:
        raise ConfigError(f"refusing to overwrite {', '.join(existing)}")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    config, host_key, host_pub, authorized, state = targets
    new_key = asyncssh.generate_private_key("ssh-ed25519", comment=f"gk-agent@{name}")
    _write_new(host_key, new_key.export_private_key("openssh"), 0o600)
    _write_new(host_pub, new_key.export_public_key("openssh"), 0o644)
    _write_new(authorized, b"# one OpenSSH public key per line: who may log in to this agent\n", 0o600)
    state.mkdir(mode=0o700)
    os.chmod(state, 0o700)
    _write_new(config, text.encode(), 0o600)
    return targets


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
