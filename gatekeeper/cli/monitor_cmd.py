"""``gk monitor``: verify that logs stay append-only and flag suspicious actions.

    gk monitor --log URL|DIR --log-key VKEY [--log … --log-key …] [--rules FILE] [--once]
    gk monitor --config monitor.toml [--once]
    gk monitor gossip compare --log-key VKEY [--log URL|DIR] LOCATION...
    gk monitor status --state DIR
    gk monitor unhalt --state DIR --origin ORIGIN --who NAME --note TEXT

See docs/monitor.md. Exit statuses: 0 verified, 76 integrity alert, 69 log unavailable, 1 with
``--fail-on`` when an alert of at least that severity fired.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from gatekeeper.errors import ConfigError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "monitor",
        help="verify logs stay append-only, check every action, alert on rules",
        description="Verify checkpoints and consistency, rebuild the tree from the entries, verify every "
        "action's signature and evaluate rules. Alerts are JSON lines on stdout.",
    )
    p.add_argument("--config", type=Path, help="TOML config (several logs, alerts, gossip)")
    p.add_argument(
        "--log", action="append", default=[], metavar="URL|DIR", help="a log to watch (repeatable)"
    )
    p.add_argument(
        "--log-key",
        action="append",
        default=[],
        metavar="VKEY",
        help="the log's verifier key or a file holding it (one per --log, in order)",
    )
    p.add_argument("--origin", action="append", default=[], help="checkpoint origin (default: the key name)")
    p.add_argument(
        "--log-header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'|@FILE",
        help="HTTP header for every --log (e.g. Authorization for a protected read path)",
    )
    p.add_argument("--opaque", action="store_true", help="entries are not actions: check the tree only")
    p.add_argument("--rules", type=Path, help="rules file (TOML), see examples/monitor-rules.toml")
    p.add_argument("--allowed-signers", type=Path, help="flag actions by keys not in this file")
    p.add_argument("--state", type=Path, help="state directory (default: ./gk-monitor-state)")
    p.add_argument("--once", action="store_true", help="one round, then exit with a status")
    p.add_argument("--interval", type=float, help="seconds between rounds when following (default 30)")
    p.add_argument("--publish", type=Path, metavar="DIR", help="publish verified checkpoints for gossip")
    p.add_argument(
        "--peer", action="append", default=[], metavar="DIR|URL", help="compare with a peer's gossip"
    )
    p.add_argument("--syslog", nargs="?", const="/dev/log", metavar="ADDR", help="also alert to syslog")
    p.add_argument("--webhook", metavar="URL", help="also POST alerts to this URL (with retries)")
    p.add_argument("--no-stdout", action="store_true", help="no JSON lines on stdout")
    p.add_argument("--workers", type=int, help="signature-check processes (default: every core)")
    p.add_argument(
        "--save-every",
        type=int,
        metavar="N",
        help="save progress every N checked entries (default 65536; bounds re-checking after a crash)",
    )
    p.add_argument(
        "--fail-on",
        choices=("info", "low", "medium", "high", "critical"),
        help="--once exits 1 if an alert of at least this severity fired",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.set_defaults(func=_run)
    msub = p.add_subparsers(dest="monitor_command", metavar="SUBCOMMAND")

    g = msub.add_parser("gossip", help="compare published checkpoints")
    gsub = g.add_subparsers(dest="gossip_command", metavar="SUBCOMMAND", required=True)
    c = gsub.add_parser("compare", help="compare checkpoints published by monitors, agents, witnesses")
    c.add_argument("locations", nargs="+", metavar="DIR|URL")
    c.add_argument("--log-key", action="append", default=[], required=True, metavar="VKEY")
    c.add_argument("--log", metavar="URL|DIR", help="prove consistency between sizes with this log's tiles")
    c.add_argument("--log-header", action="append", default=[], metavar="'NAME: VALUE'|@FILE")
    c.set_defaults(func=_gossip_compare)
    pub = gsub.add_parser("publish", help="publish a checkpoint file (e.g. an agent's newest head)")
    pub.add_argument("checkpoint", type=Path)
    pub.add_argument("--dir", type=Path, required=True)
    pub.add_argument("--log-key", action="append", default=[], required=True, metavar="VKEY")
    pub.set_defaults(func=_gossip_publish)

    sv = gsub.add_parser("serve", help="serve a published directory over HTTP (read-only)")
    sv.add_argument("dir", type=Path)
    sv.add_argument("--listen", default="127.0.0.1:8088", metavar="HOST:PORT", help="default 127.0.0.1:8088")
    sv.set_defaults(func=_gossip_serve)

    st = msub.add_parser("status", help="heads, progress and halts of each watched log")
    st.add_argument("--state", type=Path, required=True)
    st.set_defaults(func=_status)

    u = msub.add_parser("unhalt", help="clear a log's halted state after investigating the evidence")
    u.add_argument("--state", type=Path, required=True)
    u.add_argument("--origin", required=True)
    u.add_argument("--who", required=True)
    u.add_argument("--note", required=True)
    u.set_defaults(func=_unhalt)


def _config(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from gatekeeper.monitor.config import AlertSpec, MonitorConfig, load_config, log_spec, parse_header

    if args.config is not None:
        if args.log:
            raise ConfigError("give logs in the config file or with --log, not both")
        cfg = load_config(args.config)
    else:
        if not args.log:
            raise ConfigError("no log to watch: give --log URL|DIR --log-key VKEY, or --config FILE")
        if len(args.log_key) != len(args.log):
            raise ConfigError("give one --log-key per --log")
        if args.origin and len(args.origin) != len(args.log):
            raise ConfigError("give one --origin per --log (or none)")
        origins = args.origin or [None] * len(args.log)
        headers = dict(parse_header(h) for h in args.log_header)
        logs = tuple(
            log_spec(loc, [key], origin, opaque=args.opaque, headers=headers)
            for loc, key, origin in zip(args.log, args.log_key, origins, strict=True)
        )
        cfg = MonitorConfig(logs=logs)
    alerts = cfg.alerts
    alerts = AlertSpec(
        stdout=alerts.stdout and not args.no_stdout,
        syslog=args.syslog or alerts.syslog,
        webhook=args.webhook or alerts.webhook,
        webhook_retries=alerts.webhook_retries,
        webhook_headers=alerts.webhook_headers,
    )
    changes: dict[str, Any] = {"alerts": alerts}
    for name in ("state", "rules", "allowed_signers", "interval", "publish", "workers", "save_every"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    if args.peer:
        changes["peers"] = tuple(cfg.peers) + tuple(args.peer)
    return replace(cfg, **changes)


def _summary(res: Any) -> str:
    parts = []
    for r in res.results:
        parts.append(f"{r.log}: {r.status}, size {r.size}, processed {r.processed}, checked {r.checked}")
    alerts = ", ".join(f"{k} {v}" for k, v in sorted(res.alerts.items())) or "no alerts"
    return "gk monitor: " + "; ".join(parts) + f"; {alerts}"


def _run(args: argparse.Namespace) -> int:
    if getattr(args, "monitor_command", None):
        return 2  # pragma: no cover - subcommands set their own func
    from gatekeeper.monitor.runner import MonitorRunner, build_sink

    cfg = _config(args)
    with MonitorRunner(cfg, build_sink(cfg.alerts), progress=not args.no_progress) as runner:
        if args.once:
            res = runner.round()
            print(_summary(res), file=sys.stderr)
            return res.exit_status(args.fail_on)

        def on_term(signum: int, frame: object) -> None:
            runner.stop()

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            runner.follow(lambda res: print(_summary(res), file=sys.stderr) if res.alerts else None)
        finally:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _gossip_compare(args: argparse.Namespace) -> int:
    from gatekeeper import gossip
    from gatekeeper.monitor.config import parse_key_arg
    from gatekeeper.monitor.runner import EXIT_INTEGRITY, source_consistency
    from gatekeeper.monitor.scan import ClientSource

    keys: dict[str, list[Any]] = {}
    for k in args.log_key:
        v = parse_key_arg(k)
        keys.setdefault(v.name, []).append(v)
    observations: list[gossip.Observation] = []
    for loc in args.locations:
        observations.extend(gossip.observe(label, raw, keys) for label, raw in gossip.read_published(loc))
    from gatekeeper.monitor.config import parse_header

    headers = dict(parse_header(h) for h in args.log_header)
    consistency = source_consistency(ClientSource.at(args.log, headers=headers)) if args.log else None
    result = gossip.compare(observations, consistency)
    for c in result.conflicts:
        print(
            json.dumps(
                {
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "severity": "critical",
                    "kind": "gossip-conflict",
                    "log": c.origin,
                    "message": c.detail,
                    "evidence": {
                        "a": {"source": c.a.source, "checkpoint": c.a.raw.decode("utf-8", "replace")},
                        "b": {"source": c.b.source, "checkpoint": c.b.raw.decode("utf-8", "replace")},
                    },
                },
                ensure_ascii=False,
            )
        )
    for o in result.unverified:
        print(f"gk monitor gossip: ignored {o.source}: {o.problem}", file=sys.stderr)
    for a, b in result.unchecked_pairs:
        sa = a.checkpoint.size if a.checkpoint else "?"
        sb = b.checkpoint.size if b.checkpoint else "?"
        print(
            f"gk monitor gossip: could not check {a.source} (size {sa}) against {b.source} (size {sb}): "
            "give --log to prove consistency",
            file=sys.stderr,
        )
    logs = ", ".join(f"{o}: {n} checkpoints" for o, n in result.logs.items()) or "no verified checkpoints"
    verdict = "CONFLICT" if result.conflicts else "consistent"
    print(
        f"gk monitor gossip: {verdict}; {logs}; {result.consistent_pairs} pairs proven consistent",
        file=sys.stderr,
    )
    return EXIT_INTEGRITY if result.conflicts else 0


def _gossip_publish(args: argparse.Namespace) -> int:
    from gatekeeper import gossip
    from gatekeeper.monitor.config import parse_key_arg

    keys: dict[str, list[Any]] = {}
    for k in args.log_key:
        v = parse_key_arg(k)
        keys.setdefault(v.name, []).append(v)
    try:
        raw = args.checkpoint.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {args.checkpoint}: {exc}") from None
    o = gossip.observe(str(args.checkpoint), raw, keys)
    if not o.verified:
        raise ConfigError(f"{args.checkpoint}: not publishing an unverified checkpoint ({o.problem})")
    path = gossip.publish(args.dir, o.origin, raw)
    print(
        f"gk monitor gossip: published {o.origin} size {o.checkpoint.size if o.checkpoint else 0} to {path}",
        file=sys.stderr,
    )
    return 0


def _gossip_serve(args: argparse.Namespace) -> int:
    from gatekeeper import gossip

    host, _, port = args.listen.rpartition(":")
    if not port.isdigit() or not host:
        raise ConfigError(f"--listen {args.listen!r}: expected HOST:PORT")
    try:
        srv = gossip.make_server(args.dir, host.strip("[]"), int(port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.listen}: {exc}") from None
    print(f"gk monitor gossip: serving {args.dir} on http://{host}:{srv.server_address[1]}", flush=True)

    def on_term(signum: int, frame: object) -> None:
        import threading

        threading.Thread(target=srv.shutdown, daemon=True).start()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        srv.serve_forever()
    finally:
        signal.signal(signal.SIGTERM, previous)
        srv.server_close()
    return 0


def _status(args: argparse.Namespace) -> int:
    from gatekeeper.monitor.state import ORIGIN_FILE, PROGRESS_FILE, load_scan_state
    from gatekeeper.verify.headstore import DB_NAME, HeadStore

    if not args.state.is_dir():
        raise ConfigError(f"no monitor state in {args.state}")
    found = 0
    for d in sorted(args.state.iterdir()):
        if not (d / DB_NAME).exists():
            continue
        found += 1
        origin = (d / ORIGIN_FILE).read_text(encoding="utf-8").strip() if (d / ORIGIN_FILE).exists() else ""
        with HeadStore.open(d) as store:
            halt = store.halted()
            head = store.newest_head(origin) if origin else None
        progress = load_scan_state(d, origin) if origin and (d / PROGRESS_FILE).exists() else None
        print(
            json.dumps(
                {
                    "origin": origin,
                    "state": str(d),
                    "head_size": head.size if head else 0,
                    "processed_size": progress.processed.size if progress else 0,
                    "pending_size": progress.pending_size if progress else 0,
                    "halted": None
                    if halt is None
                    else {"id": halt.id, "kind": halt.kind, "detail": halt.detail},
                }
            )
        )
    if not found:
        raise ConfigError(f"no monitor state in {args.state}")
    return 0


def _unhalt(args: argparse.Namespace) -> int:
    from gatekeeper.monitor.state import log_state_dir
    from gatekeeper.verify.headstore import DB_NAME, HeadStore

    d = log_state_dir(args.state, args.origin)
    if not (d / DB_NAME).exists():
        raise ConfigError(f"no monitor state for {args.origin!r} in {args.state}")
    with HeadStore.open(d) as store:
        rec = store.unhalt(who=args.who, note=args.note, now=int(time.time()))
    if rec is None:
        print(f"gk monitor: {args.origin} was not halted", file=sys.stderr)
    else:
        print(f"gk monitor: {args.origin} unhalted through halt #{rec.through_halt}", file=sys.stderr)
    return 0
