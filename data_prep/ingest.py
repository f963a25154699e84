"""Turn paths (files, folders, zips) into per-input reports and views.

:func:`ingest_path` yields one :class:`IngestReport` per file, series or slide and never raises
for a bad input: the error becomes the report's one-sentence ``error``. :func:`load_views` is the
single high-level entry the app calls on any input and does raise :class:`IngestError`.

Inside folders and zips, single-frame greyscale DICOM files that share a SeriesInstanceUID are
assembled into one volume (``dicom-series``); everything else is reported file by file.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.archive import folder_files, iter_zip
from data_prep.dicom import captured_warnings, dicom_view, read_dataset
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
    one_sentence,
)
from data_prep.images import IMAGE_SUFFIXES, image_view
from data_prep.pseudonym import PseudonymKey
from data_prep.series import assemble_volume, multi_window_view, series_views
from data_prep.slides import SLIDE_SUFFIXES, is_dicom_wsi, open_slide, slide_views
from data_prep.types import ImageView, IngestLimits, IngestReport

logger = logging.getLogger(__name__)

SKIP_NAMES = frozenset({"DICOMDIR", ".DS_Store", "Thumbs.db"})


@dataclass(frozen=True)
class IngestOptions:
    """How to ingest: output folder for PNGs, window preset, frame, limits and key.

    ``key`` is passed in by the entry point (see :func:`data_prep.pseudonym.resolve_key`); without
    one, reports carry no study id. ``hide_source`` replaces each report's ``source`` with
    ``input-N#M`` (the N-th path given, its M-th line) and removes the input's names from the
    ``error`` and ``warnings`` sentences.
    """

    out: Path | None = None
    preset: str | None = None
    frame: int | None = None
    limits: IngestLimits = field(default_factory=IngestLimits)
    key: PseudonymKey | None = None
    hide_source: bool = False


@dataclass
class _Entry:
    """One input file: a path on disk, or bytes from a zip member."""

    source: str
    name: str
    path: Path | None = None
    data: bytes | None = None
    error: IngestError | None = None

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix.lower()


def _error_report(source: str, error: BaseException, kind: Any = None) -> IngestReport:
    if not isinstance(error, IngestError | ValueError):
        logger.debug("unexpected %s while ingesting", type(error).__name__)
    return IngestReport(source=source, status="error", kind=kind, error=one_sentence(error))


def _png_target(out: Path, prefix: str, index: int) -> Path:
    """``{prefix}-{index:04d}.png`` in ``out``; ``-2``, ``-3`` … is added rather than overwrite a file."""
    target = out / f"{prefix}-{index:04d}.png"
    n = 1
    while target.exists():
        n += 1
        target = out / f"{prefix}-{index:04d}-{n}.png"
    return target


def _save_png(view: ImageView, out: Path | None, index: int) -> str | None:
    """Write ``view`` as a PNG named from its pseudonymous study id (or kind) and a running index.

    No part of an input's file or folder name is reused: those can hold patient names or UIDs.
    """
    if out is None:
        return None
    from PIL import Image

    prefix = view.study_id or ("nostudy" if view.kind.startswith("dicom") else view.kind)
    try:
        out.mkdir(parents=True, exist_ok=True)
        target = _png_target(out, prefix, index)
        Image.fromarray(view.pixels).save(target)
    except OSError as e:
        raise IngestError(f"writing PNG {index} into the --out folder failed ({type(e).__name__})") from e
    return str(target)


class _Ingestor:
    """Holds the options and a running index for output file names during one ingest call."""

    def __init__(self, options: IngestOptions) -> None:
        self.options = options
        self.index = 0

    def _next(self) -> int:
        self.index += 1
        return self.index

    def dicom_report(self, source: str, name: str, ds: Any, read_notes: Sequence[str]) -> IngestReport:
        o = self.options
        try:
            view, decoded = dicom_view(
                ds, name=name, limits=o.limits, key=o.key, preset=o.preset, frame=o.frame
            )
        except (IngestError, ValueError) as e:
            return _error_report(source, e, "dicom")
        return IngestReport(
            source=source,
            status="ok",
            kind="dicom",
            modality=view.modality,
            body_part=view.body_part,
            photometric=str(ds.get("PhotometricInterpretation", "") or "") or None,
            frames=decoded.frames,
            shape=tuple(int(s) for s in decoded.stored.shape),
            window=view.window,
            study_id=view.study_id,
            image=_save_png(view, o.out, self._next()),
            warnings=tuple(dict.fromkeys([*read_notes, *view.warnings])),
            extra={"description": view.description},
        )

    def series_report(
        self, source: str, members: Sequence[tuple[_Entry, Any]], notes: Sequence[str]
    ) -> Iterator[IngestReport]:
        """One report for the series, preceded by an error report per slice left out."""
        o = self.options
        collected = list(notes)
        try:
            with captured_warnings(collected):
                volume = assemble_volume(
                    [ds for _, ds in members],
                    name=Path(source).name,
                    limits=o.limits,
                    key=o.key,
                    skip_bad=True,
                )
                views = series_views(volume, preset=o.preset, name="series")
        except (IngestError, ValueError) as e:
            yield _error_report(source, e, "dicom-series")
            return
        for index, error in volume.dropped:
            yield _error_report(members[index][0].source, error, "dicom")
        notes = collected
        slices = len(members) - len(volume.dropped)
        key_view = views[0]
        yield IngestReport(
            source=source,
            status="ok",
            kind="dicom-series",
            modality=volume.modality,
            body_part=volume.body_part,
            photometric=volume.photometric,
            frames=int(volume.values.shape[0]),
            shape=tuple(int(s) for s in volume.values.shape),
            window=key_view.window,
            study_id=volume.study_id,
            image=_save_png(key_view, o.out, self._next()),
            warnings=tuple(dict.fromkeys([*notes, *volume.warnings])),
            extra={
                "slices": slices,
                "spacing_mm": volume.spacing,
                "description": key_view.description,
            },
        )

    def slide_report(self, entry: _Entry, path: Path | Sequence[Path]) -> IngestReport:
        o = self.options
        try:
            with open_slide(path, limits=o.limits) as reader:
                thumb = reader.thumbnail()
                info = reader.info
        except IngestError as e:
            if entry.suffix in (".tif", ".tiff"):
                return self.image_report(entry)
            return _error_report(entry.source, e, "slide")
        w0, h0 = info.level_dimensions[0]
        view = ImageView(
            pixels=np.ascontiguousarray(thumb),
            modality="SM",
            body_part=None,
            kind="slide",
            description="thumbnail",
        )
        notes = () if info.mpp else ("the slide does not state its microns per pixel",)
        return IngestReport(
            source=entry.source,
            status="ok",
            kind="slide",
            modality="SM",
            photometric="RGB",
            frames=None,
            shape=(h0, w0, 3),
            image=_save_png(view, o.out, self._next()),
            warnings=notes,
            extra={
                "levels": len(info.level_dimensions),
                "mpp": info.mpp,
                "vendor": info.vendor,
                "backend": info.backend,
            },
        )

    def image_report(self, entry: _Entry) -> IngestReport:
        o = self.options
        src: Path | bytes = entry.data if entry.data is not None else entry.path  # type: ignore[assignment]
        try:
            view = image_view(src, name=entry.name, limits=o.limits)
        except IngestError as e:
            return _error_report(entry.source, e, "image")
        return IngestReport(
            source=entry.source,
            status="ok",
            kind="image",
            photometric="RGB" if view.pixels.ndim == 3 else "MONOCHROME2",
            frames=1,
            shape=tuple(int(s) for s in view.pixels.shape),
            image=_save_png(view, o.out, self._next()),
            extra={"description": view.description},
        )

    def entries_reports(
        self, entries: Sequence[_Entry], group_label: str, tmp: Path
    ) -> Iterator[IngestReport]:
        """Reports for a collection: non-DICOM first-come, DICOM grouped into series."""
        dicoms: list[tuple[_Entry, Any, list[str]]] = []
        wsi: dict[str, list[Path]] = {}
        for entry in entries:
            if entry.error is not None:
                yield _error_report(entry.source, entry.error)
                continue
            if entry.suffix == ".zip" and entry.path is not None:  # a zip in a folder; never a zip in a zip
                try:
                    yield from self.entries_reports(
                        _zip_entries(entry.path, self.options.limits), entry.source, tmp
                    )
                except IngestError as e:
                    yield _error_report(entry.source, e)
            elif entry.suffix in SLIDE_SUFFIXES:
                yield self.slide_report(entry, _on_disk(entry, tmp))
            elif entry.suffix in IMAGE_SUFFIXES:
                yield self.image_report(entry)
            else:
                notes: list[str] = []
                try:
                    with captured_warnings(notes):
                        ds = read_dataset(_source_of(entry), name=entry.name, limits=self.options.limits)
                except IngestError as e:
                    yield _error_report(entry.source, e, "dicom")
                    continue
                if is_dicom_wsi(ds):  # levels of one slide are separate instances of one series
                    series = str(ds.get("SeriesInstanceUID", "") or entry.source)
                    wsi.setdefault(series, []).append(_on_disk(entry, tmp))
                    continue
                dicoms.append((entry, ds, notes))
        for n, files in enumerate(wsi.values()):
            source = group_label if len(entries) == 1 else f"{group_label}#slide-{n + 1}"
            yield self.slide_report(_Entry(source, Path(source).name), files)
        yield from self._grouped(dicoms, group_label)

    def _grouped(
        self, dicoms: list[tuple[_Entry, Any, list[str]]], group_label: str
    ) -> Iterator[IngestReport]:
        groups: dict[str, list[int]] = {}
        for i, (_, ds, _) in enumerate(dicoms):
            uid = _series_key(ds)
            if uid is not None:
                groups.setdefault(uid, []).append(i)
        in_series: dict[int, int] = {}
        series_list = [idx for idx in groups.values() if _is_volume([dicoms[i][1] for i in idx])]
        for n, idx in enumerate(series_list):
            for i in idx:
                in_series[i] = n
        done: set[int] = set()
        for i, (entry, ds, notes) in enumerate(dicoms):
            if i not in in_series:
                yield self.dicom_report(entry.source, entry.name, ds, notes)
                continue
            n = in_series[i]
            if n in done:
                continue
            done.add(n)
            idx = series_list[n]
            notes_all = list(dict.fromkeys(w for j in idx for w in dicoms[j][2]))
            members = [(dicoms[j][0], dicoms[j][1]) for j in idx]
            yield from self.series_report(f"{group_label}#series-{n + 1}", members, notes_all)


def _series_key(ds: Any) -> str | None:
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


def _is_volume(datasets: Sequence[Any]) -> bool:
    """At least two distinct instances of one size: a stack of slices, not re-encodings of one image."""
    if len(datasets) < 2:
        return False
    sop = [str(ds.get("SOPInstanceUID", "") or "") for ds in datasets]
    if len(set(sop)) != len(sop):
        return False
    sizes = {(ds.get("Rows"), ds.get("Columns")) for ds in datasets}
    return len(sizes) == 1


def _source_of(entry: _Entry) -> Path | bytes:
    if entry.data is not None:
        return entry.data
    assert entry.path is not None
    return entry.path


def _on_disk(entry: _Entry, tmp: Path) -> Path:
    """A path for backends that need a file (zip members are written under a private temp dir)."""
    if entry.path is not None:
        return entry.path
    target = tmp / f"member-{abs(hash(entry.source)) % 10**8}{entry.suffix}"
    target.write_bytes(entry.data or b"")
    return target


def _folder_entries(folder: Path) -> list[_Entry]:
    entries = []
    for p in folder_files(folder):
        if p.name in SKIP_NAMES:
            continue
        if p.is_symlink():
            entries.append(
                _Entry(str(p), p.name, error=IngestError(f"{p.name} is a symbolic link and was skipped"))
            )
        elif p.is_file():
            entries.append(_Entry(str(p), p.name, path=p))
    return entries


def _zip_entries(path: Path, limits: IngestLimits) -> list[_Entry]:
    entries = []
    for m in iter_zip(path, limits=limits):
        base = Path(m.name).name
        if base in SKIP_NAMES or base.startswith("."):
            continue
        entries.append(_Entry(f"{path}!{m.name}", base, data=m.data, error=m.error))
    return entries


def ingest_path(paths: Sequence[Path], *, options: IngestOptions | None = None) -> Iterator[IngestReport]:
    """Ingest files, folders and zips, yielding one report per file, series or slide.

    Args:
        paths: inputs as given by the user.
        options: output folder, preset, frame, limits, pseudonym key and whether to hide the
            source names (defaults when None).

    Yields:
        :class:`IngestReport` objects; a bad input yields an ``error`` report and the run goes on.
    """
    options = options or IngestOptions()
    ing = _Ingestor(options)
    with tempfile.TemporaryDirectory(prefix="medvlm-ingest-") as tmpdir:
        tmp = Path(tmpdir)
        for number, path in enumerate(paths, start=1):
            for line, report in enumerate(_path_reports(ing, path, tmp), start=1):
                yield _pseudonymous(report, path, f"input-{number}#{line}") if options.hide_source else report


def _path_reports(ing: _Ingestor, path: Path, tmp: Path) -> Iterator[IngestReport]:
    source = str(path)
    try:
        if path.is_symlink() and not path.exists():
            raise IngestError(f"{path.name} is a broken symbolic link")
        if path.is_dir():
            entries = _folder_entries(path)
            if not entries:
                raise IngestError(f"{path.name} is an empty folder")
            yield from ing.entries_reports(entries, source, tmp)
        elif not path.exists():
            raise IngestError(f"{path.name} does not exist")
        elif path.suffix.lower() == ".zip":
            entries = _zip_entries(path, ing.options.limits)
            if not entries:
                raise IngestError(f"{path.name} holds no files")
            yield from ing.entries_reports(entries, source, tmp)
        else:
            yield from ing.entries_reports([_Entry(source, path.name, path=path)], source, tmp)
    except IngestError as e:
        yield _error_report(source, e)
    except Exception as e:  # one bad input must not stop the run; logged with its type only
        logger.warning("unexpected %s while ingesting an input", type(e).__name__)
        yield _error_report(source, e)


def _name_tokens(source: str, path: Path) -> list[str]:
    """Every form in which a report's messages can name its input, longest first."""
    tokens = {source, str(path), path.name, source.split("#")[0]}
    head, _, member = source.partition("!")
    if member:
        member = member.split("#")[0]
        tokens |= {head, Path(head).name, member, Path(member).name, f"{Path(head).name}!{member}"}
    else:
        tokens.add(Path(source.split("#")[0]).name)
    return sorted((t for t in tokens if len(t) >= 2), key=len, reverse=True)


