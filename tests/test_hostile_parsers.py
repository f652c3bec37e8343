"""Hostile input for every parser: arbitrary bytes and mutations of valid inputs.

Each target in ``fuzz/targets.py`` gets two hypothesis tests:

- *arbitrary*: random bytes (or text, for parsers that take ``str``: random Unicode and random
  bytes decoded with ``surrogateescape``, as ``os.environ`` would hand them over);
- *mutated*: a valid input (signed with real keys, or from the upstream Tessera log) with 1-4
  mutations: bit flips, truncation, insertion of random bytes or of tokens that matter to these
  formats (newline, CR, NUL, em dash, ``+``, ``=``, quotes, brackets, huge numbers), deletion,
  duplicated / deleted / swapped lines, and splices of two valid inputs.

The property is always the same: the parser accepts the input and its round trip holds
(``format(parse(x)) == x`` where the format has one encoding), or it raises the package's own
error class. Anything else fails the test with the input that caused it.

Budget: ``GK_FUZZ_EXAMPLES`` examples per test (default 60 -- the whole file runs in well under a
minute); ``make fuzz`` runs it with 20000.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz import targets as T  # noqa: E402
from fuzz.mutate import as_bytes, mutated  # noqa: E402

EXAMPLES = int(os.environ.get("GK_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    database=None if os.environ.get("GK_FUZZ_NO_DB") else settings.default.database,
)

def arbitrary(kind: str) -> st.SearchStrategy[bytes | str]:
    if kind == "bytes":
        return st.binary(max_size=4096)
    return st.one_of(
        st.text(max_size=512),
        st.binary(max_size=1024).map(lambda b: b.decode("utf-8", "surrogateescape")),
    )


def run_target(name: str, data: bytes | str) -> None:
    """The oracle: accepted with the round trip, or refused with the package's error; known bugs
    (``fuzz.targets.KNOWN_BUGS``, each with a strict xfail test) are let through."""
    try:
        T.check(name, data)
    except Exception as exc:  # noqa: BLE001 - the finding; re-raised unless already reported
        if T.known_bug(name, exc) is None:
            raise


NAMES = sorted(T.TARGETS)


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.data())
def test_arbitrary_input(name: str, data: st.DataObject) -> None:
    run_target(name, data.draw(arbitrary(T.TARGETS[name].kind), label="input"))


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.data())
def test_mutated_valid_input(name: str, data: st.DataObject) -> None:
    target = T.TARGETS[name]
    raw = tuple(as_bytes(s) for s in T.seeds(name))
    mutant = data.draw(mutated(raw), label="mutant")
    run_target(name, mutant if target.kind == "bytes" else mutant.decode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("name", NAMES)
def test_every_target_has_a_seed_it_accepts(name: str) -> None:
    """Mutations start from inputs the parser accepts (else they would only test the first check).
    Targets that verify against keys the seeds were not made for are listed as exceptions."""
    refused_on_purpose = {"sshsig_blob_verify", "cosig_timestamp"}
    accepted = [T.check(name, s) for s in T.seeds(name)]
    assert accepted
    if name not in refused_on_purpose:
        assert any(accepted), f"no seed of {name} parses"


def test_mutations_change_the_input() -> None:
    """The mutation engine is not a no-op (else the mutated tests would test nothing)."""
    seeds = (b"line one\nline two 123\n",)

    @settings(max_examples=50, deadline=None, database=None)
    @given(mutated(seeds))
    def probe(m: bytes) -> None:
        changed.append(m != seeds[0])

    changed: list[bool] = []
    probe()
    assert sum(changed) >= 25
