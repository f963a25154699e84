"""Inputs inside folders and zips: one :class:`Entry` per file, and how DICOM members group.

Shared by :mod:`data_prep.ingest` (per-input reports) and :mod:`data_prep.views` (model views).

A file inside a zip or a study folder is named, in every message and report, by its position and
non-identifying properties (:func:`data_prep.archive.member_label`): member and folder names can
hold patients' names, accession numbers or UIDs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_prep.archive import SKIP_NAMES, folder_files, is_skipped_name, iter_zip, member_label
from data_prep.errors import IngestError
from data_prep.types import IngestLimits

__all__ = ["SKIP_NAMES", "Entry", "folder_entries", "zip_entries"]


@dataclass
class Entry:
    """One input file: a path on disk, or bytes from a zip member.

    Attributes:
        source: what a report shows: the path the caller gave, or ``<that>#file-N`` for the N-th
            file of a folder or zip the caller gave.
        label: what messages call it: the file name the caller gave, or :func:`member_label`
            ("file 3 of the zip (.dcm, 5,242,880 bytes)") for a member; never a member's name.
        suffix: the lower-case file suffix, which picks the reader.
        path: the file on disk (None for a zip member).
        data: the zip member's bytes.
        error: why the member was refused before reading.
    """

    source: str
    label: str
    suffix: str
    path: Path | None = None
    data: bytes | None = None
    error: IngestError | None = None


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


def folder_entries(folder: Path, *, source: str | None = None) -> list[Entry]:
    """The input files of a folder, in sorted path order, each named by its position.

    Args:
        folder: the folder.
        source: the folder's own ``source`` (default: the path as given); members get ``#file-N``.

    Returns:
        One :class:`Entry` per file (a symbolic link becomes an entry with an error).
    """
    base = str(folder) if source is None else source
    files = [p for p in folder_files(folder) if not is_skipped_name(p.name)]
    entries = []
    for n, p in enumerate(files, start=1):
        if p.is_symlink():
            label = member_label(n, "folder", p.suffix, None)
            error = IngestError(f"{label} is a symbolic link and was skipped")
            entries.append(Entry(f"{base}#file-{n}", label, p.suffix.lower(), error=error))
        elif p.is_file():
            label = member_label(n, "folder", p.suffix, _size(p))
            entries.append(Entry(f"{base}#file-{n}", label, p.suffix.lower(), path=p))
    return entries


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def zip_entries(
    path: Path, limits: IngestLimits, *, source: str | None = None, name: str | None = None
) -> list[Entry]:
    """The input files of a zip, in archive order, each named by its position.

    Args:
        path: the archive.
        limits: size caps.
        source: the archive's own ``source`` (default: the path as given); members get ``#file-N``.
        name: what messages call the archive (default: its file name as given).

    Returns:
        One :class:`Entry` per member (a refused member becomes an entry with an error).

    Raises:
        UnsafeArchiveError: the archive as a whole is unreadable or over a limit.
    """
    base = str(path) if source is None else source
    return [
        Entry(f"{base}#file-{m.position}", m.label, Path(m.name).suffix.lower(), data=m.data, error=m.error)
        for m in iter_zip(path, limits=limits, name=name)
    ]
