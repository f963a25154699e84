"""Turn paths (files, folders, zips) into per-input reports and views.

:func:`ingest_path` yields one :class:`IngestReport` per file, series or slide and never raises
for a bad input: the error becomes the report's one-sentence ``error``. :func:`load_views` is the
single high-level entry the app calls on any input (it lives in :mod:`data_prep.views` and is
re-exported here) and does raise :class:`IngestError`.

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

from data_prep.dicom import captured_warnings, dicom_view, read_dataset
from data_prep.entries import Entry, folder_entries, is_volume, on_disk, series_key, source_of, zip_entries
from data_prep.errors import IngestError, one_sentence
from data_prep.images import IMAGE_SUFFIXES, image_view
from data_prep.pseudonym import PseudonymKey
from data_prep.series import assemble_volume, series_views
from data_prep.slides import SLIDE_SUFFIXES, is_dicom_wsi, open_slide
from data_prep.types import ImageView, IngestLimits, IngestReport
from data_prep.views import load_views

logger = logging.getLogger(__name__)

__all__ = ["IngestOptions", "ingest_path", "load_views"]  # load_views lives in data_prep.views


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
        self, source: str, members: Sequence[tuple[Entry, Any]], notes: Sequence[str]
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

    def slide_report(self, entry: Entry, path: Path | Sequence[Path]) -> IngestReport:
        o = self.options
        try:
            with open_slide(path, limits=o.limits, name=entry.label) as reader:
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

    def image_report(self, entry: Entry) -> IngestReport:
        o = self.options
        src: Path | bytes = entry.data if entry.data is not None else entry.path  # type: ignore[assignment]
        try:
            view = image_view(src, name=entry.label, limits=o.limits)
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
        self, entries: Sequence[Entry], group_label: str, tmp: Path
    ) -> Iterator[IngestReport]:
        """Reports for a collection: non-DICOM first-come, DICOM grouped into series."""
        dicoms: list[tuple[Entry, Any, list[str]]] = []
        wsi: dict[str, list[Path]] = {}
        for entry in entries:
            if entry.error is not None:
                yield _error_report(entry.source, entry.error)
                continue
            if entry.suffix == ".zip" and entry.path is not None:  # a zip in a folder; never a zip in a zip
                try:
                    members = zip_entries(
                        entry.path, self.options.limits, source=entry.source, name=entry.label
                    )
                    yield from self.entries_reports(members, entry.source, tmp)
                except IngestError as e:
                    yield _error_report(entry.source, e)
            elif entry.suffix in SLIDE_SUFFIXES:
                yield self.slide_report(entry, on_disk(entry, tmp))
            elif entry.suffix in IMAGE_SUFFIXES:
                yield self.image_report(entry)
            else:
                notes: list[str] = []
                try:
                    with captured_warnings(notes):
                        ds = read_dataset(source_of(entry), name=entry.label, limits=self.options.limits)
                except IngestError as e:
                    yield _error_report(entry.source, e, "dicom")
                    continue
                if is_dicom_wsi(ds):  # levels of one slide are separate instances of one series
                    series = str(ds.get("SeriesInstanceUID", "") or entry.source)
                    wsi.setdefault(series, []).append(on_disk(entry, tmp))
                    continue
                dicoms.append((entry, ds, notes))
        for n, files in enumerate(wsi.values()):
            source = group_label if len(entries) == 1 else f"{group_label}#slide-{n + 1}"
            yield self.slide_report(Entry(source, Path(source).name, ""), files)
        yield from self._grouped(dicoms, group_label)

    def _grouped(
        self, dicoms: list[tuple[Entry, Any, list[str]]], group_label: str
    ) -> Iterator[IngestReport]:
        groups: dict[str, list[int]] = {}
        for i, (_, ds, _) in enumerate(dicoms):
            uid = series_key(ds)
            if uid is not None:
                groups.setdefault(uid, []).append(i)
        in_series: dict[int, int] = {}
        series_list = [idx for idx in groups.values() if is_volume([dicoms[i][1] for i in idx])]
        for n, idx in enumerate(series_list):
            for i in idx:
                in_series[i] = n
        done: set[int] = set()
        for i, (entry, ds, notes) in enumerate(dicoms):
            if i not in in_series:
                yield self.dicom_report(entry.source, entry.label, ds, notes)
                continue
            n = in_series[i]
            if n in done:
                continue
            done.add(n)
            idx = series_list[n]
            notes_all = list(dict.fromkeys(w for j in idx for w in dicoms[j][2]))
            members = [(dicoms[j][0], dicoms[j][1]) for j in idx]
            yield from self.series_report(f"{group_label}#series-{n + 1}", members, notes_all)


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
            entries = folder_entries(path)
            if not entries:
                raise IngestError(f"{path.name} is an empty folder")
            yield from ing.entries_reports(entries, source, tmp)
        elif not path.exists():
            raise IngestError(f"{path.name} does not exist")
        elif path.suffix.lower() == ".zip":
            entries = zip_entries(path, ing.options.limits)
            if not entries:
                raise IngestError(f"{path.name} holds no files")
            yield from ing.entries_reports(entries, source, tmp)
        else:
            yield from ing.entries_reports(
                [Entry(source, path.name, path.suffix.lower(), path=path)], source, tmp
            )
    except IngestError as e:
        yield _error_report(source, e)
    except Exception as e:  # one bad input must not stop the run; logged with its type only
        logger.warning("unexpected %s while ingesting an input", type(e).__name__)
        yield _error_report(source, e)


def _name_tokens(source: str, path: Path) -> list[str]:
    """Every form in which a report's messages can name its input, longest first.

    Files inside a folder or zip are named by position only (``#file-N``, "file N of the zip"),
    so only the input's own path and name can appear.
    """
    head = source.split("#")[0]
    tokens = {source, str(path), path.name, head, Path(head).name}
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
