"""Any input as the views a model should see: :func:`load_views`, the app's one entry to ``data_prep``.

A folder or zip must hold one study (one StudyInstanceUID); members left out are reported as
warnings on every view, by position only ("file 3 of 5"), never by a name that could be PHI.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.dicom import captured_warnings, dicom_view, read_dataset
from data_prep.entries import Entry, folder_entries, is_volume, on_disk, series_key, source_of, zip_entries
from data_prep.errors import (
    CorruptFileError,
    EmptyInputError,
    IngestError,
    LimitExceededError,
    MissingAttributeError,
    NotDicomError,
    PixelDataError,
    SeriesError,
    SlideError,
    UnsafeArchiveError,
    UnsupportedFormatError,
)
from data_prep.images import IMAGE_SUFFIXES, image_view
from data_prep.pseudonym import PseudonymKey
from data_prep.series import assemble_volume, multi_window_view, series_views
from data_prep.slides import SLIDE_SUFFIXES, is_dicom_wsi, slide_views
from data_prep.types import ImageView, IngestLimits


def load_views(
    path: Path,
    *,
    preset: str | None = None,
    frame: int | None = None,
    max_tiles: int = 8,
    limits: IngestLimits | None = None,
    key: PseudonymKey | None = None,
) -> list[ImageView]:
    """Load any input as the views a model should see.

    A DICOM file gives its windowed frame (plus, for CT, a lung/mediastinum/bone RGB view); a
    folder or zip of slices gives key slice, montage, MIP (and CT multi-window) per series; a slide
    gives its thumbnail then the top ``max_tiles`` tissue tiles at 0.5 µm/px; a PNG/JPEG gives
    itself.

    Args:
        path: a DICOM file, a series folder or zip, a slide, or a plain image.
        preset: CT window preset (``lung``, ``mediastinum``, ``bone``, ``brain``, ``abdomen``, ``stroke``).
        frame: zero-based frame of a multi-frame DICOM (middle frame when None).
        max_tiles: tiles taken from a slide.
        limits: size caps (defaults when None).
        key: pseudonymisation key for ``study_id``, resolved once by the entry point
            (:func:`data_prep.pseudonym.resolve_key`); None gives views without a study id.

    Returns:
        The views, never empty. For a folder or zip, every view's ``warnings`` also says which
        members were left out and why, by position ("file 3 of 5 …"), never by name.

    Raises:
        IngestError: the input cannot be read (the first error of a collection), or a folder or
            zip holds more than one study (different StudyInstanceUIDs).
        ValueError: bad ``preset`` or ``frame``.
    """
    limits = limits or IngestLimits()
    suffix = path.suffix.lower()
    if path.is_file() and suffix in SLIDE_SUFFIXES:
        try:
            return slide_views(path, max_tiles=max_tiles, limits=limits)
        except IngestError:
            if suffix not in (".tif", ".tiff"):
                raise
            return [image_view(path, name=path.name, limits=limits)]
    if path.is_file() and suffix in IMAGE_SUFFIXES:
        return [image_view(path, name=path.name, limits=limits)]
    if path.is_file() and suffix != ".zip":
        notes: list[str] = []
        with captured_warnings(notes):
            ds = read_dataset(path, name=path.name, limits=limits)
        if is_dicom_wsi(ds):
            return slide_views([path], max_tiles=max_tiles, limits=limits)
        view, decoded = dicom_view(ds, name=path.name, limits=limits, key=key, preset=preset, frame=frame)
        view = replace(view, warnings=tuple(dict.fromkeys([*view.warnings, *notes])))
        views = [view]
        if view.modality == "CT" and view.pixels.ndim == 2 and decoded.stored.ndim == 2:
            from data_prep.dicom import frame_attributes
            from data_prep.windowing import modality_lut

            hu, _ = modality_lut(decoded.stored, frame_attributes(ds, decoded.index))
            views.append(
                multi_window_view(
                    np.asarray(hu),
                    description_prefix=f"DICOM CT frame {decoded.index + 1} of {decoded.frames}",
                    modality="CT",
                    body_part=view.body_part,
                    kind="dicom",
                    study_id=view.study_id,
                    warnings=view.warnings,
                )
            )
        return views
    return _collection_views(path, preset=preset, frame=frame, max_tiles=max_tiles, limits=limits, key=key)


_SKIP_REASONS: tuple[tuple[type[IngestError], str], ...] = (
    (CorruptFileError, "it is truncated or corrupt"),
    (NotDicomError, "it is not a DICOM file or a supported image"),
    (EmptyInputError, "it is empty"),
    (UnsafeArchiveError, "it was refused as unsafe"),
    (LimitExceededError, "it is over a size limit"),
    (UnsupportedFormatError, "its format or codec is not supported"),
    (MissingAttributeError, "it lacks an attribute needed to show it"),
    (PixelDataError, "its pixel data could not be decoded"),
    (SlideError, "the slide could not be read"),
    (SeriesError, "its slices could not be assembled"),
)


def _skip_warning(position: str, error: IngestError) -> str:
    """One PHI-free sentence for a member left out: its position and the kind of failure, no name."""
    reason = next((text for cls, text in _SKIP_REASONS if isinstance(error, cls)), "it could not be read")
    return f"{position} was left out because {reason}."


@dataclass
class _Collected:
    """What a folder or zip held, before decoding: readable parts by kind, and what was skipped."""

    views: list[ImageView] = field(default_factory=list)
    datasets: dict[str, list[tuple[int, str, Any]]] = field(default_factory=dict)
    wsi: dict[str, list[Path]] = field(default_factory=dict)
    studies: set[str] = field(default_factory=set)
    skipped: list[str] = field(default_factory=list)
    first_error: IngestError | None = None

    def skip(self, position: str, error: IngestError) -> None:
        self.skipped.append(_skip_warning(position, error))
        self.first_error = self.first_error or error


def _collect(entries: Sequence[Entry], tmp: Path, *, max_tiles: int, limits: IngestLimits) -> _Collected:
    """Read every member once: plain images and slides become views, DICOM data sets are grouped."""
    found = _Collected()
    total = len(entries)
    for number, entry in enumerate(entries, start=1):
        try:
            if entry.error is not None:
                raise entry.error
            if entry.suffix in SLIDE_SUFFIXES:
                path = on_disk(entry, tmp)
                found.views += slide_views(path, max_tiles=max_tiles, limits=limits, name=entry.label)
            elif entry.suffix in IMAGE_SUFFIXES:
                found.views.append(image_view(source_of(entry), name=entry.label, limits=limits))
            else:
                with captured_warnings([]):
                    ds = read_dataset(source_of(entry), name=entry.label, limits=limits)
                study = str(ds.get("StudyInstanceUID", "") or "").strip()
                if study:
                    found.studies.add(study)
                if is_dicom_wsi(ds):
                    series = str(ds.get("SeriesInstanceUID", ""))
                    found.wsi.setdefault(series, []).append(on_disk(entry, tmp))
                    continue
                uid = series_key(ds) or f"single:{entry.source}"
                found.datasets.setdefault(uid, []).append((number, entry.label, ds))
        except IngestError as e:
            found.skip(f"file {number} of {total}", e)
    return found


def _collection_views(
    path: Path,
    *,
    preset: str | None,
    frame: int | None,
    max_tiles: int,
    limits: IngestLimits,
    key: PseudonymKey | None,
) -> list[ImageView]:
    """Views of a folder or zip that holds one study; members left out become warnings on every view."""
    if path.is_dir():
        entries = folder_entries(path)
    elif path.is_file():
        entries = zip_entries(path, limits)
    else:
        raise IngestError(f"{path.name} does not exist")
    total = len(entries)
    with tempfile.TemporaryDirectory(prefix="medvlm-views-") as tmpdir:
        found = _collect(entries, Path(tmpdir), max_tiles=max_tiles, limits=limits)
        if len(found.studies) > 1:
            raise IngestError(
                f"{path.name} holds {len(found.studies)} studies; ask about one of them at a time"
            )
        for n, files in enumerate(found.wsi.values(), start=1):
            try:
                found.views += slide_views(files, max_tiles=max_tiles, limits=limits, name=f"slide {n}")
            except IngestError as e:
                found.skip(f"slide {n}", e)
    views = found.views
    groups: list[list[tuple[int, str, Any]]] = []
    for group in found.datasets.values():
        groups.extend([group] if is_volume([ds for _, _, ds in group]) else [[item] for item in group])
    for n, group in enumerate(groups, start=1):
        try:
            if len(group) >= 2:
                volume = assemble_volume(
                    [ds for _, _, ds in group], name=f"series {n}", limits=limits, key=key, skip_bad=True
                )
                views += series_views(volume, preset=preset, name=f"series {n}")
                for index, error in volume.dropped:
                    found.skip(f"file {group[index][0]} of {total}", error)
            else:
                _, name, ds = group[0]
                view, _ = dicom_view(ds, name=name, limits=limits, key=key, preset=preset, frame=frame)
                views.append(view)
        except IngestError as e:
            found.skip(f"file {group[0][0]} of {total}" if len(group) == 1 else f"series {n}", e)
    if not views:
        raise found.first_error or MissingAttributeError(f"{path.name} holds no readable images")
    if not found.skipped:
        return views
    return [replace(v, warnings=tuple(dict.fromkeys([*v.warnings, *found.skipped]))) for v in views]
