"""The streaming tree builder equals the reference compact range, for any start and any split."""

from __future__ import annotations

import hashlib
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.monitor.scan import Progress, TreeBuilder
from personality.tlog import merkle


def leaves(n: int, salt: int = 0) -> list[bytes]:
    return [hashlib.sha256(f"{salt}-{i}".encode()).digest() for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(0, 1300),
    cuts=st.lists(st.integers(0, 700), max_size=5),
)
def test_tree_builder_matches_compact_range(start: int, cuts: list[int]) -> None:
    ls = leaves(start + sum(cuts))
    ref = merkle.CompactRange()
    ref.extend(ls[:start])
    tb = TreeBuilder(ref.copy())
    assert tb.size == start and tb.compact().hashes == ref.hashes
    pos = start
    for c in cuts:
        nodes: list[tuple[int, int, bytes]] = []
        tb.extend(ls[pos : pos + c], nodes)
        want = [n for n in ref.extend(ls[pos : pos + c]) if n[0] >= 8 and n[0] % 8 == 0]
        assert sorted(nodes) == sorted(want)
        pos += c
        got = tb.compact()
        assert (got.size, got.hashes, got.root()) == (ref.size, ref.hashes, ref.root())


def test_big_aligned_and_unaligned_roots() -> None:
    ls = leaves(70_000, 1)
    full = merkle.root_from_leaf_hashes(ls)
    for start in (0, 255, 256, 65_536, 65_537):
        ref = merkle.CompactRange()
        ref.extend(ls[:start])
        tb = TreeBuilder(ref)
        tb.extend(ls[start:])
        assert tb.compact().root() == full


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal() -> None:
    tty = _Tty()
    bar = Progress("prod", 1000, stream=tty)
    bar.advance(400)
    bar.advance(600)
    bar.finish()
    out = tty.getvalue()
    assert out.startswith("\rprod [") and "100.0% 1,000/1,000" in out and out.endswith("\n")
    pipe = io.StringIO()
    quiet = Progress("prod", 1000, stream=pipe)
    quiet.advance(1000)
    quiet.finish()
    assert pipe.getvalue() == ""
    assert Progress("prod", 1000, stream=_Tty(), enabled=False).enabled is False
