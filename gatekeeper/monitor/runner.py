"""Running ``gk monitor``: several logs, rounds, gossip with peers, exit statuses.

:class:`MonitorRunner` owns one :class:`~gatekeeper.monitor.monitor.LogMonitor` per configured
log. :meth:`MonitorRunner.round` polls every log once, publishes verified checkpoints and compares
them with the peers' (a split view is a critical ``gossip-conflict`` alert with both checkpoints).
:meth:`MonitorRunner.follow` repeats rounds until :meth:`stop` is called (SIGTERM).

Exit statuses of a round (``--once``): 0 all verified; 76 an integrity alert (fork, rollback,
rewrite, truncation, bad checkpoint signature, gossip conflict, halted); 69 a log unavailable;
1 when ``fail_on`` is set and an alert of at least that severity fired (rules, bad actions).
"""

from __future__ import annotations

import logging.handlers
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from gatekeeper import gossip
from gatekeeper.allowed_signers import AllowedSigners
from gatekeeper.errors import ConfigError, LogUnavailable
from gatekeeper.monitor.alerts import Alert, AlertSink, MultiSink, StreamSink, SyslogSink, WebhookSink
from gatekeeper.monitor.check import SignerPrincipals
from gatekeeper.monitor.config import AlertSpec, MonitorConfig
from gatekeeper.monitor.monitor import BatchObserver, LogMonitor, LogTarget, PollResult, StateStore
from gatekeeper.monitor.rules import RuleSet, load_rules, severity_rank
from gatekeeper.monitor.scan import ClientSource, TileSource
from personality.errors import PersonalityError, ProofError
from personality.tlog import merkle
from personality.tlog.checkpoint import SignedCheckpoint

__all__ = [
    "MonitorRunner",
    "RoundResult",
    "build_sink",
    "source_consistency",
    "EXIT_INTEGRITY",
    "EXIT_UNAVAILABLE",
]

EXIT_INTEGRITY = 76
EXIT_UNAVAILABLE = 69
INTEGRITY_KINDS = frozenset(
    {"fork", "rollback", "rewrite", "truncated", "checkpoint-signature", "gossip-conflict", "halted"}
)


class _Counting:
    """Wraps the sink to remember the worst severity of the current round."""

    def __init__(self, inner: AlertSink) -> None:
        self.inner = inner
        self.kinds: dict[str, int] = {}
        self.worst = -1

    def emit(self, alert: Alert) -> None:
        self.kinds[alert.kind] = self.kinds.get(alert.kind, 0) + 1
        if alert.kind not in ("unavailable",):
            self.worst = max(self.worst, severity_rank(alert.severity))
        self.inner.emit(alert)

    def close(self) -> None:
        self.inner.close()

    def reset(self) -> None:
        self.kinds = {}
        self.worst = -1


def build_sink(spec: AlertSpec) -> AlertSink:
    sinks: list[AlertSink] = []
    if spec.stdout:
        sinks.append(StreamSink())
    if spec.syslog:
        address: str | tuple[str, int] = spec.syslog
        if not spec.syslog.startswith("/") and ":" in spec.syslog:
            host, _, port = spec.syslog.rpartition(":")
            if not port.isdigit():
                raise ConfigError(f"syslog address {spec.syslog!r}: expected /path or host:port")
            address = (host, int(port))
        try:
            sinks.append(SyslogSink(address, logging.handlers.SysLogHandler.LOG_AUTH))
        except OSError as exc:
            raise ConfigError(f"cannot open syslog at {spec.syslog}: {exc}") from None
    if spec.webhook:
        sinks.append(WebhookSink(spec.webhook, retries=spec.webhook_retries, headers=spec.webhook_headers))
    return MultiSink(sinks)


def source_consistency(source: TileSource) -> gossip.Consistency:
    """Consistency between two checkpoints of one log, proven with ``source``'s proofs: True,
    False (the proof fails: a fork), or None when the source cannot serve a proof for them."""

    def check(a: SignedCheckpoint, b: SignedCheckpoint) -> bool | None:
        try:
            proof = source.consistency_proof(a.size, b.size)
        except (PersonalityError, LogUnavailable):
            return None
        try:
            merkle.verify_consistency(a.size, b.size, a.root, b.root, proof)
        except ProofError:
            return False
        return True

    return check


@dataclass
class RoundResult:
    results: list[PollResult] = field(default_factory=list)
    alerts: dict[str, int] = field(default_factory=dict)
    worst: int = -1

    def exit_status(self, fail_on: str | None = None) -> int:
        if any(k in INTEGRITY_KINDS for k in self.alerts) or any(
            r.status in ("integrity", "halted") for r in self.results
        ):
            return EXIT_INTEGRITY
        if any(r.status == "unavailable" for r in self.results):
            return EXIT_UNAVAILABLE
        if fail_on is not None and self.worst >= severity_rank(fail_on):
            return 1
        return 0


