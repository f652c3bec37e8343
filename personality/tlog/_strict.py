"""Strict decoders shared by the tlog parsers. Each raises ``FormatError`` and nothing else."""

from __future__ import annotations

import base64
import binascii
import re

from personality.errors import FormatError

MAX_UINT63 = (1 << 63) - 1
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


def b64decode(text: str, what: str) -> bytes:
    """Standard base64 (RFC 4648 §4) with padding, in its one canonical spelling."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise FormatError(f"{what} is not valid base64: {text[:80]!r}") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise FormatError(f"{what} is not canonical base64: {text[:80]!r}")
    return raw


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decimal(text: str, what: str, maximum: int = MAX_UINT63) -> int:
    """An ASCII decimal without leading zeros (``0`` itself allowed), at most ``maximum``."""
    if not _DECIMAL.fullmatch(text):
        raise FormatError(f"{what} must be a decimal number without leading zeros, got {text[:40]!r}")
    value = int(text)
    if value > maximum:
        raise FormatError(f"{what} {value} is larger than {maximum}")
    return value


def utf8_text(data: bytes, what: str) -> str:
    """Decode UTF-8 and refuse ASCII control characters other than newline (CR, tab, NUL, ...)."""
    if not isinstance(data, bytes | bytearray):
        raise FormatError(f"{what} must be bytes, not {type(data).__name__}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"{what} is not valid UTF-8 (byte {e.start})") from None
    bad = _CONTROL.search(text)
    if bad:
        ch = bad.group()
        kind = "carriage return (CRLF line endings?)" if ch == "\r" else f"control character {ord(ch):#04x}"
        raise FormatError(f"{what} contains a {kind} at character {bad.start()}")
    return text
