"""``gk audit`` end to end on a static mirror: sync, list/search, show, prove, verify-bundle,
verify (full rebuild, and detection of an entry changed after indexing), export, report."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from gatekeeper.cli import main
from gatekeeper.cli.audit_cmd import parse_when
from gatekeeper.errors import ConfigError
from gatekeeper.monitor.testing import synthetic_entries, write_static_log
from personality.tlog.note import Signer, generate_signer
from personality.tlog.tiles import pack_entry_bundle, parse_entry_bundle

ORIGIN = "example.com/audit-cli"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Signer, list[bytes]]:
    key = generate_signer(ORIGIN)
    entries, _ = synthetic_entries(600, workers=1)
    write_static_log(tmp_path / "log", entries[:400], key)
    (tmp_path / "trusted").write_bytes((tmp_path / "log" / "checkpoint").read_bytes())
    return tmp_path, key, entries


def test_audit_flow(setup: tuple[Path, Signer, list[bytes]], capsys: pytest.CaptureFixture[str]) -> None:
    tmp, key, entries = setup
    vkey = key.verifier().vkey()
    db = str(tmp / "a.db")
    assert (
        main(["audit", "sync", "--index", db, "--log", str(tmp / "log"), "--log-key", vkey, "--workers", "1"])
        == 0
    )
    write_static_log(tmp / "log", entries, key)
    assert (
        main(["audit", "sync", "--index", db, "--log", str(tmp / "log"), "--log-key", vkey, "--no-progress"])
        == 0
    )
    assert "verified 600" in capsys.readouterr().err

    assert main(["audit", "list", "--index", db, "--limit", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[1].split()[0] == "599"

    assert main(["audit", "search", "--index", db, "--host", "db-0*", "--command", "shadow", "--json"]) == 0
    hits = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert hits and all(
        "shadow" in h["command"] and any(x.startswith("db-0") for x in h["hosts"]) for h in hits
    )
    assert main(["audit", "search", "--index", db, "--host", "db-0*", "--command", "shadow", "--count"]) == 0
    assert int(capsys.readouterr().out) == len(hits)
    since = hits[0]["not_before"]
    assert main(["audit", "search", "--index", db, "--since", since[:16], "--to", "10", "--json"]) == 0
    assert all(int(json.loads(x)["index"]) <= 10 for x in capsys.readouterr().out.splitlines())

    assert main(["audit", "show", "42", "--index", db]) == 0
    shown = capsys.readouterr().out
    assert "verified: included in the checkpoint of size 600" in shown and "signature: verified" in shown

    bundle = tmp / "p42.json"
    assert (
        main(["audit", "prove", "450", "--index", db, "--trusted", str(tmp / "trusted"), "-o", str(bundle)])
        == 0
    )
    assert (
        main(["audit", "verify-bundle", str(bundle), "--log-key", vkey, "--trusted", str(tmp / "trusted")])
        == 0
    )
    assert "your trusted checkpoint" in capsys.readouterr().out
    tampered = tmp / "bad.json"
    tampered.write_bytes(bundle.read_bytes().replace(b"index 450", b"index 451"))
    assert main(["audit", "verify-bundle", str(tampered), "--log-key", vkey]) == 76

    assert (
        main(
            [
                "audit",
                "export",
                "--index",
                db,
                "--format",
                "csv",
                "-o",
                str(tmp / "x.csv"),
                "--host",
                "bastion",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(io.StringIO((tmp / "x.csv").read_text(), newline="")))
    assert rows and all("bastion" in r["hosts"].split() for r in rows)
    assert main(["audit", "export", "--index", db, "--no-entries", "--account", "root"]) == 0
    docs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert docs and all(d["account"] == "root" and "entry" not in d for d in docs)

    assert main(["audit", "report", "--index", db, "--html", str(tmp / "r.html"), "--host", "web-01"]) == 0
    page = (tmp / "r.html").read_text()
    assert 'id="host-web-01"' in page and 'id="host-db-01"' not in page

    capsys.readouterr()
    assert (
        main(
            ["audit", "verify", "--log", str(tmp / "log"), "--log-key", vkey, "--index", db, "--workers", "1"]
        )
        == 0
    )
    assert "OK: size 600, root matches" in capsys.readouterr().err

    # the log operator swaps an already indexed entry and re-signs the whole tree: a rewrite of history
    items = parse_entry_bundle((tmp / "log" / "tile" / "entries" / "000").read_bytes())
    items[7] = entries[8]
    changed = entries[:7] + [entries[8]] + entries[8:]
    write_static_log(tmp / "log", changed, key)
    assert pack_entry_bundle(items) == (tmp / "log" / "tile" / "entries" / "000").read_bytes()
    assert main(["audit", "verify", "--log", str(tmp / "log"), "--log-key", vkey, "--index", db]) == 76
    err = capsys.readouterr().err
    assert "changed since they were indexed, first [7]" in err and "not on the log's history" in err
    assert main(["audit", "sync", "--index", db, "--log", str(tmp / "log"), "--log-key", vkey]) == 76
    assert '"kind":"fork"' in capsys.readouterr().err


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "list", "--index", str(tmp_path / "none.db")]) == 78
    assert "no audit index" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        parse_when("yesterday")
    with pytest.raises(ConfigError):
        parse_when("2026-02-30")
    assert parse_when("2026-11-17") == 1_794_873_600
    assert parse_when("2026-11-17T10:30Z") == 1_794_873_600 + 10 * 3600 + 1800
    assert parse_when("1794873600") == 1_794_873_600
