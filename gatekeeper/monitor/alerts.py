"""Monitor alerts and where they go: JSON lines on stdout, syslog, a webhook (with retries).

An :class:`Alert` is one JSON object (see ``docs/monitor.md`` for every field)::

    {"time": "2026-11-20T10:15:02Z", "severity": "critical", "kind": "fork", "log": "<origin>",
     "index": null, "rule": null, "message": "...", "action": null,
     "evidence": {"stored_checkpoint": "<signed note>", "new_checkpoint": "<signed note>"}}

Kinds: ``rule`` (a rule fired on an action), ``bad-action`` (an entry that does not parse or whose
SSHSIG does not verify), ``checkpoint-signature``, ``fork``, ``rollback``, ``rewrite`` (entries do
not hash to the signed root), ``truncated`` (entries under a signed checkpoint are missing),
``gossip-conflict``, ``unavailable`` (the log could not be read; not an integrity failure).

Sinks never raise to the monitor for delivery problems: a sink that cannot deliver reports it on
stderr (and the webhook retries first), because an unreachable alert channel must not stop
integrity checking. Delivery is at least once: after a crash the monitor re-checks entries that
were not yet marked processed and may alert again for them.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import logging.handlers
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

import requests

__all__ = [
    "Alert",
    "AlertSink",
    "StreamSink",
    "SyslogSink",
    "WebhookSink",
    "MultiSink",
    "ListSink",
]


@dataclass(frozen=True)
class Alert:
    severity: str
    kind: str
    log: str
    message: str
    index: int | None = None
    rule: str | None = None
    action: Mapping[str, Any] | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        stamp = _dt.datetime.fromtimestamp(self.time, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "time": stamp,
            "severity": self.severity,
            "kind": self.kind,
            "log": self.log,
            "index": self.index,
            "rule": self.rule,
            "message": self.message,
            "action": dict(self.action) if self.action is not None else None,
            "evidence": dict(self.evidence),
        }

    def line(self) -> str:
        """One JSON line (no newline), keys in a fixed order, non-ASCII kept as is."""
        return json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"))


class AlertSink(Protocol):
    def emit(self, alert: Alert) -> None:
        """Deliver one alert. Must not raise for delivery failures (report them on stderr)."""

    def close(self) -> None: ...


class StreamSink:
    """JSON lines on a text stream (stdout by default), flushed after every alert."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def emit(self, alert: Alert) -> None:
        out = self._stream if self._stream is not None else sys.stdout
        try:
            out.write(alert.line() + "\n")
            out.flush()
        except (OSError, ValueError) as exc:
            print(f"gk monitor: cannot write alert: {exc}", file=sys.stderr)

    def close(self) -> None:
        pass


_SYSLOG_LEVEL = {
    "info": logging.INFO,
    "low": logging.INFO,
    "medium": logging.WARNING,
    "high": logging.ERROR,
    "critical": logging.CRITICAL,
}


class SyslogSink:
    """Alerts to syslog (facility ``auth`` by default), message ``gk-monitor: <json>``.

    ``address`` is a socket path (``/dev/log``) or ``(host, port)`` for UDP.
    """

    def __init__(
        self,
        address: str | tuple[str, int] = "/dev/log",
        facility: int = logging.handlers.SysLogHandler.LOG_AUTH,
    ) -> None:
        self._handler = logging.handlers.SysLogHandler(address=address, facility=facility)
        self._handler.setFormatter(logging.Formatter("gk-monitor: %(message)s"))
        self._handler.handleError = self._report  # type: ignore[method-assign]

    @staticmethod
    def _report(record: logging.LogRecord) -> None:
        print(f"gk monitor: cannot send alert to syslog: {sys.exc_info()[1]}", file=sys.stderr)

    def emit(self, alert: Alert) -> None:
        level = _SYSLOG_LEVEL.get(alert.severity, logging.WARNING)
        record = logging.LogRecord("gk-monitor", level, __file__, 0, alert.line(), None, None)
        self._handler.handle(record)

    def close(self) -> None:
        self._handler.close()


class WebhookSink:
    """POST each alert as JSON to ``url``; retries with exponential backoff.

    A 2xx answer is delivery; 4xx other than 408/429 is permanent (not retried); anything else
    (5xx, 408, 429, connection errors, timeouts) is retried up to ``retries`` times, waiting
    ``backoff * 2**attempt`` seconds (capped at 30 s, or the server's ``Retry-After``). An alert
    that still fails is reported on stderr and dropped: the stdout/syslog sinks are the durable
    record.
    """

    def __init__(
        self,
        url: str,
        retries: int = 5,
        backoff: float = 0.5,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self._sleep = sleep
        self._session = requests.Session()
        self._session.headers.update({"Content-Type": "application/json", **(headers or {})})
        self.delivered = 0
        self.failed = 0

    def emit(self, alert: Alert) -> None:
        body = alert.line().encode("utf-8")
        problem = ""
        for attempt in range(self.retries + 1):
            wait = min(30.0, self.backoff * 2**attempt)
            try:
                resp = self._session.post(self.url, data=body, timeout=self.timeout)
            except requests.RequestException as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= resp.status_code < 300:
                    self.delivered += 1
                    return
                problem = f"HTTP {resp.status_code}"
                if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
                    break
                retry_after = resp.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    wait = min(30.0, float(retry_after))
            if attempt < self.retries:
                self._sleep(wait)
        self.failed += 1
        print(f"gk monitor: webhook {self.url} did not take a {alert.kind} alert: {problem}", file=sys.stderr)

    def close(self) -> None:
        self._session.close()


class MultiSink:
    """Fan an alert out to several sinks, in order."""

    def __init__(self, sinks: Sequence[AlertSink]) -> None:
        self.sinks = list(sinks)

    def emit(self, alert: Alert) -> None:
        for s in self.sinks:
            s.emit(alert)

    def close(self) -> None:
        for s in self.sinks:
            s.close()


class ListSink:
    """Keep alerts in memory (tests, and the summary of a ``--once`` run)."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def emit(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def close(self) -> None:
        pass

    def kinds(self) -> list[str]:
        return [a.kind for a in self.alerts]
