"""Raising the alarm: one line on stderr, one syslog message, and an optional webhook POST.

:meth:`Alarm.alert` is called on the decision path when the agent detects a fork, so it must
never block it for long and never raise: the stderr line and the syslog call are local and
immediate; the webhook is POSTed from a daemon thread with a bounded timeout (connect and read),
and its failure is itself reported on stderr. :meth:`Alarm.error` reports an internal error (a
bug, a broken disk) the same way, without the webhook.
"""

from __future__ import annotations

import json
import sys
import syslog
import threading
import time
from collections.abc import Mapping
from typing import TextIO

import requests

__all__ = ["Alarm"]

DEFAULT_WEBHOOK_TIMEOUT = 5.0
_MAX_PENDING = 16  # webhook threads in flight; further alerts still reach stderr and syslog


def _line(text: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in text)


class Alarm:
    """Where fork alarms go. ``webhook``: a URL that receives a JSON POST
    ``{"event", "message", "time", "details": {...}}``."""

    def __init__(
        self,
        *,
        webhook: str | None = None,
        webhook_timeout: float = DEFAULT_WEBHOOK_TIMEOUT,
        use_syslog: bool = True,
        stream: TextIO | None = None,
        ident: str = "gk-agent",
    ) -> None:
        if webhook is not None and not webhook.startswith(("http://", "https://")):
            raise ValueError("alarm webhook must be an http:// or https:// URL")
        self.webhook = webhook
        self.webhook_timeout = webhook_timeout
        self._use_syslog = use_syslog
        self._stream = stream
        self._ident = ident
        self._lock = threading.Lock()
        self._pending: list[threading.Thread] = []
        self.webhook_failures = 0

    def _emit(self, priority: int, text: str) -> None:
        line = _line(text)
        try:
            print(f"{self._ident}: {line}", file=self._stream or sys.stderr, flush=True)
        except (OSError, ValueError):
            pass
        if self._use_syslog:
            try:
                syslog.openlog(self._ident, syslog.LOG_PID, syslog.LOG_AUTH)
                syslog.syslog(priority, line)
            except (OSError, ValueError):
                pass

    def alert(self, event: str, message: str, details: Mapping[str, object] | None = None) -> None:
        """Raise an alarm: stderr + syslog (LOG_ALERT) now, the webhook in the background."""
        self._emit(syslog.LOG_ALERT, f"ALARM {event}: {message}")
        if self.webhook is None:
            return
        payload = {
            "event": event,
            "message": message,
            "time": int(time.time()),
            "details": dict(details or {}),
        }
        body = json.dumps(payload, default=str, sort_keys=True).encode()
        with self._lock:
            self._pending = [t for t in self._pending if t.is_alive()]
            if len(self._pending) >= _MAX_PENDING:
                self._emit(syslog.LOG_ERR, f"alarm webhook backlog full; not posting {event}")
                return
            thread = threading.Thread(
                target=self._post, args=(self.webhook, body), daemon=True, name="gk-alarm-webhook"
            )
            self._pending.append(thread)
        thread.start()

    def _post(self, url: str, body: bytes) -> None:
        try:
            response = requests.post(
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=(self.webhook_timeout, self.webhook_timeout),
            )
            ok = 200 <= response.status_code < 300
            detail = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            ok, detail = False, type(exc).__name__
        if not ok:
            with self._lock:
                self.webhook_failures += 1
            self._emit(syslog.LOG_ERR, f"alarm webhook {url} failed: {detail}")

    def error(self, message: str) -> None:
        """Report an internal error (stderr + syslog LOG_ERR)."""
        self._emit(syslog.LOG_ERR, f"ERROR {message}")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for pending webhook POSTs (tests, shutdown); True if none is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            threads = list(self._pending)
        for t in threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)
