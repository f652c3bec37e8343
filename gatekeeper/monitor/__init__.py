"""``gk monitor``: prove the log stays append-only and flag suspicious actions.

Modules: :mod:`~gatekeeper.monitor.rules` (TOML rules), :mod:`~gatekeeper.monitor.alerts` (JSON
lines, syslog, webhook), :mod:`~gatekeeper.monitor.check` (per-entry checks on every core),
:mod:`~gatekeeper.monitor.scan` (tile sources and the tree rebuild, shared with ``gk audit``),
:mod:`~gatekeeper.monitor.state` (durable progress), :mod:`~gatekeeper.monitor.monitor` (one log,
one round at a time). See ``docs/monitor.md``.
"""
