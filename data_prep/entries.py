"""Inputs inside folders and zips: one :class:`Entry` per file, and how DICOM members group.

Shared by :mod:`data_prep.ingest` (per-input reports) and :mod:`data_prep.views` (model views).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_prep.archive import folder_files, iter_zip
from data_prep.errors import IngestError
from data_prep.types import IngestLimits

SKIP_NAMES = frozenset({"DICOMDIR", ".DS_Store", "Thumbs.db"})


@dataclass
class Entry:
    """One input file: a path on disk, or bytes from a zip member."""

    source: str
    name: str
    path: Path | None = None
    data: bytes | None = None
    error: IngestError | None = None

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix.lower()


def series_key(ds: Any) -> str | None:
    """The SeriesInstanceUID of a single-frame greyscale image with pixel data, else None."""
    try:
        if "PixelData" not in ds or int(ds.get("NumberOfFrames", 1) or 1) != 1:
            return None
        if str(ds.get("PhotometricInterpretation", "")).upper() not in ("MONOCHROME1", "MONOCHROME2"):
            return None
        uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
        return uid or None
    except (TypeError, ValueError):
        return None


def is_volume(datasets: Sequence[Any]) -> bool:
    """At least two distinct instances of one size: a stack of slices, not re-encodings of one image."""
    if len(datasets) < 2:
        return False
    sop = [str(ds.get("SOPInstanceUID", "") or "") for ds in datasets]
    if len(set(sop)) != len(sop):
        return False
    sizes = {(ds.get("Rows"), ds.get("Columns")) for ds in datasets}
    return len(sizes) == 1


def source_of(entry: Entry) -> Path | bytes:
    if entry.data is not None:
        return entry.data
    assert entry.path is not None
    return entry.path


def on_disk(entry: Entry, tmp: Path) -> Path:
    """A path for backends that need a file (zip members are written under a private temp dir)."""
    if entry.path is not None:
        return entry.path
    target = tmp / f"member-{abs(hash(entry.source)) % 10**8}{entry.suffix}"
    target.write_bytes(entry.data or b"")
    return target


def folder_entries(folder: Path) -> list[Entry]:
    entries = []
    for p in folder_files(folder):
        if p.name in SKIP_NAMES:
            continue
        if p.is_symlink():
            entries.append(
                Entry(str(p), p.name, error=IngestError(f"{p.name} is a symbolic link and was skipped"))
            )
        elif p.is_file():
            entries.append(Entry(str(p), p.name, path=p))
    return entries


def zip_entries(path: Path, limits: IngestLimits) -> list[Entry]:
    entries = []
    for m in iter_zip(path, limits=limits):
        base = Path(m.name).name
        if base in SKIP_NAMES or base.startswith("."):
            continue
        entries.append(Entry(f"{path}!{m.name}", base, data=m.data, error=m.error))
    return entries
