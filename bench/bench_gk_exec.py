"""Benchmark: what ``gk exec`` (the sshd ForceCommand) adds to one command, and where it goes.

Parts, each timed per call (wall clock, after a warm-up):

- ``python_startup``: the gated runtime's ``python3 -I -c pass`` (what any Python ForceCommand pays);
- ``import_execgate``: ``python3 -I -c "import gatekeeper.execgate.program"``;
- ``sh_true``: ``/bin/sh -c true`` on its own (what sshd would run without Gatekeeper);
- ``gk_exec_true``: the whole ``python3 -I -m gatekeeper.execgate`` with the environment sshd sets
  (SSH_USER_AUTH file, SSH_ORIGINAL_COMMAND=true), asking a local service whose gate allows
  everything (``UnsafeAllowAllExecGate``, defined here and only here), running ``/bin/sh -c true``,
  reporting the exit status;

and end to end with OpenSSH's ``ssh`` (``-o KexAlgorithms=curve25519-sha256``, a new connection
each time, variants alternated to cancel drift), when a real sshd can run here (root):

- ``ssh_stock``: ``ssh host true`` against sshd without Gatekeeper;
- ``ssh_gk_exec_gate_off``: the same sshd config plus the documented snippet (ForceCommand gk exec),
  local service with the allow-all gate;
- ``ssh_gk_exec_verifying``: the same with the real verifying gate (``build_gate``) and a real log;
  a fresh bundle is submitted before each call, outside the timed window, so the time is the SSH
  session including the host's verification (bundle, signature, nonce, checkpoint, consistency
  proof fetched from the log, fsync of head and nonce, journal).

Run: ``.venv/bin/python bench/bench_gk_exec.py [--n 30] [--quick]``; prints one JSON object.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from gatekeeper.gate import Decision, ExecRequest, Reason  # noqa: E402

REPO = common.REPO


class UnsafeAllowAllExecGate:
    """Allows every request: the gate-off baseline of this benchmark. Never use it anywhere else."""

    async def decide(self, request: ExecRequest) -> Decision:
        return Decision(Reason.ALLOWED, "", index=0)

    def record_exit(
        self, request: ExecRequest, decision: Decision, exit_status: int | None, *, signal: str | None = None
    ) -> None:
        pass


def _ms(values_us: list[float]) -> dict[str, float]:
    s = common.summarize(values_us)
    out = {k: (round(v / 1000, 2) if k != "n" else v) for k, v in s.items()}
    out["min"] = round(min(values_us) / 1000, 2)  # least disturbed by other load on the machine
    return out


def _time_cmd(argv: list[str], n: int, **kw: Any) -> list[float]:
    def once(_i: int) -> None:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)

    return common.latencies(once, n, warmup=3)


def local_parts(sf: Any, work: Path, n: int) -> dict[str, Any]:
    user = sf.ensure_account()
    python = sf.make_runtime(work / "runtime", user)
    service = sf.LocalServiceThread(UnsafeAllowAllExecGate(), work / "run" / "local.sock", login_shells=None)
    try:
        auth = work / "auth"
        key = (Path(sf.make_key(work / "k", "bench").path).with_name("k.pub")).read_text().split()[:2]
        auth.write_text(f"publickey {' '.join(key)}\n")
        env = {
            "SSH_USER_AUTH": str(auth),
            "SSH_ORIGINAL_COMMAND": "true",
            "SSH_CONNECTION": "127.0.0.1 5000 127.0.0.1 22",
            "GK_BUNDLE": "x",
        }
        results = {
            "python_startup": _time_cmd([str(python), "-I", "-c", "pass"], n),
            "import_execgate": _time_cmd(
                [str(python), "-I", "-c", "import gatekeeper.execgate.program"], n
            ),
            "sh_true": _time_cmd(["/bin/sh", "-c", "true"], n),
            "gk_exec_true": _time_cmd(
                [str(python), "-I", "-m", "gatekeeper.execgate", "--socket", str(service.server.socket_path)],
                n,
                env=env,
            ),
        }
    finally:
        service.stop()
    return {name: _ms(v) for name, v in results.items()}


def sshd_variants(sf: Any, work: Path, n: int) -> dict[str, Any]:
    from conftest import LogServer, init_log

    from gatekeeper.agent.config import load_config
    from gatekeeper.agent.wiring import build_gate, init_agent_dir
    from gatekeeper.client import identity as ident
    from gatekeeper.client.submit import LogSettings, build_action, submit_action

    user = sf.ensure_account()
    python = sf.make_runtime(work / "runtime-sshd", user)
    key = sf.make_key(work / "client_key", "bench")
    host_key = work / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    (work / "ak").mkdir(mode=0o755)
    (work / "ak" / user.pw_name).write_text(key.public + "\n")

    init_log(work / "log", "bench.example/log")
    log = LogServer(work / "log", "bench.example/log", ("--accept-any",), "127.0.0.1:0").start()
    init_agent_dir(work / "host", name="bench-host", log_url=log.url, log_keys=[log.vkey])
    gate_switch = sf.SwitchableGate()
    socket_path = work / "run" / "local.sock"
    service = sf.LocalServiceThread(gate_switch, socket_path)
    verifying = build_gate(load_config(work / "host" / "agent.toml"))
    off = UnsafeAllowAllExecGate()

    servers = []
    ports = {}
    for name, snippet in (("stock", None), ("gated", sf.render_snippet(python, socket_path))):
        d = work / f"sshd-{name}"
        d.mkdir(mode=0o755)
        include = ""
        if snippet is not None:
            (d / "conf.d").mkdir()
            (d / "conf.d" / "00-gatekeeper.conf").write_text(snippet)
            include = f"Include {d}/conf.d/*.conf\n"

        def config(port: int, include: str = include) -> str:
            return (
                f"{include}ListenAddress 127.0.0.1\nPort {port}\nHostKey {host_key}\nPidFile none\n"
                f"StrictModes no\nUsePAM no\nAuthorizedKeysFile {work}/ak/%u\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nPermitRootLogin no\nPrintMotd no\nLogLevel ERROR\n"
            )

        sshd = sf.Sshd(d, config)
        sshd.start()
        servers.append(sshd)
        ports[name] = sshd.port
    known = work / "known_hosts"
    pub = " ".join((work / "ssh_host_ed25519_key.pub").read_text().split()[:2])
    known.write_text("".join(f"[127.0.0.1]:{p} {pub}\n" for p in ports.values()))

    def ssh(port: int, bundle: str | None) -> None:
        argv = [
            "ssh", "-F", "/dev/null", "-p", str(port), "-i", str(key.path), "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known}",
            "-o", "StrictHostKeyChecking=yes", "-o", "KexAlgorithms=curve25519-sha256", "-T",
        ]
        if bundle is not None:
            argv += ["-o", f"SetEnv=GK_BUNDLE={bundle}"]
        subprocess.run([*argv, f"{user.pw_name}@127.0.0.1", "true"], check=True, stdin=subprocess.DEVNULL)

    me = ident.from_file(key.path)
    settings = LogSettings.from_strings(log.url, log.vkey, None, work / "client-state", timeout=5)

    def fresh_bundle() -> str:
        action = build_action(me, ["bench-host"], user.pw_name, b"true", window=300)
        return submit_action(settings, me, action, warn=lambda _l: None).bundle

    variants = ("ssh_stock", "ssh_gk_exec_gate_off", "ssh_gk_exec_verifying")
    samples: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for i in range(n + 3):
            for variant in samples:
                bundle = None
                if variant == "ssh_gk_exec_verifying":
                    gate_switch.target = verifying
                    bundle = fresh_bundle()
                elif variant == "ssh_gk_exec_gate_off":
                    gate_switch.target = off
                port = ports["stock" if variant == "ssh_stock" else "gated"]
                t0 = time.perf_counter()
                ssh(port, bundle)
                if i >= 3:  # warm-up
                    samples[variant].append((time.perf_counter() - t0) * 1e6)
    finally:
        for sshd in servers:
            sshd.stop()
        service.stop()
        log.stop()
    stock, off, verifying = (samples[name] for name in variants)
    out: dict[str, Any] = {name: _ms(v) for name, v in samples.items()}
    out["gk_exec_added_p50_ms"] = round((statistics.median(off) - statistics.median(stock)) / 1000, 2)
    out["gk_exec_added_min_ms"] = round((min(off) - min(stock)) / 1000, 2)
    out["host_verification_added_p50_ms"] = round(
        (statistics.median(verifying) - statistics.median(off)) / 1000, 2
    )
    out["host_verification_added_min_ms"] = round((min(verifying) - min(off)) / 1000, 2)
    return out


def main() -> None:
    p = common.arg_parser(__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=30, help="samples per variant (default 30)")
    args = p.parse_args()
    n = 8 if args.quick else args.n
    sys.path.insert(0, str(REPO / "tests"))
    import sshd_fixture as sf

    results: dict[str, Any] = {}
    notes = [
        "wall clock per call, ms (p50/p90/p99/max/mean); new ssh connection per call; variants alternated",
        "gk_exec_added_p50_ms = p50(ssh_gk_exec_gate_off) - p50(ssh_stock); *_min_ms the same with "
        "minimums, which other load on the machine disturbs least",
        "host_verification_added_p50_ms = p50(ssh_gk_exec_verifying) - p50(ssh_gk_exec_gate_off)",
    ]
    why = sf.unavailable_reason()
    work = Path(tempfile.mkdtemp(prefix="gk-bench-exec-"))
    os.chmod(work, 0o755)
    try:
        if why:
            notes.append(f"not measured: {why}")
        else:
            common.log("gk exec parts")
            results["local"] = local_parts(sf, work / "local", n)
            common.log("ssh -> sshd variants")
            results["sshd"] = sshd_variants(sf, work / "sshd", n)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    common.emit(
        {
            "benchmark": "gk_exec",
            "quick": args.quick,
            "machine": common.machine_info(),
            "results": results,
            "targets": [],  # none set for gk exec; the 10 ms target is gk ssh vs plain exec
            "notes": notes,
        }
    )


if __name__ == "__main__":
    main()
