"""The SSH side of ``gk ssh``: resolve a destination through ``ssh_config``, connect with strict
host-key checking and ``TCP_NODELAY``, authenticate with exactly the key that signed the action,
and run one exec request carrying ``GK_BUNDLE`` with byte-exact stdin/stdout/stderr streaming.

Honoured from ``~/.ssh/config`` (then ``/etc/ssh/ssh_config``; ``-F`` replaces both): ``HostName``,
``User``, ``Port``, ``IdentityFile``, ``ProxyJump`` (chains, each hop resolved through the config and
host-key checked), ``HostKeyAlias``, ``UserKnownHostsFile``, ``GlobalKnownHostsFile``,
``StrictHostKeyChecking`` (``yes``/``ask`` refuse unknown hosts; ``accept-new``/``no`` add them, but a
*changed* key is always refused), ``HashKnownHosts``, ``ConnectTimeout``.

Errors are :class:`~gatekeeper.errors.SSHError` (exit 255, like ``ssh``) with one line for the user
(defined in :mod:`gatekeeper.errors`, re-exported here).
"""

from __future__ import annotations

import getpass
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gatekeeper.client import knownhosts
from gatekeeper.client._paramiko import paramiko
from gatekeeper.errors import ConfigError, GatekeeperError, HostKeyChanged, HostKeyUnknown, SSHError

__all__ = [
    "SSHError",
    "HostKeyUnknown",
    "HostKeyChanged",
    "Destination",
    "parse_destination",
    "HostSpec",
    "Resolver",
    "Connection",
    "connect",
]

_MAX_JUMPS = 8
_CHUNK = 65536
Sink = Callable[[bytes], None]


@dataclass(frozen=True)
class Destination:
    user: str | None
    host: str
    port: int | None


def parse_destination(text: str) -> Destination:
    """Parse ``[user@]host[:port]`` (IPv6: ``[user@][addr]:port`` or a bare address). Raises
    :class:`ConfigError` on an empty host or a bad port."""
    user: str | None = None
    rest = text
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
        if not user:
            raise ConfigError(f"empty user name in {text!r}")
    port: int | None = None
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise ConfigError(f"unbalanced '[' in {text!r}")
        host, tail = rest[1:close], rest[close + 1 :]
        if tail:
            if not tail.startswith(":"):
                raise ConfigError(f"unexpected {tail!r} after ']' in {text!r}")
            port = _parse_port(tail[1:], text)
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
        port = _parse_port(port_text, text)
    else:
        host = rest  # a name, or a bare IPv6 address
    if not host or any(c.isspace() for c in host) or host.startswith("-"):
        raise ConfigError(f"bad host name in {text!r}")
    return Destination(user, host, port)


def _parse_port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"bad port {text!r} in {whole!r}")
    return int(text)


@dataclass(frozen=True)
class HostSpec:
    """One destination after ``ssh_config`` resolution."""

    alias: str  # the host as typed (what ``Host`` patterns matched)
    hostname: str  # after ``HostName``: what we connect to, and the name put in the action
    port: int
    user: str
    identity_files: tuple[Path, ...]
    proxy_jump: str | None
    host_key_alias: str | None
    known_hosts_files: tuple[Path, ...]
    strict: bool  # False = accept-new (unknown keys are added; changed keys still refused)
    hash_known_hosts: bool
    connect_timeout: float | None

    @property
    def key_name(self) -> str:
        """The name looked up in known_hosts."""
        return self.host_key_alias or knownhosts.host_key_name(self.hostname, self.port)

    @property
    def label(self) -> str:
        return self.alias

    @property
    def target_name(self) -> str:
        """The host's name in the action: ``HostKeyAlias`` if configured (OpenSSH's "the name of
        this host for host key purposes"), else ``HostName`` after resolution; lowercased. A
        personal alias from the command line is never used: other people's configs differ."""
        return (self.host_key_alias or self.hostname).lower()


def _default_config_files() -> list[Path]:
    return [Path.home() / ".ssh" / "config", Path("/etc/ssh/ssh_config")]


