"""gk agent status / gk agent unhalt --evidence-reviewed against a real head store and journal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gatekeeper.cli import main
from gatekeeper.journal import read_journal
from gatekeeper.verify.headstore import HeadStore

ORIGIN = "log.example/gatekeeper"
KNOWN = b"log.example/gatekeeper\n5\nAAAA\n\n\xe2\x80\x94 log.example/gatekeeper sig1\n"
OTHER = b"log.example/gatekeeper\n5\nBBBB\n\n\xe2\x80\x94 log.example/gatekeeper sig2\n"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    with HeadStore.open(d) as s:
        s.commit(ORIGIN, (5, b"\x01" * 32, KNOWN), newest_seq=0, spend=None, now=1_800_000_000)
    return d


def halt(state: Path) -> None:
    with HeadStore.open(state) as s:
        s.record_halt(
            kind="fork",
            origin=ORIGIN,
            detail="two roots for size 5",
            known=KNOWN,
            conflicting=OTHER,
            now=1_800_000_100,
        )


def test_status_not_halted(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agent", "status", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert "halted: no" in out
    assert f"newest head: {ORIGIN} size 5" in out
    assert "spent nonces: 0" in out


def test_status_halted_shows_both_checkpoints(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    halt(state)
    assert main(["agent", "status", "--state-dir", str(state)]) == 1
    out = capsys.readouterr().out
    assert "halted: YES since 2027-01-15T08:01:40Z (halt #1, fork): two roots for size 5" in out
    assert "    — log.example/gatekeeper sig1" in out and "    — log.example/gatekeeper sig2" in out
    assert main(["agent", "status", "--state-dir", str(state), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["halted"]["known_checkpoint"] == KNOWN.decode()
    assert report["halted"]["conflicting_checkpoint"] == OTHER.decode()
    assert report["heads"][0]["size"] == 5 and report["spent_nonces"] == 0


def test_unhalt_requires_the_flag(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    halt(state)
    assert main(["agent", "unhalt", "--state-dir", str(state)]) == 2
    assert "--evidence-reviewed" in capsys.readouterr().err
    with HeadStore.open(state) as s:
        assert s.halted() is not None


def test_unhalt_is_journalled(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    halt(state)
    rc = main(
        [
            "agent",
            "unhalt",
            "--state-dir",
            str(state),
            "--evidence-reviewed",
            "--note",
            "log operator rebuilt",
        ]
    )
    assert rc == 0
    assert "unhalted (cleared halts up to #1)" in capsys.readouterr().out
    with HeadStore.open(state) as s:
        assert s.halted() is None
        (u,) = s.unhalts()
        assert u.note == "log operator rebuilt" and "uid" in u.who and u.through_halt == 1
        assert len(s.halts()) == 1  # the evidence stays
    (rec,) = list(read_journal(state / "journal.jsonl"))
    assert rec["event"] == "unhalt" and rec["note"] == "log operator rebuilt" and rec["who"] == u.who
    assert rec["halt_conflicting_checkpoint"] == OTHER.decode() and rec["halt_id"] == 1
    assert main(["agent", "unhalt", "--state-dir", str(state), "--evidence-reviewed"]) == 0
    assert "not halted" in capsys.readouterr().out
    assert main(["agent", "status", "--state-dir", str(state)]) == 0
    assert "last unhalt:" in capsys.readouterr().out


def test_status_from_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from personality.tlog.note import generate_signer

    vkey = generate_signer(ORIGIN).verifier().vkey()
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent]\nname = "web-01"\nstate_dir = "st"\n\n[log]\nkeys = ["{vkey}"]\n')
    assert main(["agent", "status", "--config", str(config)]) == 0
    assert f"store: {tmp_path / 'st'}" in capsys.readouterr().out


def test_missing_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["agent", "status", "--config", str(tmp_path / "nope.toml")])
    err = capsys.readouterr().err
    assert rc == 78 and "nope.toml" in err and "Traceback" not in err and err.count("\n") == 1
