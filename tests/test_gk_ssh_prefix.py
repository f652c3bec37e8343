"""Multi-host output prefixing: whole lines, any chunking, nothing lost or reordered."""

from __future__ import annotations

import io
import threading

from hypothesis import given
from hypothesis import strategies as st

from gatekeeper.client.run import _Prefixer, reason_for_status
from gatekeeper.gate import Reason


@given(st.binary(max_size=400), st.lists(st.integers(min_value=1, max_value=50), max_size=40))
def test_prefixer_keeps_every_byte_in_order(data: bytes, cuts: list[int]) -> None:
    out = io.BytesIO()
    p = _Prefixer(b"[h] ", out, threading.Lock())
    pos = 0
    for n in cuts:
        p.write(data[pos : pos + n])
        pos += n
    p.write(data[pos:])
    p.close()
    text = out.getvalue()
    expected = data + (b"\n" if data and not data.endswith(b"\n") else b"")
    lines = text.split(b"\n")[:-1] if text else []
    assert all(line.startswith(b"[h] ") for line in lines)
    assert b"".join(line[4:] + b"\n" for line in lines) == expected


def test_reason_for_status() -> None:
    assert reason_for_status(219) is Reason.REPLAY
    assert reason_for_status(0) is None
    assert reason_for_status(1) is None
