"""Exports parse back to exactly what the index holds; the HTML report escapes log content and
renders in headless Chromium (skipped, saying so, when Chromium is not installed locally)."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gatekeeper.action import Action, Target, parse_entry
from gatekeeper.audit.export import CSV_FIELDS, export_csv, export_jsonl
from gatekeeper.audit.index import AuditIndex, Query
from gatekeeper.audit.report import render_report
from gatekeeper.audit.sync import sync
from gatekeeper.monitor.alerts import ListSink
from gatekeeper.monitor.scan import DirectorySource
from gatekeeper.monitor.testing import FastSigner, synthetic_entries, write_static_log
from personality.tlog import merkle
from personality.tlog.note import generate_signer, parse_vkey

ORIGIN = "example.com/audit-export"
NASTY = [
    b"echo \"a,b\" ; printf 'x\\ny' <script>alert(1)</script>",
    b"=cmd|' /C calc'!A0",
    b"echo \xff\xfe bytes",
    b"line1\nline2",
]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditIndex]:
    tmp = tmp_path_factory.mktemp("export")
    key = generate_signer(ORIGIN)
    entries, _ = synthetic_entries(500, workers=1)
    user = FastSigner()
    t = 1_780_100_000
    for i, cmd in enumerate(NASTY):
        entries.append(
            user.entry(
                Action(
                    "exec",
                    (Target("web-01"), Target("web-02")),
                    "root",
                    cmd,
                    bytes([9, i]) * 8,
                    t + i,
                    t + i + 60,
                    user.public,
                    "<b>why</b> & \u00e9",
                )
            )
        )
    entries.append(b"not an action\n")
    write_static_log(tmp / "log", entries, key)
    idx = AuditIndex.open(tmp / "audit.db", ORIGIN)
    idx.set_meta("vkey", key.verifier().vkey())
    assert (
        sync(
            idx, DirectorySource(tmp / "log"), [key.verifier()], ListSink(), workers=1, progress=False
        ).status
        == "ok"
    )
    yield idx
    idx.close()


def test_jsonl_parses_back(index: AuditIndex) -> None:
    out = io.StringIO()
    assert export_jsonl(index, Query(), out) == index.size == 505
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    rows = list(index.search(Query()))
    assert [d["index"] for d in docs] == list(range(505))
    for d, r in zip(docs, rows, strict=True):
        assert {k: d[k] for k in r.to_json()} == r.to_json()
        entry = base64.b64decode(d["entry"])
        assert base64.b64decode(d["leaf_hash"]) == merkle.leaf_hash(entry) and entry == index.entry(r.index)
    nasty = [d for d in docs if d["hosts"] == ["web-01", "web-02"]]
    assert [parse_entry(base64.b64decode(d["entry"])).action.command for d in nasty] == NASTY
    assert docs[-1]["status"] == "malformed" and docs[-1]["command"] is None


def test_csv_parses_back(index: AuditIndex) -> None:
    out = io.StringIO()
    assert export_csv(index, Query(hosts=["web-0*"]), out) == index.count(Query(hosts=["web-0*"]))
    reader = csv.DictReader(io.StringIO(out.getvalue(), newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_FIELDS
    got = list(reader)
    want = list(index.search(Query(hosts=["web-0*"])))
    assert len(got) == len(want) > 20
    for g, r in zip(got, want, strict=True):
        cmd = g["command"][1:] if g["command"].startswith("'=") else g["command"]
        assert (int(g["index"]), g["account"], cmd, g["hosts"]) == (
            r.index,
            r.account,
            r.command,
            " ".join(r.hosts),
        )
        assert g["verified"] == "yes" and g["signer"] == r.signer
    formula = [g for g in got if "calc" in g["command"]]
    assert formula and formula[0]["command"].startswith("'=")  # not run by a spreadsheet
    assert any("line1\nline2" == g["command"] for g in got)


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for _, v in attrs:
            assert not (v or "").startswith(("http:", "https:", "//")), "the report must be self-contained"

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_report_escapes_and_is_self_contained(index: AuditIndex) -> None:
    page = render_report(index, Query(), verifiers=[parse_vkey(index.meta("vkey") or "")], now=1_780_200_000)
    p = _Collect()
    p.feed(page)
    assert "script" not in p.tags  # the logged <script> is text, not markup
    text = "".join(p.text)
    assert "<script>alert(1)</script>" in text and "<b>why</b> & \u00e9" in text
    assert "signature verified now" in page
    for host in ("web-01", "db-01", "(unparsed entries)"):
        assert f'id="host-{host}"' in page
    assert "src=" not in page and "<link" not in page


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and raw RGB(A) rows of an 8-bit, non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, ctype = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (2, 6)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    bpp = 4 if ctype == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 0xFF
            elif f == 2:
                line[x] = (line[x] + b) & 0xFF
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian 'chromium' is not installed here (scripts/system-deps installs it)"
)
def test_report_renders_in_headless_chromium(index: AuditIndex, tmp_path: Path) -> None:
    html_file = tmp_path / "report.html"
    html_file.write_text(render_report(index, Query()), encoding="utf-8")
    shot = tmp_path / "shot.png"
    assert CHROMIUM is not None
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,900",
            html_file.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    width, height, rows = _png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 900)
    colours = {row[x : x + 3] for row in rows[::10] for x in range(0, len(row), 3 * 7)}
    assert len(colours) > 20  # text, cards, header: not a blank page
    header = rows[20][300:303]
    assert header[2] > header[0] + 20  # the dark blue header band is there (#1d2f4f)
    body = rows[450][1500:1503]
    assert min(body) > 200  # light page background / white cards below it
