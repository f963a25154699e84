"""DICOM series: slices to an ordered volume, and the 2D views a model can take.

Slices are ordered by ImagePositionPatient projected on the slice normal (the cross product of
the ImageOrientationPatient row and column cosines), never by InstanceNumber, which scanners
number in either direction. Spacing is checked: missing positions, duplicate positions or
irregular gaps produce warnings. Views: key (middle) slice, an N-slice montage, a maximum
intensity projection, and for CT a multi-window image (lung, mediastinum, bone as R, G, B).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from data_prep.dicom import dataset_warnings, decode_frame, study_id_of
from data_prep.errors import IngestError, LimitExceededError, SeriesError
from data_prep.pseudonym import PseudonymKey
from data_prep.types import ImageView, IngestLimits, WindowInfo
from data_prep.windowing import (
    MULTI_WINDOW_PRESETS,
    apply_window,
    file_window,
    get_preset,
    minmax_to_uint8,
    modality_lut,
)

logger = logging.getLogger(__name__)

SPACING_TOLERANCE = 0.01
"""Relative deviation from the median gap above which spacing is called irregular."""


@dataclass(frozen=True)
class Volume:
    """An ordered stack of greyscale slices in modality units (HU for CT).

    Attributes:
        values: ``Z x H x W`` float32 array, ordered along the slice normal.
        positions: ``Z`` slice positions along the normal in mm (NaN when unknown).
        spacing: median gap between slices in mm, or None when unknown.
        modality: DICOM modality.
        body_part: BodyPartExamined.
        photometric: MONOCHROME1 or MONOCHROME2.
        study_id: pseudonymous study id.
        reference: the Dataset of the middle slice (for its window attributes).
        warnings: ordering and spacing warnings.
        dropped: ``(index into the input datasets, error)`` of slices left out (``skip_bad=True``).
    """

    values: np.ndarray
    positions: np.ndarray
    spacing: float | None
    modality: str | None
    body_part: str | None
    photometric: str
    study_id: str | None
    reference: Any
    warnings: tuple[str, ...]
    dropped: tuple[tuple[int, IngestError], ...] = ()

    @property
    def key_index(self) -> int:
        """Index of the middle slice."""
        return int(self.values.shape[0] // 2)


def _vector(ds: Any, keyword: str, n: int) -> np.ndarray | None:
    value = ds.get(keyword)
    try:
        vec = np.asarray([float(v) for v in value], dtype=np.float64) if value is not None else None
    except (TypeError, ValueError):
        return None
    if vec is None or vec.shape != (n,) or not np.all(np.isfinite(vec)):
        return None
    return vec


def slice_order(datasets: Sequence[Any]) -> tuple[list[int], np.ndarray, list[str]]:
    """Order slices along their normal.

    Args:
        datasets: the slices' Datasets, in any order.

    Returns:
        ``(order, positions, warnings)``: indices into ``datasets`` in spatial order, the sorted
        positions (NaN when unknown) and warnings.
    """
    notes: list[str] = []
    orient = _vector(datasets[0], "ImageOrientationPatient", 6)
    positions = [_vector(ds, "ImagePositionPatient", 3) for ds in datasets]
    if orient is not None and all(p is not None for p in positions):
        normal = np.cross(orient[:3], orient[3:])
        for ds in datasets[1:]:
            other = _vector(ds, "ImageOrientationPatient", 6)
            if other is None or not np.allclose(other, orient, atol=1e-3):
                notes.append("slices have different orientations; ordered along the first slice's normal")
                break
        proj = np.asarray([float(np.dot(p, normal)) for p in positions if p is not None])
        order = [int(i) for i in np.argsort(proj, kind="stable")]
        return order, proj[order], notes
    notes.append("ImagePositionPatient/ImageOrientationPatient missing; slices ordered by InstanceNumber")
    try:
        numbers = [int(ds.get("InstanceNumber")) for ds in datasets]
        order = [int(i) for i in np.argsort(numbers, kind="stable")]
    except (TypeError, ValueError):
        notes.append("InstanceNumber missing too; slices kept in file-name order")
        order = list(range(len(datasets)))
    return order, np.full(len(datasets), np.nan), notes


def spacing_check(positions: np.ndarray) -> tuple[float | None, list[str]]:
    """Median slice gap and warnings for duplicate or irregular gaps.

    Args:
        positions: sorted positions along the normal (NaN when unknown).

    Returns:
        ``(spacing or None, warnings)``.
    """
    if positions.size < 2 or not np.all(np.isfinite(positions)):
        return None, (["slice spacing unknown"] if positions.size >= 2 else [])
    gaps = np.diff(positions)
    notes: list[str] = []
    if np.any(gaps < 1e-4):
        notes.append(f"{int(np.sum(gaps < 1e-4))} duplicate slice position(s)")
    positive = gaps[gaps >= 1e-4]
    if positive.size == 0:
        return None, notes
    median = float(np.median(positive))
    deviation = float(np.max(np.abs(positive - median)))
    if deviation > SPACING_TOLERANCE * median + 1e-3:
        notes.append(
            f"irregular slice spacing: gaps from {positive.min():.3g} to {positive.max():.3g} mm "
            f"(median {median:.3g} mm); a slice may be missing"
        )
    return median, notes


def assemble_volume(
    datasets: Sequence[Any],
    *,
    name: str,
    limits: IngestLimits,
    key: PseudonymKey | None,
    skip_bad: bool = False,
) -> Volume:
    """Decode single-frame greyscale slices of one series into an ordered :class:`Volume`.

    Args:
        datasets: Datasets of one SeriesInstanceUID (at least two).
        name: the series' display name for messages.
        limits: size limits (checked per slice and for the whole volume).
        key: pseudonymisation key for the study id.
        skip_bad: leave out slices that fail to decode (listed in ``Volume.dropped``) instead of
            failing the whole series; at least two slices must remain.

    Returns:
        The volume.

    Raises:
        SeriesError: fewer than two slices, mixed sizes, or colour slices.
        LimitExceededError: the volume is over ``limits.max_uncompressed_bytes``.
        IngestError: a slice fails to decode.
    """
    if len(datasets) < 2:
        raise SeriesError(f"{name} has fewer than two slices")
    order, positions, notes = slice_order(datasets)
    ordered = [datasets[i] for i in order]
    first = ordered[0]
    rows, cols = int(first.get("Rows") or 0), int(first.get("Columns") or 0)
    total = rows * cols * len(ordered) * 4
    if total > limits.max_uncompressed_bytes:
        raise LimitExceededError(f"{name} would need {total} bytes, over the volume limit")
    values = np.empty((len(ordered), rows, cols), dtype=np.float32)
    kept: list[int] = []
    dropped: list[tuple[int, IngestError]] = []
    for z, ds in enumerate(ordered):
        try:
            decoded = decode_frame(ds, name=f"{name} slice {z + 1}", limits=limits, frame=0)
            if decoded.stored.shape != (rows, cols):
                raise SeriesError(f"{name}: slice {z + 1} is {decoded.stored.shape}, not {(rows, cols)}")
        except IngestError as e:
            if not skip_bad:
                raise
            dropped.append((order[z], e))
            continue
        hu, _ = modality_lut(decoded.stored, ds)
        values[len(kept)] = hu
        kept.append(z)
    if len(kept) < 2:
        raise SeriesError(f"{name} has fewer than two decodable slices")
    if dropped:
        values = values[: len(kept)]
        positions = positions[kept]
        ordered = [ordered[z] for z in kept]
        notes.append(f"{len(dropped)} slice(s) could not be decoded and were left out")
    spacing, spacing_notes = spacing_check(positions)
    photometric = str(first.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise SeriesError(
            f"{name} is not MONOCHROME1 or MONOCHROME2; only greyscale series are assembled into volumes"
        )
    mid = ordered[len(ordered) // 2]
    return Volume(
        values=values,
        positions=positions,
        spacing=spacing,
        modality=str(first.get("Modality", "") or "") or None,
        body_part=str(first.get("BodyPartExamined", "") or "") or None,
        photometric=photometric,
        study_id=study_id_of(first, key),
        reference=mid,
        warnings=tuple(notes + spacing_notes + dataset_warnings(first)),
        dropped=tuple(dropped),
    )


def volume_window(volume: Volume, preset: str | None) -> WindowInfo:
    """The window for a volume's views: a preset, else the middle slice's, else min-max."""
    if preset is not None:
        p = get_preset(preset)
        return WindowInfo(p.center, p.width, p.name)
    win = file_window(volume.reference)
    if win is not None:
        return WindowInfo(win[0], win[1], "file")
    return minmax_to_uint8(volume.values)[1]


def _render(values: np.ndarray, window: WindowInfo, monochrome1: bool) -> np.ndarray:
    assert window.center is not None and window.width is not None
    out = apply_window(values, window.center, window.width)
    if monochrome1:
        np.subtract(255, out, out=out)
    return out


def montage_indices(depth: int, n: int) -> list[int]:
    """``n`` evenly spaced slice indices over ``depth`` slices (fewer if the volume is thinner)."""
    n = max(1, min(n, depth))
    return sorted({round(i * (depth - 1) / max(n - 1, 1)) for i in range(n)})


def series_views(
    volume: Volume, *, preset: str | None = None, montage_slices: int = 9, name: str = "series"
) -> list[ImageView]:
    """2D views of a volume: key slice, montage, MIP, and for CT a multi-window RGB key slice.

    Args:
        volume: the assembled volume.
        preset: CT window preset, or None for the file's window.
        montage_slices: slices in the montage (laid out in a near-square grid).
        name: display name (used only in descriptions).

    Returns:
        The views, key slice first.
    """
    window = volume_window(volume, preset)
    mono1 = volume.photometric == "MONOCHROME1"
    depth = volume.values.shape[0]
    k = volume.key_index
    wtxt = f"window C{window.center:g}/W{window.width:g} ({window.preset})"
    common: dict[str, Any] = {
        "modality": volume.modality,
        "body_part": volume.body_part,
        "kind": "dicom-series",
        "study_id": volume.study_id,
        "warnings": volume.warnings,
    }
    views = [
        ImageView(
            pixels=_render(volume.values[k], window, mono1),
            description=f"{name}: key slice {k + 1} of {depth} (middle along the slice normal), {wtxt}",
            window=window,
            **common,
        )
    ]
    idx = montage_indices(depth, montage_slices)
    grid = math.ceil(math.sqrt(len(idx)))
    h, w = volume.values.shape[1:]
    step = max(1, math.ceil(max(h, w) * grid / 2048))
    th, tw = math.ceil(h / step), math.ceil(w / step)
    canvas = np.zeros((grid * th, grid * tw), dtype=np.uint8)
    for j, z in enumerate(idx):
        r, c = divmod(j, grid)
        canvas[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = _render(
            volume.values[z, ::step, ::step], window, mono1
        )
    views.append(
        ImageView(
            pixels=canvas,
            description=f"{name}: montage of slices {[z + 1 for z in idx]} of {depth} "
            f"({grid}x{grid} grid, row-major, every {step} pixel(s)), {wtxt}",
            window=window,
            **common,
        )
    )
    views.append(
        ImageView(
            pixels=_render(volume.values.max(axis=0), window, mono1),
            description=f"{name}: maximum intensity projection of all {depth} slices, {wtxt}",
            window=window,
            **common,
        )
    )
    if volume.modality == "CT":
        views.append(
            multi_window_view(volume.values[k], description_prefix=f"{name}: key slice {k + 1}", **common)
        )
    return views


def multi_window_view(hu: np.ndarray, *, description_prefix: str, **common: Any) -> ImageView:
    """A CT slice as RGB with the lung, mediastinum and bone windows in R, G and B.

    Args:
        hu: ``H x W`` slice in Hounsfield units.
        description_prefix: what the slice is (goes first in the description).
        **common: other :class:`ImageView` fields.

    Returns:
        The RGB view (``window`` None, the three windows are listed in the description).
    """
    channels = []
    parts = []
    for pname in MULTI_WINDOW_PRESETS:
        p = get_preset(pname)
        channels.append(apply_window(hu, p.center, p.width))
        parts.append(f"{pname} C{p.center:g}/W{p.width:g}")
    rgb = np.stack(channels, axis=-1)
    desc = f"{description_prefix}, CT multi-window: R={parts[0]}, G={parts[1]}, B={parts[2]}"
    return ImageView(pixels=rgb, description=desc, window=None, **common)
