"""Typed results of ``data_prep``: what other packages receive.

:class:`ImageView` is the one object the app and the model code consume: an 8-bit picture plus an
exact description of how it was made. :class:`IngestReport` is one line of ``medvlm ingest``.
:class:`IngestLimits` caps every input so that decompression and zip bombs fail early.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ViewKind = Literal["dicom", "dicom-series", "slide", "image"]


@dataclass(frozen=True)
class WindowInfo:
    """The intensity window used to map stored values to 8 bits.

    ``center``/``width`` are in output units of the modality LUT (HU for CT). ``preset`` names a
    named preset (``lung``, ``bone`` ...), ``"file"`` for the file's own VOI window, ``"voi-lut"``
    for a VOI LUT sequence, ``"minmax"`` when the full range was used, or ``None`` for colour.
    """

    center: float | None
    width: float | None
    preset: str | None

    def as_dict(self) -> dict[str, float | str | None]:
        """Return a JSON-ready mapping ``{"center", "width", "preset"}``."""
        return {"center": self.center, "width": self.width, "preset": self.preset}


@dataclass(frozen=True)
class ImageView:
    """One 8-bit image ready for a model or a person, with what was done to make it.

    Attributes:
        pixels: ``H x W`` (grey) or ``H x W x 3`` (RGB) uint8 array.
        modality: DICOM modality (``CT``, ``CR`` ...), ``"SM"`` for slides, or None.
        body_part: DICOM BodyPartExamined, or None.
        kind: which kind of input this came from.
        description: exactly what was done (window/preset, frame, slice/MIP/montage, tile and mpp).
        window: the intensity window, or None when no windowing applied (colour, slides, PNG).
        study_id: pseudonymous study id (keyed hash), never a DICOM identifier; None for non-DICOM.
        warnings: anything a reader should know (irregular spacing, burned-in text ...).
    """

    pixels: np.ndarray
    modality: str | None
    body_part: str | None
    kind: ViewKind
    description: str
    window: WindowInfo | None = None
    study_id: str | None = None
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        px = self.pixels
        if not isinstance(px, np.ndarray) or px.dtype != np.uint8:
            raise ValueError(f"ImageView pixels must be a uint8 array, got {getattr(px, 'dtype', type(px))}")
        if not (px.ndim == 2 or (px.ndim == 3 and px.shape[2] == 3)):
            raise ValueError(f"ImageView pixels must be HxW or HxWx3, got shape {px.shape}")


@dataclass(frozen=True)
class IngestLimits:
    """Caps applied to every input before and while decoding (defaults suit a workstation).

    Attributes:
        max_file_bytes: largest single file read (or archive member extracted).
        max_uncompressed_bytes: largest decoded pixel buffer for one image (all frames).
        max_pixels: largest rows x columns of one frame.
        max_frames: most frames in one multi-frame image.
        max_archive_members: most members in one zip.
        max_archive_bytes: largest total uncompressed size of one zip.
        max_compression_ratio: largest uncompressed/compressed ratio of one zip member.
        max_slide_region_pixels: largest region read from a slide in one call.
    """

    max_file_bytes: int = 2 * 1024**3
    max_uncompressed_bytes: int = 2 * 1024**3
    max_pixels: int = 20_000 * 20_000
    max_frames: int = 5_000
    max_archive_members: int = 20_000
    max_archive_bytes: int = 8 * 1024**3
    max_compression_ratio: float = 200.0
    max_slide_region_pixels: int = 4096 * 4096

    def __post_init__(self) -> None:
        for name in (
            "max_file_bytes",
            "max_uncompressed_bytes",
            "max_pixels",
            "max_frames",
            "max_archive_members",
            "max_archive_bytes",
            "max_slide_region_pixels",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"IngestLimits.{name} must be >= 1")
        if self.max_compression_ratio <= 1:
            raise ValueError("IngestLimits.max_compression_ratio must be > 1")


@dataclass(frozen=True)
class IngestReport:
    """One line of ``medvlm ingest``: a file, a series or a slide, ok or failed.

    ``source`` is the path as given (plus ``!member`` inside a zip, or ``#series-N`` for a split
    series); it never contains DICOM values.
    """

    source: str
    status: Literal["ok", "error"]
    kind: ViewKind | None = None
    modality: str | None = None
    body_part: str | None = None
    photometric: str | None = None
    frames: int | None = None
    shape: tuple[int, ...] | None = None
    window: WindowInfo | None = None
    study_id: str | None = None
    image: str | None = None
    warnings: tuple[str, ...] = ()
    error: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """Return the JSON object printed by ``medvlm ingest --json`` (``error`` only on failure)."""
        out: dict[str, object] = {
            "source": self.source,
            "status": self.status,
            "kind": self.kind,
            "modality": self.modality,
            "body_part": self.body_part,
            "photometric": self.photometric,
            "frames": self.frames,
            "shape": list(self.shape) if self.shape is not None else None,
            "window": self.window.as_dict() if self.window is not None else None,
            "study_id": self.study_id,
            "image": self.image,
            "warnings": list(self.warnings),
        }
        out.update(self.extra)
        if self.status == "error":
            out["error"] = self.error
        return out