class Resolver:
    """``ssh_config`` lookups. ``config_files=None`` reads ``~/.ssh/config`` then
    ``/etc/ssh/ssh_config`` (first value wins, as in ``ssh``); missing files are skipped."""

    def __init__(self, config_files: Sequence[Path] | None = None) -> None:
        self._config = paramiko.SSHConfig()
        for path in _default_config_files() if config_files is None else config_files:
            try:
                text = Path(path).read_text()
            except FileNotFoundError:
                if config_files is not None:
                    raise ConfigError(f"ssh config file {path} does not exist") from None
                continue
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read ssh config file {path}: {exc}") from None
            try:
                self._config.parse(_StringIO(text))
            except Exception as exc:  # paramiko raises assorted errors for bad config lines
                raise ConfigError(f"cannot parse ssh config file {path}: {exc}") from None

    def lookup(self, host: str) -> dict[str, Any]:
        try:
            return dict(self._config.lookup(host))
        except Exception as exc:  # e.g. a failing "Match exec", unknown tokens
            raise ConfigError(f"ssh config lookup for {host!r} failed: {exc}") from None

    def resolve(
        self,
        destination: str,
        *,
        user: str | None = None,
        port: int | None = None,
        identity: Path | None = None,
    ) -> HostSpec:
        """Resolve ``[user@]host[:port]``; explicit ``user`` / ``port`` / ``identity`` (``-l``,
        ``-p``, ``-i``) win over the destination string, which wins over the config."""
        dest = parse_destination(destination)
        opts = self.lookup(dest.host)
        hostname = str(opts.get("hostname", dest.host))
        try:
            port_value = port or dest.port or int(opts.get("port", 22))
        except ValueError:
            raise ConfigError(f"ssh config: bad Port for {dest.host!r}") from None
        login = user or dest.user or opts.get("user") or getpass.getuser()
        files: list[Path] = [identity] if identity is not None else []
        files += [Path(os.path.expanduser(p)) for p in opts.get("identityfile", [])]
        known = [Path(os.path.expanduser(p)) for p in str(opts.get("userknownhostsfile", "")).split()]
        if not known:
            known = [Path.home() / ".ssh" / "known_hosts", Path.home() / ".ssh" / "known_hosts2"]
        glob = str(opts.get("globalknownhostsfile", "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2"))
        known += [Path(os.path.expanduser(p)) for p in glob.split()]
        strict_opt = str(opts.get("stricthostkeychecking", "yes")).lower()
        timeout_opt = opts.get("connecttimeout")
        jump = opts.get("proxyjump")
        return HostSpec(
            alias=dest.host,
            hostname=hostname,
            port=port_value,
            user=login,
            identity_files=tuple(files),
            proxy_jump=None if jump in (None, "none") else str(jump),
            host_key_alias=opts.get("hostkeyalias"),
            known_hosts_files=tuple(known),
            strict=strict_opt not in ("accept-new", "no", "off"),
            hash_known_hosts=str(opts.get("hashknownhosts", "no")).lower() == "yes",
            connect_timeout=float(timeout_opt) if timeout_opt and str(timeout_opt).isdigit() else None,
        )


