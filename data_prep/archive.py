"""Safe reading of zip archives: members come out as bytes, or as a typed error per member.

Rejected (as an error for that member, or for the whole archive): absolute names, ``..``
components, drive letters and backslash paths, symbolic links, members whose declared or actual
size is over :attr:`IngestLimits.max_file_bytes`, members whose compression ratio is over
:attr:`IngestLimits.max_compression_ratio` (zip bombs), archives with more members or more total
bytes than the limits. Nothing is ever extracted to a path taken from the archive.

Member names and the names of folders inside a study often carry patients' names, accession
numbers or UIDs, so no message here quotes them: a member or file is named by its position and
by non-identifying properties only (:func:`member_label`, e.g. "file 3 of the zip (.dcm,
5,242,880 bytes)"). Only the archive's own name, as the caller gave it, may appear.
"""

from __future__ import annotations

import logging
import os
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from data_prep.errors import IngestError, LimitExceededError, UnsafeArchiveError
from data_prep.types import IngestLimits

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20

SKIP_NAMES = frozenset({"DICOMDIR", ".DS_Store", "Thumbs.db"})
"""Base names that are never inputs (indexes and desktop litter); hidden names are skipped too."""

# Suffixes a message may show; any other suffix ("scan.Smith") could itself be part of a name.
_SHOWN_SUFFIXES = frozenset(
    {".dcm", ".dicom", ".dic", ".ima", ".zip", ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
    | {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".qptiff"}
)


def member_label(position: int, container: str, suffix: str, size: int | None) -> str:
    """How messages name a file inside a zip or folder: position and non-identifying properties.

    Args:
        position: 1-based position among the container's inputs (archive order for a zip, sorted
            path order for a folder).
        container: ``"zip"`` or ``"folder"``.
        suffix: the member's file suffix; shown only when it is a known image or DICOM suffix.
        size: its size in bytes, when known.

    Returns:
        e.g. ``"file 3 of the zip (.dcm, 5,242,880 bytes)"``; never any part of the member's name.
    """
    shown = suffix.lower() if suffix.lower() in _SHOWN_SUFFIXES else "no known suffix"
    props = shown if size is None else f"{shown}, {size:,} bytes"
    return f"file {position} of the {container} ({props})"


def is_skipped_name(name: str) -> bool:
    """Whether a file's base name is never an input (``DICOMDIR``, desktop litter, hidden files)."""
    return name in SKIP_NAMES or name.startswith(".")


@dataclass(frozen=True)
class ArchiveMember:
    """One member: its name inside the archive (never for messages), position, bytes or the refusal.

    Attributes:
        name: the member's name inside the archive; it may hold PHI, so it is used only to pick a
            reader by suffix, never in a message.
        data: the bytes, or None when the member was refused.
        error: why it was refused; its message names the member by :attr:`label` only.
        position: 1-based position among the archive's inputs.
        label: :func:`member_label` of the member.
    """

    name: str
    data: bytes | None
    error: IngestError | None = None
    position: int = 0
    label: str = ""


def folder_files(folder: Path) -> list[Path]:
    """Every non-hidden file under ``folder``, sorted, without following symbolic links.

    Symbolic links (to files or folders) are returned as they are, not followed, so that
    callers can refuse them; hidden names (starting with ``.``) are skipped.
    """
    out: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        base = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (base / d).is_symlink())
        out += [base / d for d in os.listdir(root) if (base / d).is_symlink() and (base / d).is_dir()]
        out += [base / f for f in files if not f.startswith(".")]
    return sorted(set(out))


def unsafe_name_reason(name: str) -> str | None:
    """Why a member name is unsafe, or None when it is a plain relative path."""
    if not name or "\x00" in name:
        return "has an empty or invalid name"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if "\\" in name:
        return "has a backslash in its path"
    if ".." in PurePosixPath(name).parts:
        return "has a '..' component in its path"
    return None


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return info.create_system == 3 and stat.S_ISLNK(mode)


def iter_zip(path: Path, *, limits: IngestLimits, name: str | None = None) -> Iterator[ArchiveMember]:
    """Yield the file members of a zip archive, refusing unsafe ones.

    Directories, hidden members and :data:`SKIP_NAMES` are skipped before members are numbered.
    Errors name a member by position, suffix and size (:func:`member_label`), never by its name.

    Args:
        path: the archive.
        limits: size caps.
        name: what to call the archive in messages (default: its file name, as the caller gave
            it; pass a label when the archive itself lies inside a study folder).

    Yields:
        One :class:`ArchiveMember` per file member, with ``data`` or ``error`` set.

    Raises:
        UnsafeArchiveError: the archive as a whole is unreadable or over a limit.
    """
    name = path.name if name is None else name
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise UnsafeArchiveError(f"{name} is not a readable zip archive") from e
    with zf:
        infos = [
            i for i in zf.infolist() if not i.is_dir() and not is_skipped_name(PurePosixPath(i.filename).name)
        ]
        if len(infos) > limits.max_archive_members:
            raise UnsafeArchiveError(
                f"{name} has {len(infos)} members, over the {limits.max_archive_members}-member limit"
            )
        declared = sum(i.file_size for i in infos)
        if declared > limits.max_archive_bytes:
            raise UnsafeArchiveError(
                f"{name} would expand to {declared} bytes, over the {limits.max_archive_bytes}-byte limit"
            )
        total = 0
        for position, info in enumerate(infos, start=1):
            member = info.filename
            label = member_label(position, "zip", PurePosixPath(member).suffix, info.file_size)
            reason = unsafe_name_reason(member)
            if reason is not None:
                error = UnsafeArchiveError(f"{label} {reason} and was skipped")
                yield ArchiveMember(member, None, error, position, label)
                continue
            if _is_symlink(info):
                error = UnsafeArchiveError(f"{label} is a symbolic link and was skipped")
                yield ArchiveMember(member, None, error, position, label)
                continue
            try:
                data = _read_capped(zf, info, label, limits)
            except IngestError as e:
                yield ArchiveMember(member, None, e, position, label)
                continue
            total += len(data)
            if total > limits.max_archive_bytes:
                raise UnsafeArchiveError(f"{name} expands past the {limits.max_archive_bytes}-byte limit")
            yield ArchiveMember(member, data, None, position, label)


def _read_capped(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, limits: IngestLimits) -> bytes:
    if info.file_size > limits.max_file_bytes:
        raise LimitExceededError(
            f"{label} is {info.file_size} bytes, over the {limits.max_file_bytes}-byte limit"
        )
    ratio_cap = limits.max_compression_ratio
    if info.compress_size > 0 and info.file_size / info.compress_size > ratio_cap and info.file_size > _CHUNK:
        raise UnsafeArchiveError(f"{label} has a compression ratio over {ratio_cap:g} (a possible zip bomb)")
    out = bytearray()
    cap = min(limits.max_file_bytes, max(info.file_size, 0) + _CHUNK)
    try:
        with zf.open(info) as fh:
            while True:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    break
                out += chunk
                if len(out) > cap:
                    raise UnsafeArchiveError(f"{label} expands past its declared size (a possible zip bomb)")
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as e:
        raise UnsafeArchiveError(f"{label} could not be decompressed ({type(e).__name__})") from e
    return bytes(out)