class MonitorRunner:
    """All logs of one monitor. ``observer``/``state_store`` (one log only) let ``gk audit sync``
    reuse the whole pipeline with the audit index."""

    def __init__(
        self,
        config: MonitorConfig,
        sink: AlertSink,
        *,
        progress: bool = True,
        sources: dict[str, TileSource] | None = None,
        observer: BatchObserver | None = None,
        state_store: StateStore | None = None,
    ) -> None:
        self.config = config
        self.sink = _Counting(sink)
        rules = load_rules(config.rules) if config.rules else RuleSet()
        principals = (
            SignerPrincipals(AllowedSigners.load(config.allowed_signers)) if config.allowed_signers else None
        )
        if (observer is not None or state_store is not None) and len(config.logs) != 1:
            raise ConfigError("an audit index follows exactly one log")
        self.monitors: list[LogMonitor] = []
        self.sources: dict[str, TileSource] = {}
        config.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        for spec in config.logs:
            src = (sources or {}).get(spec.name) or ClientSource.at(spec.location, headers=spec.headers)
            self.sources[spec.origin] = src
            target = LogTarget(spec.name, src, spec.origin, spec.verifiers)
            self.monitors.append(
                LogMonitor(
                    target,
                    config.state,
                    self.sink,
                    rules=rules,
                    principals=principals,
                    opaque=spec.opaque,
                    workers=config.workers,
                    observer=observer,
                    state_store=state_store,
                    publish=self._publish if config.publish else None,
                    save_every=config.save_every,
                    progress=progress,
                )
            )
        self._keys = {spec.origin: list(spec.verifiers) for spec in config.logs}
        self._stop = threading.Event()
        self._gossip_seen: set[tuple[str, int, bytes]] = set()

    def _publish(self, origin: str, note: bytes) -> None:
        assert self.config.publish is not None
        try:
            gossip.publish(self.config.publish, origin, note)
        except OSError as exc:
            self.sink.emit(Alert("medium", "unavailable", origin, f"cannot publish the checkpoint: {exc}"))

    def close(self) -> None:
        for m in self.monitors:
            m.close()
        self.sink.close()

    def __enter__(self) -> MonitorRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stop(self) -> None:
        self._stop.set()

    def round(self) -> RoundResult:
        self.sink.reset()
        results = [m.poll() for m in self.monitors]
        if self.config.peers:
            self._compare_with_peers()
        return RoundResult(results, dict(self.sink.kinds), self.sink.worst)

    def follow(self, on_round: Callable[[RoundResult], None] | None = None) -> None:
        while not self._stop.is_set():
            res = self.round()
            if on_round is not None:
                on_round(res)
            self._stop.wait(self.config.interval)

    def _compare_with_peers(self) -> None:
        observations: list[gossip.Observation] = []
        own: dict[str, gossip.Observation] = {}
        for m in self.monitors:
            head = m.store.newest_head(m.target.origin)
            if head is not None:
                o = gossip.observe("self", head.note, self._keys)
                observations.append(o)
                own[m.target.origin] = o
        for peer in self.config.peers:
            try:
                published = gossip.read_published(peer)
            except (ConfigError, LogUnavailable) as exc:
                self.sink.emit(Alert("low", "unavailable", "", f"gossip peer {peer}: {exc}"))
                continue
            observations.extend(gossip.observe(label, raw, self._keys) for label, raw in published)
        for origin, src in self.sources.items():
            mine = own.get(origin)
            if mine is None:
                continue
            theirs = [o for o in observations if o.verified and o.origin == origin]
            result = gossip.compare(theirs, source_consistency(src))
            for c in result.conflicts:
                if mine not in (c.a, c.b):
                    continue  # a conflict between two peers: they alert themselves (and compare shows it)
                other = c.b if c.a is mine else c.a
                assert other.checkpoint is not None
                key = (other.source, other.checkpoint.size, other.checkpoint.root)
                if key in self._gossip_seen:
                    continue
                self._gossip_seen.add(key)
                self.sink.emit(
                    Alert(
                        "critical",
                        "gossip-conflict",
                        origin,
                        f"{c.detail}: this monitor's view and {other.source} disagree (split view)",
                        evidence={
                            "own_checkpoint": mine.raw.decode("utf-8", "replace"),
                            "peer_checkpoint": other.raw.decode("utf-8", "replace"),
                            "peer": other.source,
                        },
                    )
                )