class _StringIO:
    """paramiko.SSHConfig.parse wants an iterable of lines."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines(keepends=True)

    def __iter__(self) -> Any:
        return iter(self._lines)


class Connection:
    """An authenticated SSH transport (plus the jump hosts it runs through)."""

    def __init__(self, spec: HostSpec, transport: paramiko.Transport, jumps: list[paramiko.Transport]):
        self.spec = spec
        self.transport = transport
        self._jumps = jumps

    @property
    def host_key_fingerprint(self) -> str:
        """``SHA256:...`` of the host key this server presented (and known_hosts vouched for)."""
        return knownhosts.fingerprint_blob(self.transport.get_remote_server_key().asbytes())

    def close(self) -> None:
        self.transport.close()
        for t in reversed(self._jumps):
            t.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self,
        command: bytes,
        env: Mapping[str, str],
        stdin: IO[bytes] | None,
        on_stdout: Sink,
        on_stderr: Sink,
        timeout: float = 30.0,
    ) -> int:
        """Send ``env`` requests then one exec of exactly ``command``; copy ``stdin`` to the channel
        (EOF when it ends; ``None`` sends EOF at once) and the channel's output to the sinks as it
        arrives. Returns the remote exit status, 255 if the remote end sent none (killed by a
        signal, connection lost), 141 (128 + SIGPIPE, like a shell pipeline) if a sink could not be
        written (``gk ssh host cat big | head -1``): the channel is then closed at once."""
        try:
            chan = self.transport.open_session(timeout=timeout)
            for name, value in env.items():
                chan.set_environment_variable(name, value)
            chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            why = str(exc) or type(exc).__name__
            raise SSHError(f"{self.spec.label}: cannot start the command: {why}") from None
        if stdin is None:
            chan.shutdown_write()
        else:
            threading.Thread(target=_pump_stdin, args=(stdin, chan), daemon=True).start()
        broken: list[bool] = []
        err_thread = threading.Thread(
            target=_drain, args=(chan, chan.recv_stderr, on_stderr, broken), daemon=True
        )
        err_thread.start()
        _drain(chan, chan.recv, on_stdout, broken)
        err_thread.join()
        if broken:
            return 141
        status = chan.recv_exit_status()
        chan.close()
        return 255 if status < 0 else status


def _drain(chan: paramiko.Channel, recv: Callable[[int], bytes], sink: Sink, broken: list[bool]) -> None:
    while True:
        try:
            data = recv(_CHUNK)
        except (OSError, EOFError, paramiko.SSHException):
            return
        if not data:
            return
        try:
            sink(data)
        except OSError:  # our stdout/stderr went away: stop the remote command too
            broken.append(True)
            chan.close()
            return


def _pump_stdin(stdin: IO[bytes], chan: paramiko.Channel) -> None:
    try:
        fd = stdin.fileno()
    except (OSError, AttributeError, ValueError):
        fd = -1
    try:
        while True:
            data = os.read(fd, _CHUNK) if fd >= 0 else stdin.read(_CHUNK)
            if not data:
                break
            chan.sendall(data)
        chan.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the channel closed first (the command exited without reading all of its input)


def _open_socket(spec: HostSpec, via: paramiko.Transport | None, timeout: float) -> Any:
    if via is not None:
        try:
            dest = (spec.hostname, spec.port)
            return via.open_channel("direct-tcpip", dest, ("127.0.0.1", 0), timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SSHError(f"cannot reach {spec.hostname}:{spec.port} through the jump host: {exc}") from None
    try:
        sock = socket.create_connection((spec.hostname, spec.port), timeout=spec.connect_timeout or timeout)
    except OSError as exc:
        raise SSHError(f"cannot connect to {spec.hostname} port {spec.port}: {exc.strerror or exc}") from None
    # Without this every exchange waits ~40 ms for a delayed ACK (measured; see docs/client.md).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _preferred_host_key_types(t: paramiko.Transport, known: list[str]) -> None:
    opts = t.get_security_options()
    available = list(opts.key_types)
    first: list[str] = []
    for kt in known:
        for alg in ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa") if kt == "ssh-rsa" else (kt,):
            if alg in available and alg not in first:
                first.append(alg)
    if first:
        opts.key_types = first + [a for a in available if a not in first]


def _check_host_key(spec: HostSpec, key: paramiko.PKey, accept_new: bool) -> None:
    known = knownhosts.load(spec.known_hosts_files)
    blob = key.asbytes()
    fp = knownhosts.fingerprint_blob(blob)
    name = spec.key_name
    if blob in known.revoked():
        raise HostKeyChanged(f"the host key of {name} ({key.get_name()} {fp}) is marked @revoked")
    trusted = known.keys_for(name)
    if blob in trusted:
        return
    if trusted:
        raise HostKeyChanged(
            f"HOST KEY CHANGED for {name}: got {key.get_name()} {fp}, which is not in known_hosts; "
            "someone may be intercepting the connection (refusing)"
        )
    if accept_new or not spec.strict:
        knownhosts.append_host_key(spec.known_hosts_files[0], [name], blob, hashed=spec.hash_known_hosts)
        return
    scan = f"ssh-keyscan {'-p ' + str(spec.port) + ' ' if spec.port != 22 else ''}{spec.hostname}"
    raise HostKeyUnknown(
        f"host key of {name} is not known: {key.get_name()} {fp}. Check the fingerprint with the host's "
        f"operator, then add it ({scan} >> ~/.ssh/known_hosts) or rerun with --accept-new"
    )


def _default_auth(t: paramiko.Transport, spec: HostSpec) -> None:
    """Jump hosts: ssh-agent keys, then identity files (default ones if none configured)."""
    candidates: list[paramiko.PKey] = []
    try:
        candidates += list(paramiko.Agent().get_keys())
    except paramiko.SSHException:
        pass
    files = list(spec.identity_files) or [
        Path.home() / ".ssh" / n for n in ("id_ed25519", "id_ecdsa", "id_rsa")
    ]
    for path in files:
        if path.exists():
            try:
                candidates.append(load_private_key(path))
            except GatekeeperError:
                continue
    for key in candidates:
        try:
            t.auth_publickey(spec.user, key)
        except paramiko.AuthenticationException:
            continue
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SSHError(f"{spec.label}: authentication failed: {exc}") from None
        if t.is_authenticated():
            return
    raise SSHError(f"{spec.label}: no key was accepted for {spec.user}@{spec.hostname}")


def load_private_key(path: Path, passphrase: str | None = None) -> paramiko.PKey:
    """A paramiko key from an OpenSSH/PEM private key file; asks for the passphrase on the terminal
    when the key is encrypted and none was given. Raises :class:`ConfigError`."""
    try:
        return paramiko.PKey.from_path(str(path), passphrase.encode() if passphrase else None)
    except paramiko.PasswordRequiredException:
        if passphrase is not None:
            raise ConfigError(f"wrong passphrase for {path}") from None
        return load_private_key(path, getpass.getpass(f"Enter passphrase for key {path}: "))
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise ConfigError(f"cannot load private key {path}: {exc}") from None


def connect(
    spec: HostSpec,
    auth_key: paramiko.PKey | None,
    *,
    resolver: Resolver | None = None,
    accept_new: bool = False,
    timeout: float = 10.0,
    on_tcp: Callable[[], None] | None = None,
) -> Connection:
    """Connect (through ``ProxyJump`` hops if configured), check the host key, and authenticate
    ``spec.user`` with ``auth_key`` only (``None``: agent and identity files, as for jump hosts).
    ``on_tcp`` is called once the first TCP connection (to the host, or to the first jump host) is
    established. Raises :class:`SSHError` (or :class:`HostKeyUnknown` / :class:`HostKeyChanged`)."""
    jumps: list[paramiko.Transport] = []
    try:
        via: paramiko.Transport | None = None
        if spec.proxy_jump:
            hops = [h.strip() for h in spec.proxy_jump.split(",") if h.strip()]
            if len(hops) > _MAX_JUMPS:
                raise ConfigError(f"ProxyJump for {spec.alias} has more than {_MAX_JUMPS} hops")
            res = resolver or Resolver()
            for hop in hops:
                hop_spec = res.resolve(hop)
                if hop_spec.proxy_jump:  # the chain is given explicitly; ignore the hop's own jump
                    hop_spec = _without_jump(hop_spec)
                via = _handshake(hop_spec, via, None, accept_new, timeout, on_tcp if not jumps else None)
                jumps.append(via)
        t = _handshake(spec, via, auth_key, accept_new, timeout, None if jumps else on_tcp)
    except BaseException:
        for j in reversed(jumps):
            j.close()
        raise
    return Connection(spec, t, jumps)


def _without_jump(spec: HostSpec) -> HostSpec:
    from dataclasses import replace

    return replace(spec, proxy_jump=None)


def _handshake(
    spec: HostSpec,
    via: paramiko.Transport | None,
    auth_key: paramiko.PKey | None,
    accept_new: bool,
    timeout: float,
    on_tcp: Callable[[], None] | None = None,
) -> paramiko.Transport:
    sock = _open_socket(spec, via, timeout)
    if on_tcp is not None:
        on_tcp()
    t = paramiko.Transport(sock)
    try:
        _preferred_host_key_types(t, knownhosts.load(spec.known_hosts_files).key_types_for(spec.key_name))
        try:
            t.start_client(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SSHError(f"{spec.label}: SSH handshake failed: {exc or type(exc).__name__}") from None
        _check_host_key(spec, t.get_remote_server_key(), accept_new)
        if auth_key is None:
            _default_auth(t, spec)
        else:
            try:
                t.auth_publickey(spec.user, auth_key)
            except paramiko.AuthenticationException:
                fp = knownhosts.fingerprint_blob(auth_key.asbytes())
                raise SSHError(
                    f"{spec.label}: {spec.user}@{spec.hostname} did not accept the signing key {fp} "
                    "(the key that signs the action must also be the one that logs in)"
                ) from None
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise SSHError(f"{spec.label}: authentication failed: {exc}") from None
    except BaseException:
        t.close()
        raise
    return t
