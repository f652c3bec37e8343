"""A few Prometheus metrics, rendered in the text exposition format (version 0.0.4).

Hand-written to stay dependency-free; only what the log needs: counters, gauges read from a
callable at scrape time, and cumulative histograms. Not thread-safe by design: every update
happens on the event loop thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

__all__ = ["Counter", "Gauge", "Histogram", "Registry"]


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer():
        return str(int(v))
    return repr(float(v))


class Counter:
    def __init__(self, name: str, help: str) -> None:
        self.name, self.help, self.value = name, help, 0

    def inc(self, n: int = 1) -> None:
        self.value += n

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter", f"{self.name} {self.value}"]


class Gauge:
    def __init__(self, name: str, help: str, read: Callable[[], float]) -> None:
        self.name, self.help, self._read = name, help, read

    def render(self) -> list[str]:
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} gauge",
            f"{self.name} {_fmt(self._read())}",
        ]


class Histogram:
    def __init__(self, name: str, help: str, buckets: Sequence[float]) -> None:
        self.name, self.help = name, help
        self.buckets = sorted(buckets)
        self.counts = [0] * len(self.buckets)
        self.count = 0
        self.sum = 0.0

    def observe(self, v: float) -> None:
        self.count += 1
        self.sum += v
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1
                break

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for b, c in zip(self.buckets, self.counts, strict=True):
            cumulative += c
            out.append(f'{self.name}_bucket{{le="{_fmt(b)}"}} {cumulative}')
        out.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{self.name}_sum {_fmt(self.sum)}")
        out.append(f"{self.name}_count {self.count}")
        return out


class Registry:
    def __init__(self) -> None:
        self._metrics: list[Counter | Gauge | Histogram] = []

    def counter(self, name: str, help: str) -> Counter:
        m = Counter(name, help)
        self._metrics.append(m)
        return m

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> Gauge:
        m = Gauge(name, help, read)
        self._metrics.append(m)
        return m

    def histogram(self, name: str, help: str, buckets: Sequence[float]) -> Histogram:
        m = Histogram(name, help, buckets)
        self._metrics.append(m)
        return m

    def render(self) -> str:
        lines: list[str] = []
        for m in self._metrics:
            lines.extend(m.render())
        return "\n".join(lines) + "\n"
