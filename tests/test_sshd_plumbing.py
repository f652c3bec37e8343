"""Real sshd + the documented snippet + gk exec + the local agent, with a scripted gate.

The scripted gate stands in for ``VerifyingGate`` so that these tests exercise everything around
the verification (sshd settings, gk exec, the local protocol, the environment, the bypasses that
sshd or gk exec must stop) on their own; tests/test_sshd_e2e.py repeats the decisive cases with
the real verification core, real bundles and a real log.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sshd_fixture import ScriptedGate, SshdEnv, sshd_env  # noqa: F401 - fixture

pytestmark = pytest.mark.sshd


def permit(env: SshdEnv, gate: ScriptedGate, command: str | bytes, key: str = "a") -> str:
    return gate.permit(command, env.keys[key].public, env.account)


@pytest.fixture
def gate(sshd_env: SshdEnv) -> Iterator[ScriptedGate]:  # noqa: F811
    g = ScriptedGate()
    sshd_env.gate.target = g
    for path in sshd_env.markers.iterdir():
        path.unlink()
    yield g
    sshd_env.gate.target = None


def test_permitted_command_runs_and_exit_status_is_journaled(sshd_env: SshdEnv, gate: ScriptedGate) -> None:  # noqa: F811
    marker = sshd_env.marker("ran")
    command = f"touch {marker}; echo out; echo err >&2; exit 7"
    proc = sshd_env.ssh(command, bundle=permit(sshd_env, gate, command))
    assert proc.returncode == 7, proc.stderr
    assert proc.stdout == b"out\n"
    assert proc.stderr == b"err\n"
    assert marker.exists()
    (request,) = gate.requests
    assert request.command == command.encode()
    assert request.frontend == "exec"
    assert request.account == sshd_env.account
    assert request.auth_key == sshd_env.keys["a"].public
    assert request.peer.startswith("127.0.0.1:")
    assert [status for _, _, status in gate.exits] == [7]
