"""Run every ``bench/bench_*.py`` and write one report: ``bench/results/report.{json,md}``.

Run: ``make bench`` or ``.venv/bin/python bench/run_all.py [--quick] [--only merkle,crypto_limits]
[--timeout SECONDS] [--out DIR]``.

Each script runs as its own subprocess with the virtualenv's Python (so one crash or hang cannot
take the others down), one after the other (so they do not compete for the two cores). A script
gets ``--quick`` when ``run_all`` does and the script's source declares that option. Its stdout
must be one JSON object; a non-zero exit, a timeout or unparsable output is reported as *failed*
with the tail of its stderr, and the next script runs.

The report has the machine (CPU, cores, Python, SQLite, OpenSSL, load average, date), the targets
from the issues with where each stands (met / not met / not measured), then one section per
script: its own tables (a ``"tables"`` list in its JSON, if any), its own targets, and every other
number it printed. Exit status: 0 if every script succeeded, 1 otherwise (targets not met do not
change the exit status: they are findings, not failures).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import log, machine_info  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
STDERR_TAIL = 30
_NUMBER = (int, float)


@dataclass(frozen=True)
class IssueTarget:
    """A target stated in an issue, and where in which script's JSON its value may be found.

    ``paths`` are tried in order: ``(script glob, dotted path, scale)``; ``*`` in a path matches
    any key or list element. The first number found wins and is multiplied by ``scale``.
    """

    issue: int
    text: str
    op: str  # ">=" or "<="
    target: float
    unit: str
    paths: tuple[tuple[str, str, float], ...]


# Paths name the keys the scripts print today; a script that renames a key shows up here as
# "not measured" rather than silently passing.
ISSUE_TARGETS: tuple[IssueTarget, ...] = (
    IssueTarget(2, "log: entries integrated per second in process, durable (SQLite)", ">=", 100_000,
                "entries/s", (
                    ("bench_log_integrate.py", "results.integrate.entries_per_s", 1),
                    ("bench_vs_pymerkle.py", "results.headline.ours_sqlite_batched_append_per_s", 1),
                )),
    IssueTarget(2, "log: HTTP adds per second with 64 concurrent clients", ">=", 5_000, "entries/s", (
        ("bench_log_http.py", "results.http.c64.entries_per_s", 1),
    )),
    IssueTarget(2, "log: add latency p50 at light load (1 client)", "<=", 2.0, "ms", (
        ("bench_log_http.py", "results.http.c1.p50_ms", 1),
    )),
    IssueTarget(2, "log: inclusion proof p50 at 1 M entries (SQLite)", "<=", 1.0, "ms", (
        ("bench_log_proofs.py", "results.proofs.by_size.1000000.inclusion.p50_ms", 1),
        ("bench_vs_pymerkle.py", "results.headline.ours_sqlite_inclusion_p50_us_1m", 0.001),
    )),
    IssueTarget(2, "log: consistency proof p50 at 1 M entries (SQLite)", "<=", 1.0, "ms", (
        ("bench_log_proofs.py", "results.proofs.by_size.1000000.consistency.p50_ms", 1),
        ("bench_vs_pymerkle.py", "results.headline.ours_sqlite_consistency_p50_us_1m", 0.001),
    )),
    IssueTarget(4, "agent: verification CPU per command (fast path), median", "<=", 1.0, "ms", (
        ("bench_verify.py", "decide_cpu_us.median", 0.001),
        ("bench_verify.py", "results.decide_cpu_us.median", 0.001),
    )),
    IssueTarget(4, "agent: `true` over SSH (asyncssh client), gate on minus gate off, median", "<=", 3.0,
                "ms", (
                    ("bench_agent_overhead.py", "results.asyncssh.overhead_median_ms", 1),
                )),
    IssueTarget(4, "agent: `true` over SSH (OpenSSH client), gate on minus gate off, median", "<=", 3.0,
                "ms", (
                    ("bench_agent_overhead.py", "results.openssh.overhead_median_ms", 1),
                )),
    IssueTarget(5, "gk ssh: `gk ssh host true` minus plain paramiko, asyncssh agent, median", "<=", 10.0,
                "ms", (
                    ("bench_gk_ssh.py", "results.overhead_median_ms", 1),
                )),
    IssueTarget(5, "gk ssh: the same against sshd + gk exec (vs gk exec with the gate off), median", "<=",
                10.0, "ms", (
                    ("bench_gk_ssh.py", "results.sshd_overhead_median_ms", 1),
                )),
    IssueTarget(6, "monitor: tree rebuild from entry bundles", ">=", 500_000, "entries/s", (
        ("bench_monitor.py", "results.rebuild_entries_per_s", 1),
    )),
    IssueTarget(6, "monitor: with every action's signature verified (both cores)", ">=", 20_000,
                "entries/s", (
                    ("bench_monitor.py", "results.verify_entries_per_s", 1),
                )),
    IssueTarget(7, "bench: largest log size measured side by side with pymerkle", ">=", 1_000_000,
                "entries", (
                    ("bench_vs_pymerkle.py", "results.headline.largest_size", 1),
                )),
)


# -- running ---------------------------------------------------------------------------------------


def python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def supports_quick(script: Path) -> bool:
    """True if the script declares ``--quick`` (directly or through ``common.arg_parser``)."""
    src = script.read_text(encoding="utf-8", errors="replace")
    return bool(re.search(r"""["']--quick["']|common\.arg_parser\(|\barg_parser\(""", src))


def discover(only: list[str] | None, directory: Path = BENCH) -> list[Path]:
    scripts = sorted(directory.glob("bench_*.py"))
    if only:
        wanted = {o if o.startswith("bench_") else f"bench_{o}" for o in only}
        wanted = {w if w.endswith(".py") else f"{w}.py" for w in wanted}
        scripts = [s for s in scripts if s.name in wanted]
    return scripts


def _first_json_object(text: str) -> dict[str, Any] | None:
    text = text.strip()
    try:
        obj = json.loads(text)
        return obj if isinstance(obj, dict) else None
    except ValueError:
        pass
    # Tolerate stray lines before the object: parse from the first line that starts with "{".
    for m in re.finditer(r"^\{", text, re.M):
        try:
            obj = json.loads(text[m.start():])
        except ValueError:
            continue
        return obj if isinstance(obj, dict) else None
    return None


def run_script(script: Path, quick: bool, timeout: float) -> dict[str, Any]:
    """Run one script; never raises. The child gets its own process group, killed on timeout."""
    argv = [python(), str(script)] + (["--quick"] if quick and supports_quick(script) else [])
    log(f"running {script.name} {' '.join(argv[2:])}")
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    status = "ok"
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        status = "timeout"
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group of the child we started, by its id
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
    seconds = time.perf_counter() - t0
    stdout = out.decode("utf-8", "replace")
    stderr = err.decode("utf-8", "replace")
    shown = [os.path.relpath(argv[1], REPO) if argv[1].startswith(str(REPO)) else argv[1], *argv[2:]]
    result: dict[str, Any] = {
        "script": script.name,
        "argv": shown,
        "seconds": round(seconds, 1),
        "returncode": proc.returncode,
    }
    obj = _first_json_object(stdout) if status == "ok" else None
    if status == "ok" and proc.returncode != 0:
        status = "failed"
    if status == "ok" and obj is None:
        status = "failed"
        stderr += "\n(run_all: stdout was not one JSON object)\n" + stdout[-2000:]
    result["status"] = status
    result["output"] = obj
    if status != "ok":
        result["stderr_tail"] = "\n".join(stderr.rstrip().splitlines()[-STDERR_TAIL:])
    log(f"{script.name}: {status} in {seconds:.1f} s")
    return result


# -- targets ---------------------------------------------------------------------------------------


def lookup(obj: Any, path: str) -> float | None:
    """The first number at dotted ``path`` in ``obj`` (``*`` matches any key or list element)."""
    parts = path.split(".")

    def walk(node: Any, i: int) -> float | None:
        if i == len(parts):
            return float(node) if isinstance(node, _NUMBER) and not isinstance(node, bool) else None
        key = parts[i]
        children: list[Any] = []
        if isinstance(node, dict):
            children = list(node.values()) if key == "*" else ([node[key]] if key in node else [])
        elif isinstance(node, list):
            if key == "*":
                children = node
            elif key.isdigit() and int(key) < len(node):
                children = [node[int(key)]]
        for child in children:
            found = walk(child, i + 1)
            if found is not None:
                return found
        return None

    return walk(obj, 0)


def evaluate_targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for t in ISSUE_TARGETS:
        value, source = None, None
        for glob, path, scale in t.paths:
            for r in runs:
                if r["status"] == "ok" and fnmatch.fnmatch(r["script"], glob):
                    v = lookup(r["output"], path)
                    if v is not None:
                        value, source = v * scale, f"{r['script']}: {path}"
                        break
            if value is not None:
                break
        met = None if value is None else (value >= t.target if t.op == ">=" else value <= t.target)
        out.append({"issue": t.issue, "name": t.text, "op": t.op, "target": t.target, "unit": t.unit,
                    "value": value, "met": met, "source": source})
    return out


def script_targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Targets the scripts report themselves: a ``targets`` list, or ``meets_target`` booleans."""
    out = []
    for r in runs:
        obj = r.get("output") or {}
        for t in obj.get("targets", []) if isinstance(obj.get("targets"), list) else []:
            if isinstance(t, dict) and "name" in t:
                out.append({**t, "script": r["script"]})
        if isinstance(obj.get("meets_target"), bool):
            out.append({"script": r["script"], "name": "meets_target, as printed by the script; target",
                        "value": None, "met": obj["meets_target"], "op": "",
                        "target": obj.get("target_cpu_us", obj.get("target_overhead_ms", "")), "unit": ""})
    return out


# -- markdown --------------------------------------------------------------------------------------


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v == int(v) and abs(v) >= 1000:
            return f"{int(v):,}"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    text = str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def status_word(met: bool | None) -> str:
    return "not measured" if met is None else ("**met**" if met else "**NOT met**")


def value_cell(t: dict[str, Any]) -> str:
    return "see script" if t.get("value") is None and t.get("met") is not None else fmt(t.get("value"))


def md_table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return lines


_SKIP_KEYS = {"machine", "tables", "targets", "notes", "benchmark", "reference"}


def _is_summary(d: Any) -> bool:
    return isinstance(d, dict) and ("p50" in d or "median" in d) and all(
        isinstance(v, _NUMBER) for v in d.values())


def flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Leaf values of a JSON object as (dotted path, value); latency summaries stay one value."""
    rows: list[tuple[str, Any]] = []
    if _is_summary(obj):
        keys = [k for k in ("p50", "median", "p90", "p99", "max") if k in obj]
        rows.append((prefix, " / ".join(f"{k} {fmt(obj[k])}" for k in keys)))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if not prefix and k in _SKIP_KEYS:
                continue
            rows += flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj):
        for i, x in enumerate(obj):
            label = x.get("size", x.get("name", i)) if isinstance(x, dict) else i
            rows += flatten(x, f"{prefix}[{label}]")
    else:
        rows.append((prefix, obj if not isinstance(obj, list) else ", ".join(fmt(x) for x in obj)))
    return rows


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Gatekeeper benchmark report",
        "",
        f"Generated {m.get('date')} by `bench/run_all.py{' --quick' if report['quick'] else ''}` "
        f"in {report['seconds']:.0f} s. How each number is measured: docs/benchmarks.md.",
        "",
        "## Machine",
        "",
    ]
    lines += md_table(["", ""], [
        ["CPU", f"{m.get('cpu')} ({m.get('cores')} cores)"],
        ["Memory", f"{m.get('mem_total_mib')} MiB"],
        ["Kernel", m.get("kernel")],
        ["Python", m.get("python")],
        ["SQLite", m.get("sqlite")],
        ["OpenSSL", m.get("openssl")],
        ["cryptography / aiohttp / asyncssh / pymerkle",
         " / ".join(str(m.get(k)) for k in ("cryptography", "aiohttp", "asyncssh", "pymerkle"))],
        ["Load average at start / end", f"{m.get('loadavg')} / {report.get('loadavg_end')}"],
    ])
    lines += ["", "## Targets from the issues", ""]
    lines += md_table(["issue", "target", "measured", "status", "from"], [
        [f"#{t['issue']}", f"{t['name']} {t['op']} {fmt(t['target'])} {t['unit']}",
         "–" if t["value"] is None else f"{fmt(t['value'])} {t['unit']}", status_word(t["met"]),
         t["source"] or "no script printed it"]
        for t in report["targets"]
    ])
    if report["script_targets"]:
        lines += ["", "Checks the scripts report themselves:", ""]
        lines += md_table(["script", "check", "measured", "status"], [
            [t["script"], f"{t['name']} {t.get('op', '')} {fmt(t.get('target'))} {t.get('unit', '')}".strip(),
             value_cell(t), status_word(t.get("met"))]
            for t in report["script_targets"]
        ])
    lines += ["", "## Scripts", ""]
    lines += md_table(["script", "status", "seconds"], [
        [r["script"], r["status"] if r["status"] == "ok" else f"**{r['status'].upper()}**", r["seconds"]]
        for r in report["runs"]
    ])
    for r in report["runs"]:
        cmd = " ".join(r["argv"])
        lines += ["", f"### {r['script']}", "", f"`{cmd}` — {r['status']} in {r['seconds']} s", ""]
        if r["status"] != "ok":
            lines += ["```", r.get("stderr_tail", ""), "```"]
            continue
        obj = r["output"]
        for table in obj.get("tables", []) if isinstance(obj.get("tables"), list) else []:
            if isinstance(table, dict) and "columns" in table and "rows" in table:
                lines += [f"**{table.get('title', '')}**", ""]
                lines += md_table(table["columns"], table["rows"]) + [""]
        has_tables = bool(obj.get("tables"))
        rows = flatten(obj)
        if rows:
            if has_tables:  # the script's own tables say it; keep every value one click away
                lines += ["<details><summary>every value printed</summary>", ""]
            lines += md_table(["value", "measured"], [[k, v] for k, v in rows[:150]])
            if len(rows) > 150:
                lines.append(f"\n({len(rows) - 150} more values in report.json)")
            if has_tables:
                lines += ["", "</details>"]
        notes = obj.get("notes")
        if isinstance(notes, list) and notes:
            lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="pass --quick to every script that takes it")
    p.add_argument("--only", help="comma-separated script names (merkle or bench_merkle.py)")
    p.add_argument("--timeout", type=float, help="seconds per script (default 900; 300 with --quick)")
    p.add_argument("--out", type=Path, default=BENCH / "results", help="output directory")
    p.add_argument("--dir", type=Path, default=BENCH, help="where the bench_*.py scripts are")
    args = p.parse_args()
    timeout = args.timeout or (300.0 if args.quick else 900.0)
    scripts = discover(args.only.split(",") if args.only else None, args.dir)
    if not scripts:
        print("run_all: no benchmark scripts matched", file=sys.stderr)
        return 2
    machine = machine_info()
    t0 = time.perf_counter()
    runs = [run_script(s, args.quick, timeout) for s in scripts]
    report = {
        "quick": args.quick,
        "machine": machine,
        "loadavg_end": machine_info().get("loadavg"),
        "seconds": round(time.perf_counter() - t0, 1),
        "targets": evaluate_targets(runs),
        "script_targets": script_targets(runs),
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    failed = [r["script"] for r in runs if r["status"] != "ok"]
    log(f"wrote {args.out / 'report.md'} and report.json; {len(runs) - len(failed)}/{len(runs)} scripts ok"
        + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
