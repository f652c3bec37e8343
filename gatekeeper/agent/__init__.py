"""The host agent: an asyncssh server that runs a command only after the gate proved it is logged.

- :mod:`gatekeeper.agent.config`: the TOML configuration.
- :mod:`gatekeeper.agent.server`: the SSH server (authentication, what is refused).
- :mod:`gatekeeper.agent.session`: one exec session (decision, child, streaming, exit status).
- :mod:`gatekeeper.agent.wiring`: config → gate + server; ``gk agent init`` / ``serve``.
"""
