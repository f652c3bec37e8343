"""Structure-aware mutations of valid inputs, as hypothesis strategies (shared by the hostile-input
tests). ``mutated(seeds)`` draws one seed and applies 1-4 of :data:`OPS`; every op shrinks towards
"no change" so hypothesis reports small mutants."""

from __future__ import annotations

from hypothesis import strategies as st

__all__ = ["TOKENS", "OPS", "mutated", "as_bytes"]

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


def as_bytes(x: bytes | str) -> bytes:
    return x if isinstance(x, bytes) else x.encode("utf-8", "surrogateescape")


@st.composite
def mutated(draw: st.DrawFn, seeds: tuple[bytes, ...]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        data = draw(st.sampled_from(OPS))(draw, data, seeds)
    return bytes(data)


