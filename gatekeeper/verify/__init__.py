"""The one verification core, shared by the asyncssh agent and ``gk exec``.

- :mod:`gatekeeper.verify.policy`: what a host accepts (:class:`HostPolicy`).
- :mod:`gatekeeper.verify.core`: pure checks of a request against a bundle and a policy.
- :mod:`gatekeeper.verify.headstore`: durable heads, spent nonces, the halted flag and evidence.
- :mod:`gatekeeper.verify.gate`: :class:`VerifyingGate`, which implements :class:`gatekeeper.gate.Gate`.
- :mod:`gatekeeper.verify.alarm`: fork alarms (stderr, syslog, optional webhook).
- :mod:`gatekeeper.verify.admin`: ``gk agent status`` and ``gk agent unhalt``.

See docs/verification.md for every check, its order and exit status.
"""
