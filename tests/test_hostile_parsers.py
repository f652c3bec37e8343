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

EXAMPLES = int(os.environ.get("GK_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    database=None if os.environ.get("GK_FUZZ_NO_DB") else settings.default.database,
)

#: Tokens that are structure in at least one of the formats under test.
TOKENS = [
    b"\n", b"\n\n", b"\r", b"\r\n", b"\x00", b" ", b"\t", "\u2014 ".encode(), b"\xe2\x80", b"+", b"=", b"/",
    b".p/", b"x", b"0", b"00", b"-", b'"', b"'", b",", b"[", b"]", b"{", b"}", b"\\", b"\xff", b"\xc3",
    b"\xed\xa0\x80", "\u2028".encode(), "\u202e".encode(), b"9223372036854775807", b"9223372036854775808",
    b"18446744073709551616", b"-1", b"1e309", b"NaN", b"Infinity", b"~", b"~root/", b"\x7f", b"#",
    b"-----BEGIN SSH SIGNATURE-----\n", b"-----END SSH SIGNATURE-----\n", b"SSHSIG", b"\x00\x00\x00\x01",
    b"\xff\xff\xff\xff", b"AAAA", b"====",
]


def _split_lines(data: bytearray) -> list[bytes]:
    return bytes(data).split(b"\n")


def _op_flip(draw: st.DrawFn, data: bytearray, seeds: tuple[bytes, ...]) -> bytearray:
    if data:
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= 1 << draw(st.integers(0, 7))
    return data


def _op_truncate(draw: st.DrawFn, data: bytearray, seeds: tuple[bytes, ...]) -> bytearray:
    return data[: draw(st.integers(0, len(data)))]


def _op_cut_front(draw: st.DrawFn, data: bytearray, seeds: tuple[bytes, ...]) -> bytearray:
    return data[draw(st.integers(0, len(data))):]


def _op_insert(draw: st.DrawFn, data: bytearray, seeds: tuple[bytes, ...]) -> bytearray:
    i = draw(st.integers(0, len(data)))
    chunk = draw(st.one_of(st.sampled_from(TOKENS), st.binary(min_size=1, max_size=16)))
    return data[:i] + chunk + data[i:]


def _op_replace(draw: st.DrawFn, data: bytearray, seeds: tuple[bytes, ...]) -> bytearray:
    if not data:
        return data
    i = draw(st.integers(0, len(data) - 1))
    n = draw(st.integers(1, 8))
    return data[:i] + draw(st.sampled_from(TOKENS)) + data[i + n:]


def _op_delete(draw: st.DrawFn, data: bytearray, seeds: tuple[bytes, ...]) -> bytearray:
    if not data:
        return data
    i = draw(st.integers(0, len(data) - 1))
    n = draw(st.integers(1, 64))
    return data[:i] + data[i + n:]


def _op_dup_line(draw: st.DrawFn, data: bytearray, seeds: tuple[bytes, ...]) -> bytearray:
    lines = _split_lines(data)
    i = draw(st.integers(0, len(lines) - 1))
    lines.insert(draw(st.integers(0, len(lines))), lines[i])
    return bytearray(b"\n".join(lines))


def _op_del_line(draw: st.DrawFn, data: bytearray, seeds: tuple[bytes, ...]) -> bytearray:
    lines = _split_lines(data)
    del lines[draw(st.integers(0, len(lines) - 1))]
    return bytearray(b"\n".join(lines))


def _op_swap_lines(draw: st.DrawFn, data: bytearray, seeds: tuple[bytes, ...]) -> bytearray:
    lines = _split_lines(data)
    i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
    lines[i], lines[j] = lines[j], lines[i]
    return bytearray(b"\n".join(lines))


def _op_splice(draw: st.DrawFn, data: bytearray, seeds: tuple[bytes, ...]) -> bytearray:
    other = draw(st.sampled_from(seeds))
    i = draw(st.integers(0, len(data)))
    j = draw(st.integers(0, len(other)))
    return data[:i] + other[j:]


def _op_number(draw: st.DrawFn, data: bytearray, seeds: tuple[bytes, ...]) -> bytearray:
    """Replace one run of digits with an extreme number."""
    runs = [(i, j) for i, j in _digit_runs(bytes(data))]
    if not runs:
        return data
    i, j = draw(st.sampled_from(runs))
    big = draw(st.sampled_from([b"0", b"00", b"01", b"-1", b"4294967296", b"9223372036854775807",
                                b"9223372036854775808", b"99999999999999999999999999", b"1" * 400]))
    return data[:i] + big + data[j:]


def _digit_runs(data: bytes) -> list[tuple[int, int]]:
    out, i = [], 0
    while i < len(data):
        if 48 <= data[i] <= 57:
            j = i
            while j < len(data) and 48 <= data[j] <= 57:
                j += 1
            out.append((i, j))
            i = j
        else:
            i += 1
    return out[:64]


OPS = [_op_flip, _op_truncate, _op_cut_front, _op_insert, _op_replace, _op_delete, _op_dup_line,
       _op_del_line, _op_swap_lines, _op_splice, _op_number]


def _as_bytes(x: bytes | str) -> bytes:
    return x if isinstance(x, bytes) else x.encode("utf-8", "surrogateescape")


@st.composite
def mutated(draw: st.DrawFn, seeds: tuple[bytes, ...]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        data = draw(st.sampled_from(OPS))(draw, data, seeds)
    return bytes(data)


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
    raw = tuple(_as_bytes(s) for s in T.seeds(name))
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
