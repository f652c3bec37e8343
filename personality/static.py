"""Static mirror: write a log's checkpoint and tiles as plain files any web server can serve.

``export_static(database, out)`` writes, under ``out``, exactly the C2SP tlog-tiles paths::

    out/checkpoint
    out/tile/<L>/<N>[.p/<W>]
    out/tile/entries/<N>[.p/<W>]

for the checkpoint committed in the SQLite store at the time of the call. It reads the store as a
reader (no sequencer lock), so it can run while ``gk log serve`` is writing. It is incremental:
full tiles already present are skipped (they never change); partial tiles of the current size
are written; older partial tiles are left in place, because clients holding an older checkpoint
may still ask for them. Every file is written to a temporary name and renamed into place, and the
tiles are flushed to disk (``os.sync``) before the checkpoint is replaced, so a reader that
follows the checkpoint always finds its tiles, also after a power loss.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from personality.errors import StorageError
from personality.storage.base import SequencingStore, TileStore
from personality.tlog.checkpoint import parse_signed_checkpoint
from personality.tlog.tiles import TILE_WIDTH, entry_bundles_for_size, format_tile_path, tiles_for_size

__all__ = ["ExportResult", "export_static", "export_from_stores"]


@dataclass(frozen=True)
class ExportResult:
    size: int
    written: int
    skipped: int


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def export_from_stores(
    sequencing: SequencingStore, tiles: TileStore, out: str | os.PathLike[str]
) -> ExportResult:
    """Write the committed checkpoint of these stores and every tile it needs under ``out``."""
    root = Path(out)
    raw = sequencing.checkpoint()
    if raw is None:
        raise StorageError("the log has no checkpoint yet; start it once with `gk log serve`")
    size = parse_signed_checkpoint(raw).size
    written = skipped = 0
    try:
        for tp in [*tiles_for_size(size), *entry_bundles_for_size(size)]:
            dest = root / format_tile_path(tp)
            if (
                tp.width == TILE_WIDTH
                and dest.exists()
                and (tp.level is None or dest.stat().st_size == 32 * TILE_WIDTH)
            ):
                skipped += 1
                continue
            _write_atomic(dest, tiles.get_tile(tp))
            written += 1
        if written:
            os.sync()
        _write_atomic(root / "checkpoint", raw)
    except OSError as exc:
        raise StorageError(f"cannot write the static mirror under {root}: {exc}") from exc
    return ExportResult(size, written, skipped)


def export_static(database: str | os.PathLike[str], out: str | os.PathLike[str]) -> ExportResult:
    """:func:`export_from_stores` for the SQLite log at ``database``."""
    from personality.storage.sqlite import open_sqlite

    if not Path(database).exists():
        raise StorageError(f"{database} does not exist: is this a log directory?")
    seq, tiles = open_sqlite(database)
    try:
        return export_from_stores(seq, tiles, out)
    finally:
        tiles.close()
        seq.close()