def _pseudonymous(report: IngestReport, path: Path, label: str) -> IngestReport:
    """The report with ``source`` replaced by ``label`` and the input's names removed from its text."""
    tokens = _name_tokens(report.source, path)

    def scrub(text: str) -> str:
        for t in tokens:
            text = text.replace(t, "the input")
        return text

    return replace(
        report,
        source=label,
        error=scrub(report.error) if report.error else report.error,
        warnings=tuple(scrub(w) for w in report.warnings),
    )


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


def _collect(entries: Sequence[_Entry], tmp: Path, *, max_tiles: int, limits: IngestLimits) -> _Collected:
    """Read every member once: plain images and slides become views, DICOM data sets are grouped."""
    found = _Collected()
    total = len(entries)
    for number, entry in enumerate(entries, start=1):
        try:
            if entry.error is not None:
                raise entry.error
            if entry.suffix in SLIDE_SUFFIXES:
                found.views += slide_views(_on_disk(entry, tmp), max_tiles=max_tiles, limits=limits)
            elif entry.suffix in IMAGE_SUFFIXES:
                found.views.append(image_view(_source_of(entry), name=entry.name, limits=limits))
            else:
                with captured_warnings([]):
                    ds = read_dataset(_source_of(entry), name=entry.name, limits=limits)
                study = str(ds.get("StudyInstanceUID", "") or "").strip()
                if study:
                    found.studies.add(study)
                if is_dicom_wsi(ds):
                    series = str(ds.get("SeriesInstanceUID", ""))
                    found.wsi.setdefault(series, []).append(_on_disk(entry, tmp))
                    continue
                uid = _series_key(ds) or f"single:{entry.source}"
                found.datasets.setdefault(uid, []).append((number, entry.name, ds))
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
        entries = _folder_entries(path)
    elif path.is_file():
        entries = _zip_entries(path, limits)
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
                found.views += slide_views(files, max_tiles=max_tiles, limits=limits)
            except IngestError as e:
                found.skip(f"slide {n}", e)
    views = found.views
    groups: list[list[tuple[int, str, Any]]] = []
    for group in found.datasets.values():
        groups.extend([group] if _is_volume([ds for _, _, ds in group]) else [[item] for item in group])
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
