"""``gk log``: run and inspect the verifiable log (the personality).

::

    gk log init DIR --origin NAME     create a log: SQLite store, signing key (0600), log.toml
    gk log key DIR                    print the verifier key for clients, agents and witnesses
    gk log serve DIR [--listen H:P] [--accept-any | --allowed-signers FILE]
    gk log add URL [FILE|-]           submit an entry, print index, checkpoint and proof
    gk log proof URL --index I | --leaf-hash H | --entry FILE | --consistency M [N]
    gk log export-static DIR OUT      write checkpoint + tiles as plain files
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personality.errors import ConfigError, FormatError, PersonalityError, StorageError

if TYPE_CHECKING:
    import logging


def _logger() -> logging.Logger:
    """The ``gk.log`` logger (``logging`` is imported here: registering ``gk log`` must stay cheap)."""
    import logging

    return logging.getLogger("gk.log")


def _wrap(text: str) -> str:
    """Descriptions keep their own line breaks under RawDescriptionHelpFormatter: wrap them here."""
    return textwrap.fill(text, 88)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "log",
        help="run and inspect the verifiable log service",
        description="Run and inspect the verifiable, append-only log (C2SP checkpoints and tiles). "
        "Start with `gk log init DIR --origin NAME`, then `gk log serve DIR`.",
    )
    verbs = p.add_subparsers(dest="log_command", metavar="SUBCOMMAND", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    init = verbs.add_parser(
        "init",
        help="create a new log directory",
        formatter_class=fmt,
        description=_wrap(
            "Create a log in DIR: log.db (SQLite store), log.key (Ed25519 note signing key, "
            "mode 0600) and log.toml (commented config with safe defaults). Never overwrites an existing "
            "log."
        ),
        epilog="example:\n  gk log init /var/lib/gk-log --origin log.example.com/ops\n\n"
        "The origin is the log's permanent name: it heads every checkpoint and names the key.\n"
        "A host name you control plus a path is the convention.",
    )
    init.add_argument("dir", metavar="DIR", help="directory to create the log in (created if missing)")
    init.add_argument(
        "--origin", required=True, metavar="NAME", help="the log's name, e.g. log.example.com/ops"
    )
    init.set_defaults(func=_init)

    key = verbs.add_parser(
        "key",
        help="print the log's verifier key",
        description="Print the verifier key (name+keyid+base64) that clients, agents, monitors and "
        "witnesses are configured with to check this log's checkpoints.",
    )
    key.add_argument("dir", metavar="DIR", help="the log directory")
    key.set_defaults(func=_key)

    serve = verbs.add_parser(
        "serve",
        help="serve the log over HTTP",
        formatter_class=fmt,
        description=_wrap(
            "Serve the log: the C2SP tlog-tiles read API (/checkpoint, /tile/...) and the JSON "
            "API (/add, /proof/inclusion, /proof/consistency, /healthz, /metrics). Prints "
            "'listening on URL' once ready. Stops cleanly on SIGTERM or Ctrl-C."
        ),
        epilog="examples:\n"
        "  gk log serve /var/lib/gk-log --allowed-signers /etc/gk/allowed_signers\n"
        "  gk log serve ./demo-log --listen 127.0.0.1:0 --accept-any     # any bytes; tests, demos\n\n"
        "Without either flag, [server] admission in log.toml decides (default: allowed-signers).",
    )
    serve.add_argument("dir", metavar="DIR", help="the log directory")
    serve.add_argument("--listen", metavar="HOST:PORT", help="address (default from log.toml; port 0 = any)")
    who = serve.add_mutually_exclusive_group()
    who.add_argument(
        "--accept-any", action="store_true", help="admit ANY entry bytes (generic mode; logged loudly)"
    )
    who.add_argument(
        "--allowed-signers",
        metavar="FILE",
        help="admit only gatekeeper actions signed by a key in this OpenSSH allowed_signers file",
    )
    serve.set_defaults(func=_serve)

    add = verbs.add_parser(
        "add",
        help="submit an entry to a log",
        formatter_class=fmt,
        description=_wrap(
            "POST the bytes of FILE (or stdin) to URL/add and print the JSON answer: index, "
            "leaf hash, whether it was already logged, and (unless --no-wait) the checkpoint and inclusion "
            "proof. Exit status 0 on success, 1 if refused or malformed, 75 if the log is overloaded "
            "(retry), 69 if it cannot be reached."
        ),
        epilog="example:\n  gk log add http://127.0.0.1:8080 action.entry",
    )
    add.add_argument("url", metavar="URL", help="the log's base URL")
    add.add_argument("file", metavar="FILE", nargs="?", default="-", help="entry file, or - for stdin")
    add.add_argument("--no-wait", action="store_true", help="return the index without checkpoint and proof")
    add.set_defaults(func=_add)

    proof = verbs.add_parser(
        "proof",
        help="fetch an inclusion or consistency proof",
        formatter_class=fmt,
        description=_wrap(
            "Fetch a proof as JSON. With --vkey, an inclusion proof is also verified against "
            "the log's current checkpoint (whose signature is checked)."
        ),
        epilog="examples:\n"
        "  gk log proof http://127.0.0.1:8080 --index 41\n"
        '  gk log proof http://127.0.0.1:8080 --entry action.entry --vkey "$(gk log key DIR)"\n'
        "  gk log proof http://127.0.0.1:8080 --consistency 100 200",
    )
    proof.add_argument("url", metavar="URL", help="the log's base URL")
    what = proof.add_mutually_exclusive_group(required=True)
    what.add_argument("--index", type=int, metavar="I", help="inclusion proof for leaf I")
    what.add_argument("--leaf-hash", metavar="B64URL", help="inclusion proof for this leaf hash")
    what.add_argument("--entry", metavar="FILE", help="inclusion proof for the entry in FILE")
    what.add_argument("--consistency", type=int, nargs="+", metavar="SIZE", help="consistency M [N]")
    proof.add_argument("--size", type=int, metavar="N", help="tree size for an inclusion proof")
    proof.add_argument("--vkey", metavar="VKEY", help="verify against the checkpoint signed by this key")
    proof.set_defaults(func=_proof)

    export = verbs.add_parser(
        "export-static",
        help="write checkpoint and tiles as static files",
        formatter_class=fmt,
        description=_wrap(
            "Write the log's checkpoint and every tile and entry bundle under OUT, at the C2SP "
            "tlog-tiles paths, so any web server, CDN or object store can serve the read path. "
            "Incremental (full tiles already there are skipped); safe while `gk log serve` runs."
        ),
        epilog="example (every minute from cron or a systemd timer):\n"
        "  gk log export-static /var/lib/gk-log /srv/www/log",
    )
    export.add_argument("dir", metavar="DIR", help="the log directory")
    export.add_argument("out", metavar="OUT", help="output directory (created if missing)")
    export.set_defaults(func=_export)


# -- init / key -------------------------------------------------------------------------------------


def _init(args: argparse.Namespace) -> int:
    from personality.config import CONFIG_NAME, TEMPLATE, load_config
    from personality.log import Sequencer
    from personality.storage.sqlite import open_sqlite
    from personality.tlog.note import generate_signer, valid_key_name

    d = Path(args.dir)
    origin = args.origin
    if not valid_key_name(origin):
        raise ConfigError(
            f"origin {origin!r} is not a valid name: use printable characters without spaces or '+', "
            "e.g. log.example.com/ops"
        )
    for name in (CONFIG_NAME, "log.key", "log.db"):
        if (d / name).exists():
            raise ConfigError(f"{d / name} exists: {d} already holds a log; refusing to overwrite it")
    try:
        d.mkdir(parents=True, exist_ok=True)
        signer = generate_signer(origin)
        _write_new(d / "log.key", (signer.skey() + "\n").encode(), 0o600)
        _write_new(d / CONFIG_NAME, TEMPLATE.format(origin=json.dumps(origin)).encode(), 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot create the log in {d}: {exc}") from exc
    cfg = load_config(d)
    seq, tiles = open_sqlite(cfg.database)
    try:
        Sequencer(seq, tiles, signer, origin=origin).load()  # signs the empty tree's checkpoint
    finally:
        tiles.close()
        seq.close()
    print(f"created log {origin!r} in {d}")
    print(f"  {cfg.database.name}   SQLite store")
    print(f"  {cfg.key_file.name}  signing key (keep it secret; mode 0600)")
    print(f"  {CONFIG_NAME}  configuration")
    print(f"verifier key: {signer.verifier().vkey()}")
    print(f"next: gk log serve {d} --allowed-signers FILE   (or --accept-any for generic use)")
    return 0


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_signer(path: Path) -> Any:
    from personality.tlog.note import signer_from_skey

    try:
        st = path.stat()
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the signing key {path}: {exc}") from None
    if st.st_mode & 0o077:
        _logger().warning(
            "signing key %s is readable by other users (mode %o); chmod 600 it", path, st.st_mode & 0o777
        )
    try:
        return signer_from_skey(text)
    except FormatError as exc:
        raise ConfigError(f"{path} is not a note signing key: {exc}") from None


def _key(args: argparse.Namespace) -> int:
    from personality.config import load_config

    cfg = load_config(args.dir)
    print(_load_signer(cfg.key_file).verifier().vkey())
    return 0


# -- serve ------------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    import asyncio  # here, not at the top: every gk command imports this module to register it
    import signal

    from personality.config import load_config, parse_listen
    from personality.log import AcceptAny, Admission, Log
    from personality.server import serve
    from personality.storage.sqlite import open_sqlite

    cfg = load_config(args.dir)
    host, port = parse_listen(args.listen or cfg.server.listen)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signer = _load_signer(cfg.key_file)
    if signer.name != cfg.origin:
        _logger().warning("key name %r differs from origin %r", signer.name, cfg.origin)
    admission: Admission
    if args.accept_any or (not args.allowed_signers and cfg.server.admission == "accept-any"):
        admission = AcceptAny()
        _logger().warning(
            "ADMISSION DISABLED (accept-any): this log accepts ANY entry from ANYONE who can reach it. "
            "Use --allowed-signers FILE for a Gatekeeper log."
        )
    else:
        signers = Path(args.allowed_signers) if args.allowed_signers else cfg.server.allowed_signers
        assert signers is not None
        try:
            from gatekeeper.admission import ActionAdmission
        except ImportError as exc:  # pragma: no cover - the gatekeeper package ships with gk
            raise ConfigError(
                f"the gatekeeper action check is not available ({exc}); use --accept-any"
            ) from None
        admission = ActionAdmission(signers)
        _logger().info("admission: gatekeeper actions signed by a key in %s", signers)
    if not cfg.database.exists():
        raise ConfigError(f"{cfg.database} does not exist; create the log with `gk log init`")
    seq, tiles = open_sqlite(cfg.database)
    s = cfg.sequencer
    log = Log(
        seq,
        tiles,
        signer,
        origin=cfg.origin,
        admission=admission,
        max_pending=s.max_pending,
        max_pending_bytes=s.max_pending_bytes,
        max_batch=s.max_batch,
        tile_cache=s.tile_cache,
    )

    def ready(url: str) -> None:
        _logger().info("log %r at size %d", log.origin, log.size)
        print(f"gk log: listening on {url}", flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(
            log,
            host,
            port,
            ready=ready,
            stop=stop,
            idle_timeout=cfg.server.idle_timeout,
            body_timeout=cfg.server.body_timeout,
        )

    try:
        asyncio.run(main())
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from None
    _logger().info("stopped")
    return 0


# -- add / proof --------------------------------------------------------------------------------------


class _HTTPFailure(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _request(method: str, url: str, data: bytes | None = None) -> Any:
    import requests

    try:
        r = requests.request(
            method, url, data=data, timeout=60, headers={"Content-Type": "application/octet-stream"}
        )
    except requests.RequestException as exc:
        raise _HTTPFailure(0, f"cannot reach {url}: {exc}") from None
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.status_code != 200:
        msg = body.get("message") if isinstance(body, dict) else r.text[:200]
        code = body.get("error") if isinstance(body, dict) else "http_error"
        raise _HTTPFailure(r.status_code, f"{r.status_code} {code}: {msg}")
    if not isinstance(body, dict):
        raise _HTTPFailure(r.status_code, f"{url} did not answer with a JSON object")
    return body


def _exit_for(exc: _HTTPFailure) -> int:
    print(f"gk log: {exc}", file=sys.stderr)
    if exc.status == 0:
        return 69  # EX_UNAVAILABLE
    if exc.status == 503:
        return 75  # EX_TEMPFAIL
    return 1


def _read_input(name: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {name}: {exc}") from None


def _add(args: argparse.Namespace) -> int:
    entry = _read_input(args.file)
    url = args.url.rstrip("/") + "/add" + ("?wait=0" if args.no_wait else "")
    try:
        body = _request("POST", url, entry)
    except _HTTPFailure as exc:
        return _exit_for(exc)
    print(json.dumps(body, indent=2))
    return 0


def _proof(args: argparse.Namespace) -> int:
    from personality.tlog import merkle
    from personality.tlog.checkpoint import open_checkpoint, parse_signed_checkpoint
    from personality.tlog.note import parse_vkey

    base = args.url.rstrip("/")
    try:
        if args.consistency:
            sizes = args.consistency
            if len(sizes) > 2:
                raise ConfigError("--consistency takes M or M N")
            q = f"from={sizes[0]}" + (f"&to={sizes[1]}" if len(sizes) == 2 else "")
            print(json.dumps(_request("GET", f"{base}/proof/consistency?{q}"), indent=2))
            return 0
        size = args.size
        root = None
        if args.vkey:
            import requests

            verifier = parse_vkey(args.vkey)
            try:
                raw = requests.get(f"{base}/checkpoint", timeout=60).content
            except requests.RequestException as exc:
                raise _HTTPFailure(0, f"cannot reach {base}: {exc}") from None
            origin = parse_signed_checkpoint(raw).origin
            cp = open_checkpoint(raw, origin, [verifier])
            if size is not None and size != cp.size:
                raise ConfigError("--vkey verifies against the current checkpoint; leave out --size")
            size, root = cp.size, cp.root
        if args.index is not None:
            q = f"index={args.index}"
        else:
            h = args.leaf_hash
            if args.entry:
                h = base64.urlsafe_b64encode(merkle.leaf_hash(_read_input(args.entry))).decode().rstrip("=")
            q = f"leaf_hash={h}"
        if size is not None:
            q += f"&size={size}"
        body = _request("GET", f"{base}/proof/inclusion?{q}")
    except _HTTPFailure as exc:
        return _exit_for(exc)
    if root is not None:
        try:
            merkle.verify_inclusion(
                body["index"],
                body["size"],
                base64.b64decode(body["leaf_hash"], validate=True),
                [base64.b64decode(p, validate=True) for p in body["proof"]],
                root,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"the log's proof answer is malformed: {exc}") from None
        body["verified"] = True
    print(json.dumps(body, indent=2))
    return 0


# -- export -----------------------------------------------------------------------------------------


def _export(args: argparse.Namespace) -> int:
    from personality.config import load_config
    from personality.static import export_static

    cfg = load_config(args.dir)
    try:
        result = export_static(cfg.database, args.out)
    except PersonalityError:
        raise
    except OSError as exc:  # pragma: no cover - export_static maps its own OSErrors
        raise StorageError(str(exc)) from None
    print(f"exported size {result.size} to {args.out}: ", end="")
    print(f"{result.written} files written, {result.skipped} unchanged")
    return 0
