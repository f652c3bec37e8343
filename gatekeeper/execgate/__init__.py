"""``gk exec``: the gate for OpenSSH's sshd, run as ``ForceCommand``.

Under ForceCommand the program runs as the SSH user, so it holds no state and decides nothing: it
reads what sshd exposes (:mod:`~gatekeeper.execgate.sshinfo`), asks the root-owned agent over a Unix
socket (:mod:`~gatekeeper.execgate.protocol`, :mod:`~gatekeeper.execgate.client`; the server side is
:mod:`gatekeeper.agent.local`), and runs the verified bytes (:mod:`~gatekeeper.execgate.program`).
Everything here uses the standard library only, so the ForceCommand starts fast under ``python3 -I``.
See docs/openssh.md.
"""
